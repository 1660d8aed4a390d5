"""Mirroring lecture roles that an authenticator manages (JupyterHub groups) into the database.

The rule, so that roles granted through the API and roles from hub groups never silently fight:
- A hub group `<lecture>:<role>` is authoritative for that user and lecture: it creates the role,
  or replaces an API-granted one (the row's source becomes "hub").
- When the user leaves the group, the hub-sourced role is removed.
- API-granted roles for lectures the user has no hub group for are left alone.
- If a user is in several groups of one lecture, the highest role wins.
- With `create_lectures`, a group for a lecture that does not exist creates it (name = code);
  otherwise such groups are ignored until the lecture exists.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..orm import Lecture, Role, User
from ..states import RoleName, RoleSource, member_of, role_rank


def sync_roles(session: Session, user: User, roles: dict[str, str], create_lectures: bool) -> None:
    """Make the user's hub-sourced roles equal `roles` (lecture code -> role); commit if anything changed.

    Two requests of a new user (on two replicas, say) may insert the same lecture or role row at once;
    the loser starts over from what the winner committed instead of failing the request.
    """
    try:
        _sync_roles(session, user, roles, create_lectures)
    except IntegrityError:
        session.rollback()
        _sync_roles(session, user, roles, create_lectures)


def _sync_roles(session: Session, user: User, roles: dict[str, str], create_lectures: bool) -> None:
    wanted = {code: RoleName(role) for code, role in roles.items() if member_of(RoleName, role)}
    codes = set(wanted)
    lectures = (
        {lec.code: lec for lec in session.scalars(select(Lecture).where(Lecture.code.in_(codes)))}
        if codes
        else {}
    )
    changed = False
    if create_lectures:
        for code in codes - set(lectures):
            lecture = Lecture(code=code, name=code)
            session.add(lecture)
            lectures[code] = lecture
            changed = True
        if changed:
            session.flush()
    by_lecture_id = {lectures[code].id: role for code, role in wanted.items() if code in lectures}
    current = {row.lecture_id: row for row in session.scalars(select(Role).where(Role.user_id == user.id))}
    for lecture_id, role in by_lecture_id.items():
        row = current.get(lecture_id)
        if row is None:
            session.add(Role(user_id=user.id, lecture_id=lecture_id, role=role, source=RoleSource.HUB))
            changed = True
        elif row.role != role or row.source != RoleSource.HUB:
            row.role, row.source = role, RoleSource.HUB
            changed = True
    for lecture_id, row in current.items():
        if row.source == RoleSource.HUB and lecture_id not in by_lecture_id:
            session.delete(row)
            changed = True
    if changed:
        session.commit()


def highest_roles(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Collapse (lecture, role) pairs to the highest role per lecture."""
    result: dict[str, str] = {}
    for code, role in pairs:
        if role_rank(role) > role_rank(result.get(code)):
            result[code] = role
    return result
