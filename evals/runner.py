"""Run an eval suite through the same answer path as ``POST /v1/assist``.

In process (the ``Assistant``) or against a running server (``url``). Every served passage
is checked against the stored approved version (the verbatim check).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from assist.answer import Assistant, AssistResult, Question
from evals.metrics import CaseResult
from evals.suites import Case, Suite
from kb.models import ArticleVersion

Progress = Callable[[int, int], None]
Ask = Callable[[Case, str], dict[str, Any]]


@dataclass
class CaseRun:
    result: CaseResult
    response: dict[str, Any]  # the assist response (passages, status, escalation)


def result_to_dict(r: AssistResult) -> dict[str, Any]:
    """The in-process result in the same shape as the HTTP response."""
    from api.schemas import AssistResponse

    return AssistResponse.from_result(r).model_dump(mode="json")


def in_process(assistant: Assistant, *, top_k: int = 10) -> Ask:
    def ask(case: Case, audience: str) -> dict[str, Any]:
        r = assistant.ask(Question(text=case.question, audience=audience, caller="eval",
                                   locale=case.locale, top_k=top_k))
        data = result_to_dict(r)
        data["latency_ms"] = r.latency_ms
        return data

    return ask


def over_http(url: str, *, token: str, top_k: int = 10) -> Ask:
    """Ask a running server. Every case runs as the token's caller (its audience)."""
    import httpx

    client = httpx.Client(base_url=url.rstrip("/"), timeout=30,
                          headers={"Authorization": f"Bearer {token}"})

    def ask(case: Case, audience: str) -> dict[str, Any]:
        body: dict[str, Any] = {"question": case.question, "top_k": top_k}
        if case.locale:
            body["locale"] = case.locale
        t = time.perf_counter()
        r = client.post("/v1/assist", json=body)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        data["latency_ms"] = (time.perf_counter() - t) * 1000
        return data

    return ask


class VerbatimChecker:
    """Compares served passages with the stored version text (cached; versions are
    immutable)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._texts: dict[tuple[str, int], tuple[str, str]] = {}

    def check(self, passages: list[dict[str, Any]]) -> bool:
        need = {(p["citation"]["article_id"], p["citation"]["version"]) for p in passages}
        missing = need - set(self._texts)
        if missing:
            with Session(self.engine) as s:
                rows = s.exec(select(ArticleVersion).where(
                    col(ArticleVersion.article_id).in_({a for a, _ in missing}))).all()
                for v in rows:
                    self._texts[(v.article_id, v.number)] = (v.text, v.content_sha256)
        for p in passages:
            c = p["citation"]
            stored = self._texts.get((c["article_id"], c["version"]))
            if stored is None:
                return False
            text, sha = stored
            body = text[c["start"]:c["end"]]
            if body != p["text"] or sha != c["content_sha256"]:
                return False
            if hashlib.sha256(body.encode()).hexdigest() != c["passage_sha256"]:
                return False
        return True


def expectation(case: Case) -> dict[str, Any]:
    """The :class:`CaseResult` fields that come from the case (what it expects, its group and
    meta), for every system judged on the suite."""
    return {"case_id": case.id, "answerable": case.answerable,
            "expected_articles": case.articles, "expected_section": case.section,
            "expected_sections": case.sections, "gold_sections": case.gold_sections,
            "contains": case.contains, "group": case.group, "meta": dict(case.meta)}


def case_result(case: Case, data: dict[str, Any], verbatim_ok: bool) -> CaseResult:
    passages = data.get("passages", [])
    top_section = passages[0]["citation"]["section"][-1] if passages else None
    return CaseResult(
        **expectation(case), status=data["status"],
        ranked_articles=tuple(p["citation"]["article_id"] for p in passages),
        top_section=top_section, served_text="\n".join(p["text"] for p in passages),
        verbatim_ok=verbatim_ok, latency_ms=float(data.get("latency_ms", 0.0)),
    )


def run_suite(
    suite: Suite,
    *,
    ask: Ask,
    checker: VerbatimChecker,
    default_audience: str = "internal",
    progress: Progress | None = None,
) -> list[CaseRun]:
    """Every case of ``suite``, in order."""
    runs = []
    for i, case in enumerate(suite.cases, 1):
        data = ask(case, case.audience or default_audience)
        ok = checker.check(data.get("passages", []))
        runs.append(CaseRun(case_result(case, data, ok), data))
        if progress:
            progress(i, len(suite.cases))
    return runs
