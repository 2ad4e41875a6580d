"""The FastAPI app factory: `create_app(settings)`; nothing is built at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.auth import RateLimiter
from api.routes import articles, assist, health, health_knowledge, owners
from assist.answer import Assistant
from kb import db
from kb.settings import Settings


def create_app(settings: Settings | None = None, *, assistant: Assistant | None = None) -> FastAPI:
    """Build the app. The engine, index and embedding model load at startup."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from assist.runtime import make_assistant

        engine = assistant.engine if assistant else db.open_engine(settings)
        app.state.engine = engine
        app.state.assistant = assistant or make_assistant(settings, engine)
        app.state.assistant.index.embedder.embed_query("warm up")
        app.state.assistant.index.catalog()
        yield
        if assistant is None:
            engine.dispose()

    app = FastAPI(
        title="Canon",
        version="0.1.0",
        summary="Approved answers, verbatim, with citations — or a clear escalation.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.limiter = RateLimiter(settings.assist_rate_per_minute)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(assist.router)
    app.include_router(articles.router)
    app.include_router(health_knowledge.router)
    app.include_router(owners.router)
    return app
