"""Pure metric functions over per-case eval results.

Every function takes the per-case :class:`CaseResult` records of one run and returns a share in
[0, 1] (or ``None`` when the metric has no eligible cases, so "no data" never reads as 0 or 1).
Only ``status == "answered"`` counts as serving an answer: ``escalate`` and ``no_answer`` are
abstentions.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

ANSWERED = "answered"
STATUSES = ("answered", "escalate", "no_answer")

T = TypeVar("T", bound=Hashable)


@dataclass(frozen=True)
class CaseResult:
    """What the system did for one eval case, next to what the case expected."""

    case_id: str
    answerable: bool
    status: str  # "answered" | "escalate" | "no_answer"
    ranked_articles: tuple[str, ...]  # article id of each returned passage, best first
    top_section: str | None  # last heading of the top passage's section path
    expected_articles: tuple[str, ...]
    expected_section: str | None
    contains: tuple[str, ...]
    served_text: str  # all served passage texts, concatenated
    group: str | None
    verbatim_ok: bool  # every served passage equals its stored slice
    latency_ms: float
    # Every heading accepted as the right section of an expected article (expect.section and
    # expect.sections); runs stored before this field existed have only expected_section.
    expected_sections: tuple[str, ...] = ()
    # (article id, heading) pairs accepted as the right section (meta.gold_sections).
    gold_sections: tuple[tuple[str, str], ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False)  # shown, never scored

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")

    @property
    def answered(self) -> bool:
        return self.status == ANSWERED

    @property
    def top_article(self) -> str | None:
        return self.ranked_articles[0] if self.ranked_articles else None


def distinct(seq: Iterable[T]) -> list[T]:
    """The items of ``seq`` without repeats, in order of first appearance."""
    return list(dict.fromkeys(seq))


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def _norm(text: str | None) -> str | None:
    return text.strip().casefold() if text is not None else None


def _retrieval_cases(results: Sequence[CaseResult]) -> list[CaseResult]:
    return [r for r in results if r.answerable and r.expected_articles]


def _first_rank(r: CaseResult, k: int) -> int | None:
    """1-based rank of the first expected article among the first k distinct ranked ones."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not r.answered:
        return None
    expected = set(r.expected_articles)
    for rank, article in enumerate(distinct(r.ranked_articles)[:k], start=1):
        if article in expected:
            return rank
    return None


def first_rank(r: CaseResult, k: int) -> int | None:
    """1-based rank of the first expected article among the first k distinct ranked ones
    (None: a miss, or the case was not answered)."""
    return _first_rank(r, k)


def hit_at_k(results: Sequence[CaseResult], k: int) -> float | None:
    """Share of answerable cases with expected articles that were answered and whose first
    ``k`` distinct ranked articles include an expected one.

    Duplicates in ``ranked_articles`` are collapsed before cutting at ``k``; a case that was
    escalated or not answered is a miss. ``None`` when no case is eligible.
    """
    cases = _retrieval_cases(results)
    return _share(sum(_first_rank(r, k) is not None for r in cases), len(cases))


