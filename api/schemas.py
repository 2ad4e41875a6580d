"""Request and response bodies of the HTTP API (and `kb ask --json`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from assist.answer import AssistResult, Citation, Escalation
from kb.articles import MAX_TAG_CHARS
from kb.text import plain_text


class AssistRequest(BaseModel):
    question: str = Field(min_length=1, max_length=2000,
                          description="The agent's question, as typed.")
    locale: str | None = Field(default=None, pattern=r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$",
                               description="BCP 47. Omitted: the locale the question's words read "
                               "as among the texts the caller may see, else the default "
                               "locale. Without a close enough answer in it, the default "
                               "locale answers (`locale_fallback` warning).")
    tags: list[Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS)]] | None = Field(
        default=None, max_length=20)
    top_k: int | None = Field(default=None, ge=1, le=10)

    # "before": the character is named before pydantic's own string checks refuse it.
    @field_validator("question", mode="before")
    @classmethod
    def _plain(cls, value: object) -> object:
        return plain_text(value, what="the question") if isinstance(value, str) else value

    @field_validator("tags", mode="before")
    @classmethod
    def _plain_tags(cls, value: object) -> object:
        if isinstance(value, list):
            return [plain_text(v, what="a tag") if isinstance(v, str) else v for v in value]
        return value

    @field_validator("question")
    @classmethod
    def _clean(cls, value: str) -> str:
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
    tuning_sha256: str | None = Field(
        default=None, description="The tuning record whose retrieval and abstention decided "
        "this answer (its sha256, as `kb eval tunings` lists it); null: the shipped settings.")

    @classmethod
    def from_result(cls, r: AssistResult) -> AssistResponse:
        return cls(
            status=r.status,
            passages=[PassageOut(text=p.text, score=p.score, citation=p.citation)
                      for p in r.passages],
            warnings=r.warnings,
            escalation=r.escalation,
            query_id=r.query_id,
            tuning_sha256=r.tuning_sha256,
        )


class FeedbackRequest(BaseModel):
    helpful: bool
    reason: Literal["wrong", "outdated", "unclear", "missing"] | None = None
    comment: str | None = Field(default=None, max_length=2000)
    passage: int = Field(default=0, ge=0, le=9, description="Which passage (0 = first).")

    @field_validator("comment", mode="before")
    @classmethod
    def _plain(cls, value: object) -> object:
        return plain_text(value, what="the comment") if isinstance(value, str) else value


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
    missing: list[str] = Field(default_factory=list, description="The checks that failed "
                               "(what is missing), empty when ready.")


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


# --- errors (the bodies built in api/errors.py and by FastAPI; declared in `responses=`) ---


class ErrorOut(BaseModel):
    """A request the domain refused (``api/errors.py``): a stable code and a sentence that
    says what happened and what to do."""

    error: str = Field(description="A stable code: `article_not_found`, `version_not_found`, "
                                   "`flag_not_found`, `forbidden`, `conflict`, "
                                   "`not_approved`, `invalid_input`...")
    detail: str


class AuthErrorOut(BaseModel):
    """Refused before the route runs: no, an invalid, expired or revoked API token (401), or
    a role that may not perform the action (403)."""

    detail: str


class ValidationIssueOut(BaseModel):
    """One problem with the request (FastAPI's validation error item)."""

    model_config = ConfigDict(extra="allow")  # input, ctx, url

    loc: list[str | int]
    msg: str
    type: str


class RequestInvalidOut(BaseModel):
    """The request did not match the declared parameters or body (FastAPI's 422 body)."""

    detail: list[ValidationIssueOut]


# --- owners' and approvers' routes (api/routes/owners.py) ----------------------------------
# Dates are ISO 8601 strings, as the domain formats them.


class FindingOut(BaseModel):
    """What approving a version would change in served answers (``assist/conflicts.py``).
    Open: a check may add keys, and none is dropped."""

    model_config = ConfigDict(extra="allow")

    kind: str = Field(description="`conflict`, `expectation_broken` or `stops_answering`.")
    question: str = Field(description="The probe or suite question; for a conflict, where "
                                      "the statements are.")
    other_article: str | None
    new_text: str | None
    other_text: str | None
    message: str
    case_id: str | None = Field(default=None,
                                description="`expectation_broken`: the suite case.")


class ApprovalBlockedOut(ErrorOut):
    """409 from approve: the findings block the approval unless forced with a note."""

    error: Literal["approval_blocked"]
    findings: list[FindingOut]


class QueueStaleOut(BaseModel):
    kind: Literal["stale"]
    article_id: str
    title: str
    owner: str
    risk: str
    due_at: str
    age_days: float = Field(description="Days past the review due date.")
    withheld: bool = Field(description="High risk: not served until reviewed.")


class QueueFlagSpanOut(BaseModel):
    start: int | None
    end: int | None
    text: str | None


class QueueFlagOut(BaseModel):
    kind: Literal["flag"]
    flag_id: int
    article_id: str | None
    version: int | None
    owner: str
    reason: str
    comment: str
    query_id: str
    question: str
    span: QueueFlagSpanOut
    created_at: str
    age_days: float


class QueuePendingOut(BaseModel):
    kind: Literal["pending"]
    article_id: str
    title: str
    owner: str
    version: int
    author: str
    created_at: str
    age_days: float


class NearestArticleOut(BaseModel):
    article_id: str
    title: str
    section: list[str]
    score: float


class QueueGapOut(BaseModel):
    kind: Literal["gap"]
    question: str
    team: str
    count: int
    flagged: int = Field(default=0, description="How many of the questions were answered, "
                                                "then flagged as wrong or missing.")
    first_at: str
    last_at: str
    examples: list[str]
    age_days: float
    nearest_article: NearestArticleOut | None = Field(
        default=None, description="The served article closest in meaning to the gap.")


class QueueDueSoonOut(BaseModel):
    kind: Literal["due_soon"]
    article_id: str
    title: str
    owner: str
    risk: str
    due_at: str
    age_days: float


QueueItemOut = Annotated[
    QueueStaleOut | QueueFlagOut | QueuePendingOut | QueueGapOut | QueueDueSoonOut,
    Field(discriminator="kind"),
]


class ReviewQueueOut(BaseModel):
    teams: list[str] | Literal["all"] = Field(description="The caller's teams (`all`: admin).")
    counts: dict[str, int] = Field(description="Items per kind.")
    items: list[QueueItemOut] = Field(description="Most urgent first (see `kb/queue.py`).")


class ArticleStatusOut(BaseModel):
    """An article's governance state (``kb.governance.ArticleStatus``)."""

    id: str
    title: str
    owner: str
    risk: str
    locale: str
    state: str = Field(description="draft | pending | approved | approved+pending | retired")
    latest_version: int
    served_version: int | None
    pending_version: int | None
    removed_from_source: bool
    source_path: str | None
    last_verified: str | None
    due_at: str | None
    stale: bool


class VersionApprovalOut(BaseModel):
    approver: str
    at: str
    note: str
    forced: bool


class VersionOut(BaseModel):
    number: int
    content_sha256: str
    author: str
    created_at: str
    draft: bool
    approval: VersionApprovalOut | None


class VersionReviewOut(BaseModel):
    version: int
    reviewer: str
    at: str
    outcome: str
    note: str


class VersionRetirementOut(BaseModel):
    up_to_version: int
    by: str
    at: str
    note: str


class ArticleHistoryOut(BaseModel):
    """Every version with author, approval, reviews and retirements."""

    id: str
    title: str
    owner: str
    served_version: int | None
    removed_from_source: str | None = Field(description="When the file was removed, if it was.")
    versions: list[VersionOut]
    reviews: list[VersionReviewOut]
    retirements: list[VersionRetirementOut]


class DiffOut(BaseModel):
    article_id: str
    from_: int = Field(alias="from")
    to: int
    diff: str = Field(description="Unified diff (empty when the versions are identical).")


class ApprovedOut(BaseModel):
    article_id: str
    version: int
    approver: str
    at: str
    forced: bool = Field(description="Approved over findings (with a note).")
    findings: list[FindingOut]


class ReviewedOut(BaseModel):
    article_id: str
    version: int = Field(description="The served version that was reviewed.")
    outcome: str
    at: str


class RetiredOut(BaseModel):
    article_id: str
    up_to_version: int
    at: str


class FlagResolvedOut(BaseModel):
    flag_id: int
    status: str
    resolution: str
    resolved_by: str
