"""FastAPI dependencies as Annotated aliases. Tests override these, never patch modules."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy import Engine
from sqlmodel import Session

from assist.answer import Assistant
from kb.articles import AUDIENCE_RE
from kb.settings import Settings


@dataclass(frozen=True)
class Caller:
    """Who is calling and which audience they may see.

    Until API tokens land, the audience comes from the ``X-Canon-Audience`` header; the
    token-based dependency will return the same type, so routes do not change.
    """

    id: str
    audience: str


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


def get_assistant(request: Request) -> Assistant:
    assistant: Assistant = request.app.state.assistant
    return assistant


def get_caller(
    x_canon_audience: Annotated[str | None, Header()] = None,
    x_canon_caller: Annotated[str | None, Header()] = None,
) -> Caller:
    if not x_canon_audience:
        raise HTTPException(401, detail="send the caller's audience in the X-Canon-Audience "
                                        "header (internal, vendors or vendor:<name>)")
    if not AUDIENCE_RE.match(x_canon_audience):
        raise HTTPException(401, detail=f"unknown audience '{x_canon_audience}'; use internal, "
                                        "vendors or vendor:<name>")
    return Caller(id=(x_canon_caller or "anonymous")[:320], audience=x_canon_audience)


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
AssistDep = Annotated[Assistant, Depends(get_assistant)]
CurrentCaller = Annotated[Caller, Depends(get_caller)]
