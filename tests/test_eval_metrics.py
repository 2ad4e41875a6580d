"""Eval metrics: hand-computed values for every metric, and the no-data edge cases."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest

from evals.metrics import (
    CaseResult,
    abstention,
    consistency,
    contains_accuracy,
    distinct,
    false_abstention,
    hit_at_k,
    latency_percentiles,
    mrr_at_k,
    passage_hit_at_k,
    section_hit,
    section_hit_at_1,
    summarize,
    verbatim_rate,
    wrong_answer_rate,
)
from evals.store import compare, results_of
from kb.models import EvalRun


def res(
    case_id: str = "c",
    *,
    status: str = "answered",
    ranked: tuple[str, ...] = ("a",),
    expected: tuple[str, ...] = ("a",),
    answerable: bool = True,
    **kw: Any,
) -> CaseResult:
    fields: dict[str, Any] = {
        "top_section": None,
        "expected_section": None,
        "contains": (),
        "served_text": "",
        "group": None,
        "verbatim_ok": True,
        "latency_ms": 10.0,
    }
    fields.update(kw)
    return CaseResult(case_id=case_id, answerable=answerable, status=status,
                      ranked_articles=ranked, expected_articles=expected, **fields)


def unanswerable(
    case_id: str, status: str = "escalate", ranked: tuple[str, ...] = (), **kw: Any
) -> CaseResult:
    return res(case_id, status=status, ranked=ranked, expected=(), answerable=False, **kw)


def test_distinct_preserves_first_occurrence_order() -> None:
    assert distinct(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
    assert distinct([]) == []


def test_unknown_status_is_rejected() -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        res(status="answerd")


def test_hit_at_k_counts_answered_cases_with_an_expected_article_in_the_top_k() -> None:
    results = [
        res("1", ranked=("a", "x")),  # rank 1
        res("2", ranked=("x", "a")),  # rank 2
        res("3", ranked=("x", "y", "z", "a")),  # rank 4
        res("4", ranked=("a",), status="escalate"),  # not answered: miss
        unanswerable("5"),  # not eligible
    ]
    assert hit_at_k(results, 1) == pytest.approx(1 / 4)
    assert hit_at_k(results, 3) == pytest.approx(2 / 4)
    assert hit_at_k(results, 5) == pytest.approx(3 / 4)


def test_hit_at_k_counts_distinct_articles_so_duplicates_do_not_push_hits_out() -> None:
    # Passages x, x, x, a: article a is the 2nd distinct article.
    results = [res("1", ranked=("x", "x", "x", "a"))]
    assert hit_at_k(results, 1) == 0.0
    assert hit_at_k(results, 2) == 1.0


def test_passage_hit_at_k_counts_passages_not_distinct_articles() -> None:
    """What an agent reads in an answer of k passages: x, x, x, a has article a as its 2nd
    distinct article but 4th passage."""
    results = [res("1", ranked=("x", "x", "x", "a")), res("2", ranked=("a", "x")),
               res("3", ranked=("a",), status="escalate"), unanswerable("4")]
    assert passage_hit_at_k(results, 3) == pytest.approx(1 / 3)
    assert passage_hit_at_k(results, 4) == pytest.approx(2 / 3)
    assert hit_at_k(results, 2) == pytest.approx(2 / 3)
    assert passage_hit_at_k([unanswerable("1")], 3) is None
    with pytest.raises(ValueError, match="k must be at least 1"):
        passage_hit_at_k(results, 0)


def test_hit_at_k_any_expected_article_counts() -> None:
    assert hit_at_k([res("1", ranked=("b", "x"), expected=("a", "b"))], 1) == 1.0


def test_hit_at_k_without_eligible_cases_is_none() -> None:
    assert hit_at_k([], 1) is None
    assert hit_at_k([unanswerable("1"), unanswerable("2", status="answered")], 1) is None
    assert hit_at_k([res("1", expected=())], 1) is None  # answerable but no expected articles


def test_hit_at_k_rejects_k_below_one() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        hit_at_k([res("1")], 0)


def test_mrr_uses_distinct_ranks_and_zero_for_misses() -> None:
    results = [
        res("1", ranked=("a",)),  # 1
        res("2", ranked=("x", "x", "a")),  # distinct rank 2 -> 1/2
        res("3", ranked=("x", "y", "z", "a")),  # rank 4 -> 1/4
        res("4", ranked=("x",)),  # absent -> 0
        res("5", ranked=("a",), status="no_answer"),  # not answered -> 0
    ]
    assert mrr_at_k(results) == pytest.approx((1 + 1 / 2 + 1 / 4) / 5)
    assert mrr_at_k(results, 3) == pytest.approx((1 + 1 / 2) / 5)


def test_mrr_without_eligible_cases_is_none() -> None:
    assert mrr_at_k([]) is None
    assert mrr_at_k([unanswerable("1")]) is None


def test_section_hit_at_1_compares_headings_case_insensitively() -> None:
    results = [
        res("1", top_section="  eligibility ", expected_section="Eligibility"),  # hit
        res("2", top_section="Exceptions", expected_section="Eligibility"),  # wrong section
        res("3", ranked=("x", "a"), top_section="Eligibility",
            expected_section="Eligibility"),  # wrong article on top
        res("4", status="escalate", top_section="Eligibility",
            expected_section="Eligibility"),  # not answered
        res("5", top_section=None, expected_section="Eligibility"),  # no section
        res("6", top_section="Anything"),  # names no section: not eligible
    ]
    assert section_hit_at_1(results) == pytest.approx(1 / 5)


def test_section_hit_at_1_without_sections_is_none() -> None:
    assert section_hit_at_1([res("1", top_section="Eligibility")]) is None
    assert section_hit_at_1([unanswerable("1", expected_section="X")]) is None


def test_section_hit_at_1_accepts_any_of_the_expected_sections() -> None:
    # expect.sections: any listed heading counts, in any expected article.
    sections = ("Eligibility", "Exceptions")
    results = [
        res("1", top_section="exceptions ", expected_sections=sections),  # 2nd heading: hit
        res("2", ranked=("b",), expected=("a", "b"), top_section="Eligibility",
            expected_sections=sections),  # another expected article: hit
        res("3", top_section="Fees", expected_sections=sections),  # not listed: miss
        res("4", ranked=("x",), top_section="Exceptions",
            expected_sections=sections),  # article not expected: miss
    ]
    assert section_hit_at_1(results) == pytest.approx(2 / 4)
    # expect.section and expect.sections together: either counts.
    both = res("5", top_section="Fees", expected_section="Eligibility",
               expected_sections=("Fees",))
    assert section_hit_at_1([both]) == 1.0


def test_section_hit_at_1_accepts_gold_section_pairs_only_in_their_article() -> None:
    gold = (("a", "Get started"), ("b", "Get your kids moving"))
    results = [
        # The first gold section, also expect.section.
        res("1", ranked=("a",), expected=("a", "b"), top_section="Get started",
            expected_section="Get started", gold_sections=gold),
        # The second gold section: only meta.gold_sections names it.
        res("2", ranked=("b", "a"), expected=("a", "b"), top_section="get your kids moving",
            expected_section="Get started", gold_sections=gold),
        # b's gold heading in article a is not a right section.
        res("3", ranked=("a",), expected=("a", "b"), top_section="Get your kids moving",
            gold_sections=gold),
        # A gold pair counts even when its article is not in expect.articles (withheld).
        res("4", ranked=("c",), expected=("a",), top_section="Intro",
            gold_sections=(("c", "Intro"),)),
        # Only gold_sections: the case is eligible; escalated: a miss.
        res("5", status="escalate", ranked=("a",), top_section="Get started",
            gold_sections=gold),
    ]
    assert [section_hit(r) for r in results] == [True, True, False, True, False]
    assert section_hit_at_1(results) == pytest.approx(3 / 5)
    # Without the gold pairs, case 2 scores a miss against expect.section alone.
    assert section_hit_at_1([res("2", ranked=("b",), expected=("a", "b"),
                                 top_section="Get your kids moving",
                                 expected_section="Get started")]) == 0.0


def test_false_abstention_over_answerable_cases() -> None:
    results = [
        res("1"),  # answered
        res("2", status="escalate"),  # false abstention
        res("3", status="no_answer", ranked=()),  # false abstention
        res("4", ranked=("x",)),  # answered wrongly: not an abstention
        unanswerable("5"),  # not eligible
        unanswerable("6", status="answered"),  # not eligible
    ]
    assert false_abstention(results) == pytest.approx(2 / 4)
    assert false_abstention([unanswerable("1")]) is None
    assert false_abstention([]) is None


def test_contains_accuracy_needs_every_phrase_case_insensitively() -> None:
    results = [
        res("1", contains=("30 Days", "refund"), served_text="A REFUND within 30 days."),
        res("2", contains=("30 days", "annual"), served_text="within 30 days"),  # one missing
        res("3", status="escalate", contains=("30 days",), served_text="30 days"),
        res("4", served_text="no phrases expected"),  # not eligible
    ]
    assert contains_accuracy(results) == pytest.approx(1 / 3)
    assert contains_accuracy([res("1")]) is None


def test_abstention_precision_recall_f1() -> None:
    results = [
        unanswerable("u1"),  # TP
        unanswerable("u2", status="no_answer"),  # TP
        unanswerable("u3", status="answered"),  # FN
        res("a1", status="escalate"),  # FP
        res("a2"),  # TN
    ]
    got = abstention(results)
    assert got["precision"] == pytest.approx(2 / 3)
    assert got["recall"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(2 / 3)


def test_abstention_when_everything_abstains() -> None:
    all_gold = [unanswerable("u1"), unanswerable("u2", status="no_answer")]
    assert abstention(all_gold) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    mixed = [*all_gold, res("a1", status="escalate"), res("a2", status="escalate")]
    got = abstention(mixed)
    assert got["precision"] == pytest.approx(0.5)
    assert got["recall"] == 1.0
    assert got["f1"] == pytest.approx(2 / 3)
    assert hit_at_k(mixed, 1) == 0.0


def test_abstention_edge_cases() -> None:
    never_abstains = [res("a1"), unanswerable("u1", status="answered")]
    assert abstention(never_abstains) == {"precision": None, "recall": 0.0, "f1": None}
    no_gold = [res("a1", status="escalate"), res("a2")]
    assert abstention(no_gold) == {"precision": 0.0, "recall": None, "f1": None}
    both_zero = [res("a1", status="escalate"), unanswerable("u1", status="answered")]
    assert abstention(both_zero) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert abstention([]) == {"precision": None, "recall": None, "f1": None}


def test_wrong_answer_rate_over_all_cases() -> None:
    results = [
        res("1"),  # right
        res("2", ranked=("x", "a")),  # wrong top article
        res("3", ranked=()),  # answered with nothing ranked: wrong
        res("4", ranked=("x",), status="escalate"),  # abstained: not wrong
        unanswerable("5", status="answered", ranked=("a",)),  # any answer is wrong
        unanswerable("6"),  # right
    ]
    assert wrong_answer_rate(results) == pytest.approx(3 / 6)
    assert wrong_answer_rate([]) is None


def test_consistency_requires_identical_outcomes_within_a_group() -> None:
    results = [
        res("g1-1", group="g1", top_section="Eligibility"),
        res("g1-2", group="g1", top_section="eligibility"),  # same outcome
        res("g1-3", group="g1", top_section="Eligibility"),
        res("g2-1", group="g2", top_section="Eligibility"),
        res("g2-2", group="g2", top_section="Exceptions"),  # one member differs
        unanswerable("g3-1", group="g3"),
        unanswerable("g3-2", group="g3"),  # all escalate: consistent
        res("g4-1", group="g4"),
        res("g4-2", group="g4", status="escalate"),  # status differs
        res("solo", group="g5"),  # one member: ignored
        res("none"),  # no group: ignored
    ]
    assert consistency(results) == pytest.approx(2 / 4)
    # At article level g2 is consistent too (same article, another section).
    assert consistency(results, sections=False) == pytest.approx(3 / 4)


def test_consistency_without_groups_is_none() -> None:
    assert consistency([res("1"), res("2")]) is None
    assert consistency([res("1", group="g"), res("2", group="h")]) is None


def test_verbatim_rate() -> None:
    assert verbatim_rate([res("1"), res("2", verbatim_ok=False)]) == 0.5
    assert verbatim_rate([]) == 1.0


def test_latency_percentiles_match_numpy_linear() -> None:
    latencies = [10.0, 20.0, 30.0, 40.0, 100.0]
    results = [res(str(i), latency_ms=ms) for i, ms in enumerate(latencies)]
    p50, p95 = latency_percentiles(results)
    assert p50 == 30.0
    assert p95 == pytest.approx(88.0)  # 40 + 0.8 * (100 - 40)
    assert p95 == pytest.approx(float(np.percentile(latencies, 95)))
    assert latency_percentiles([]) == (None, None)


def test_summarize_has_every_key() -> None:
    results = [
        res("1", top_section="Eligibility", expected_section="Eligibility",
            contains=("30 days",), served_text="within 30 days", group="g"),
        res("2", ranked=("x",), group="g"),
        unanswerable("3"),
    ]
    got = summarize(results)
    assert list(got) == [
        "cases", "hit@1", "hit@3", "hit@5", "passage_hit@3", "passage_hit@5", "mrr@10",
        "section_hit@1", "contains_accuracy",
        "abstention_precision", "abstention_recall", "abstention_f1", "false_abstention",
        "wrong_answer_rate", "consistency", "consistency_article", "verbatim",
        "latency_p50_ms", "latency_p95_ms",
    ]
    assert got["cases"] == 3
    assert got["hit@1"] == 0.5
    assert got["mrr@10"] == 0.5
    assert got["section_hit@1"] == 1.0
    assert got["contains_accuracy"] == 1.0
    assert got["abstention_precision"] == 1.0
    assert got["abstention_recall"] == 1.0
    assert got["abstention_f1"] == 1.0
    assert got["false_abstention"] == 0.0
    assert got["wrong_answer_rate"] == pytest.approx(1 / 3)
    assert got["consistency"] == 0.0
    assert got["consistency_article"] == 0.0
    assert got["verbatim"] == 1.0
    assert got["latency_p50_ms"] == 10.0


def test_summarize_empty_run() -> None:
    got = summarize([])
    assert got["cases"] == 0
    assert got["verbatim"] == 1.0
    assert all(v is None for k, v in got.items() if k not in ("cases", "verbatim"))


def stored_run(cases: list[dict[str, Any]], run_id: str = "r1") -> EvalRun:
    return EvalRun(id=run_id, suite="s", suite_sha256="0" * 64, settings_hash="h",
                   metrics=summarize(results_of(EvalRun(id="tmp", suite="s", suite_sha256="",
                                                        settings_hash="", cases=cases))),
                   cases=cases)


def test_stored_cases_keep_meta_and_score_the_same_after_a_json_round_trip() -> None:
    results = [
        res("1", ranked=("b",), expected=("a", "b"), top_section="Moving",
            expected_section="Start", gold_sections=(("a", "Start"), ("b", "Moving")),
            meta={"source": "ticket-4411", "turn": 2, "tags": ["x", None]}),
        res("2", top_section="Fees", expected_sections=("Eligibility", "Fees")),
        unanswerable("3", meta={"unanswerable_reason": "withheld"}),
    ]
    cases = json.loads(json.dumps([asdict(r) for r in results]))
    back = results_of(stored_run(cases))
    assert back == results
    assert back[0].gold_sections == (("a", "Start"), ("b", "Moving"))
    assert back[0].meta == {"source": "ticket-4411", "turn": 2, "tags": ["x", None]}
    assert summarize(back)["section_hit@1"] == 1.0
    # A case stored before meta and expected_sections existed still loads and scores.
    old = {k: v for k, v in cases[1].items()
           if k not in ("meta", "expected_sections", "gold_sections")}
    old["expected_section"] = "Fees"
    (loaded,) = results_of(stored_run([old]))
    assert loaded.meta == {} and loaded.expected_sections == ()
    assert section_hit_at_1([loaded]) == 1.0


def test_compare_shows_the_meta_of_flipped_cases() -> None:
    before = [asdict(res("1", meta={"source": "ticket-1"})), asdict(res("2"))]
    after = [asdict(res("1", ranked=("x",), meta={"source": "ticket-1"})),
             asdict(res("2", ranked=("y",)))]
    cmp = compare(stored_run(before, "a"), stored_run(after, "b"))
    assert [f["case_id"] for f in cmp.flipped] == ["1", "2"]
    assert cmp.flipped[0]["meta"] == {"source": "ticket-1"}
    assert cmp.flipped[1]["meta"] == {}
    assert cmp.deltas["hit@1"] == (1.0, 0.0, -1.0)
