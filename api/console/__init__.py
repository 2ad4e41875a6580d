"""The web console under ``/ui``: server-rendered pages (Jinja2) on the same app, rules and
workflows as the HTTP API. Assets are files in ``static/``; nothing comes from a CDN."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.console import agent, dashboard, desk, signin
from api.console.base import HERE


def install(app: FastAPI) -> None:
    app.include_router(signin.router)
    app.include_router(agent.router)
    app.include_router(desk.router)
    app.include_router(dashboard.router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(agent.fallback)  # last: every other /ui address is the console's 404
