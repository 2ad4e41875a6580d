"""What every `kb` command shares: the context object, output, and error -> exit code map."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from sqlalchemy import Engine
from sqlmodel import Session

from kb import db
from kb.articles import parse_cadence
from kb.clock import Clock, clock_for
from kb.errors import (
    ArticleNotFound,
    CanonError,
    Conflict,
    FlagNotFound,
    Forbidden,
    IndexBusy,
    InvalidArticle,
    InvalidInput,
    NotApproved,
    QueryNotFound,
    Unauthenticated,
    UserNotFound,
    VersionNotFound,
)
from kb.permissions import Actor, actor_for, require
from kb.settings import Settings

if TYPE_CHECKING:
    from assist.answer import Assistant
    from assist.follower import IndexLock
    from assist.index import ChunkIndex

# Pipes and CI logs get a wide, fixed width instead of rich's 80 columns.
_WIDTH = None if sys.stdout.isatty() else 140
out = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)

# One place that maps domain errors to exit codes.
EXIT_CODES: dict[type[CanonError], int] = {
    InvalidArticle: 3,
    InvalidInput: 2,
    ArticleNotFound: 4,
    VersionNotFound: 4,
    QueryNotFound: 4,
    FlagNotFound: 4,
    UserNotFound: 4,
    Unauthenticated: 7,
    NotApproved: 5,
    Conflict: 6,
    Forbidden: 7,
    IndexBusy: 8,
}

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
AsUser = Annotated[str | None, typer.Option("--as", help="The user acting (an existing, active user; default: KB_USER).")]


@dataclass
class Ctx:
    """Built once per command from the settings; the engine and index open lazily."""

    settings: Settings
    _engine: Engine | None = None
    _index: ChunkIndex | None = None
    _assistant: Assistant | None = None
    _lock: IndexLock | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = db.open_engine(self.settings)
        return self._engine

    @property
    def index(self) -> ChunkIndex:
        if self._index is None:
            from assist.runtime import make_index

            self._index = make_index(self.settings)
        return self._index

    @property
    def assistant(self) -> Assistant:
        if self._assistant is None:
            from assist.runtime import make_assistant

            self._assistant = make_assistant(self.settings, self.engine, self.index,
                                             clock=self.clock)
        return self._assistant

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
        if self._index is not None and self.settings.chroma_url:
            self._index.client.close()  # a Chroma server's HTTP connections
            self._index = self._assistant = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @property
    def clock(self) -> Clock:
        """The process's clock (KB_NOW pins it); every command reads time only from here."""
        return clock_for(self.settings.now)

    def actor(self, session: Session, name: str | None, action: str) -> Actor:
        """The user named by ``--as`` (or KB_USER), checked for the action's role: the same
        rule table the HTTP API applies. Team rules are checked by the workflow."""
        who = actor_for(session, name=name or self.settings.user)
        require(who, action)
        return who

    def index_writer(self) -> bool:
        """Whether this process may write the index now (see ``assist.follower``): always
        with a Chroma server; with an embedded index only while no server holds it."""
        from assist.follower import IndexLock

        if self._lock is None:
            self._lock = IndexLock.for_index(self.settings.data_dir, self.settings.chroma_url)
        return self._lock.acquire(timeout=0)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with db.session_scope(self.engine) as session:
            yield session


def fail(exc: CanonError) -> NoReturn:
    code = next((c for t, c in EXIT_CODES.items() if isinstance(exc, t)), 1)
    if isinstance(exc, InvalidArticle):
        for p in exc.problems:
            err.print(f"[red]error[/red] {p}")
    else:
        err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(code)


def get_ctx(ctx: typer.Context) -> Ctx:
    obj = ctx.find_root().obj
    assert isinstance(obj, Ctx)
    return obj


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def parse_duration(value: str) -> timedelta:
    try:
        return timedelta(days=parse_cadence(value))
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not a duration; use e.g. 14d, 2w or 1m") from None
