"""The FastAPI app factory: `create_app(settings)`; nothing is built at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import console, docs, errors
from api.limits import BodyLimit
from api.logs import RequestIds
from api.metrics import Metrics, RequestMetrics
from api.ratelimit import make_limiter
from api.routes import articles, assist, health, health_knowledge, metrics, owners
from assist.answer import Assistant
from kb import db
from kb.clock import Clock, clock_for
from kb.errors import IndexBusy
from kb.settings import Settings


def create_app(settings: Settings | None = None, *, assistant: Assistant | None = None,
               clock: Clock | None = None) -> FastAPI:
    """Build the app. The engine, index and embedding model load at startup.

    Without ``settings`` they come from the environment (unknown ``KB_*`` names refused).
    """
    settings = settings or Settings.from_env()
    clock = clock or (assistant.clock if assistant else clock_for(settings.now))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from assist.follower import IndexFollower, IndexLock
        from assist.runtime import make_assistant

        lock = IndexLock.for_index(settings.data_dir, settings.chroma_url)
        if not lock.acquire(timeout=settings.index.writer_lock_wait_seconds):
            raise IndexBusy(
                f"another Canon server (pid {lock.holder()}) serves the embedded index in "
                f"{settings.data_dir}; an embedded index has one server process. Stop it, "
                "or run a Chroma server (`chroma run`) and set KB_CHROMA_URL for several "
                "workers")
        engine = assistant.engine if assistant else db.open_engine(settings)
        app.state.engine = engine
        app.state.assistant = assistant or make_assistant(settings, engine, clock=clock)
        index = app.state.assistant.index
        index.warm()  # the question graph, the catalog, the words typos are mended to
        follower = IndexFollower(engine=engine, index=index, lock=lock,
                                 max_chars=settings.index.chunk_max_chars, clock=clock,
                                 poll_seconds=settings.index.follow_seconds)
        app.state.follower = follower
        follower.start()  # repairs what a crash left behind, then follows every process
        try:
            yield
        finally:
            follower.stop()
            if assistant is None:
                engine.dispose()

    app = FastAPI(
        title="Canon",
        version="0.1.0",
        summary="Approved answers, verbatim, with citations — or a clear escalation.",
        lifespan=lifespan,
        docs_url=None,  # api/docs.py serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.limiter = make_limiter(settings)
    app.state.metrics = Metrics()
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)  # counts all
    app.add_middleware(RequestIds)  # outermost: every response carries X-Request-ID
    errors.install(app)
    docs.install(app)
    app.include_router(health.router)
    app.include_router(assist.router)
    app.include_router(articles.router)
    app.include_router(health_knowledge.router)
    app.include_router(owners.router)
    app.include_router(metrics.router)
    console.install(app)
    return app
