"""eval runs and health snapshots

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:  # noqa: D103
    op.create_table(
        'eval_run',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('suite', sa.String(length=200), nullable=False),
        sa.Column('suite_sha256', sa.String(length=64), nullable=False),
        sa.Column('settings_hash', sa.String(length=64), nullable=False),
        sa.Column('git_commit', sa.String(length=64), nullable=True),
        sa.Column('label', sa.String(), nullable=False),
        sa.Column('system', sa.String(length=64), nullable=False),
        sa.Column('content', sa.JSON(), nullable=False),
        sa.Column('metrics', sa.JSON(), nullable=False),
        sa.Column('cases', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_eval_run_at', 'eval_run', ['at'])
    op.create_index('ix_eval_run_suite', 'eval_run', ['suite'])
    op.create_table(
        'health_snapshot',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('metrics', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_health_snapshot_at', 'health_snapshot', ['at'])


def downgrade() -> None:
    op.drop_table('health_snapshot')
    op.drop_table('eval_run')
