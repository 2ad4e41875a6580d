"""Index freshness across processes: who writes the index, and how servers follow changes.

The database is the source of truth for what is served; the index is a cache of it. Any
process (the CLI, another worker, another machine) may commit an approval or a retirement;
every running server must serve it within seconds, never serve another article in its
place, and never corrupt the index.

- **One writer for an embedded index.** Embedded Chroma keeps its vectors in the memory of
  the process that opened it, so two processes writing one folder corrupt each other's view
  (a server kept old vectors for minutes). A server takes an exclusive lock on the index
  folder for its lifetime and is its only writer; a CLI command writes the index only when
  no server holds the lock, and otherwise leaves the work to the server. With a Chroma
  server (``KB_CHROMA_URL``) the vectors live in one place, so every process may write:
  re-indexing an article is idempotent.
- **Servers follow the governance clock.** Every approval, review and retirement bumps a
  one-row counter in the same transaction. Each server polls it (one tiny query every
  ``poll_seconds``); when it moves, the server re-reads the catalog, compares what the
  database serves with what the index holds, and re-indexes the difference. At start-up and
  every ``full_check_seconds`` it does the same regardless, which repairs an index left
  behind by a crash (an approval committed, its indexing killed).
- **During the lag, the previous approved text keeps serving** (see ``Assistant``), bounded
  by ``max_lag_seconds``; past it the article is hidden, and ``/readyz`` reports not ready.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from assist import indexer
from assist.index import ChunkIndex
from kb.clock import Clock, system_clock
from kb.governance import governance_tick, served_numbers
from kb.models import Approval, Retirement

LOCK_NAME = "canon-writer.lock"
log = logging.getLogger("canon.index")


class IndexLock:
    """An exclusive, advisory lock on an embedded index folder (``flock``): the holder is
    the index's only writer. The kernel releases it when the process dies, so a crash never
    leaves a stale lock. ``path=None`` (a Chroma server) means every process may write."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    @classmethod
    def for_index(cls, data_dir: Path, chroma_url: str | None) -> IndexLock:
        return cls(None if chroma_url else data_dir / "chroma" / LOCK_NAME)

    @property
    def held(self) -> bool:
        return self.path is None or self._fh is not None

    def acquire(self, *, timeout: float = 0.0) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds; False if another process has it."""
        if self.held:
            return True
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the lifetime)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.close()
                    return False
                time.sleep(0.05)
                continue
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            self._fh = fh
            return True

    def holder(self) -> str:
        """Who holds the lock (the pid written by the holder), for messages."""
        try:
            return (self.path.read_text(encoding="utf-8").strip() or "?") if self.path else "-"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


@dataclass
class IndexLag:
    """How far the index is behind the database."""

    behind: list[str] = field(default_factory=list)  # served != indexed
    oldest_change: datetime | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"behind": self.behind, "lag_seconds": round(self.seconds, 3),
                "oldest_change": self.oldest_change.isoformat() if self.oldest_change else None}


def index_lag(session: Session, index: ChunkIndex, *, now: datetime,
              check: bool = True) -> IndexLag:
    """Articles whose served version the index does not hold, and since when."""
    served = served_numbers(session)
    indexed = index.manifest(check=check)
    behind = sorted(a for a in set(served) | set(indexed) if served.get(a) != indexed.get(a))
    if not behind:
        return IndexLag()
    changes: list[datetime] = []
    approved = [(a, served[a]) for a in behind if a in served]
    if approved:
        for a, n, at in session.exec(
            select(Approval.article_id, Approval.version_number, Approval.at)
            .where(col(Approval.article_id).in_([a for a, _ in approved]))
        ).all():
            if served.get(a) == n:
                changes.append(at)
    gone = [a for a in behind if a not in served]
    if gone:
        changes.extend(session.exec(
            select(func.max(Retirement.at)).where(col(Retirement.article_id).in_(gone))
            .group_by(col(Retirement.article_id))
        ).all())
    oldest = min(changes) if changes else None
    seconds = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
    return IndexLag(behind=behind, oldest_change=oldest, seconds=seconds)


class IndexFollower:
    """Keeps one server's index in step with the database (see the module docstring)."""

    def __init__(
        self, *, engine: Engine, index: ChunkIndex, lock: IndexLock, max_chars: int,
        clock: Clock = system_clock, poll_seconds: float = 0.5,
        full_check_seconds: float = 30.0,
    ) -> None:
        self.engine = engine
        self.index = index
        self.lock = lock
        self.max_chars = max_chars
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.full_check_seconds = full_check_seconds
        self.last_error: str | None = None
        self.last_step_at: float = 0.0
        self._tick: int | None = None
        self._full_at = 0.0
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self, *, force: bool = False) -> indexer.RefreshReport | None:
        """Re-index what changed since the last step (everything is compared when ``force``
        or when the periodic full check is due). Returns the report, or None if idle."""
        with self._mutex:
            try:
                with self.engine.connect() as conn:
                    tick = governance_tick(conn)
                mono = time.monotonic()
                full = force or mono - self._full_at >= self.full_check_seconds
                if tick == self._tick and not full:
                    self.last_step_at = mono
                    return None
                self.index.catalog(check=True)  # another writer may have done it already
                report = None
                if self.lock.held:
                    with Session(self.engine) as session:
                        report = indexer.refresh(session, self.index, max_chars=self.max_chars)
                    if report.changed:
                        # Load the new catalog here, on the follower's thread, so the next
                        # question finds it loaded rather than loading it itself.
                        self.index.catalog(check=True)
                if self.last_error is not None:
                    log.info("index follower recovered", extra={"fields": {
                        "was": self.last_error[:500]}})
                self._tick = tick
                if full:
                    self._full_at = mono
                self.last_step_at = mono
                self.last_error = None
                return report
            except Exception as exc:  # kept for /readyz; the next poll retries
                error = f"{type(exc).__name__}: {exc}"
                if error != self.last_error:  # once per outage, not once per poll
                    log.warning("index follower failed; retrying", extra={"fields": {
                        "error": error[:500]}})
                self.last_error = error
                return None

    def start(self) -> None:
        """Repair the index now, then follow changes on a daemon thread."""
        self.step(force=True)
        self._thread = threading.Thread(target=self._run, name="canon-index-follower",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.step()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.lock.release()
