"""The approval conflict check, shared by `kb approve` and the approve route."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session

from assist.answer import Assistant
from assist.conflicts import Finding, check_approval
from evals.suites import SUITES_DIR, load_suite
from kb import governance
from kb.errors import InvalidInput


def questions_citing(article_id: str, suites_dir: Path = SUITES_DIR) -> list[str]:
    """Questions of the eval suites that cite this article (probes for the conflict check)."""
    out: list[str] = []
    for path in sorted(suites_dir.glob("*.y*ml")) + sorted(suites_dir.glob("*.jsonl")):
        try:
            suite = load_suite(path)
        except InvalidInput:
            continue  # a broken suite is reported by `kb eval run`, not here
        out.extend(c.question for c in suite.cases if article_id in c.articles)
    return out


def approval_findings(session: Session, assistant: Assistant, *, article_id: str,
                      number: int) -> list[Finding]:
    """What approving version ``number`` would change in approved answers."""
    version = governance.get_version(session, article_id=article_id, number=number)
    served = governance.served_version(session, article_id=article_id)
    return check_approval(assistant, version=version,
                          served_version=served.number if served else None,
                          suite_questions=questions_citing(article_id))
