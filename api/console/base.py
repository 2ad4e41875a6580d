"""What every console page shares: templates, the signed-in caller, CSRF, errors.

A page names the action it performs, like an API route does with ``allow(action)``; the rule
is :func:`kb.permissions.may`, the same function. Team rules, four-eyes and the approval
checks run inside the :mod:`kb.workflows` functions the pages call, as for the API. A page a
role may not see answers 404, as the API does for an article outside the caller's audience:
the console does not tell an agent that the owners' desk exists.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlmodel import Session

from api.errors import status_for
from kb import console
from kb.errors import CanonError, Unauthenticated
from kb.permissions import Actor, may

HERE = Path(__file__).parent
COOKIE = "canon_session"
SIGNIN_COOKIE = "canon_signin"  # the sign-in form's CSRF secret (double submit)
CSRF_FIELD = "csrf_token"

templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                        autoescape=select_autoescape(["html", "svg"]),
                        trim_blocks=True, lstrip_blocks=True, auto_reload=False)


def _date(value: datetime | str | None, fmt: str = "%Y-%m-%d") -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime(fmt)


templates.filters["date"] = _date
templates.filters["datetime"] = lambda v: _date(v, "%Y-%m-%d %H:%M UTC")
templates.filters["pct"] = lambda v: "—" if v is None else f"{100 * v:.0f}%"


class SignInNeeded(Exception):
    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class PageNotFound(Exception):
    """404 for a page the caller may not see, or that does not exist."""


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    me: console.ConsoleIdentity | None = getattr(request.state, "console", None)
    actor = getattr(request.state, "actor", None)
    html = templates.get_template(name).render(
        request=request, me=actor, csrf=me.csrf if me else "", may=may, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


SECURITY_HEADERS = {
    # Everything the console uses is served from /ui/static; nothing inline runs.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; frame-ancestors 'self'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    return render(request, "error.html", status=status, title=title, detail=detail)


def _sign_in_redirect(request: Request, reason: str) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = "/ui"
    url = f"/ui/sign-in?next={quote(target, safe='')}"
    if reason:
        url += f"&why={quote(reason, safe='')}"
    response = RedirectResponse(url, status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


class ConsoleRoute(APIRoute):
    """Renders the domain's refusals as pages, with the API's status codes (api/errors.py)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInNeeded as exc:
                return _sign_in_redirect(request, exc.reason)
            except PageNotFound:
                return _error_page(request, 404, "Not found",
                                   "There is no such page, or it is not yours to see.")
            except CanonError as exc:
                code = status_for(exc)
                title = {403: "Not allowed", 404: "Not found", 409: "Conflict",
                         422: "Check your input"}.get(code, "Refused")
                return _error_page(request, code, title, str(exc))
            except RequestValidationError as exc:
                problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}"
                                     for e in exc.errors())
                return _error_page(request, 422, "Check your input", problems)
            except HTTPException as exc:
                return _error_page(request, exc.status_code, "Refused", str(exc.detail))

        return route


def _now(request: Request) -> datetime:
    now: datetime = request.app.state.clock()
    return now


def signed_in(request: Request) -> console.ConsoleIdentity:
    """The live console session behind the cookie, or a redirect to the sign-in page."""
    secret = request.cookies.get(COOKIE)
    if not secret:
        raise SignInNeeded()
    with Session(request.app.state.engine) as session:
        try:
            me = console.lookup(session, secret=secret, now=_now(request))
        except Unauthenticated as exc:
            raise SignInNeeded(str(exc)) from None
    who = me.identity
    request.state.console = me
    request.state.actor = Actor(id=who.name, role=who.role, teams=who.teams,
                                audiences=who.audiences, token_id=who.token_id)
    return me


def page(action: str) -> Callable[..., Awaitable[Actor]]:
    """The console's ``allow(action)``: the signed-in actor, if their role may do it
    (:func:`kb.permissions.may`); a page they may not see is 404."""
    from kb.permissions import RULES

    RULES[action]  # an unknown action is a programming error, caught at import

    async def dependency(me: Annotated[console.ConsoleIdentity, Depends(signed_in)],
                         request: Request) -> Actor:
        actor: Actor = request.state.actor
        if not may(actor, action):
            raise PageNotFound()
        return actor

    return dependency


def same_origin(request: Request) -> bool:
    """A post from a page of this site: Origin (or Referer) names this host, when sent."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return True  # not every client sends them; the CSRF token is the check
    parts = urlsplit(source)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"


async def csrf_checked(request: Request,
                       me: Annotated[console.ConsoleIdentity, Depends(signed_in)]) -> None:
    """Every console post carries the session's CSRF token and comes from this site."""
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not hmac.compare_digest(sent, me.csrf) \
            or not same_origin(request):
        raise HTTPException(403, "this form is out of date or did not come from the console "
                                 "(CSRF check failed); reload the page and try again")


def new_signin_secret() -> str:
    return secrets.token_urlsafe(24)


def safe_next(target: str | None) -> str:
    """Only a console path: never an open redirect."""
    if not target or not target.startswith("/ui") or target.startswith("//") \
            or "\\" in target:
        return "/ui"
    return target


Caller = Annotated[Actor, Depends(page("ask"))]
CsrfDep = Annotated[None, Depends(csrf_checked)]
