"""The owners' desk: the review queue, an article's page (served text, versions, audit),
side-by-side diffs, approve (findings first; forcing needs a note), review, retire, resolve a
flag, and search. Reads and writes call the owners' API route functions, so every rule is the
API's: roles from kb.permissions, teams, four-eyes and the checks in kb.workflows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool

from api.approvals import approval_findings
from api.console.base import ConsoleRoute, CsrfDep, PageNotFound, page, render, signed_in
from api.console.diffview import side_by_side
from api.console.markdown import cached_sections
from api.deps import AssistDep, ClockDep, SessionDep
from api.routes import owners
from kb import audit, governance
from kb.console import ConsoleIdentity
from kb.errors import ApprovalBlocked, InvalidInput
from kb.flags import RESOLUTIONS
from kb.models import Article, Flag, QueryLog
from kb.permissions import Actor, require

router = APIRouter(prefix="/ui/desk", route_class=ConsoleRoute, include_in_schema=False)

QueueReader = Annotated[Actor, Depends(page("queue"))]
VersionReader = Annotated[Actor, Depends(page("read_versions"))]
Lister = Annotated[Actor, Depends(page("list_articles"))]
ApproverPage = Annotated[Actor, Depends(page("approve"))]


def act(action: str) -> Callable[..., Awaitable[Actor]]:
    """A console action: the role rule of :func:`kb.permissions.require` (403 with the
    domain's message, like the API's); team rules follow in the workflow."""

    async def dependency(me: Annotated[ConsoleIdentity, Depends(signed_in)],
                         request: Request) -> Actor:
        actor: Actor = request.state.actor
        require(actor, action)
        return actor

    return dependency


DONE = {"approved": "Approved.", "approved_forced": "Approved over findings (forced, with "
        "your note); the override is in the audit log.", "reviewed": "Review recorded.",
        "retired": "Retired: the article is no longer served.",
        "resolved": "Flag resolved."}


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.get("")
def queue_page(request: Request, caller: QueueReader, session: SessionDep, clock: ClockDep,
               assistant: AssistDep) -> Response:
    out = owners.queue(caller, session, clock, assistant)
    return render(request, "queue.html", nav="desk", queue=out, done=DONE.get(
        request.query_params.get("done", "")))


@router.get("/flags/{flag_id}")
def flag_page(request: Request, flag_id: int, caller: QueueReader,
              session: SessionDep) -> Response:
    row = session.get(Flag, flag_id)
    if row is None:
        raise PageNotFound()
    query = session.get(QueryLog, row.query_id)
    before = span = after = ""
    if row.article_id is not None and row.version_number is not None and row.start is not None:
        text = governance.get_version(session, article_id=row.article_id,
                                      number=row.version_number).text
        end = row.end if row.end is not None else row.start
        before = text[max(0, row.start - 400):row.start]
        span, after = text[row.start:end], text[end:end + 400]
    article = session.get(Article, row.article_id) if row.article_id else None
    return render(request, "flag.html", nav="desk", flag=row, query=query, article=article,
                  before=before, span=span, after=after, resolutions=RESOLUTIONS)


@router.post("/flags/{flag_id}/resolve")
def resolve_flag(request: Request, flag_id: int, _: CsrfDep,
                 caller: Annotated[Actor, Depends(act("resolve_flag"))], session: SessionDep,
                 clock: ClockDep, resolution: Annotated[str, Form()],
                 note: Annotated[str, Form(max_length=2000)] = "") -> Response:
    owners.resolve(flag_id, owners.ResolveBody(resolution=resolution, note=note), caller,
                   session, clock)
    return _see_other("/ui/desk?done=resolved")


def _article_context(session: Session, article_id: str, caller: Actor,
                     clock: ClockDep) -> dict[str, Any]:
    history = owners.versions(article_id, caller, session)
    status = governance.statuses(session, article_id=article_id, now=clock())[0]
    sections: tuple[Any, ...] = ()
    served_text = None
    if history.served_version is not None:
        v = governance.get_version(session, article_id=article_id,
                                   number=history.served_version)
        served_text = v
        sections = cached_sections(v.content_sha256, v.text)
    article = governance.get_article(session, article_id=article_id)
    return {"history": history, "st": status, "sections": sections,
            "served": served_text, "article": article,
            "events": audit.events(session, article_id=article_id, limit=40)}


@router.get("/articles/{article_id}")
def article_page(request: Request, article_id: str, caller: VersionReader,
                 session: SessionDep, clock: ClockDep) -> Response:
    ctx = _article_context(session, article_id, caller, clock)
    return render(request, "article.html", nav="search", **ctx,
                  done=DONE.get(request.query_params.get("done", "")))


@router.get("/articles/{article_id}/diff")
def diff_page(request: Request, article_id: str, caller: VersionReader,
              session: SessionDep) -> Response:
    """Two versions side by side (``?from=N&to=M``; default: the last two)."""
    params = request.query_params
    history = owners.versions(article_id, caller, session)
    numbers = [v.number for v in history.versions]
    try:
        a = int(params.get("from", "") or (numbers[-2] if len(numbers) > 1 else numbers[-1]))
        b = int(params.get("to", "") or numbers[-1])
    except ValueError:
        raise PageNotFound() from None
    va = governance.get_version(session, article_id=article_id, number=a)
    vb = governance.get_version(session, article_id=article_id, number=b)
    full = params.get("context") == "all"
    rows = side_by_side(va.text, vb.text, context=None if full else 3)
    return render(request, "diff.html", nav="search", history=history, a=va, b=vb, rows=rows,
                  full=full)


@router.get("/articles/{article_id}/versions/{number}/approve")
async def approve_page(request: Request, article_id: str, number: int, caller: ApproverPage,
                       session: SessionDep, assistant: AssistDep) -> Response:
    """Every finding before the approval: conflicts, suite expectations that would break,
    questions it would stop answering (a dry run: nothing is written)."""
    findings = await run_in_threadpool(approval_findings, session, assistant,
                                       article_id=article_id, number=number)
    return _approve_form(request, session, article_id, number,
                         [f.as_dict() for f in findings], error=None)


def _approve_form(request: Request, session: Session, article_id: str, number: int,
                  findings: list[dict[str, Any]], error: str | None,
                  status: int = 200) -> Response:
    target = governance.get_version(session, article_id=article_id, number=number)
    served = governance.served_version(session, article_id=article_id)
    rows = side_by_side(served.text if served else "", target.text)
    article = governance.get_article(session, article_id=article_id)
    return render(request, "approve.html", nav="desk", article=article, target=target,
                  served=served, rows=rows, findings=findings, error=error, status=status)


@router.post("/articles/{article_id}/versions/{number}/approve")
async def approve(request: Request, article_id: str, number: int, _: CsrfDep,
                  caller: Annotated[Actor, Depends(act("approve"))], session: SessionDep,
                  assistant: AssistDep, clock: ClockDep,
                  note: Annotated[str, Form(max_length=2000)] = "",
                  force: Annotated[bool, Form()] = False) -> Response:
    try:
        out = await owners.approve(article_id, number, owners.ApproveBody(note=note, force=force),
                                   caller, session, assistant, clock, request)
    except ApprovalBlocked as exc:
        return _approve_form(request, session, article_id, number, exc.findings,
                             error=str(exc), status=409)
    except InvalidInput as exc:  # forced without a note: show the findings again
        findings = await run_in_threadpool(approval_findings, session, assistant,
                                           article_id=article_id, number=number)
        return _approve_form(request, session, article_id, number,
                             [f.as_dict() for f in findings], error=str(exc), status=422)
    done = "approved_forced" if out.forced else "approved"
    return _see_other(f"/ui/desk/articles/{article_id}?done={done}")


@router.post("/articles/{article_id}/review")
def review(request: Request, article_id: str, _: CsrfDep,
           caller: Annotated[Actor, Depends(act("review"))], session: SessionDep,
           clock: ClockDep, outcome: Annotated[str, Form()] = "verified",
           note: Annotated[str, Form(max_length=2000)] = "") -> Response:
    owners.review(article_id, owners.ReviewBody(outcome=outcome, note=note), caller, session,
                  clock)
    return _see_other(f"/ui/desk/articles/{article_id}?done=reviewed")


@router.post("/articles/{article_id}/retire")
async def retire(request: Request, article_id: str, _: CsrfDep,
                 caller: Annotated[Actor, Depends(act("retire"))], session: SessionDep,
                 clock: ClockDep, note: Annotated[str, Form(max_length=2000)] = "") -> Response:
    await owners.retire(article_id, owners.RetireBody(note=note), caller, session, clock,
                        request)
    return _see_other(f"/ui/desk/articles/{article_id}?done=retired")


STATES = ("draft", "pending", "approved", "approved+pending", "retired", "stale")


@router.get("/search")
def search(request: Request, caller: Lister, session: SessionDep, clock: ClockDep,
           q: str = "", owner: str = "", tag: str = "", state: str = "") -> Response:
    """Articles by title or id (``q``), owner, tag and state."""
    rows = owners.list_articles(caller, session, clock)
    tags = {a: [str(t) for t in (m.get("tags") or [])]
            for a, m in session.exec(select(Article.id, Article.meta)).all()}
    needle = q.strip().lower()
    hits = [
        r for r in rows
        if (not needle or needle in r.id.lower() or needle in r.title.lower())
        and (not owner or r.owner == owner)
        and (not tag or tag in tags.get(r.id, []))
        and (not state or (r.stale if state == "stale" else r.state == state))
    ]
    return render(request, "search.html", nav="search", rows=hits, tags=tags, q=q,
                  owner=owner, tag=tag, state=state, states=STATES, total=len(rows),
                  owners=sorted({r.owner for r in rows}),
                  all_tags=sorted({t for ts in tags.values() for t in ts}))
