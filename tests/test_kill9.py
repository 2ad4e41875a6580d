"""Issue 12: `kill -9` of `kb sync`, `kb approve` and `kb index rebuild` at random points.

Each run edits or approves something, starts the real CLI in a child process, and kills it
with SIGKILL after a random delay drawn from 30-105% of how long that command takes
uninterrupted (so kills land in imports, checks, commits and indexing alike). Then:

- **the database is consistent**: SQLite's integrity check passes; every version's hash is
  the hash of its text and numbers run 1..latest; every approval names an existing version
  with its hash and has its audit event; nothing that existed before is gone or changed;
- **each article serves its previous approved version or one approved in this run**,
  never a pending one;
- **the index repairs itself** at the next `kb sync` (or, every third run, at what a starting
  server does first), after which it holds exactly the served versions, each chunk a
  byte-exact span of its version's text, and the answer path serves only those spans.

Two stacks: SQLite with the embedded index, and (with ``KB_TEST_DATABASE_URL``) a private
PostgreSQL database with a real Chroma server (`chroma run`), where a killed writer can
leave the shared index half-written for every server.

``CANON_KILL9_RUNS`` sets the number of runs per stack (default: 6 on the embedded stack and
3 on PostgreSQL + Chroma server in CI; the issue's long form is ``CANON_KILL9_RUNS=30`` or
more); ``CANON_KILL9_SEED`` the random seed.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import random
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from .conftest import article_text
from .servers import (
    PG_URL,
    chroma_server,
    kb_command,
    pg_database,
    python_env,
    run_kb,
    setup_world,
)

pytestmark = pytest.mark.slow

RUNS = os.environ.get("CANON_KILL9_RUNS")
SEED = int(os.environ.get("CANON_KILL9_SEED", str(int(time.time()))))
ARTICLES = [f"policy-{name}" for name in ("refunds", "shipping", "warranty", "returns",
                                           "billing", "security")]
COMMANDS = ("sync", "approve", "rebuild")


def _body(art: str, n: int) -> str:
    topic = art.split("-", 1)[1]
    return (f"# {topic.capitalize()} policy\n## The rule\nThe {topic} rule gives customers "
            f"{n} days. Agents quote the {topic} rule exactly.\n\n## Exceptions\nNo "
            f"exceptions to the {topic} rule apply for plan {n}.\n")


def _snapshot(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        versions = conn.execute(sa.text(
            "SELECT article_id, number, content_sha256, text FROM article_version")).all()
        approvals = conn.execute(sa.text(
            "SELECT id, article_id, version_number, content_sha256, approver FROM approval"
        )).all()
        events = conn.execute(sa.text(
            "SELECT id, action, article_id, version_number FROM audit_event")).all()
        latest = dict(conn.execute(sa.text("SELECT id, latest_version FROM article")).all())
        retired = dict(conn.execute(sa.text(
            "SELECT article_id, max(up_to_version) FROM retirement GROUP BY article_id")).all())
        integrity = (conn.exec_driver_sql("PRAGMA integrity_check").scalar_one()
                     if engine.dialect.name == "sqlite" else "ok")
    served: dict[str, int] = {}
    for _, art, n, _, _ in approvals:
        if n > retired.get(art, 0) and n > served.get(art, 0):
            served[art] = n
    return {"versions": {(a, n): (sha, text) for a, n, sha, text in versions},
            "approvals": {row[0]: tuple(row[1:]) for row in approvals},
            "events": {row[0]: tuple(row[1:]) for row in events},
            "latest": latest, "served": served, "integrity": integrity}


def _check_consistent(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    problems = []
    if after["integrity"] != "ok":
        problems.append(f"integrity_check: {after['integrity']}")
    for (art, n), (sha, text) in after["versions"].items():
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != sha:
            problems.append(f"{art} v{n}: stored hash is not the hash of its text")
    for art, latest in after["latest"].items():
        numbers = sorted(n for a, n in after["versions"] if a == art)
        if numbers != list(range(1, latest + 1)):
            problems.append(f"{art}: versions {numbers}, latest_version {latest}")
    approved_events = {(a, n) for action, a, n in after["events"].values()
                       if action == "version_approved"}
    pairs = [(a, n) for a, n, _, _ in after["approvals"].values()]
    if len(pairs) != len(set(pairs)):
        problems.append(f"a version approved twice: {sorted(pairs)}")
    for art, n, sha, _ in after["approvals"].values():
        version = after["versions"].get((art, n))
        if version is None or version[0] != sha:
            problems.append(f"approval of {art} v{n} names no such version/hash")
        if (art, n) not in approved_events:
            problems.append(f"approval of {art} v{n} has no audit event")
    for key in ("versions", "approvals", "events"):
        for k, v in before[key].items():
            if after[key].get(k) != v:
                problems.append(f"{key} {k} lost or changed")
    new_approvals = {(a, n) for i, (a, n, _, _) in after["approvals"].items()
                     if i not in before["approvals"]}
    for art, n in after["served"].items():
        if before["served"].get(art) != n and (art, n) not in new_approvals:
            problems.append(f"{art} serves v{n}: neither its previous version "
                            f"({before['served'].get(art)}) nor one approved now")
    return problems


def _check_index(env: dict[str, str], *, repair_start: bool) -> dict[str, Any]:
    questions = [f"how many days does the {a.split('-', 1)[1]} rule give customers?"
                 for a in ARTICLES[:3]]
    args = ["-m", "tests.fault_check", *(["--repair-start"] if repair_start else []),
            *questions]
    done = subprocess.run([kb_command()[0], *args], env=python_env(env), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture(params=["embedded"] + (["postgresql-chroma-server"] if PG_URL else []))
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[dict[str, str], int]]:
    """(the KB_* environment, the number of runs) of one stack."""
    env = {"KB_DATA_DIR": str(tmp_path / ".canon"), "KB_CONTENT_DIR": str(tmp_path / "content")}
    if request.param == "embedded":
        yield {**env, "KB_DATABASE_URL": f"sqlite:///{tmp_path}/canon.db"}, int(RUNS or 6)
        return
    with ExitStack() as stack:
        env["KB_DATABASE_URL"] = stack.enter_context(pg_database())
        env["KB_CHROMA_URL"] = stack.enter_context(chroma_server(tmp_path / "chroma"))
        yield env, int(RUNS or 3)
    with warnings.catch_warnings():  # the in-process CLI's Chroma HTTP client leaves
        warnings.simplefilter("ignore")  # keep-alive sockets to the garbage collector
        gc.collect()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_kill9_at_random_points_leaves_everything_consistent(
        stack: tuple[dict[str, str], int]) -> None:
    env, runs = stack
    rng = random.Random(SEED)
    content = Path(env["KB_CONTENT_DIR"])
    content.mkdir()
    setup_world(env, content, {a: article_text(a, owner="team-a", body=_body(a, 10))
                               for a in ARTICLES})
    engine = sa.create_engine(env["KB_DATABASE_URL"])
    counter = iter(range(11, 10_000))

    def edit(k: int) -> None:
        for art in rng.sample(ARTICLES, k):
            (content / f"{art}.md").write_text(article_text(
                art, owner="team-a", body=_body(art, next(counter))), encoding="utf-8")

    def command(kind: str) -> list[str]:
        if kind == "sync":
            edit(rng.randint(1, 4))
            return kb_command("sync", "--as", "writer")
        if kind == "approve":
            if not any(n > _snapshot(engine)["served"].get(a, 0)
                       for a, n in _snapshot(engine)["latest"].items()):
                edit(2)
                run_kb(env, "sync", "--as", "writer")
            return kb_command("approve", "--all", "--as", "lead")
        return kb_command("index", "rebuild", "--as", "admin")

    # How long each command takes when not killed (kills are drawn within that time): the
    # shorter of two runs, because a first run in a fresh checkout also compiles bytecode
    # and warms the disk cache; drawn from its time alone, most later (faster) runs ended
    # before their kill.
    durations: dict[str, float] = {}
    for _ in range(2):
        for kind in COMMANDS:
            argv = command(kind)
            started = time.monotonic()
            done = subprocess.run(argv, env=python_env(env), capture_output=True, text=True,
                                  timeout=300)
            assert done.returncode == 0, done.stderr
            took = time.monotonic() - started
            durations[kind] = min(durations.get(kind, took), took)

    killed = finished = changed = 0
    for run in range(runs):
        kind = COMMANDS[run % len(COMMANDS)]
        argv = command(kind)
        before = _snapshot(engine)
        delay = rng.uniform(0.3, 1.05) * durations[kind]
        proc = subprocess.Popen(argv, env=python_env(env), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
            finished += 1
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed += 1
        after = _snapshot(engine)
        changed += any(after[k] != before[k] for k in ("versions", "approvals"))
        context = f"run {run} ({kind}, killed after {delay:.2f} s, seed {SEED})"
        assert _check_consistent(before, after) == [], context
        repair_start = run % 3 == 2
        if not repair_start:
            run_kb(env, "sync", "--as", "writer")  # the next sync repairs the index
            assert _check_consistent(after, _snapshot(engine)) == [], context
        report = _check_index(env, repair_start=repair_start)
        assert report["problems"] == [], (context, report)
        assert report["manifest"] == _snapshot(engine)["served"], context
    engine.dispose()
    name = "PostgreSQL + Chroma server" if "KB_CHROMA_URL" in env else "SQLite, embedded index"
    print(f"kill -9 ({name}): {runs} runs ({killed} killed, {finished} finished first, {changed} "
          "committed something before the kill or the end), "
          f"seed {SEED}, durations {durations}")
    assert killed >= runs // 2, f"too few runs were killed: {killed} of {runs}"
