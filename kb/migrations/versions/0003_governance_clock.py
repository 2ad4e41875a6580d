"""governance clock

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:  # noqa: D103
    table = op.create_table(
        'governance_clock',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('tick', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.bulk_insert(table, [{'id': 1, 'tick': 0}])


def downgrade() -> None:
    op.drop_table('governance_clock')
