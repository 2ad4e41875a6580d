"""Request and response bodies of the HTTP API (and `kb ask --json`)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from assist.answer import AssistResult, Citation, Escalation

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class AssistRequest(BaseModel):
    question: str = Field(min_length=1, max_length=2000,
                          description="The agent's question, as typed.")
    locale: str | None = Field(default=None, pattern=r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$",
                               description="BCP 47; falls back to the default locale.")
    tags: list[str] | None = Field(default=None, max_length=20)
    top_k: int | None = Field(default=None, ge=1, le=10)

    @field_validator("question")
    @classmethod
    def _clean(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise ValueError("the question contains control characters; send plain text")
        if not value.strip():
            raise ValueError("the question is blank; send the agent's question")
        return value.strip()


class PassageOut(BaseModel):
    text: str
    score: float
    citation: Citation  # the domain dataclass: one definition of the citation fields


class AssistResponse(BaseModel):
    status: Literal["answered", "escalate", "no_answer"]
    passages: list[PassageOut]
    warnings: list[dict[str, str]]
    escalation: Escalation | None
    query_id: str

    @classmethod
    def from_result(cls, r: AssistResult) -> AssistResponse:
        return cls(
            status=r.status,
            passages=[PassageOut(text=p.text, score=p.score, citation=p.citation)
                      for p in r.passages],
            warnings=r.warnings,
            escalation=r.escalation,
            query_id=r.query_id,
        )


class FeedbackRequest(BaseModel):
    helpful: bool
    reason: Literal["wrong", "outdated", "unclear", "missing"] | None = None
    comment: str | None = Field(default=None, max_length=2000)
    passage: int = Field(default=0, ge=0, le=9, description="Which passage (0 = first).")


class FeedbackResponse(BaseModel):
    query_id: str
    flag_id: int | None
    owner: str | None
    status: Literal["recorded", "flagged"]


class SectionOut(BaseModel):
    heading_path: list[str]
    anchor: str
    start: int
    end: int


class ApprovedBlockOut(BaseModel):
    start: int
    end: int
    anchor: str
    text: str


class ArticleOut(BaseModel):
    id: str
    title: str
    version: int
    content_sha256: str
    owner: str
    risk: str
    audience: list[str]
    locale: str
    approved_at: datetime
    last_reviewed: datetime
    review_due: datetime
    stale: bool
    sections: list[SectionOut]
    text: str | None = Field(description="Full text (null for high-risk articles).")
    approved_blocks: list[ApprovedBlockOut] = Field(
        description="The `::: approved` blocks (the only text served for high-risk articles).")


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    """``/readyz``: 200 when every check is ``ok...``, else 503 with the failing checks.

    A probe that adds a check adds one more ``name: "ok..." | "error: ..."`` member."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ready", "not ready"]
    database: str = Field(description="`ok` or `error: <exception type>`.")
    index: str = Field(description="`ok (<n> chunks)` or `error: <exception type>`.")


# --- knowledge health (GET /v1/health/knowledge; definitions in evals/health.py) -----------


class FreshnessOut(BaseModel):
    served: int
    within_cadence: float | None
    overdue: int
    overdue_by_owner: dict[str, list[str]]
    due_14d: list[str]


class OwnershipOut(BaseModel):
    unowned: list[str]


class UsageOut(BaseModel):
    citations_7d: dict[str, int]
    citations_30d: dict[str, int]
    never_cited: list[str]


class GapOut(BaseModel):
    question: str
    count: int


class OutcomesOut(BaseModel):
    queries: int
    answered: float | None
    escalate: float | None
    no_answer: float | None
    top_gaps: list[GapOut]


class FlagStatsOut(BaseModel):
    open: int
    resolved: int
    median_hours_to_resolve: float | None


class ChunkRefOut(BaseModel):
    article_id: str
    anchor: str


class DuplicateOut(BaseModel):
    a: ChunkRefOut
    b: ChunkRefOut
    similarity: float


class KnowledgeHealthOut(BaseModel):
    at: str = Field(description="When the metrics were computed (ISO 8601).")
    articles: int
    states: dict[str, int]
    freshness: FreshnessOut
    ownership: OwnershipOut
    usage: UsageOut
    outcomes_30d: OutcomesOut
    flags: FlagStatsOut
    approval_lag_hours: float | None
    duplicates: list[DuplicateOut]
