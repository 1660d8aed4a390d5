"""Indexes for the list endpoints of large courses (benchmarks/large_course.py measures them)

- ix_submissions_by_assignment_user (assignment_id, user_id, id) replaces ix_submissions_assignment_user
  (assignment_id, user_id): the same lookups, and "latest per student" (max(id) grouped by user) and one
  student's submissions newest first come from the index alone;
- ix_submissions_by_assignment (assignment_id, id): an assignment's submissions newest first, one page
  without sorting them all;
- ix_roles_lecture_id: a lecture's roster (the primary key starts with user_id, which does not help).

Plain CREATE/DROP INDEX: the same on SQLite and PostgreSQL, no table copy.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_submissions_by_assignment_user', 'submissions', ['assignment_id', 'user_id', 'id'])
    op.drop_index('ix_submissions_assignment_user', table_name='submissions')
    op.create_index('ix_submissions_by_assignment', 'submissions', ['assignment_id', 'id'])
    op.create_index('ix_roles_lecture_id', 'roles', ['lecture_id'])


def downgrade() -> None:
    op.drop_index('ix_roles_lecture_id', table_name='roles')
    op.drop_index('ix_submissions_by_assignment', table_name='submissions')
    op.create_index('ix_submissions_assignment_user', 'submissions', ['assignment_id', 'user_id'])
    op.drop_index('ix_submissions_by_assignment_user', table_name='submissions')
