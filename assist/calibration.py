"""Calibrated abstention: whether the best evidence is good enough to answer.

The answer path measures a few signals of each question's evidence (:func:`signals`). With
no tuning record it abstains on the shipped thresholds (best cosine ``answer.min_score``,
question coverage ``answer.min_coverage``). A tuning record (``kb eval tune``) replaces them
with an :class:`AbstentionModel`: a logistic regression over all the signals, fitted on an
evaluator's suite, and a threshold set at the operating point the operator chose (at most a
given share of answerable questions abstained), not a raw cut-off.

Pure numpy: the same code fits the model (:mod:`evals.tune`) and applies it (answer path).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from assist.retrieve import Candidate
from kb.settings import AnswerSettings, RetrievalSettings, Settings
from kb.tuning import ActiveTuning

SIGNALS = ("dense_top", "lexical_top", "margin", "coverage", "agreement", "article_coverage")
SIGNAL_HELP = {
    "dense_top": "best cosine similarity of a servable passage",
    "lexical_top": "best BM25 score of a servable passage / the question's BM25 ceiling",
    "margin": "fused score of the top passage minus that of the best other article",
    "coverage": "share of the question's IDF-weighted terms the top passage contains",
    "agreement": "1 when the dense and the lexical retriever put the same article first",
    "article_coverage": "share of the question's IDF-weighted terms anywhere in the top "
                        "passage's article",
}
# A tuning record names the signals its model uses: a record fitted before a signal was added
# keeps working (it weighs only its own); one naming a signal this version does not compute
# is refused (AbstentionModel.from_dict).


def signals(valid: Sequence[Candidate], *, coverage: float, article_coverage: float,
            lexical_ceiling: float) -> dict[str, float]:
    """The evidence signals of one question, from its servable candidates (best first).

    ``coverage``: of the top candidate (:meth:`assist.index.ChunkIndex.coverage`);
    ``article_coverage``: of the top candidate's article version
    (:meth:`assist.index.ChunkIndex.article_coverage`); ``lexical_ceiling``: the best BM25
    score a passage could reach for this question
    (:meth:`assist.index.ChunkIndex.lexical_ceiling`), so ``lexical_top`` compares across
    questions."""
    if not valid:
        return dict.fromkeys(SIGNALS, 0.0)
    top = valid[0]
    dense = [c for c in valid if c.dense is not None]
    lexical = [c for c in valid if c.lexical is not None]
    best_dense = max(dense, key=lambda c: c.dense or 0.0) if dense else None
    best_lexical = max(lexical, key=lambda c: c.lexical or 0.0) if lexical else None
    other = next((c for c in valid if c.chunk.article_id != top.chunk.article_id), None)
    return {
        "dense_top": float(best_dense.dense or 0.0) if best_dense else 0.0,
        "lexical_top": (float(best_lexical.lexical or 0.0) / lexical_ceiling
                        if best_lexical and lexical_ceiling > 0 else 0.0),
        "margin": float(top.score - other.score) if other else float(top.score),
        "coverage": float(coverage),
        "agreement": float(best_dense is not None and best_lexical is not None
                           and best_dense.chunk.article_id == best_lexical.chunk.article_id),
        "article_coverage": float(article_coverage),
    }


@dataclass(frozen=True)
class AbstentionModel:
    """Logistic regression over standardised signals; abstain when the log-odds that the
    question is answerable fall below ``threshold``."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float

    def logit(self, values: Mapping[str, float]) -> float:
        z = sum(w * (values.get(f, 0.0) - m) / s
                for f, m, s, w in zip(self.features, self.mean, self.scale, self.weights,
                                      strict=True))
        return float(z + self.bias)

    def abstains(self, values: Mapping[str, float]) -> bool:
        return self.logit(values) < self.threshold

    def finite(self) -> bool:
        """Whether every number of the model is finite (a model that is not cannot be
        stored, nor applied)."""
        return all(math.isfinite(v) for v in (*self.mean, *self.scale, *self.weights,
                                              self.bias, self.threshold))

    def to_dict(self) -> dict[str, Any]:
        if not self.finite():
            raise ValueError("an abstention model with a non-finite value cannot be stored")
        return {"features": list(self.features), "mean": list(self.mean),
                "scale": list(self.scale), "weights": list(self.weights),
                "bias": self.bias, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AbstentionModel:
        features = tuple(str(f) for f in data["features"])
        unknown = set(features) - set(SIGNALS)
        if unknown:
            raise ValueError(f"unknown abstention signals {sorted(unknown)}")
        model = cls(features=features, mean=tuple(float(x) for x in data["mean"]),
                    scale=tuple(float(x) for x in data["scale"]),
                    weights=tuple(float(x) for x in data["weights"]),
                    bias=float(data["bias"]), threshold=float(data["threshold"]))
        sizes = {len(model.features), len(model.mean), len(model.scale), len(model.weights)}
        if len(sizes) != 1:
            raise ValueError(f"{len(model.features)} signals but {len(model.mean)} means, "
                             f"{len(model.scale)} scales and {len(model.weights)} weights")
        if any(not v > 0 for v in model.scale):  # (NaN fails too)
            raise ValueError("a signal's scale is not a positive number")
        return model


def fit_logistic(x: NDArray[np.float64], y: NDArray[np.float64], *,
                 l2: float = 1.0, iterations: int = 50) -> tuple[NDArray[np.float64], float]:
    """L2-regularised logistic regression by Newton's method (IRLS); the bias is not
    penalised. Classes are weighted to equal total weight, so a suite with few unanswerable
    questions still shapes the model."""
    n, k = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    pos = max(float(y.sum()), 1.0)
    neg = max(float(n - y.sum()), 1.0)
    sample = np.where(y > 0.5, n / (2 * pos), n / (2 * neg))
    beta = np.zeros(k + 1)
    penalty = np.full(k + 1, l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ beta, -30, 30)))
        grad = xb.T @ (sample * (p - y)) + penalty * beta
        hess = (xb * (sample * p * (1 - p))[:, None]).T @ xb + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return beta[:-1], float(beta[-1])