def passage_hit_at_k(results: Sequence[CaseResult], k: int) -> float | None:
    """Share of answerable cases with expected articles that were answered and whose first
    ``k`` passages (not distinct articles: what an agent reads in an answer of ``top_k``
    passages) include one from an expected article. ``None`` when no case is eligible."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    cases = _retrieval_cases(results)
    return _share(sum(r.answered and any(a in r.expected_articles for a in r.ranked_articles[:k])
                      for r in cases), len(cases))


def mrr_at_k(results: Sequence[CaseResult], k: int = 10) -> float | None:
    """Mean over answerable cases with expected articles of ``1 / rank`` of the first expected
    article among the first ``k`` distinct ranked articles.

    The reciprocal rank is 0 when no expected article is in the first ``k`` or the case was
    not answered. ``None`` when no case is eligible.
    """
    cases = _retrieval_cases(results)
    if not cases:
        return None
    ranks = [_first_rank(r, k) for r in cases]
    return sum(1 / rank for rank in ranks if rank is not None) / len(cases)


def _names_a_section(r: CaseResult) -> bool:
    return r.expected_section is not None or bool(r.expected_sections or r.gold_sections)


def section_hit(r: CaseResult) -> bool:
    """Whether the case was answered and its top passage is in a right section: a heading of
    ``expected_section`` / ``expected_sections`` in an expected article, or one of the
    ``gold_sections`` (article, heading) pairs. Headings compare stripped and case-insensitively.
    """
    if not r.answered or r.top_section is None or r.top_article is None:
        return False
    top = _norm(r.top_section)
    headings = {_norm(h) for h in (r.expected_section, *r.expected_sections) if h is not None}
    if r.top_article in r.expected_articles and top in headings:
        return True
    return (r.top_article, top) in {(a, _norm(h)) for a, h in r.gold_sections}


def section_hit_at_1(results: Sequence[CaseResult]) -> float | None:
    """Share of answerable cases that name a right section (``expected_section``,
    ``expected_sections`` or ``gold_sections``) whose top passage is in any of them (see
    :func:`section_hit`). ``None`` when no case names a section.
    """
    cases = [r for r in results if r.answerable and _names_a_section(r)]
    return _share(sum(section_hit(r) for r in cases), len(cases))


def contains_accuracy(results: Sequence[CaseResult]) -> float | None:
    """Share of answerable cases with ``contains`` phrases that were answered and whose
    ``served_text`` contains every phrase (case-insensitive). ``None`` when no such case.
    """
    cases = [r for r in results if r.answerable and r.contains]
    hits = sum(
        r.answered and all(p.casefold() in r.served_text.casefold() for p in r.contains)
        for r in cases
    )
    return _share(hits, len(cases))


def abstention(results: Sequence[CaseResult]) -> dict[str, float | None]:
    """Precision, recall and F1 of abstaining, where a predicted positive is a case the system
    did not answer (``status != "answered"``) and a gold positive is ``answerable: false``.

    - ``precision`` = unanswerable abstentions / all abstentions; ``None`` if it never abstained.
    - ``recall`` = unanswerable abstentions / unanswerable cases; ``None`` if there are none.
    - ``f1`` = 2PR / (P + R); ``None`` if P or R is ``None``; 0.0 when P + R == 0.
    """
    abstained = [r for r in results if not r.answered]
    gold = [r for r in results if not r.answerable]
    true_pos = sum(not r.answerable for r in abstained)
    precision = _share(true_pos, len(abstained))
    recall = _share(true_pos, len(gold))
    f1: float | None
    if precision is None or recall is None:
        f1 = None
    elif precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1}


def false_abstention(results: Sequence[CaseResult]) -> float | None:
    """Share of answerable cases that were not answered (escalated or no answer): abstaining
    when the KB has the answer. ``None`` when no case is answerable."""
    cases = [r for r in results if r.answerable]
    return _share(sum(not r.answered for r in cases), len(cases))


def wrong_answer_rate(results: Sequence[CaseResult]) -> float | None:
    """Share of all cases that were answered although the answer is wrong: the case is
    ``answerable: false``, or the top ranked article is missing or not an expected one.
    ``None`` when there are no cases.
    """
    wrong = sum(
        r.answered and (not r.answerable or r.top_article not in r.expected_articles)
        for r in results
    )
    return _share(wrong, len(results))


def consistency(results: Sequence[CaseResult], *, sections: bool = True) -> float | None:
    """Share of groups with at least two members whose members all have the same outcome
    ``(status, top article, top_section)``, answered or not; ``top_section`` is compared
    stripped and case-insensitively (``sections=False``: status and top article only, the
    article-level figure). ``None`` when no group has two members.
    """
    outcomes: dict[str, list[tuple[str, str | None, str | None]]] = {}
    for r in results:
        if r.group is not None:
            section = _norm(r.top_section) if sections else None
            outcomes.setdefault(r.group, []).append((r.status, r.top_article, section))
    groups = [members for members in outcomes.values() if len(members) >= 2]
    return _share(sum(len(set(members)) == 1 for members in groups), len(groups))


def verbatim_rate(results: Sequence[CaseResult]) -> float:
    """Share of cases whose served passages all equal their stored slices; 1.0 if no cases."""
    return sum(r.verbatim_ok for r in results) / len(results) if results else 1.0


def latency_percentiles(results: Sequence[CaseResult]) -> tuple[float | None, float | None]:
    """(p50, p95) of ``latency_ms`` with numpy's linear interpolation; (None, None) if empty."""
    if not results:
        return None, None
    p50, p95 = np.percentile([r.latency_ms for r in results], [50, 95])
    return float(p50), float(p95)


def summarize(results: Sequence[CaseResult]) -> dict[str, float | None]:
    """Every metric of one run, keyed by its report name."""
    abst = abstention(results)
    p50, p95 = latency_percentiles(results)
    return {
        "cases": len(results),
        "hit@1": hit_at_k(results, 1),
        "hit@3": hit_at_k(results, 3),
        "hit@5": hit_at_k(results, 5),
        "passage_hit@3": passage_hit_at_k(results, 3),
        "passage_hit@5": passage_hit_at_k(results, 5),
        "mrr@10": mrr_at_k(results, 10),
        "section_hit@1": section_hit_at_1(results),
        "contains_accuracy": contains_accuracy(results),
        "abstention_precision": abst["precision"],
        "abstention_recall": abst["recall"],
        "abstention_f1": abst["f1"],
        "false_abstention": false_abstention(results),
        "wrong_answer_rate": wrong_answer_rate(results),
        "consistency": consistency(results),
        "consistency_article": consistency(results, sections=False),
        "verbatim": verbatim_rate(results),
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
    }
