"""Announcing a submission's state change inside the transaction that makes it.

On PostgreSQL an announcement is `pg_notify(channel, "<submission id> <assignment id>")`: the
server delivers it to every listening replica when the transaction commits, and never if it rolls
back. On SQLite (one process) it waits in the session until the commit hands it to this process's
feed (`deliver_after_commit`); a rollback drops it. Only ids travel: whoever hears one reads the
committed state (`events.EventFeed`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

CHANNEL = "grader_service_events"
_PENDING = "grader_service_announced"


def announce(session: Session, submission_id: int, assignment_id: int) -> None:
    """Announce that the submission's grading state changes in this session's transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, f"{submission_id} {assignment_id}")))
    else:
        # Remember the innermost transaction: a savepoint rolled back takes its announcements along.
        transaction = session.get_nested_transaction() or session.get_transaction()
        session.info.setdefault(_PENDING, []).append((transaction, submission_id, assignment_id))


def parse(payload: str) -> tuple[int, int] | None:
    """(submission id, assignment id) from a notification's payload; None for anything else."""
    parts = payload.split(" ")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) < 19 for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def deliver_after_commit(
    session_factory: sessionmaker[Session], deliver: Callable[[Mapping[int, int]], None]
) -> None:
    """Without NOTIFY (SQLite): hand a session's announcements to `deliver` once its transaction
    commits; drop them when it (or the savepoint they were made in) rolls back, or the session
    closes without committing."""

    def committed(session: Session) -> None:
        pending = session.info.pop(_PENDING, None)
        if pending:
            deliver({submission_id: assignment_id for _, submission_id, assignment_id in pending})

    def rolled_back(session: Session, previous: SessionTransaction) -> None:
        pending = session.info.get(_PENDING)
        if pending:
            pending[:] = [p for p in pending if not _within(p[0], previous)]

    def ended(session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:  # rolled back, or closed without a commit
            session.info.pop(_PENDING, None)

    event.listen(session_factory, "after_commit", committed)
    event.listen(session_factory, "after_soft_rollback", rolled_back)
    event.listen(session_factory, "after_transaction_end", ended)


def _within(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False


__all__ = ["CHANNEL", "announce", "deliver_after_commit", "parse"]
