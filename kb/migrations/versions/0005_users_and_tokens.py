"""users and api tokens

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:  # noqa: D103
    op.create_table(
        'user',
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('teams', sa.JSON(), nullable=False),
        sa.Column('audiences', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('disabled', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'api_token',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('user_name', sa.String(length=200), nullable=False),
        sa.Column('token_sha256', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('note', sa.String(), nullable=False),
        sa.ForeignKeyConstraint(['user_name'], ['user.name']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_api_token_user_name', 'api_token', ['user_name'])
    op.create_index('ix_api_token_token_sha256', 'api_token', ['token_sha256'], unique=True)


def downgrade() -> None:
    op.drop_table('api_token')
    op.drop_table('user')
