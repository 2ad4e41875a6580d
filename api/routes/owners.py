"""Knowledge owners' and approvers' routes. Each write is one function of kb.workflows, the
same one the CLI calls, so both faces apply the same rules; the index follows every change."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.approvals import approval_checks
from api.auth import Caller
from api.deps import (
    ApproverCaller,
    AssistDep,
    ClockDep,
    QueueCaller,
    ResolveCaller,
    RetireCaller,
    ReviewCaller,
    SessionDep,
    StaffCaller,
)
from api.params import ArticleId, FlagId, FromVersion, ToVersion, VersionNumber
from api.responses import declare
from api.schemas import (
    ApprovalBlockedOut,
    ApprovedOut,
    ArticleHistoryOut,
    ArticleStatusOut,
    DiffOut,
    ErrorOut,
    FlagResolvedOut,
    RetiredOut,
    ReviewedOut,
    ReviewQueueOut,
)
from kb import governance, workflows
from kb.queue import review_queue

router = APIRouter(prefix="/v1", tags=["owners"])

_ROLE = "The caller's role may not do this."
_QUERY_ROLE = declare(role=_ROLE)

class ApproveBody(BaseModel):
    note: str = Field(default="", max_length=2000)
    force: bool = Field(default=False, description="Approve despite conflict findings "
                                                   "(requires a note).")


class ReviewBody(BaseModel):
    outcome: str = Field(default="verified", pattern="^(verified|needs_update)$")
    note: str = Field(default="", max_length=2000)


class RetireBody(BaseModel):
    note: str = Field(default="", max_length=2000)


class ResolveBody(BaseModel):
    resolution: str = Field(pattern="^(fixed|no_change|duplicate|wont_fix)$")
    note: str = Field(default="", max_length=2000)


def _teams(caller: Caller) -> list[str] | None:
    return None if caller.is_admin else list(caller.teams)


@router.get("/review-queue", response_model=ReviewQueueOut, responses=_QUERY_ROLE)
def queue(caller: QueueCaller, session: SessionDep, clock: ClockDep,
          assistant: AssistDep) -> ReviewQueueOut:
    """Stale and due-soon articles, pending versions, open flags and content gaps for the
    caller's teams, most urgent first."""
    items = review_queue(session, teams=_teams(caller), now=clock(),
                         group_gaps=assistant.gaps, nearest=assistant.gaps.nearest)
    counts: dict[str, int] = {}
    for item in items:
        counts[item["kind"]] = counts.get(item["kind"], 0) + 1
    return ReviewQueueOut.model_validate(
        {"teams": _teams(caller) or "all", "counts": counts, "items": items})


@router.get("/articles", response_model=list[ArticleStatusOut], responses=_QUERY_ROLE)
def list_articles(caller: StaffCaller, session: SessionDep,
                  clock: ClockDep) -> list[ArticleStatusOut]:
    """Every article with its governance state."""
    return [ArticleStatusOut.model_validate(s.as_dict())
            for s in governance.statuses(session, now=clock())]


@router.get("/articles/{article_id}/versions", response_model=ArticleHistoryOut,
            responses=declare(role=_ROLE, params=True, not_found="No such article."))
def versions(article_id: ArticleId, caller: StaffCaller, session: SessionDep) -> ArticleHistoryOut:
    """Every version with author, approval, reviews and retirements."""
    return ArticleHistoryOut.model_validate(governance.history(session, article_id=article_id))


@router.get("/articles/{article_id}/diff", response_model=DiffOut,
            responses=declare(role=_ROLE, params=True, not_found="No such article or version."))
def diff(article_id: ArticleId, caller: StaffCaller, session: SessionDep,
         from_: FromVersion, to: ToVersion) -> DiffOut:
    """Unified diff between two versions."""
    return DiffOut.model_validate(
        {"article_id": article_id, "from": from_, "to": to,
         "diff": governance.diff(session, article_id=article_id, a=from_, b=to)})


def _follow(request: Request) -> None:
    """This server indexes the change now; other servers follow within seconds."""
    follower = getattr(request.app.state, "follower", None)
    if follower is not None:
        follower.step(force=True)


