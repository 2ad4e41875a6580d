"""tuning records (kb eval tune) and the tuning hash of eval runs

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:  # noqa: D103
    op.create_table(
        'tuning',
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(length=320), nullable=False),
        sa.Column('suite', sa.String(length=200), nullable=False),
        sa.Column('suite_sha256', sa.String(length=64), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('metrics', sa.JSON(), nullable=False),
        sa.Column('note', sa.String(), nullable=False),
        sa.PrimaryKeyConstraint('version'),
    )
    op.create_index('ix_tuning_at', 'tuning', ['at'])
    state = op.create_table(
        'tuning_state',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=True),
        sa.Column('changed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('changed_by', sa.String(length=320), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.bulk_insert(state, [{'id': 1, 'version': None}])
    with op.batch_alter_table('eval_run') as batch:
        batch.add_column(sa.Column('tuning_sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('eval_run') as batch:
        batch.drop_column('tuning_sha256')
    op.drop_table('tuning_state')
    op.drop_index('ix_tuning_at', table_name='tuning')
    op.drop_table('tuning')
