"""Issue 12: two processes approve the same version at once on PostgreSQL.

Two real `kb approve` processes (two approvers, separate connections) race for one pending
version. To make them overlap every time, the test holds the governance clock's row lock
(every approval advances that counter in its transaction) until both processes have passed
their checks and wait on a lock; then it lets go. Exactly one approval is recorded; the
other process exits with the conflict code (6) and says who approved the version.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from .conftest import article_text
from .servers import PG_URL, kb_command, pg_database, python_env, setup_world

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (KB_TEST_DATABASE_URL)")]


def _waiting(conn: sa.Connection, database: str) -> int:
    waiting = int(conn.execute(sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND wait_event_type = 'Lock'"),
        {"d": database}).scalar_one())
    conn.rollback()  # the statistics are a snapshot per transaction
    return waiting


@pytest.mark.parametrize("rounds", [2])
def test_two_processes_approve_one_version_exactly_one_wins(tmp_path: Path,
                                                            rounds: int) -> None:
    content = tmp_path / "content"
    content.mkdir()
    with pg_database() as url:
        env = {"KB_DATA_DIR": str(tmp_path / ".canon"), "KB_CONTENT_DIR": str(content),
               "KB_DATABASE_URL": url}
        setup_world(env, content, {"refund-window": article_text("refund-window",
                                                                 owner="team-a")})
        database = sa.engine.make_url(url).database
        engine = sa.create_engine(url)
        for n in range(2, 2 + rounds):
            (content / "refund-window.md").write_text(article_text(
                "refund-window", owner="team-a",
                body=f"# Refunds\n## Rule\nThe window is {n * 10} days.\n"), encoding="utf-8")
            done = subprocess.run(kb_command("sync", "--as", "writer"), env=python_env(env),
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr
            with engine.connect() as holder:
                trans = holder.begin()
                holder.execute(sa.text("SELECT tick FROM governance_clock WHERE id = 1 "
                                       "FOR UPDATE"))
                procs = [subprocess.Popen(
                    kb_command("approve", "refund-window", "--version", str(n), "--as", who,
                               "--note", f"by {who}"),
                    env=python_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True) for who in ("lead", "lead2")]
                with engine.connect() as watch:
                    deadline = time.monotonic() + 180
                    # Both have passed every check; one waits on the clock row (held here),
                    # the other on the first (with the fix) or on the clock row (without).
                    while _waiting(watch, database) < 2:
                        assert time.monotonic() < deadline, [p.poll() for p in procs]
                        assert all(p.poll() is None for p in procs), [
                            p.communicate() for p in procs]
                        time.sleep(0.1)
                trans.rollback()
            results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
            codes = sorted(code for code, _, _ in results)
            assert codes == [0, 6], results
            loser = next(err for code, _, err in results if code == 6)
            assert f"version {n} of 'refund-window' was already approved by" in loser
            with engine.connect() as conn:
                approvals = conn.execute(sa.text(
                    "SELECT approver FROM approval WHERE article_id = 'refund-window' AND "
                    "version_number = :n"), {"n": n}).all()
                events = conn.execute(sa.text(
                    "SELECT count(*) FROM audit_event WHERE action = 'version_approved' AND "
                    "article_id = 'refund-window' AND version_number = :n"), {"n": n}).scalar_one()
            winner = next(out for code, out, _ in results if code == 0)
            assert len(approvals) == 1 and events == 1, approvals
            assert f"as {approvals[0][0]}" in winner
        engine.dispose()
