"""Tables of the web console and the health dashboard: console sessions and the daily
roll-ups of the query log (kept apart from the governance tables in :mod:`kb.models`).

All timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from kb.models import utcnow


class ConsoleSession(SQLModel, table=True):
    """A web-console sign-in: a server-side session opened with an API token.

    The cookie holds a random secret; only its SHA-256 is stored. The session lives no longer
    than ``expires_at``, than the token it was opened with, or than its user's access."""

    __tablename__ = "console_session"

    id: str = Field(primary_key=True, max_length=64)  # sha256 of the cookie's secret
    user_name: str = Field(foreign_key="user.name", index=True, max_length=200)
    token_id: str = Field(foreign_key="api_token.id", index=True, max_length=32)
    csrf: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    ended_at: datetime | None = None


class QueryRollup(SQLModel, table=True):
    """Assist calls per UTC day, audience and outcome, kept with every query-log write (the
    health dashboard reads these instead of scanning the log)."""

    __tablename__ = "query_rollup"

    day: str = Field(primary_key=True, max_length=10)  # YYYY-MM-DD, UTC
    audience: str = Field(primary_key=True, max_length=200)
    status: str = Field(primary_key=True, max_length=16)
    n: int = 0


class CitationRollup(SQLModel, table=True):
    """Passages served per UTC day and article (a citation = one served passage)."""

    __tablename__ = "citation_rollup"

    day: str = Field(primary_key=True, max_length=10)
    article_id: str = Field(primary_key=True, max_length=200)
    n: int = 0
