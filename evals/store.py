"""Stored eval runs: save, load, list, compare."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from evals.metrics import CaseResult, summarize
from evals.runner import CaseRun
from evals.suites import Suite
from kb.errors import InvalidInput
from kb.governance import served_numbers
from kb.models import EvalRun


def git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def save_run(
    session: Session, *, suite: Suite, runs: Sequence[CaseRun], settings_hash: str,
    content_session: Session, code_dir: Path, label: str = "", system: str = "canon",
    tuning_sha256: str | None = None,
) -> EvalRun:
    """Store a run with its suite hash, settings hash, tuning hash (the tuning record the
    answer path applied; None: the shipped defaults), content snapshot and git commit."""
    results = [r.result for r in runs]
    row = EvalRun(
        id=uuid.uuid4().hex[:12], suite=suite.name, suite_sha256=suite.sha256,
        settings_hash=settings_hash, tuning_sha256=tuning_sha256,
        git_commit=git_commit(code_dir), label=label,
        system=system, content=served_numbers(content_session), metrics=summarize(results),
        cases=[{**asdict(r.result),
                "escalation_reason": (r.response.get("escalation") or {}).get("reason")}
               for r in runs],
    )
    session.add(row)
    session.commit()
    return row


def get_run(session: Session, run_id: str) -> EvalRun:
    if run_id == "latest":
        row = session.exec(select(EvalRun).order_by(col(EvalRun.at).desc())).first()
    else:
        row = session.get(EvalRun, run_id)
        if row is None:
            matches = session.exec(select(EvalRun).where(
                col(EvalRun.id).startswith(run_id))).all()
            row = matches[0] if len(matches) == 1 else None
    if row is None:
        raise InvalidInput(f"no eval run '{run_id}'; list runs with `kb eval list`")
    return row


def list_runs(session: Session, *, suite: str | None = None, limit: int = 50) -> Sequence[EvalRun]:
    query = select(EvalRun).order_by(col(EvalRun.at).desc()).limit(limit)
    if suite:
        query = query.where(EvalRun.suite == suite)
    return session.exec(query).all()


def results_of(run: EvalRun) -> list[CaseResult]:
    """The stored cases of a run as :class:`CaseResult` (JSON lists back to tuples; ``meta``
    stays a mapping; fields missing from older runs take their defaults)."""
    fields = CaseResult.__dataclass_fields__
    out = []
    for c in run.cases:
        kwargs: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v)
                                  for k, v in c.items() if k in fields}
        if "gold_sections" in kwargs:
            kwargs["gold_sections"] = tuple(tuple(pair) for pair in kwargs["gold_sections"])
        out.append(CaseResult(**kwargs))
    return out


@dataclass
class Comparison:
    deltas: dict[str, tuple[Any, Any, float | None]]  # metric -> (a, b, b - a)
    flipped: list[dict[str, Any]]  # cases whose outcome changed


def _outcome(c: dict[str, Any]) -> tuple[Any, ...]:
    top = c["ranked_articles"][0] if c["ranked_articles"] else None
    return (c["status"], top, c["top_section"])


def _correct(c: dict[str, Any]) -> bool:
    if not c["answerable"]:
        return bool(c["status"] != "answered")
    top = c["ranked_articles"][0] if c["ranked_articles"] else None
    return bool(c["status"] == "answered" and top in c["expected_articles"])


def compare(a: EvalRun, b: EvalRun) -> Comparison:
    deltas = {}
    for key in a.metrics.keys() | b.metrics.keys():
        va, vb = a.metrics.get(key), b.metrics.get(key)
        d = vb - va if isinstance(va, int | float) and isinstance(vb, int | float) else None
        deltas[key] = (va, vb, d)
    cases_a = {c["case_id"]: c for c in a.cases}
    flipped = []
    for cb in b.cases:
        ca = cases_a.get(cb["case_id"])
        if ca is None or _outcome(ca) == _outcome(cb):
            continue
        flipped.append({"case_id": cb["case_id"], "before": _outcome(ca), "after": _outcome(cb),
                        "was_correct": _correct(ca), "is_correct": _correct(cb),
                        "meta": cb.get("meta") or ca.get("meta") or {}})
    return Comparison(deltas=dict(sorted(deltas.items())), flipped=flipped)