def operating_threshold(answerable_logits: Sequence[float], max_false_abstention: float, *,
                        spent: int = 0) -> float:
    """The threshold (abstain when a logit is below it) at which a *new* answerable
    question is abstained on with probability at most ``max_false_abstention``, read off
    these answerable questions' logits. ``spent``: further answerable questions that
    escalate anyway, by another rule (they count against the same budget, as the lowest
    logits).

    A new question's logit is as likely to fall in any of the n + 1 gaps the n known ones
    leave, so the threshold sits at position ``max_false_abstention`` x (n + 1) - 1 of
    their sorted list (0-based, interpolated between neighbours): on average it abstains on
    the chosen share of new answerable questions. Reading it at ``max_false_abstention`` x n
    instead (abstain on exactly that share of the known ones) overshoots on new questions,
    by up to 1 / (n + 1): 6.8% instead of 5% with 43 answerable questions. When even the
    lowest logit would spend more than the budget (fewer than 1 / ``max_false_abstention`` - 1
    answerable questions, or the budget already spent), no threshold can promise it: -inf,
    the model abstains on nothing."""
    ranked = sorted(answerable_logits)
    if not ranked:
        return -math.inf
    position = max_false_abstention * (len(ranked) + spent + 1) - 1 - spent
    if position < -1e-9:
        return -math.inf
    if position >= len(ranked) - 1:
        return ranked[-1] + 1e-9
    low = max(math.floor(position + 1e-9), 0)
    frac = min(max(position - low, 0.0), 1.0)
    if frac == 0.0 or not (math.isfinite(ranked[low]) and math.isfinite(ranked[low + 1])):
        return ranked[low]
    return ranked[low] + frac * (ranked[low + 1] - ranked[low])


def holds_operating_point(answerable: int, max_false_abstention: float) -> bool:
    """Can ``answerable`` labelled answerable questions set a threshold at this operating
    point (:func:`operating_threshold`)? It needs at least 1 / ``max_false_abstention`` - 1
    of them (19 at 5%)."""
    return max_false_abstention * (answerable + 1) >= 1 - 1e-9


