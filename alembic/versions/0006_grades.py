"""Per-cell grades, their append-only change history, and the manual status not_needed/needed/done

`grades`: one row per graded cell of a submission, unique per (submission_id, grade_id); the unique
index also serves a submission's list. `grade_changes`: every change to a grade, a total override,
an extension, a regrade, an on-behalf submit; triggers refuse UPDATE and DELETE of it (and
TRUNCATE on PostgreSQL; on SQLite a later batch_alter_table of it would drop them: recreate them). `submissions.cell_score` (the cells' sum) and `submissions.grades_version` (the
compare-and-set guard of grade changes). manual_status values: not_graded -> not_needed,
graded -> done (and back on downgrade: not_needed/needed -> not_graded, done -> graded). Submissions
graded before get their cells' rows from their gradebooks (`backfill_grades`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

OLD_STATUSES = "manual_status IN ('not_graded', 'graded')"
NEW_STATUSES = "manual_status IN ('not_needed', 'needed', 'done')"

APPEND_ONLY = """
CREATE FUNCTION grade_changes_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'grade_changes is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER grade_changes_no_update_delete BEFORE UPDATE OR DELETE ON grade_changes
    FOR EACH ROW EXECUTE FUNCTION grade_changes_append_only();
CREATE TRIGGER grade_changes_no_truncate BEFORE TRUNCATE ON grade_changes
    FOR EACH STATEMENT EXECUTE FUNCTION grade_changes_append_only();
"""

# SQLite has no TRUNCATE; a trigger per statement kind does the rest.
SQLITE_APPEND_ONLY = [
    f"CREATE TRIGGER grade_changes_no_{verb.lower()} BEFORE {verb} ON grade_changes"
    f" BEGIN SELECT RAISE(ABORT, 'grade_changes is append-only: {verb} refused'); END"
    for verb in ('UPDATE', 'DELETE')
]


SUBMISSIONS = sa.table(
    'submissions',
    sa.column('id', sa.Integer()),
    sa.column('gradebook', sa.JSON()),
    sa.column('auto_status', sa.String()),
    sa.column('manual_status', sa.String()),
    sa.column('cell_score', sa.Double()),
)
GRADES = sa.table(
    'grades',
    *(sa.column(name) for name in ('submission_id', 'grade_id', 'notebook', 'kind', 'auto_points',
                                   'extra_credit', 'max_points', 'needs_manual')),
    sa.column('updated_at', sa.DateTime()),
)
KINDS = ('test', 'manual', 'task')
BATCH = 500


def cells_of(gradebook):
    """The graded cells of an autograde gradebook, as rows (as grader_service.grades.cells_of was when
    this revision was made: a grade_id repeated in a later notebook is keyed `<notebook>/<grade_id>`)."""
    rows, seen = [], set()
    for notebook, book in ((gradebook or {}).get('notebooks') or {}).items():
        for grade_id, cell in ((book or {}).get('cells') or {}).items():
            if not isinstance(cell, dict) or cell.get('kind') not in KINDS:
                continue
            key = grade_id if grade_id not in seen else f'{notebook}/{grade_id}'
            seen.add(key)
            needs = cell.get('status') == 'needs-manual'
            points = cell.get('points')
            rows.append({
                'grade_id': key, 'notebook': notebook, 'kind': cell['kind'],
                'auto_points': None if needs or points is None else float(points),
                'max_points': float(cell.get('max_points') or 0.0), 'needs_manual': needs, 'extra_credit': 0.0,
            })
    return rows


def backfill_grades() -> None:
    """A row per graded cell of every graded submission (its gradebook), with `cell_score` (the sum of the
    automatic points: the score is unchanged) and `manual_status` needed where a cell waits for a person
    and nobody marked it graded. In batches: a course's gradebooks are read a few hundred at a time."""
    conn = op.get_bind()
    now = datetime.now(UTC).replace(tzinfo=None)
    last = 0
    while True:
        batch = conn.execute(
            sa.select(SUBMISSIONS.c.id, SUBMISSIONS.c.gradebook, SUBMISSIONS.c.manual_status)
            .where(SUBMISSIONS.c.id > last, SUBMISSIONS.c.auto_status == 'graded', SUBMISSIONS.c.gradebook.is_not(None))
            .order_by(SUBMISSIONS.c.id)
            .limit(BATCH)
        ).all()
        if not batch:
            return
        for submission_id, gradebook, status in batch:
            rows = cells_of(gradebook)
            if rows:
                conn.execute(GRADES.insert(), [dict(row, submission_id=submission_id, updated_at=now) for row in rows])
                waiting = any(row['needs_manual'] for row in rows)
                conn.execute(
                    SUBMISSIONS.update().where(SUBMISSIONS.c.id == submission_id).values(
                        cell_score=round(sum(row['auto_points'] or 0.0 for row in rows), 6),
                        manual_status='needed' if waiting and status != 'done' else status,
                    )
                )
        last = batch[-1][0]


