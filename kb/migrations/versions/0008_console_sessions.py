"""web-console sessions; daily roll-ups of the query log for the health dashboard

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:  # noqa: D103
    op.create_table(
        'console_session',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('user_name', sa.String(length=200), nullable=False),
        sa.Column('token_id', sa.String(length=32), nullable=False),
        sa.Column('csrf', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['user_name'], ['user.name']),
        sa.ForeignKeyConstraint(['token_id'], ['api_token.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_console_session_user_name', 'console_session', ['user_name'])
    op.create_index('ix_console_session_token_id', 'console_session', ['token_id'])
    upgrade_rollups()


def downgrade() -> None:
    op.drop_table('citation_rollup')
    op.drop_table('query_rollup')
    op.drop_table('console_session')


def upgrade_rollups() -> None:
    """Daily roll-ups of the query log, filled from what the log holds now."""
    op.create_table(
        'query_rollup',
        sa.Column('day', sa.String(length=10), nullable=False),
        sa.Column('audience', sa.String(length=200), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'audience', 'status'),
    )
    op.create_table(
        'citation_rollup',
        sa.Column('day', sa.String(length=10), nullable=False),
        sa.Column('article_id', sa.String(length=200), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'article_id'),
    )
    if op.get_bind().dialect.name == 'postgresql':
        day = "to_char(q.at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        cited = ("SELECT " + day + ", e.value->>'article_id', count(*) FROM query_log q, "
                 "json_array_elements(q.served) e GROUP BY 1, 2")
    else:
        day = "substr(q.at, 1, 10)"
        cited = ("SELECT " + day + ", json_extract(e.value, '$.article_id'), count(*) "
                 "FROM query_log q, json_each(q.served) e GROUP BY 1, 2")
    op.execute("INSERT INTO query_rollup (day, audience, status, n) SELECT " + day
               + ", q.audience, q.status, count(*) FROM query_log q GROUP BY 1, 2, 3")
    op.execute("INSERT INTO citation_rollup (day, article_id, n) " + cited)
