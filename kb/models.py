"""The governance database (SQLModel tables).

Versions, approvals, reviews, retirements and audit events are append-only: the code never
updates or deletes them. ``Article`` holds the mutable bookkeeping (where its file is, the
metadata of its newest version).

All timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Article(SQLModel, table=True):
    __tablename__ = "article"

    id: str = Field(primary_key=True, max_length=200)
    title: str
    owner: str = Field(index=True, max_length=200)
    review_every_days: int
    risk: str = Field(max_length=16)
    locale: str = Field(max_length=35)
    latest_version: int = 0
    latest_sha256: str = Field(default="", max_length=64)
    source_root: str | None = Field(default=None, max_length=1000)
    source_path: str | None = Field(default=None, max_length=1000)
    removed_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class ArticleVersion(SQLModel, table=True):
    __tablename__ = "article_version"
    __table_args__ = (UniqueConstraint("article_id", "number", name="uq_version_number"),)

    id: int | None = Field(default=None, primary_key=True)
    article_id: str = Field(foreign_key="article.id", index=True, max_length=200)
    number: int
    content_sha256: str = Field(max_length=64)
    text: str = Field(sa_column=Column(Text, nullable=False))
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    author: str = Field(max_length=320)
    source_path: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=utcnow)


class Approval(SQLModel, table=True):
    __tablename__ = "approval"

    id: int | None = Field(default=None, primary_key=True)
    article_id: str = Field(foreign_key="article.id", index=True, max_length=200)
    version_number: int
    content_sha256: str = Field(max_length=64)
    approver: str = Field(max_length=320)
    at: datetime = Field(default_factory=utcnow)
    note: str = ""
    forced: bool = False


class Review(SQLModel, table=True):
    __tablename__ = "review"

    id: int | None = Field(default=None, primary_key=True)
    article_id: str = Field(foreign_key="article.id", index=True, max_length=200)
    version_number: int
    reviewer: str = Field(max_length=320)
    at: datetime = Field(default_factory=utcnow)
    outcome: str = Field(default="verified", max_length=32)
    note: str = ""


class Retirement(SQLModel, table=True):
    """Retires every version up to and including ``up_to_version``."""

    __tablename__ = "retirement"

    id: int | None = Field(default=None, primary_key=True)
    article_id: str = Field(foreign_key="article.id", index=True, max_length=200)
    up_to_version: int
    by: str = Field(max_length=320)
    at: datetime = Field(default_factory=utcnow)
    note: str = ""


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_article_at", "article_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=320)
    action: str = Field(index=True, max_length=64)
    article_id: str | None = Field(default=None, max_length=200)
    version_number: int | None = None
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class QueryLog(SQLModel, table=True):
    """One row per assist call: who asked what (redacted), what was served, the decision."""

    __tablename__ = "query_log"

    id: str = Field(primary_key=True, max_length=64)
    at: datetime = Field(default_factory=utcnow, index=True)
    caller: str = Field(max_length=320)
    audience: str = Field(max_length=200)
    locale: str = Field(max_length=35)
    question: str = Field(sa_column=Column(Text, nullable=False))  # redacted
    status: str = Field(max_length=16, index=True)
    reason: str | None = Field(default=None, max_length=32)
    escalate_to: str | None = Field(default=None, max_length=200)
    served: list[dict[str, Any]] = Field(default_factory=list,
                                         sa_column=Column(JSON, nullable=False))
    latency_ms: float = 0.0


class Flag(SQLModel, table=True):
    """An agent's report that an answer was wrong, outdated, unclear or missing."""

    __tablename__ = "flag"

    id: int | None = Field(default=None, primary_key=True)
    query_id: str = Field(foreign_key="query_log.id", index=True, max_length=64)
    article_id: str | None = Field(default=None, foreign_key="article.id", index=True,
                                   max_length=200)
    version_number: int | None = None
    start: int | None = None
    end: int | None = None
    owner: str = Field(index=True, max_length=200)
    reason: str = Field(max_length=16)
    comment: str = ""
    created_by: str = Field(max_length=320)
    created_at: datetime = Field(default_factory=utcnow)
    status: str = Field(default="open", max_length=16, index=True)
    resolved_by: str | None = Field(default=None, max_length=320)
    resolved_at: datetime | None = None
    resolution: str | None = Field(default=None, max_length=32)
    resolution_note: str = ""


class GovernanceClock(SQLModel, table=True):
    """One row, bumped in the same transaction as every approval, review and retirement.

    Readers compare it to know whether what is served changed, with one tiny query and no
    race: the row lock orders the bumps, so a commit is never missed.
    """

    __tablename__ = "governance_clock"

    id: int = Field(default=1, primary_key=True)
    tick: int = 0


class Tuning(SQLModel, table=True):
    """A versioned record of retrieval and abstention parameters fitted to this knowledge base
    on an evaluator's suite (``kb eval tune``). Append-only; :class:`TuningState` names the
    one the answer path uses."""

    __tablename__ = "tuning"

    version: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    created_by: str = Field(max_length=320)
    suite: str = Field(max_length=200)
    suite_sha256: str = Field(max_length=64)
    sha256: str = Field(max_length=64)  # of the canonical JSON of ``params``
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    note: str = ""


class TuningState(SQLModel, table=True):
    """One row: the tuning version in use (``None``: the shipped defaults)."""

    __tablename__ = "tuning_state"

    id: int = Field(default=1, primary_key=True)
    version: int | None = None
    changed_at: datetime | None = None
    changed_by: str | None = Field(default=None, max_length=320)


class EvalRun(SQLModel, table=True):
    """A stored eval run: what was measured, on which content, code and settings."""

    __tablename__ = "eval_run"

    id: str = Field(primary_key=True, max_length=32)
    at: datetime = Field(default_factory=utcnow, index=True)
    suite: str = Field(index=True, max_length=200)
    suite_sha256: str = Field(max_length=64)
    settings_hash: str = Field(max_length=64)
    # sha256 of the tuning record the answer path used (None: the shipped defaults).
    tuning_sha256: str | None = Field(default=None, max_length=64)
    git_commit: str | None = Field(default=None, max_length=64)
    label: str = ""
    system: str = Field(default="canon", max_length=64)
    content: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    cases: list[dict[str, Any]] = Field(default_factory=list,
                                        sa_column=Column(JSON, nullable=False))


class HealthSnapshot(SQLModel, table=True):
    """Knowledge-health metrics at one point in time (for trends)."""

    __tablename__ = "health_snapshot"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class User(SQLModel, table=True):
    """Someone who calls the API: a role, the teams they act for, the audiences they see."""

    __tablename__ = "user"

    name: str = Field(primary_key=True, max_length=200)
    role: str = Field(max_length=16)
    teams: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    audiences: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    disabled: bool = False
    # Other names this person writes under (git commit emails...): four-eyes compares people.
    aliases: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False,
                                                                       server_default="[]"))


class ApiToken(SQLModel, table=True):
    """An API token; only its SHA-256 is stored."""

    __tablename__ = "api_token"

    id: str = Field(primary_key=True, max_length=32)
    user_name: str = Field(foreign_key="user.name", index=True, max_length=200)
    token_sha256: str = Field(unique=True, index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    note: str = ""

