"""CHECK constraints: every state, status, role and policy column holds a value of its vocabulary

The values are written out here, as they were when this revision was made (grader_service.states
may grow later, with a revision of its own). SQLite cannot add a constraint to a table: batch mode
copies the table with the constraint into place.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# table -> column -> the values it may hold
VOCABULARIES = {
    'lectures': {'state': ('active', 'complete')},
    'assignments': {
        'status': ('created', 'released', 'completed'),
        'grading_policy': ('latest', 'best'),
        'feedback_policy': ('manual', 'immediate'),
    },
    'submissions': {
        'auto_status': ('not_queued', 'queued', 'running', 'graded', 'failed'),
        'manual_status': ('not_graded', 'graded'),
        'feedback_status': ('none', 'generated', 'released'),
    },
    'grading_jobs': {'state': ('queued', 'running', 'succeeded', 'failed', 'cancelled')},
    'grading_runs': {'scope': ('latest', 'all')},
    'roles': {'role': ('student', 'tutor', 'instructor'), 'source': ('api', 'hub')},
}


def upgrade() -> None:
    for table, columns in VOCABULARIES.items():
        with op.batch_alter_table(table) as batch_op:
            for column, values in columns.items():
                listed = ', '.join(f"'{value}'" for value in values)
                batch_op.create_check_constraint(op.f(f'ck_{table}_{column}'), f'{column} IN ({listed})')


def downgrade() -> None:
    for table, columns in VOCABULARIES.items():
        with op.batch_alter_table(table) as batch_op:
            for column in columns:
                batch_op.drop_constraint(op.f(f'ck_{table}_{column}'), type_='check')