def _standardised_fit(rows: Sequence[Mapping[str, float]], answerable: Sequence[bool],
                      features: Sequence[str]) -> AbstentionModel:
    """The logistic model on these rows, with no threshold yet (0.0)."""
    x = np.array([[r.get(f, 0.0) for f in features] for r in rows], dtype=np.float64)
    y = np.array([1.0 if a else 0.0 for a in answerable])
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    w, b = fit_logistic((x - mean) / scale, y)
    return AbstentionModel(tuple(features), tuple(float(v) for v in mean),
                           tuple(float(v) for v in scale), tuple(float(v) for v in w), b,
                           threshold=0.0)


def out_of_fold_logits(rows: Sequence[Mapping[str, float]], answerable: Sequence[bool], *,
                       features: Sequence[str] = SIGNALS, folds: int = 5) -> list[float] | None:
    """The logit of each answerable row from a model fitted without it (``folds``-fold,
    stratified by class, in the rows' order); None when either class has fewer than two
    rows, too few to hold any out."""
    pos = [i for i, a in enumerate(answerable) if a]
    neg = [i for i, a in enumerate(answerable) if not a]
    k = min(folds, len(neg), len(pos))
    if k < 2:
        return None
    fold = {i: j % k for members in (pos, neg) for j, i in enumerate(members)}
    logits: dict[int, float] = {}
    for f in range(k):
        train = [i for i in range(len(rows)) if fold[i] != f]
        model = _standardised_fit([rows[i] for i in train], [answerable[i] for i in train],
                                  features)
        logits.update((i, model.logit(rows[i])) for i in pos if fold[i] == f)
    return [logits[i] for i in pos]


def fit_abstention(rows: Sequence[Mapping[str, float]], answerable: Sequence[bool], *,
                   max_false_abstention: float,
                   features: Sequence[str] = SIGNALS,
                   cross_fit: int = 5,
                   escalated: Sequence[bool] | None = None) -> AbstentionModel:
    """Fit the model on questions' signals and whether each is answerable, with the
    threshold at the operating point. ``escalated``: questions another rule escalates
    whatever the model says (``no_approved_language``); the answerable ones among them
    count against ``max_false_abstention``, so the operating point holds for all
    escalations together.

    The threshold is read off out-of-fold logits (``cross_fit`` folds: each answerable
    question scored by a model that did not see it), not off the fitted model's own
    training logits: those are optimistic, so an in-sample threshold abstains on more than
    ``max_false_abstention`` of new answerable questions. ``cross_fit=0`` (or too few cases
    to hold any out) uses the training logits."""
    model = _standardised_fit(rows, answerable, features)
    logits = out_of_fold_logits(rows, answerable, features=features,
                                folds=cross_fit) if cross_fit >= 2 else None
    if logits is None:
        logits = [model.logit(r) for r, a in zip(rows, answerable, strict=True) if a]
    # ``logits`` are the answerable rows', in order.
    flags = [e for e, a in zip(escalated or [False] * len(rows), answerable, strict=True) if a]
    open_logits = [lg for lg, e in zip(logits, flags, strict=True) if not e]
    threshold = operating_threshold(open_logits, max_false_abstention, spent=sum(flags))
    return AbstentionModel(model.features, model.mean, model.scale, model.weights, model.bias,
                           threshold=threshold)


TUNABLE_FUSIONS = ("weighted", "article")
TUNABLE_RETRIEVAL = ("fusion", "dense_weight", "article_support", "sentence_match")


def confidence(candidates: Sequence[Candidate]) -> float:
    """How close the best evidence is to the question (max cosine similarity; 1 when only
    lexical evidence exists, 0 without candidates)."""
    dense = [c.dense for c in candidates if c.dense is not None]
    if dense:
        return max(dense)
    return 1.0 if candidates else 0.0


