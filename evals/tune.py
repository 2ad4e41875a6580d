"""``kb eval tune``: fit this knowledge base's retrieval and abstention on an evaluator's suite.

Each case is asked once (:meth:`assist.answer.Assistant.evidence`: the dense and lexical
hits and which of their chunks the database lets the case's caller be served). Everything
else is recomputed from that evidence with the answer path's own functions — fusion
(:func:`assist.retrieve.fuse`), the serving order and the abstention policy
(:class:`assist.calibration.Policy`) — under each candidate setting, so a grid costs no
further queries.

What is fitted, on the training folds only:

- retrieval: the fusion (``weighted`` or ``article``), ``dense_weight`` and
  ``article_support`` that rank the right article and section first most often — kept only
  when its gain over the shipped settings exceeds two standard errors of the paired per-case
  difference (on a few hundred cases, most apparent gains are noise);
- abstention: a logistic regression over the evidence signals
  (:data:`assist.calibration.SIGNALS`), its threshold set at the operator's operating point
  (at most ``max_false_abstention`` of answerable training cases abstained). What it
  learns "unanswerable" from (``negatives``): by default each answerable case's
  *withheld-article* negative, the same question's evidence with its expected articles
  taken out (:func:`withhold`), which is what the answer path finds for a question on a
  topic the knowledge base does not cover. Evaluators label few unanswerable questions
  (the development sets hold 7, 11 and 39): too few to fit six weights on, and fitting on
  them did worse held out than the withheld-article negatives on all three sets
  (``docs/quality-baseline.md``). The suite's unanswerable cases are still scored held
  out; ``negatives="both"`` or ``"suite"`` fits on them too, or on them alone. Held out,
  ``withheld_abstention`` is the share of withheld-article negatives each policy escalates:
  abstention on missing topics, measured on one question per answerable case.

k-fold cross-validation (folds stratified by answerability, assigned by a hash of the case
id, so reruns agree) reports the held-out metrics of the tuning procedure next to those of
the shipped settings on the same folds. The record finally stored is fitted on every case.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assist.answer import (
    Assistant,
    Evidence,
    Question,
    lacks_approved_language,
    lead_language_first,
    serve_order,
)
from assist.calibration import (
    SIGNALS,
    TUNABLE_FUSIONS,
    Policy,
    fit_abstention,
    holds_operating_point,
    signals,
)
from assist.chunks import chunk_article
from assist.retrieve import Candidate, fuse, lead_of, order, uses_sentences
from evals.metrics import CaseResult, first_rank, section_hit, summarize
from evals.runner import expectation
from evals.suites import Case, Suite
from kb.errors import InvalidInput
from kb.settings import AnswerSettings, RetrievalSettings

EVAL_TOP_K = 10  # passages scored per case, as the eval runner asks for
MIN_CLASS = 3  # answerable and unanswerable training cases needed to fit abstention
WEIGHTS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SUPPORTS = (0.15, 0.3, 0.5)
HEADLINE = ("hit@1", "hit@5", "mrr@10", "section_hit@1", "abstention_recall",
            "false_abstention", "wrong_answer_rate", "consistency", "consistency_article")
WITHHELD = "#withheld"  # id suffix of a withheld-article negative
# What the abstention fit learns "unanswerable" from: the withheld-article negatives, the
# suite's own unanswerable cases, or both.
NEGATIVES = ("withheld", "suite", "both")


@dataclass(frozen=True)
class Observed:
    """One case and what the answer path found for it."""

    case: Case
    evidence: Evidence


@dataclass
class TuneResult:
    """Cross-validated metrics of the shipped settings and of the tuning, and the parameters
    fitted on every case (what gets stored)."""

    folds: int
    cases: int
    answerable: int
    unanswerable: int
    max_false_abstention: float
    defaults: dict[str, float | None]
    tuned: dict[str, float | None]
    params: dict[str, Any]
    fold_params: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    withheld: int = 0  # withheld-article negatives the fit used (0: not used)
    negatives: str = "withheld"
    repeats: int = 1  # cross-validations pooled, each on another assignment of folds
    # the tuned policy's held-out false abstention in each repeat
    repeat_false_abstention: list[float | None] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """What the stored record keeps besides its parameters."""
        return {"folds": self.folds, "cases": self.cases, "answerable": self.answerable,
                "unanswerable": self.unanswerable, "negatives": self.negatives,
                "withheld_negatives": self.withheld,
                "max_false_abstention": self.max_false_abstention,
                "repeats": self.repeats,
                "repeat_false_abstention": self.repeat_false_abstention,
                "cross_validated": {"defaults": self.defaults, "tuned": self.tuned},
                "fold_params": self.fold_params, "notes": self.notes}


def observe(assistant: Assistant, suite: Suite, *, default_audience: str,
            progress: Callable[[int, int], None] | None = None) -> list[Observed]:
    """Ask every case once (nothing is logged)."""
    seen = []
    for i, case in enumerate(suite.cases, 1):
        q = Question(text=case.question, audience=case.audience or default_audience,
                     caller="eval-tune", locale=case.locale)
        seen.append(Observed(case, assistant.evidence(q)))
        if progress:
            progress(i, len(suite.cases))
    return seen


def withhold(ev: Evidence, articles: Collection[str]) -> Evidence:
    """``ev`` as it would be if the knowledge base did not hold ``articles``: every hit of
    theirs is dropped, everything else is kept as found (the other hits' scores and
    coverage do not depend on those articles, save BM25's document frequencies, which
    shift by the withheld articles' share of the corpus)."""
    gone = set(articles)

    def kept(cid: str) -> bool:
        return chunk_article(cid) not in gone

    return dataclasses.replace(
        ev, dense=[h for h in ev.dense if kept(h[0])],
        lexical=[h for h in ev.lexical if kept(h[0])],
        chunks={k: v for k, v in ev.chunks.items() if kept(k)},
        unservable={k: v for k, v in ev.unservable.items() if kept(k)},
        coverage={k: v for k, v in ev.coverage.items() if kept(k)},
        article_coverage={k: v for k, v in ev.article_coverage.items() if kept(k)},
        sentences={k: v for k, v in ev.sentences.items() if kept(k)})


def withheld_negatives(seen: Sequence[Observed]) -> list[Observed]:
    """One unanswerable case per answerable case whose evidence holds a hit of its
    articles: the same question and audience, with those articles withheld from its
    evidence (:func:`withhold`). A case whose articles were not found at all gives none:
    its evidence would be the same with them gone, labelled both ways."""
    negatives = []
    for o in seen:
        arts = set(o.case.articles)
        if not (o.case.answerable and arts):
            continue
        if not any(chunk_article(cid) in arts for cid, _ in (*o.evidence.dense,
                                                              *o.evidence.lexical)):
            continue
        negatives.append(Observed(dataclasses.replace(
            o.case, id=o.case.id + WITHHELD, answerable=False, articles=(), section=None,
            sections=(), gold_sections=(), contains=(), group=None),
            withhold(o.evidence, arts)))
    return negatives


def ranked(ev: Evidence, retrieval: RetrievalSettings) -> list[Candidate]:
    """The servable candidates in the order the answer path would rank them."""
    return ranked_with_lead(ev, retrieval)[0]


def ranked_with_lead(ev: Evidence, retrieval: RetrievalSettings,
                     answer: AnswerSettings | None = None,
                     ) -> tuple[list[Candidate], Candidate | None]:
    """:func:`ranked`, and the unservable hit ranked above every servable one, if any (the
    answer path's rule, :func:`assist.retrieve.order`, on what the database let this case's
    caller see); with ``answer``, in the order the answer path decides on
    (:func:`assist.answer.lead_language_first`)."""
    dense = [] if retrieval.fusion == "lexical" else ev.dense
    lexical = [] if retrieval.fusion == "dense" else ev.lexical
    sentences = ev.sentences if uses_sentences(retrieval) else None
    valid, unservable = order(fuse(dense, lexical, retrieval, sentences),
                              lambda cid: ev.chunks.get(cid) or ev.unservable.get(cid),
                              servable=lambda c: c.id in ev.chunks)
    lead = lead_of(unservable)
    if answer is not None:
        valid = lead_language_first(lead, valid, answer)
    return valid, lead


def evidence_signals(ev: Evidence, valid: Sequence[Candidate]) -> dict[str, float]:
    top = valid[0].chunk.id if valid else ""
    return signals(valid, coverage=ev.coverage.get(top, 0.0),
                   article_coverage=ev.article_coverage.get(top, 0.0),
                   lexical_ceiling=ev.lexical_ceiling)


def outcome(o: Observed, policy: Policy, *, decide: bool = True) -> CaseResult:
    """The case's result under ``policy`` (``decide=False``: never abstain, to score the
    ranking alone)."""
    ev = o.evidence
    valid, lead = ranked_with_lead(ev, policy.retrieval, policy.answer)
    abstain = decide and (policy.abstains(
        valid, coverage=lambda c: ev.coverage.get(c.chunk.id, 0.0),
        article_coverage=lambda c: ev.article_coverage.get(c.chunk.id, 0.0),
        lexical_ceiling=lambda: ev.lexical_ceiling)
        or lacks_approved_language(lead, valid, policy.answer))
    served = [] if abstain or not valid else serve_order(
        valid, top_k=min(EVAL_TOP_K, policy.answer.max_top_k),
        min_score=policy.answer.min_score, diversity=policy.answer.diversity)
    top = served[0].chunk if served else None
    return CaseResult(
        **expectation(o.case), status="answered" if served else "no_answer",
        ranked_articles=tuple(c.chunk.article_id for c in served),
        top_section=top.section if top else None,
        served_text="\n".join(c.chunk.text for c in served), verbatim_ok=True, latency_ms=0.0)


def _case_scores(seen: Sequence[Observed], policy: Policy) -> list[float]:
    """Per answerable case: right article first (1) plus right section first (1), ranking
    alone (never abstaining)."""
    scores = []
    for o in seen:
        if not o.case.answerable:
            continue
        r = outcome(o, policy, decide=False)
        scores.append(float(first_rank(r, 1) == 1) + float(section_hit(r)))
    return scores


def retrieval_grid(base: RetrievalSettings) -> list[RetrievalSettings]:
    """The shipped settings first (ties keep them), then every candidate."""
    grid = [base]
    for w in WEIGHTS:
        grid.append(base.model_copy(update={"fusion": "weighted", "dense_weight": w}))
    for w, s in itertools.product(WEIGHTS, SUPPORTS):
        grid.append(base.model_copy(update={"fusion": "article", "dense_weight": w,
                                            "article_support": s}))
    return grid


def fit(seen: Sequence[Observed], *, base: RetrievalSettings, answer: AnswerSettings,
        max_false_abstention: float, negatives: str = "withheld") -> tuple[Policy, list[str]]:
    """Retrieval, then abstention, fitted on ``seen``; abstention learns from the
    ``negatives`` (:data:`NEGATIVES`): the withheld-article negatives of its answerable
    cases (:func:`withheld_negatives`), its own unanswerable cases, or both."""
    notes: list[str] = []
    best = Policy(base, answer)
    if base.fusion in TUNABLE_FUSIONS:
        shipped = _case_scores(seen, best)
        best_gain = 0.0
        for retrieval in retrieval_grid(base)[1:]:
            policy = Policy(retrieval, answer)
            diff = np.subtract(_case_scores(seen, policy), shipped)
            gain = float(diff.mean()) if len(diff) else 0.0
            # Leave the shipped ranking only for a gain well beyond what chance gives on a
            # suite this size: two standard errors of the paired per-case difference.
            noise = 2.0 * float(diff.std(ddof=1)) / math.sqrt(len(diff)) if len(diff) > 1 else 0.0
            if gain > best_gain and gain > noise:
                best, best_gain = policy, gain
    else:
        notes.append(f"retrieval.fusion is '{base.fusion}': only abstention is tuned")
    examples = [o for o in seen if negatives != "withheld" or o.case.answerable]
    if negatives != "suite":
        examples += withheld_negatives(seen)
    labels = [o.case.answerable for o in examples]
    if sum(labels) < MIN_CLASS or len(labels) - sum(labels) < MIN_CLASS:
        unanswerable = {"withheld": "withheld-article negatives (answerable cases whose "
                                    "articles the evidence holds)",
                        "suite": "unanswerable cases",
                        "both": "unanswerable cases and withheld-article negatives"}
        notes.append(f"abstention keeps the shipped thresholds: fitting it needs at least "
                     f"{MIN_CLASS} answerable cases and {MIN_CLASS} "
                     f"{unanswerable[negatives]}")
        return best, notes
    if not holds_operating_point(sum(labels), max_false_abstention):
        more = (f"label at least {math.ceil(1 / max_false_abstention - 1 - 1e-9)} answerable "
                f"cases or " if max_false_abstention > 0 else "")
        notes.append(f"abstention keeps the shipped thresholds: with {sum(labels)} answerable "
                     f"cases no threshold can promise at most {max_false_abstention:.1%} false "
                     f"abstention on new questions; {more}choose a larger "
                     f"--max-false-abstention")
        return best, notes
    rows, escalated = [], []
    for o in examples:
        valid, lead = ranked_with_lead(o.evidence, best.retrieval, answer)
        rows.append(evidence_signals(o.evidence, valid))
        escalated.append(lacks_approved_language(lead, valid, answer))
    model = fit_abstention(rows, labels, max_false_abstention=max_false_abstention,
                           escalated=escalated)
    if not math.isfinite(model.threshold):
        spent = sum(e for e, a in zip(escalated, labels, strict=True) if a)
        notes.append(f"abstention keeps the shipped thresholds: {spent} of the {sum(labels)} "
                     f"answerable cases escalate for want of approved language already, "
                     f"which spends the {max_false_abstention:.1%} operating point (a model "
                     f"would abstain on nothing more); add approved language to those "
                     f"articles or choose a larger --max-false-abstention")
        return best, notes
    return Policy(best.retrieval, answer, abstention=model), notes


def folds_of(cases: Sequence[Case], k: int, *, repeat: int = 0) -> list[int]:
    """A fold per case: stratified by answerability, in an order fixed by the case ids
    (and ``repeat``: each repeat of the cross-validation shuffles them differently, the
    first as it always has). Paraphrases of one question (one ``group``) share a fold, so a
    held-out case never has a paraphrase in training (that would flatter every held-out
    figure); a group counts as unanswerable when any of its cases is."""
    units: dict[str, list[int]] = {}
    for i, c in enumerate(cases):
        units.setdefault(f"group:{c.group}" if c.group else c.id, []).append(i)

    def key(unit: str) -> str:
        return hashlib.sha256((f"{repeat}:{unit}" if repeat else unit).encode()).hexdigest()

    fold = [0] * len(cases)
    for answerable in (True, False):
        members = sorted((u for u, rows in units.items()
                          if all(cases[i].answerable for i in rows) == answerable), key=key)
        for j, unit in enumerate(members):
            for i in units[unit]:
                fold[i] = j % k
    return fold


def params_of(policy: Policy, max_false_abstention: float) -> dict[str, Any]:
    r = policy.retrieval
    return {
        "retrieval": {"fusion": r.fusion, "dense_weight": r.dense_weight,
                      "article_support": r.article_support,
                      "sentence_match": r.sentence_match},
        "abstention": policy.abstention.to_dict() if policy.abstention else None,
        "operating_point": {"max_false_abstention": max_false_abstention},
        "signals": list(SIGNALS),
    }


def check_operating_point(max_false_abstention: float) -> None:
    """Refuse an operating point that is not a share of answerable questions."""
    if not 0.0 <= max_false_abstention < 1.0:  # (NaN fails too)
        raise InvalidInput("--max-false-abstention is a share of answerable questions: "
                           f"give a value from 0 to below 1 (got {max_false_abstention})")


def check_folds(folds: int, cases: Sequence[Case] | None = None) -> None:
    """Refuse a fold count under 2, and (with ``cases``) a suite too small for it or with
    no answerable case; the CLI checks before asking any case."""
    if folds < 2:
        raise InvalidInput(f"--folds must be at least 2 (got {folds})")
    if cases is None:
        return
    if len(cases) < folds * 2:
        raise InvalidInput(f"the suite has {len(cases)} cases: {folds}-fold cross-validation "
                           f"needs at least {folds * 2}; label more cases or pass fewer --folds")
    if not any(c.answerable for c in cases):
        raise InvalidInput("the suite has no answerable case: nothing to rank")


def check_negatives(negatives: str) -> None:
    """Refuse a ``negatives`` that is not one of :data:`NEGATIVES`."""
    if negatives not in NEGATIVES:
        raise InvalidInput(f"--negatives is one of {', '.join(NEGATIVES)} (got {negatives!r})")


def _abstains(observed: Sequence[Observed], policy: Policy) -> list[bool]:
    return [outcome(o, policy).status != "answered" for o in observed]


def tune(seen: Sequence[Observed], *, base: RetrievalSettings, answer: AnswerSettings,
         folds: int = 5, max_false_abstention: float = 0.05, negatives: str = "withheld",
         repeats: int = 1,
         progress: Callable[[int, int], None] | None = None) -> TuneResult:
    """Cross-validate the tuning procedure, then fit it on every case (``negatives``: what
    abstention learns from, :data:`NEGATIVES`).

    ``repeats``: the cross-validation is run that many times, each on another assignment
    of cases to folds (:func:`folds_of`), and its held-out results pooled: on a suite of a
    few dozen cases one assignment can move a figure by several cases either way. The
    tuned false abstention of each repeat is kept too (``repeat_false_abstention``), to
    show how far one draw can stray from the operating point.

    Besides the suite's metrics, ``withheld_abstention`` is the share of the held-out
    answerable cases' withheld-article negatives that each policy escalates: abstention on
    questions whose topic the knowledge base lacks, measured on one question per
    answerable case. It is reported whether or not the fit used them."""
    check_negatives(negatives)
    check_operating_point(max_false_abstention)
    cases = [o.case for o in seen]
    check_folds(folds, cases)
    if repeats < 1:
        raise InvalidInput(f"--repeats must be at least 1 (got {repeats})")
    shipped = Policy(base, answer)
    # The shipped settings fit nothing, so every case is held out from them whatever the
    # folds: scored once, not once per fold assignment.
    lacking_all = withheld_negatives(seen)
    held_default = [outcome(o, shipped) for o in seen]
    withheld_default = _abstains(lacking_all, shipped)
    held_tuned: list[CaseResult] = []
    withheld_tuned: list[bool] = []
    fold_params: list[dict[str, Any]] = []
    repeat_false: list[float | None] = []
    fold_notes: dict[str, int] = {}
    steps = folds * repeats + 1
    for r in range(repeats):
        assignment = folds_of(cases, folds, repeat=r)
        this_repeat: list[CaseResult] = []
        for f in range(folds):
            train = [o for o, k in zip(seen, assignment, strict=True) if k != f]
            test = [o for o, k in zip(seen, assignment, strict=True) if k == f]
            policy, said = fit(train, base=base, answer=answer,
                               max_false_abstention=max_false_abstention, negatives=negatives)
            for note in said:
                fold_notes[note] = fold_notes.get(note, 0) + 1
            if r == 0:
                fold_params.append(params_of(policy, max_false_abstention)["retrieval"])
            this_repeat += [outcome(o, policy) for o in test]
            withheld_tuned += _abstains(withheld_negatives(test), policy)
            if progress:
                progress(r * folds + f + 1, steps)
        held_tuned += this_repeat
        repeat_false.append(summarize(this_repeat)["false_abstention"])
    final, notes = fit(seen, base=base, answer=answer,
                       max_false_abstention=max_false_abstention, negatives=negatives)
    if progress:
        progress(steps, steps)
    # A fold trains on fewer cases than the final fit: say where its "tuned" column shows
    # something else than what is stored (e.g. the shipped thresholds, for want of cases).
    notes += [f"in {n} of {folds * repeats} cross-validation folds: {note}"
              for note, n in fold_notes.items() if note not in notes]
    return TuneResult(
        folds=folds, cases=len(cases), answerable=sum(c.answerable for c in cases),
        unanswerable=sum(not c.answerable for c in cases),
        max_false_abstention=max_false_abstention,
        defaults=_headline(summarize(held_default), withheld_default),
        tuned=_headline(summarize(held_tuned), withheld_tuned),
        params=params_of(final, max_false_abstention), fold_params=fold_params, notes=notes,
        withheld=len(lacking_all) if negatives != "suite" else 0,
        negatives=negatives, repeats=repeats, repeat_false_abstention=repeat_false)


def _headline(m: dict[str, float | None], withheld: Sequence[bool]) -> dict[str, float | None]:
    return {**{k: m.get(k) for k in HEADLINE},
            "withheld_abstention": sum(withheld) / len(withheld) if withheld else None}

