"""The agent's answer panel: ask, read the answer with its citations, flag a passage, open
the cited article. Each calls the API route's own function, so the rules are the API's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from pydantic import ValidationError

from api.console.base import Caller, ConsoleRoute, CsrfDep, PageNotFound, render
from api.console.markdown import RenderedSection, block_html, cached_sections
from api.deps import AssistDep, ClockDep, LimiterDep, MetricsDep, SessionDep, SettingsDep
from api.routes import articles as articles_route
from api.routes import assist as assist_route
from api.schemas import AssistRequest, AssistResponse, FeedbackRequest
from kb.flags import REASONS
from kb.governance import get_version

router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)


def handoff_text(answer: AssistResponse) -> str:
    """The escalation as text for the ticket (what the copy button copies)."""
    e = answer.escalation
    if e is None:
        return ""
    lines = [f"Escalate to: {e.team}", f"Reason: {e.reason}", f"Question: {e.question}",
             f"Note: {e.message}"]
    for f in e.found[:3]:
        title = f.get("title") or f.get("article_id")
        lines.append(f"Found: {title} (v{f.get('version')}, {f.get('article_id')})")
    lines.append(f"Canon query: {answer.query_id}")
    return "\n".join(lines)


@router.get("")
def ask_page(request: Request, caller: Caller) -> Response:
    return render(request, "ask.html", question="", answer=None, error=None, reasons=REASONS)


@router.post("/ask")
async def ask(request: Request, caller: Caller, _: CsrfDep, assistant: AssistDep,
              limiter: LimiterDep, metrics: MetricsDep,
              question: Annotated[str, Form(max_length=4000)] = "") -> Response:
    try:
        body = AssistRequest(question=question)
    except ValidationError as exc:
        message = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        return render(request, "ask.html", status=422, question=question, answer=None,
                      error=message, reasons=REASONS)
    answer = await assist_route.assist(body, caller, assistant, limiter, metrics)
    return render(request, "ask.html", question=question, answer=answer, error=None,
                  reasons=REASONS, handoff=handoff_text(answer))


@router.post("/answers/{query_id}/flag")
def flag(request: Request, query_id: str, caller: Caller, _: CsrfDep, session: SessionDep,
         settings: SettingsDep, clock: ClockDep,
         reason: Annotated[str, Form()], passage: Annotated[int, Form(ge=0, le=9)] = 0,
         comment: Annotated[str, Form(max_length=2000)] = "") -> Response:
    try:
        body = FeedbackRequest(helpful=False, reason=reason,
                               comment=comment or None, passage=passage)
    except ValidationError:
        return render(request, "error.html", status=422, title="Check your input",
                      detail=f"choose a reason: one of {', '.join(REASONS)}")
    out = assist_route.feedback(query_id, body, caller, session, settings, clock)
    return render(request, "flagged.html", flag=out, reason=reason)


@router.get("/read/{article_id}")
def read_article(request: Request, article_id: str, caller: Caller,
                 session: SessionDep) -> Response:
    """The served version, as /v1/articles/{id} gives it to this caller (audience-scoped; a
    high-risk article shows only its approved blocks)."""
    article = articles_route.served_article(article_id, caller, session)
    sections: tuple[RenderedSection, ...] = ()
    blocks: list[tuple[str, str]] = []
    if article.text is not None:
        version = get_version(session, article_id=article_id, number=article.version)
        sections = cached_sections(version.content_sha256, version.text)
    else:
        blocks = [(b.anchor, block_html(b.text)) for b in article.approved_blocks]
    heading = {s.anchor: " \u203a ".join(s.heading_path) for s in article.sections}
    return render(request, "read.html", article=article, sections=sections, blocks=blocks,
                  heading=heading)


fallback = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)


@fallback.get("/{rest:path}")
def not_found(request: Request, rest: str, caller: Caller) -> Response:
    """Any other console address: signed in or not, nothing is told about it."""
    raise PageNotFound()
