"""Assignment kinds (issue 19): `notebook` (nbgrader notebooks) or `command` (stages of grader.yaml)

Every existing assignment is a notebook assignment. The CHECK constraint lists the values as they
were when this revision was made.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('assignments') as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(16), nullable=False, server_default='notebook'))
        batch_op.create_check_constraint(op.f('ck_assignments_kind'), "kind IN ('notebook', 'command')")


def downgrade() -> None:
    with op.batch_alter_table('assignments') as batch_op:
        batch_op.drop_constraint(op.f('ck_assignments_kind'), type_='check')
        batch_op.drop_column('kind')
