"""Sign in with an API token, sign out."""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse
from sqlmodel import Session

from api.console.base import (
    COOKIE,
    SIGNIN_COOKIE,
    ConsoleRoute,
    CsrfDep,
    new_signin_secret,
    render,
    safe_next,
    same_origin,
)
from kb import console
from kb.errors import Unauthenticated

router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/sign-in")
def sign_in_form(request: Request, next: str = "/ui", why: str = "") -> Response:
    secret = new_signin_secret()
    response = render(request, "sign_in.html", next=safe_next(next), why=why[:200],
                      signin_csrf=secret, error=None)
    response.set_cookie(SIGNIN_COOKIE, secret, max_age=900, path="/ui", httponly=True,
                        samesite="strict", secure=_secure(request))
    return response


@router.post("/sign-in")
def sign_in(request: Request, token: Annotated[str, Form(max_length=500)],
            csrf_token: Annotated[str, Form(max_length=200)],
            next: Annotated[str, Form(max_length=2000)] = "/ui") -> Response:
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf_token) \
            or not same_origin(request):
        secret = new_signin_secret()
        response = render(request, "sign_in.html", status=403, next=safe_next(next), why="",
                          signin_csrf=secret,
                          error="The sign-in form expired or did not come from this site; "
                                "try again.")
        response.set_cookie(SIGNIN_COOKIE, secret, max_age=900, path="/ui", httponly=True,
                            samesite="strict", secure=_secure(request))
        return response
    settings = request.app.state.settings
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        try:
            me, secret = console.open_session(
                session, token=token,
                ttl=timedelta(minutes=settings.console_session_minutes),
                now=request.app.state.clock())
        except Unauthenticated as exc:
            retry = new_signin_secret()
            response = render(request, "sign_in.html", status=401, next=safe_next(next),
                              why="", signin_csrf=retry, error=str(exc))
            response.set_cookie(SIGNIN_COOKIE, retry, max_age=900, path="/ui", httponly=True,
                                samesite="strict", secure=_secure(request))
            return response
    redirect = RedirectResponse(safe_next(next), status_code=303)
    max_age = max(1, int((me.expires_at - request.app.state.clock()).total_seconds()))
    redirect.set_cookie(COOKIE, secret, max_age=max_age, path="/ui", httponly=True,
                        samesite="lax", secure=_secure(request))
    redirect.delete_cookie(SIGNIN_COOKIE, path="/ui")
    return redirect


@router.post("/sign-out")
def sign_out(request: Request, _: CsrfDep) -> Response:
    secret = request.cookies.get(COOKIE, "")
    with Session(request.app.state.engine) as session:
        console.close_session(session, secret=secret, now=request.app.state.clock())
    response = RedirectResponse("/ui/sign-in?why=" + "you+signed+out", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response