def upgrade() -> None:
    op.create_table(
        'grades',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('submission_id', sa.Integer(), nullable=False),
        sa.Column('grade_id', sa.String(length=255), nullable=False),
        sa.Column('notebook', sa.String(length=255), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('auto_points', sa.Double(), nullable=True),
        sa.Column('manual_points', sa.Double(), nullable=True),
        sa.Column('extra_credit', sa.Double(), nullable=False),
        sa.Column('max_points', sa.Double(), nullable=False),
        sa.Column('comment', sa.Text(), nullable=True),
        sa.Column('needs_manual', sa.Boolean(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('test', 'manual', 'task')", name=op.f('ck_grades_kind')),
        sa.ForeignKeyConstraint(
            ['submission_id'], ['submissions.id'],
            name=op.f('fk_grades_submission_id_submissions'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_grades')),
        sa.UniqueConstraint('submission_id', 'grade_id', name=op.f('uq_grades_submission_id_grade_id')),
    )
    op.create_table(
        'grade_changes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('submission_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('user_name', sa.String(length=255), nullable=True),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('what', sa.String(length=255), nullable=False),
        sa.Column('old', sa.Text(), nullable=True),
        sa.Column('new', sa.Text(), nullable=True),
        sa.Column('comment', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ['submission_id'], ['submissions.id'],
            name=op.f('fk_grade_changes_submission_id_submissions'), ondelete='RESTRICT',
        ),
        sa.ForeignKeyConstraint(
            ['user_id'], ['users.id'], name=op.f('fk_grade_changes_user_id_users'), ondelete='SET NULL'
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_grade_changes')),
    )
    op.create_index('ix_grade_changes_by_submission', 'grade_changes', ['submission_id', 'id'])
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(APPEND_ONLY)
    else:
        for statement in SQLITE_APPEND_ONLY:
            op.execute(statement)
    with op.batch_alter_table('submissions') as batch_op:
        batch_op.drop_constraint(op.f('ck_submissions_manual_status'), type_='check')
        batch_op.add_column(sa.Column('cell_score', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('grades_version', sa.Integer(), server_default='0', nullable=False))
    op.execute("UPDATE submissions SET manual_status = 'not_needed' WHERE manual_status = 'not_graded'")
    op.execute("UPDATE submissions SET manual_status = 'done' WHERE manual_status = 'graded'")
    with op.batch_alter_table('submissions') as batch_op:
        batch_op.create_check_constraint(op.f('ck_submissions_manual_status'), NEW_STATUSES)
    backfill_grades()


def downgrade() -> None:
    with op.batch_alter_table('submissions') as batch_op:
        batch_op.drop_constraint(op.f('ck_submissions_manual_status'), type_='check')
        batch_op.drop_column('grades_version')
        batch_op.drop_column('cell_score')
    op.execute("UPDATE submissions SET manual_status = 'graded' WHERE manual_status = 'done'")
    op.execute("UPDATE submissions SET manual_status = 'not_graded' WHERE manual_status <> 'graded'")
    with op.batch_alter_table('submissions') as batch_op:
        batch_op.create_check_constraint(op.f('ck_submissions_manual_status'), OLD_STATUSES)
    op.drop_index('ix_grade_changes_by_submission', table_name='grade_changes')
    op.drop_table('grade_changes')
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP FUNCTION grade_changes_append_only()')
    op.drop_table('grades')
