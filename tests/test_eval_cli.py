"""The eval harness end to end: the demo suite under its CI gate, a planted regression that
the gate catches, corrupted stored text caught by the verbatim check, compare, report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session
from typer.testing import CliRunner

from api.cli import app
from evals import runner
from evals.suites import load_suite
from evals.workspace import scratch_workspace
from kb.settings import Settings
from tests.kbs import shared_embedder

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
GATE = ROOT / "evals" / "gates" / "demo.yaml"


@pytest.fixture
def kb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    # The CLI's scratch workspaces embed with the run's shared model (passage vectors cached
    # across runs: the planted regression re-indexes mostly unchanged text).
    monkeypatch.setattr("assist.runtime.MiniLMEmbedder", lambda **_: shared_embedder())
    env = {"KB_DATA_DIR": str(tmp_path / ".canon"), "KB_CONTENT_DIR": str(ROOT / "content"),
           "KB_DATABASE_URL": f"sqlite:///{tmp_path / 'runs.db'}"}

    def run(*args: str, code: int = 0) -> Any:
        result = CliRunner().invoke(app, list(args), env=env)
        assert result.exit_code == code, (args, result.output, result.exception)
        return result

    return run


def test_demo_suite_passes_its_gate_then_a_planted_regression_fails(
        kb: Any, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    result = kb("eval", "run", "demo", "--content", str(ROOT / "content"), "--gate", str(GATE),
                "--json", str(out))
    assert "gate passed" in result.output
    first = json.loads(out.read_text())
    assert first["metrics"]["verbatim"] == 1.0 and first["metrics"]["cases"] >= 150
    assert first["content"]["refunds-annual-plans"] == 1 and first["settings_hash"]

    # Plant a regression: the refund and cancellation articles lose their text (same ids).
    broken = tmp_path / "content"
    shutil.copytree(ROOT / "content", broken)
    for path in list((broken / "refunds").glob("*.md")) + list(
            (broken / "cancellations").glob("*.md")):
        front = path.read_text().split("\n---\n", 1)[0]
        path.write_text(front + "\n---\n# Moved\n## Notes\nThis page is being rewritten.\n")
    failed = kb("eval", "run", "demo", "--content", str(broken), "--gate", str(GATE), code=1)
    assert "gate failed" in failed.output and "hit@1" in failed.output

    runs = json.loads(kb("eval", "list", "--json").stdout)
    assert len(runs) == 2
    cmp = json.loads(kb("eval", "compare", runs[1]["id"], runs[0]["id"], "--json").stdout)
    assert cmp["deltas"]["hit@1"][2] < 0
    assert any(f["was_correct"] and not f["is_correct"] for f in cmp["flipped"])

    report = tmp_path / "report"
    kb("report", "--out", str(report))
    page = (report / "report.html").read_text()
    assert "<svg" in page and "http://" not in page and "https://" not in page
    assert "Overdue articles by owner" in page and (report / "report.md").is_file()


def test_verbatim_check_reports_a_corrupted_stored_slice(tmp_path: Path) -> None:
    suite = load_suite(ROOT / "evals" / "suites" / "demo.yaml")
    settings = Settings(data_dir=tmp_path / ".canon")
    with scratch_workspace(ROOT / "content", settings, embedder=shared_embedder()) as ws:
        ask = runner.in_process(ws.assistant)
        checker = runner.VerbatimChecker(ws.engine)
        clean = runner.run_suite(suite, ask=ask, checker=runner.VerbatimChecker(ws.engine))
        assert all(r.result.verbatim_ok for r in clean)
        served = [r for r in clean if r.response["passages"]]
        cit = served[0].response["passages"][0]["citation"]
        # Corrupt the stored text of that version (same length, one word changed).
        with Session(ws.engine) as s:
            s.execute(text("UPDATE article_version SET text = replace(text, :a, :b) "
                           "WHERE article_id = :id AND number = :n"),
                      {"a": served[0].response["passages"][0]["text"][:12],
                       "b": "X" * 12, "id": cit["article_id"], "n": cit["version"]})
            s.commit()
        runs = runner.run_suite(suite, ask=ask, checker=checker)
        bad = [r.result.case_id for r in runs if not r.result.verbatim_ok]
        assert served[0].result.case_id in bad
