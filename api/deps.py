"""FastAPI dependencies as Annotated aliases. Tests override these, never patch modules.

Dependencies that only read app state are ``async``: FastAPI runs a plain ``def`` dependency
in the thread pool, and a hop per dependency per request is measurable under load.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlmodel import Session

from api.auth import Caller, allow
from api.metrics import Metrics
from api.ratelimit import RateLimiter
from assist.answer import Assistant
from kb.clock import Clock
from kb.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


async def get_assistant(request: Request) -> Assistant:
    assistant: Assistant = request.app.state.assistant
    return assistant


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
AssistDep = Annotated[Assistant, Depends(get_assistant)]
AnyCaller = Annotated[Caller, Depends(allow("ask"))]
StaffCaller = Annotated[Caller, Depends(allow("read_versions"))]
QueueCaller = Annotated[Caller, Depends(allow("queue"))]
ReviewCaller = Annotated[Caller, Depends(allow("review"))]
RetireCaller = Annotated[Caller, Depends(allow("retire"))]
ResolveCaller = Annotated[Caller, Depends(allow("resolve_flag"))]
ApproverCaller = Annotated[Caller, Depends(allow("approve"))]
InsightCaller = Annotated[Caller, Depends(allow("health"))]


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


ClockDep = Annotated[Clock, Depends(get_clock)]


async def get_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.limiter
    return limiter


LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


MetricsDep = Annotated[Metrics, Depends(get_metrics)]
