"""Shared fixtures: real SQLite in tmp_path (and PostgreSQL when KB_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import os
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session

from kb import db
from kb.settings import Settings

PG_URL = os.environ.get("KB_TEST_DATABASE_URL")
_LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost"}
_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    """No test may reach the network: only loopback and Unix sockets are allowed."""
    if isinstance(address, tuple) and address and address[0] not in _LOCAL_HOSTS:
        raise OSError(f"network access blocked in tests: tried to connect to {address!r}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> Iterator[None]:
    """Runs the whole suite with outbound connections blocked (the product is offline)."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["ANONYMIZED_TELEMETRY"] = "False"
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def reset_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        assert PG_URL
        reset_postgres(PG_URL)
        return PG_URL
    return f"sqlite:///{tmp_path / 'canon.db'}"


@pytest.fixture
def content_dir(tmp_path: Path) -> Path:
    path = tmp_path / "content"
    path.mkdir()
    return path


@pytest.fixture
def settings(tmp_path: Path, database_url: str, content_dir: Path) -> Settings:
    return Settings(data_dir=tmp_path / ".canon", database_url=database_url,
                    content_dir=content_dir)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = db.open_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        yield s


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that points the real `kb` CLI at a test's database, index and content
    (plus ``extra`` KB_* variables)."""
    return {"KB_DATA_DIR": str(settings.data_dir),
            "KB_DATABASE_URL": settings.resolved_database_url,
            "KB_CONTENT_DIR": str(settings.content_dir), **extra}


def article_text(
    art_id: str,
    *,
    title: str | None = None,
    owner: str = "billing-knowledge",
    review_every: str = "90d",
    body: str | None = None,
    **extra: Any,
) -> str:
    """A valid article file with the given front matter and body."""
    title = title or art_id.replace("-", " ").capitalize()
    lines = ["---", f"id: {art_id}", f"title: {title}", f"owner: {owner}",
             f"review_every: {review_every}"]
    for key, value in extra.items():
        if isinstance(value, list):
            value = "[" + ", ".join(value) + "]"
        elif isinstance(value, bool):
            value = "true" if value else "false"
        lines.append(f"{key}: {value}")
    lines.append("---")
    if body is None:
        body = f"""\
            # {title}
            Overview of {title.lower()}.

            ## Details
            The rule for {art_id} is 30 days.
            """
    return "\n".join(lines) + "\n" + textwrap.dedent(body)


def write_article(root: Path, art_id: str, *, path: str | None = None, **kwargs: Any) -> Path:
    target = root / (path or f"{art_id}.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(article_text(art_id, **kwargs), encoding="utf-8")
    return target