_APPROVE_REFUSED = declare(
    role=_ROLE, forbidden="The team may not approve this article, or the caller authored "
                          "the version (four-eyes rule).",
    body=True, not_found="No such article or version.",
    invalid_input="`force` without a note.",
    extra={409: {"model": ApprovalBlockedOut | ErrorOut,
                 "description": "The version is superseded, a draft or already approved "
                                "(`conflict`), or findings block it (`approval_blocked`, with "
                                "`findings`) unless forced with a note."}})


# response_model_exclude_unset: a finding is sent with exactly the keys its check gave.
@router.post("/articles/{article_id}/versions/{number}/approve", response_model=ApprovedOut,
             response_model_exclude_unset=True, responses=_APPROVE_REFUSED)
async def approve(article_id: ArticleId, number: VersionNumber, body: ApproveBody,
                  caller: ApproverCaller, session: SessionDep, assistant: AssistDep,
                  clock: ClockDep, request: Request) -> ApprovedOut:
    """Approve a pending version. 403 for a role or team that may not approve it or for the
    version's own author (four-eyes); 409 for a superseded, draft or already approved
    version, or for findings (conflicting statements, suite expectations that would break,
    questions it would stop answering) unless forced with a note."""
    started = time.perf_counter()
    outcome = await run_in_threadpool(
        workflows.approve, session, actor=caller, article_id=article_id, version=number,
        note=body.note, force=body.force, allow_self=assistant.settings.allow_self_approval,
        checks=approval_checks(assistant), clock=clock)
    await run_in_threadpool(_follow, request)
    request.app.state.metrics.approvals.observe(time.perf_counter() - started)
    a = outcome.approval
    return ApprovedOut.model_validate(
        {"article_id": article_id, "version": number, "approver": a.approver,
         "at": a.at.isoformat(), "forced": a.forced, "findings": outcome.findings})


@router.post("/articles/{article_id}/review", response_model=ReviewedOut,
             responses=declare(
                 role=_ROLE, forbidden="The team may not review this article.", body=True,
                 not_found="No such article.",
                 conflict="The article has no approved version to review (`not_approved`)."))
def review(article_id: ArticleId, body: ReviewBody, caller: ReviewCaller, session: SessionDep,
           clock: ClockDep) -> ReviewedOut:
    """Record a re-verification of the served version (restarts the review clock)."""
    r = workflows.review(session, actor=caller, article_id=article_id, outcome=body.outcome,
                         note=body.note, now=clock())
    return ReviewedOut(article_id=article_id, version=r.version_number, outcome=r.outcome,
                       at=r.at.isoformat())


@router.post("/articles/{article_id}/retire", response_model=RetiredOut,
             responses=declare(role=_ROLE, forbidden="The team may not retire this article.",
                               body=True, not_found="No such article.",
                               conflict="The article is already retired."))
async def retire(article_id: ArticleId, body: RetireBody, caller: RetireCaller, session: SessionDep,
                 clock: ClockDep, request: Request) -> RetiredOut:
    """Stop serving the article."""
    r = workflows.retire(session, actor=caller, article_id=article_id, note=body.note,
                         now=clock())
    await run_in_threadpool(_follow, request)
    return RetiredOut(article_id=article_id, up_to_version=r.up_to_version,
                      at=r.at.isoformat())


@router.post("/flags/{flag_id}/resolve", response_model=FlagResolvedOut,
             responses=declare(
                 role=_ROLE, forbidden="The flag is another team's.", body=True,
                 not_found="No such flag.", conflict="The flag is already resolved."))
def resolve(flag_id: FlagId, body: ResolveBody, caller: ResolveCaller, session: SessionDep,
            clock: ClockDep) -> FlagResolvedOut:
    """Close an agent's flag with a resolution."""
    f = workflows.resolve_flag(session, actor=caller, flag_id=flag_id,
                               resolution=body.resolution, note=body.note, now=clock())
    return FlagResolvedOut.model_validate(
        {"flag_id": f.id, "status": f.status, "resolution": f.resolution,
         "resolved_by": f.resolved_by})
