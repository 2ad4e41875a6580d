"""Knowledge owners' and approvers' routes. Each write is one function of kb.workflows, the
same one the CLI calls, so both faces apply the same rules; the index follows every change."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
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
from api.schemas import (
    ApprovalBlockedOut,
    ApprovedOut,
    ArticleHistoryOut,
    ArticleStatusOut,
    AuthErrorOut,
    DiffOut,
    ErrorOut,
    FlagResolvedOut,
    RequestInvalidOut,
    RetiredOut,
    ReviewedOut,
    ReviewQueueOut,
)
from kb import governance, workflows
from kb.queue import review_queue

router = APIRouter(prefix="/v1", tags=["owners"])

# The error responses each route declares. 401 and a role's 403 come from api/auth.py
# (`{"detail": ...}`); the domain's refusals from api/errors.py (`{"error", "detail"}`).
_Responses = dict[int | str, dict[str, Any]]
_UNAUTHENTICATED: _Responses = {
    401: {"model": AuthErrorOut,
          "description": "No API token, or an invalid, expired or revoked one."}}
_ROLE: _Responses = {
    **_UNAUTHENTICATED,
    403: {"model": AuthErrorOut, "description": "The caller's role may not do this."}}


def _refused(*, forbidden: str, not_found: str | None = None,
             conflict: str | None = None) -> _Responses:
    """401, 403 (a role from api/auth.py; a team or the four-eyes rule from the domain),
    and the domain's 404 and 409 when the route can give them."""
    out: _Responses = {**_UNAUTHENTICATED,
                       403: {"model": AuthErrorOut | ErrorOut, "description": forbidden}}
    if not_found:
        out[404] = {"model": ErrorOut, "description": not_found}
    if conflict:
        out[409] = {"model": ErrorOut, "description": conflict}
    return out


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


@router.get("/review-queue", response_model=ReviewQueueOut, responses=_ROLE)
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


@router.get("/articles", response_model=list[ArticleStatusOut], responses=_ROLE)
def list_articles(caller: StaffCaller, session: SessionDep,
                  clock: ClockDep) -> list[ArticleStatusOut]:
    """Every article with its governance state."""
    return [ArticleStatusOut.model_validate(s.as_dict())
            for s in governance.statuses(session, now=clock())]


@router.get("/articles/{article_id}/versions", response_model=ArticleHistoryOut,
            responses={**_ROLE, 404: {"model": ErrorOut, "description": "No such article."}})
def versions(article_id: str, caller: StaffCaller, session: SessionDep) -> ArticleHistoryOut:
    """Every version with author, approval, reviews and retirements."""
    return ArticleHistoryOut.model_validate(governance.history(session, article_id=article_id))


@router.get("/articles/{article_id}/diff", response_model=DiffOut,
            responses={**_ROLE, 404: {"model": ErrorOut,
                                        "description": "No such article or version."}})
def diff(article_id: str, caller: StaffCaller, session: SessionDep,
         from_: int = Query(alias="from", ge=1), to: int = Query(ge=1)) -> DiffOut:
    """Unified diff between two versions."""
    return DiffOut.model_validate(
        {"article_id": article_id, "from": from_, "to": to,
         "diff": governance.diff(session, article_id=article_id, a=from_, b=to)})


def _follow(request: Request) -> None:
    """This server indexes the change now; other servers follow within seconds."""
    follower = getattr(request.app.state, "follower", None)
    if follower is not None:
        follower.step(force=True)


_APPROVE_REFUSED: _Responses = {
    **_refused(forbidden="The role or team may not approve this article, or the caller "
                         "authored the version (four-eyes rule).",
               not_found="No such article or version."),
    409: {"model": ApprovalBlockedOut | ErrorOut,
          "description": "The version is superseded, a draft or already approved "
                         "(`conflict`), or findings block it (`approval_blocked`, with "
                         "`findings`) unless forced with a note."},
    422: {"model": RequestInvalidOut | ErrorOut,
          "description": "An invalid body, or `force` without a note (`invalid_input`)."},
}


# response_model_exclude_unset: a finding is sent with exactly the keys its check gave.
@router.post("/articles/{article_id}/versions/{number}/approve", response_model=ApprovedOut,
             response_model_exclude_unset=True, responses=_APPROVE_REFUSED)
async def approve(article_id: str, number: int, body: ApproveBody, caller: ApproverCaller,
                  session: SessionDep, assistant: AssistDep, clock: ClockDep,
                  request: Request) -> ApprovedOut:
    """Approve a pending version. 403 for a role or team that may not approve it or for the
    version's own author (four-eyes); 409 for a superseded, draft or already approved
    version, or for findings (conflicting statements, suite expectations that would break,
    questions it would stop answering) unless forced with a note."""
    outcome = await run_in_threadpool(
        workflows.approve, session, actor=caller, article_id=article_id, version=number,
        note=body.note, force=body.force, allow_self=assistant.settings.allow_self_approval,
        checks=approval_checks(assistant), clock=clock)
    await run_in_threadpool(_follow, request)
    a = outcome.approval
    return ApprovedOut.model_validate(
        {"article_id": article_id, "version": number, "approver": a.approver,
         "at": a.at.isoformat(), "forced": a.forced, "findings": outcome.findings})


@router.post("/articles/{article_id}/review", response_model=ReviewedOut,
             responses=_refused(
                 forbidden="The role or team may not review this article.",
                 not_found="No such article.",
                 conflict="The article has no approved version to review (`not_approved`)."))
def review(article_id: str, body: ReviewBody, caller: ReviewCaller, session: SessionDep,
           clock: ClockDep) -> ReviewedOut:
    """Record a re-verification of the served version (restarts the review clock)."""
    r = workflows.review(session, actor=caller, article_id=article_id, outcome=body.outcome,
                         note=body.note, now=clock())
    return ReviewedOut(article_id=article_id, version=r.version_number, outcome=r.outcome,
                       at=r.at.isoformat())


@router.post("/articles/{article_id}/retire", response_model=RetiredOut,
             responses=_refused(forbidden="The role or team may not retire this article.",
                                not_found="No such article.",
                                conflict="The article is already retired."))
async def retire(article_id: str, body: RetireBody, caller: RetireCaller, session: SessionDep,
                 clock: ClockDep, request: Request) -> RetiredOut:
    """Stop serving the article."""
    r = workflows.retire(session, actor=caller, article_id=article_id, note=body.note,
                         now=clock())
    await run_in_threadpool(_follow, request)
    return RetiredOut(article_id=article_id, up_to_version=r.up_to_version,
                      at=r.at.isoformat())


@router.post("/flags/{flag_id}/resolve", response_model=FlagResolvedOut,
             responses=_refused(
                 forbidden="The role may not resolve flags, or the flag is another team's.",
                 not_found="No such flag.", conflict="The flag is already resolved."))
def resolve(flag_id: int, body: ResolveBody, caller: ResolveCaller, session: SessionDep,
            clock: ClockDep) -> FlagResolvedOut:
    """Close an agent's flag with a resolution."""
    f = workflows.resolve_flag(session, actor=caller, flag_id=flag_id,
                               resolution=body.resolution, note=body.note, now=clock())
    return FlagResolvedOut.model_validate(
        {"flag_id": f.id, "status": f.status, "resolution": f.resolution,
         "resolved_by": f.resolved_by})
