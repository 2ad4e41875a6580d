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
from kb import governance, workflows
from kb.queue import review_queue

router = APIRouter(prefix="/v1", tags=["owners"])


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


@router.get("/review-queue")
def queue(caller: QueueCaller, session: SessionDep, clock: ClockDep) -> dict[str, Any]:
    """Stale and due-soon articles, pending versions, open flags and content gaps for the
    caller's teams, most urgent first."""
    items = review_queue(session, teams=_teams(caller), now=clock())
    counts: dict[str, int] = {}
    for item in items:
        counts[item["kind"]] = counts.get(item["kind"], 0) + 1
    return {"teams": _teams(caller) or "all", "counts": counts, "items": items}


@router.get("/articles")
def list_articles(caller: StaffCaller, session: SessionDep,
                  clock: ClockDep) -> list[dict[str, Any]]:
    """Every article with its governance state."""
    return [s.as_dict() for s in governance.statuses(session, now=clock())]


@router.get("/articles/{article_id}/versions")
def versions(article_id: str, caller: StaffCaller, session: SessionDep) -> dict[str, Any]:
    """Every version with author, approval, reviews and retirements."""
    return governance.history(session, article_id=article_id)


@router.get("/articles/{article_id}/diff")
def diff(article_id: str, caller: StaffCaller, session: SessionDep,
         from_: int = Query(alias="from", ge=1), to: int = Query(ge=1)) -> dict[str, Any]:
    """Unified diff between two versions."""
    return {"article_id": article_id, "from": from_, "to": to,
            "diff": governance.diff(session, article_id=article_id, a=from_, b=to)}


def _follow(request: Request) -> None:
    """This server indexes the change now; other servers follow within seconds."""
    follower = getattr(request.app.state, "follower", None)
    if follower is not None:
        follower.step(force=True)


@router.post("/articles/{article_id}/versions/{number}/approve")
async def approve(article_id: str, number: int, body: ApproveBody, caller: ApproverCaller,
                  session: SessionDep, assistant: AssistDep, clock: ClockDep,
                  request: Request) -> dict[str, Any]:
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
    return {"article_id": article_id, "version": number, "approver": a.approver,
            "at": a.at.isoformat(), "forced": a.forced, "findings": outcome.findings}


@router.post("/articles/{article_id}/review")
def review(article_id: str, body: ReviewBody, caller: ReviewCaller, session: SessionDep,
           clock: ClockDep) -> dict[str, Any]:
    """Record a re-verification of the served version (restarts the review clock)."""
    r = workflows.review(session, actor=caller, article_id=article_id, outcome=body.outcome,
                         note=body.note, now=clock())
    return {"article_id": article_id, "version": r.version_number, "outcome": r.outcome,
            "at": r.at.isoformat()}


@router.post("/articles/{article_id}/retire")
async def retire(article_id: str, body: RetireBody, caller: RetireCaller, session: SessionDep,
                 clock: ClockDep, request: Request) -> dict[str, Any]:
    """Stop serving the article."""
    r = workflows.retire(session, actor=caller, article_id=article_id, note=body.note,
                         now=clock())
    await run_in_threadpool(_follow, request)
    return {"article_id": article_id, "up_to_version": r.up_to_version, "at": r.at.isoformat()}


@router.post("/flags/{flag_id}/resolve")
def resolve(flag_id: int, body: ResolveBody, caller: ResolveCaller, session: SessionDep,
            clock: ClockDep) -> dict[str, Any]:
    """Close an agent's flag with a resolution."""
    f = workflows.resolve_flag(session, actor=caller, flag_id=flag_id,
                               resolution=body.resolution, note=body.note, now=clock())
    return {"flag_id": f.id, "status": f.status, "resolution": f.resolution,
            "resolved_by": f.resolved_by}
