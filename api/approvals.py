"""The pre-approval checks, shared by `kb approve` and the approve route: conflicting
statements, suite expectations the version would break, questions it would stop answering
(see :mod:`assist.conflicts`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from sqlmodel import Session

from assist.answer import Assistant
from assist.conflicts import Expectation, Finding, check_approval
from evals.suites import SUITES_DIR, Case, load_suite
from kb import governance
from kb.errors import InvalidInput


def _suites(suites_dir: Path) -> list[tuple[Case, ...]]:
    out = []
    for path in sorted(suites_dir.glob("*.y*ml")) + sorted(suites_dir.glob("*.jsonl")):
        stat = path.stat()
        try:
            out.append(_cases(str(path), stat.st_mtime_ns, stat.st_size))
        except InvalidInput:
            continue  # a broken suite is reported by `kb eval run`, not here
    return out


@lru_cache(maxsize=32)
def _cases(path: str, mtime_ns: int, size: int) -> tuple[Case, ...]:
    """A suite's cases, read again only when the file changes (parsing takes seconds)."""
    return load_suite(Path(path)).cases


def cases_citing(article_id: str, suites_dir: Path = SUITES_DIR) -> list[Case]:
    """The cases of the eval suites that expect this article."""
    return [c for cases in _suites(suites_dir) for c in cases if article_id in c.articles]


def expectation(case: Case) -> Expectation:
    """A suite case as the approval check sees it."""
    sections = tuple(getattr(case, "sections", None) or ())
    if not sections and case.section:
        sections = (case.section,)
    return Expectation(id=case.id, question=case.question, articles=case.articles,
                       sections=sections, contains=case.contains, answerable=case.answerable,
                       audience=case.audience, locale=case.locale)


def approval_findings(session: Session, assistant: Assistant, *, article_id: str,
                      number: int) -> list[Finding]:
    """What approving version ``number`` would change in what is served: ``conflict``,
    ``expectation_broken`` and ``stops_answering`` findings (nothing is written)."""
    version = governance.get_version(session, article_id=article_id, number=number)
    served = governance.served_version(session, article_id=article_id)
    cases = cases_citing(article_id)
    return check_approval(assistant, version=version, served=served,
                          suite_questions=[c.question for c in cases],
                          expectations=[expectation(c) for c in cases])


def approval_checks(assistant: Assistant) -> Callable[[Session, str, int], list[Finding]]:
    """The pre-approval checks, in the shape :func:`kb.workflows.approve` takes."""

    def checks(session: Session, article_id: str, number: int) -> list[Finding]:
        return approval_findings(session, assistant, article_id=article_id, number=number)

    return checks