@dataclass(frozen=True)
class Policy:
    """The retrieval settings and the abstention rule one answer uses: the shipped settings,
    or those of the tuning record in use (``tuning_version`` / ``tuning_sha256``)."""

    retrieval: RetrievalSettings
    answer: AnswerSettings
    abstention: AbstentionModel | None = None
    tuning_version: int | None = None
    tuning_sha256: str | None = None
    # Why the tuning record in use is not applied (see policy_for); None when it is, or
    # when none is in use.
    problem: str | None = None

    def abstains(self, valid: Sequence[Candidate], *,
                 coverage: Callable[[Candidate], float],
                 article_coverage: Callable[[Candidate], float],
                 lexical_ceiling: Callable[[], float]) -> bool:
        """Whether the best servable evidence is too weak to answer with."""
        if not valid:
            return True
        if self.abstention is not None:
            return self.abstention.abstains(signals(
                valid, coverage=coverage(valid[0]),
                article_coverage=article_coverage(valid[0]),
                lexical_ceiling=lexical_ceiling()))
        return confidence(valid) < self.answer.min_score or (
            self.retrieval.fusion != "dense"
            and coverage(valid[0]) < self.answer.min_coverage)


def record_problem(params: Mapping[str, Any]) -> str | None:
    """Why this version of Canon cannot apply a tuning record's parameters; None when it
    can. The one rule for storing a record, putting one in use and answering under one
    (:func:`policy_for`): a record fitted under a baseline ranking (its abstention was fitted
    on that ranking's evidence), invalid retrieval values, or an abstention model naming a
    signal this version does not compute (written by a newer version sharing the database)
    or holding a value that is not a finite number."""
    retrieval = params.get("retrieval") or {}
    if not isinstance(retrieval, Mapping):
        return "its retrieval settings are not a mapping"
    fusion = retrieval.get("fusion")
    if fusion is not None and fusion not in TUNABLE_FUSIONS:
        return (f"it was fitted under the '{fusion}' ranking, a baseline Canon does not tune "
                f"(it tunes {' and '.join(TUNABLE_FUSIONS)} only)")
    try:
        RetrievalSettings.model_validate({
            **RetrievalSettings().model_dump(),
            **{k: v for k, v in retrieval.items() if k in TUNABLE_RETRIEVAL}})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        return f"its retrieval setting {where} is invalid: {first.get('msg')}"
    model = params.get("abstention")
    if model:
        try:
            m = AbstentionModel.from_dict(model)
        except (ValueError, KeyError, TypeError) as exc:
            return f"this version cannot read its abstention model ({exc})"
        if not m.finite():
            return "its abstention model holds a value that is not a finite number"
    return None


def policy_for(settings: Settings, tuning: ActiveTuning | None) -> Policy:
    """The policy of ``settings`` with ``tuning`` applied. A tuning record changes only the
    fusion family Canon ships (``weighted`` / ``article``): a baseline configured on purpose
    (``dense``, ``lexical``, ``rrf``...) stays what it is, and keeps the shipped
    abstention. A record this version cannot apply (:func:`record_problem`) is not applied:
    the policy is the shipped one, and says why in ``problem`` (answers go on; the answer
    path logs it)."""
    base = Policy(retrieval=settings.retrieval, answer=settings.answer)
    if tuning is None or settings.retrieval.fusion not in TUNABLE_FUSIONS:
        return base
    problem = record_problem(tuning.params)
    if problem is not None:
        return dataclasses.replace(base, problem=(
            f"tuning v{tuning.version} is in use but not applied: {problem}; answering on "
            "the shipped settings until another record is put in use "
            "(`kb eval use-tuning defaults`, or refit with `kb eval tune`)"))
    # A record ranks as it was fitted: one stored before sentence vectors existed ranks
    # without them (its abstention model was fitted on those scores).
    overrides = {"sentence_match": False,
                 **{k: v for k, v in (tuning.params.get("retrieval") or {}).items()
                    if k in TUNABLE_RETRIEVAL}}
    retrieval = RetrievalSettings.model_validate({**settings.retrieval.model_dump(),
                                                  **overrides})
    model = tuning.params.get("abstention")
    return Policy(retrieval=retrieval, answer=settings.answer,
                  abstention=AbstentionModel.from_dict(model) if model else None,
                  tuning_version=tuning.version, tuning_sha256=tuning.sha256)
