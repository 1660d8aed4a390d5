"""Lectures: admins create them; members see theirs; instructors manage their own."""

from __future__ import annotations

from typing import Any, Literal, overload

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..orm import Assignment, Lecture, Role
from ..states import LectureState, RoleName, choices, member_of
from .base import SLUG_RE, APIHandler, api_error
from .permissions import ADMIN, needs_admin, needs_login, needs_role
from .serialize import lecture_model


def check_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise api_error(400, f"Unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


@overload
def string_field(
    body: dict[str, Any], key: str, max_length: int = 255, *, required: Literal[True], nullable: bool = False
) -> str: ...
@overload
def string_field(
    body: dict[str, Any], key: str, max_length: int = 255, required: bool = False, nullable: bool = False
) -> str | None: ...
def string_field(
    body: dict[str, Any], key: str, max_length: int = 255, required: bool = False, nullable: bool = False
) -> str | None:
    """A text field, stripped; None if absent (or null, where `nullable`)."""
    if key not in body and not required:
        return None
    value = body.get(key)
    if value is None and nullable and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise api_error(
            400,
            f"Field {key!r} must be a string of at most {max_length} characters, not all blank"
            + (", or null" if nullable else ""),
        )
    return value.strip()


def slug_field(body: dict[str, Any], key: str, what: str) -> str:
    """A required slug (lecture code, assignment name), exactly as sent: never stripped or folded."""
    value = body.get(key)
    if value is None:
        raise api_error(400, f"Field {key!r} is required")
    if not isinstance(value, str) or not SLUG_RE.match(value):
        shown = repr(value) if isinstance(value, str) else type(value).__name__
        raise api_error(
            400,
            f"{what} {shown} must be a slug: 1-64 lowercase letters, digits, '-' and '_', "
            "starting and ending with a letter or digit",
        )
    return value


def lecture_state(value: Any) -> LectureState:
    state = member_of(LectureState, value)
    if state is None:
        raise api_error(400, f"state must be one of {choices(LectureState)}")
    return state


class LecturesHandler(APIHandler):
    @needs_login
    def get(self) -> None:
        offset, limit = self.pagination()
        query = self.permissions.visible_lectures(select(Lecture))
        state = self.get_query_argument("state", None)
        if state is not None:
            query = query.where(Lecture.state == lecture_state(state))
        total = self.db.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        rows = self.db.scalars(query.order_by(Lecture.code).offset(offset).limit(limit)).all()
        self.write_page(
            [lecture_model(lec, self.permissions.role_in(lec.id)) for lec in rows], total, offset, limit
        )

    @needs_admin
    def post(self) -> None:
        body = self.json_body()
        check_fields(body, {"code", "name", "state"})
        code = slug_field(body, "code", "Lecture code")
        state = lecture_state(body.get("state", LectureState.ACTIVE))
        lecture = Lecture(code=code, name=string_field(body, "name") or code, state=state)
        self.db.add(lecture)
        try:
            self.db.commit()
        except IntegrityError:
            self.db.rollback()
            raise api_error(409, f"A lecture with code {code!r} already exists") from None
        self.write_json(lecture_model(lecture), 201)


class LectureHandler(APIHandler):
    @needs_role(RoleName.STUDENT)
    def get(self, lecture: Lecture) -> None:
        self.write_json(lecture_model(lecture, self.permissions.role_in(lecture.id)))

    @needs_role(RoleName.INSTRUCTOR)
    def patch(self, lecture: Lecture) -> None:
        body = self.json_body()
        check_fields(body, {"name", "state"})
        if "name" in body:
            lecture.name = string_field(body, "name", required=True)
        if "state" in body:
            lecture.state = lecture_state(body["state"])
        self.db.commit()
        self.write_json(lecture_model(lecture, self.permissions.role_in(lecture.id)))

    @needs_role(ADMIN)
    def delete(self, lecture: Lecture) -> None:
        if self.db.scalar(select(func.count()).where(Assignment.lecture_id == lecture.id)):
            raise api_error(
                409, f"Lecture {lecture.code!r} still has assignments; delete them first or mark it complete"
            )
        self.db.query(Role).filter(Role.lecture_id == lecture.id).delete()
        self.db.delete(lecture)
        self.db.commit()
        self.set_status(204)
        self.finish()


handlers = [(r"lectures", LecturesHandler), (r"lectures/([^/]+)", LectureHandler)]
