"""The interactive API docs (/docs, /redoc) served without a CDN.

FastAPI's default pages load Swagger UI and ReDoc from a CDN (and ReDoc its fonts from
Google), so they are blank on an offline network. The JavaScript and CSS come from the
``fastapi-offline`` package instead (Swagger UI 5 and ReDoc 2 dist files) and are served from
this app under :data:`STATIC_URL`, following FastAPI's "Custom Docs UI Static Assets" recipe:
the app is created with ``docs_url=None, redoc_url=None`` and :func:`install` adds the pages.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
STATIC_URL = "/docs/assets"

# Swagger UI's default validatorUrl sends the spec's URL to validator.swagger.io for a badge.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


def assets_dir() -> Path:
    """The folder holding swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon."""
    static = files("fastapi_offline") / "static"
    if not isinstance(static, Path):  # a zipped install has no folder StaticFiles could serve
        raise RuntimeError("fastapi-offline is not installed as files; reinstall it with pip")
    return static


def install(app: FastAPI) -> None:
    """Mount the assets and add /docs, /docs/oauth2-redirect and /redoc to ``app``."""
    if app.openapi_url is None:
        return
    openapi_url = app.openapi_url
    app.mount(STATIC_URL, StaticFiles(directory=assets_dir()), name="docs-static")

    def _root(request: Request) -> str:
        root: str = request.scope.get("root_path", "")
        return root.rstrip("/")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )
