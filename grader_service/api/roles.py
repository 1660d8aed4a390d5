"""Lecture roles. Instructors grant and revoke roles in their lecture; tutors can read them."""

from __future__ import annotations

from sqlalchemy import func, select

from ..orm import Lecture, Role, User
from ..states import RoleName, RoleSource, choices, member_of
from .base import USERNAME_RE, APIHandler, api_error
from .lectures import check_fields
from .permissions import needs_role
from .serialize import role_model


class RolesHandler(APIHandler):
    @needs_role(RoleName.TUTOR)
    def get(self, lecture: Lecture) -> None:
        offset, limit = self.pagination()
        query = select(Role).join(User).where(Role.lecture_id == lecture.id)
        wanted = self.get_query_argument("role", None)
        if wanted is not None:
            role = member_of(RoleName, wanted)
            if role is None:
                raise api_error(400, f"role must be one of {choices(RoleName)}")
            query = query.where(Role.role == role)
        total = self.db.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        rows = self.db.scalars(query.order_by(User.name).offset(offset).limit(limit)).all()
        self.write_page([role_model(r) for r in rows], total, offset, limit)


class RoleHandler(APIHandler):
    def _target(self, name: str) -> User | None:
        if not USERNAME_RE.match(name):
            raise api_error(400, f"Invalid user name {name!r}")
        return self.db.scalars(select(User).where(User.name == name)).one_or_none()

    @needs_role(RoleName.INSTRUCTOR)
    def put(self, lecture: Lecture, name: str) -> None:
        body = self.json_body()
        check_fields(body, {"role"})
        granted = member_of(RoleName, body.get("role"))
        if granted is None:
            raise api_error(400, f"Field 'role' must be one of {choices(RoleName)}")
        user = self._target(name)
        if user is None:  # roles may be granted before the user's first visit
            user = User(name=name)
            self.db.add(user)
            self.db.flush()
        role = self.db.get(Role, (user.id, lecture.id))
        created = role is None
        if role is None:
            role = Role(user_id=user.id, lecture_id=lecture.id, role=granted, source=RoleSource.API)
            self.db.add(role)
        else:
            role.role, role.source = granted, RoleSource.API
        self.db.commit()
        self.db.refresh(role)
        self.write_json(role_model(role), 201 if created else 200)

    @needs_role(RoleName.INSTRUCTOR)
    def delete(self, lecture: Lecture, name: str) -> None:
        user = self._target(name)
        role = self.db.get(Role, (user.id, lecture.id)) if user else None
        if role is None:
            raise api_error(404, f"User {name!r} has no role in lecture {lecture.code!r}")
        self.db.delete(role)
        self.db.commit()
        self.set_status(204)
        self.finish()


handlers = [(r"lectures/([^/]+)/roles", RolesHandler), (r"lectures/([^/]+)/roles/([^/]+)", RoleHandler)]
