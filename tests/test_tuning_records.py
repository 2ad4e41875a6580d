"""Tuning records in every face and process: a record this version cannot apply is refused
and never breaks answers, a record fitted under a baseline ranking is neither stored nor
applied, eval runs store the tuning their answers ran under, and concurrent followers and
switches keep one consistent story (a hostile review's findings, each failing before)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from api.cli import app
from assist.answer import Assistant, Question
from assist.calibration import (
    SIGNALS,
    TUNABLE_FUSIONS,
    AbstentionModel,
    policy_for,
    record_problem,
)
from kb import tuning
from kb.errors import InvalidInput
from kb.identity import add_user
from kb.models import AuditEvent
from kb.settings import Settings
from tests.conftest import cli_env
from tests.kbs import BuiltKB, build_kb

MODEL = AbstentionModel(tuple(SIGNALS), (0.5,) * 6, (0.2,) * 6, (0.0, 0.0, 0.0, 2.0, 0.0, 0.0),
                        0.0, -0.5)


def _params(fusion: str = "weighted", features: list[str] | None = None) -> dict[str, Any]:
    model = MODEL.to_dict()
    if features is not None:
        model = {**model, "features": features}
    return {"retrieval": {"fusion": fusion, "dense_weight": 0.7, "article_support": 0.3,
                          "sentence_match": True},
            "abstention": model, "operating_point": {"max_false_abstention": 0.05},
            "signals": list(SIGNALS)}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltKB]:
    kb = build_kb(tmp_path_factory.mktemp("review"))
    with Session(kb.engine) as s:
        add_user(s, name="eve", role="evaluator", by="test")
    yield kb
    kb.engine.dispose()


@pytest.fixture
def clean(built: BuiltKB) -> Iterator[BuiltKB]:
    yield built
    with Session(built.engine) as s:
        tuning.use(s, _eve(s), version=None, now=built.clock(), problem=record_problem)


def _eve(session: Session) -> Any:
    from kb.permissions import Actor

    return Actor(id="eve", role="evaluator")


def _store(kb: BuiltKB, params: dict[str, Any], *, activate: bool = True,
           foreign: bool = False) -> Any:
    """Store a record; ``foreign``: as another version of Canon sharing the database would,
    with its own idea of what it can apply."""
    with Session(kb.engine, expire_on_commit=False) as s:
        return tuning.store(s, _eve(s), suite="x", suite_sha256="0" * 64, params=params,
                            metrics={}, now=kb.clock(), activate=activate,
                            problem=(lambda p: None) if foreign else record_problem)


def _kb(kb: BuiltKB, *args: str, **extra: str) -> Any:
    return CliRunner().invoke(app, list(args), env=cli_env(kb.settings, **extra))


def _refund_suite(path: Path, cases: int = 1) -> Path:
    """A suite of ``cases`` copies of one answerable refund question."""
    path.write_text("".join(json.dumps({"id": f"a{i}", "question": "how do refunds work?",
                                        "answerable": True,
                                        "expect": {"articles": ["billing-bill-explained"]}})
                            + "\n" for i in range(cases)))
    return path


# --- 1. a record naming a signal this version does not compute --------------------------

def test_use_tuning_refuses_a_record_this_version_cannot_apply(clean: BuiltKB) -> None:
    """A record written by a newer Canon (a seventh signal) sharing the database."""
    row = _store(clean, _params(features=[*SIGNALS, "from_the_future"]), activate=False,
                 foreign=True)
    result = _kb(clean, "eval", "use-tuning", str(row.version), "--as", "eve")
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "from_the_future" in result.output and "cannot be applied" in result.output
    with Session(clean.engine) as s:
        assert tuning.in_use(s) is None  # nothing switched
    # and this version never stores one itself
    with pytest.raises(InvalidInput, match="from_the_future"):
        _store(clean, _params(features=[*SIGNALS, "from_the_future"]))


def test_answers_survive_a_record_in_use_that_this_version_cannot_apply(
        clean: BuiltKB, caplog: pytest.LogCaptureFixture) -> None:
    row = _store(clean, _params(features=[*SIGNALS, "from_the_future"]), foreign=True)
    fresh = Assistant(engine=clean.engine, index=clean.assistant.index,
                      settings=clean.settings, clock=clean.clock)
    with caplog.at_level("ERROR", logger="canon.assist"):
        result = fresh.ask(Question(text="how do refunds work?", audience="internal"))
    assert result.status in ("answered", "no_answer", "escalate")
    # answered on the shipped settings, and the log says why
    assert result.tuning_sha256 is None and fresh.policy.abstention is None
    assert f"tuning v{row.version} is in use but not applied" in caplog.text


def test_http_assist_with_a_record_this_version_cannot_apply(clean: BuiltKB) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from kb.identity import create_token

    _store(clean, _params(features=[*SIGNALS, "from_the_future"]), foreign=True)
    with Session(clean.engine) as s:
        add_user(s, name="ann", role="agent", audiences=["internal"], by="test")
        _, token = create_token(s, user="ann", expires_in=None, by="test")
        s.commit()
    fresh = Assistant(engine=clean.engine, index=clean.assistant.index,
                      settings=clean.settings, clock=clean.clock)
    with TestClient(create_app(clean.settings, assistant=fresh),
                    raise_server_exceptions=False) as client:
        r = client.post("/v1/assist", json={"question": "how do refunds work?"},
                        headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["tuning_sha256"] is None


# --- 2. the tuning hash an eval run stores vs the policy it ran under ---------------------

def test_eval_run_stores_the_hash_of_the_policy_it_ran_under(
        clean: BuiltKB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a baseline fusion (rrf) the answer path ignores the record in use
    (policy_for): `kb eval run` stores the hash its answers report (none), not the hash of
    the record in the database."""
    row = _store(clean, _params())
    suite = _refund_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run.json"
    rrf = clean.settings.model_copy(update={"retrieval": clean.settings.retrieval.model_copy(
        update={"fusion": "rrf"})})
    applied = policy_for(rrf, tuning.ActiveTuning(row.version, row.sha256, row.params))
    assert applied.tuning_sha256 is None  # what the answer path really applies
    import evals.runner as runner

    real = runner.in_process
    ran_under: list[str | None] = []

    def in_process(assistant: Assistant, **kw: Any) -> Any:
        ask = real(assistant, **kw)

        def wrapped(case: Any, audience: str) -> Any:
            data = ask(case, audience)
            ran_under.append(assistant.policy.tuning_sha256)
            return data

        return wrapped

    monkeypatch.setattr(runner, "in_process", in_process)
    r = _kb(clean, "eval", "run", str(suite), "--json", str(out),
            KB_RETRIEVAL__FUSION="rrf")
    assert r.exit_code == 0, r.output
    assert ran_under == [None]  # the CLI's answer path applied no tuning
    assert json.loads(out.read_text())["tuning_sha256"] == applied.tuning_sha256


def test_a_run_whose_tuning_changed_midway_is_not_stored(
        clean: BuiltKB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process switches the record while a run is going: its cases measured two
    policies, and no single hash can say which; it is refused, not stored under either."""
    import evals.runner as runner

    row = _store(clean, _params(), activate=False)
    real = runner.in_process

    def in_process(assistant: Assistant, **kw: Any) -> Any:
        ask = real(assistant, **kw)
        seen: list[str | None] = []

        def wrapped(case: Any, audience: str) -> Any:
            data = ask(case, audience)
            seen.append(data["tuning_sha256"])
            if len(seen) == 1:  # after the first case, another process switches
                with Session(clean.engine) as s:
                    tuning.use(s, _eve(s), version=row.version, now=clean.clock(),
                               problem=record_problem)
            return data

        return wrapped

    monkeypatch.setattr(runner, "in_process", in_process)
    suite = _refund_suite(tmp_path / "s.jsonl", 2)
    before = json.loads(_kb(clean, "eval", "list", "--json").stdout)
    r = _kb(clean, "eval", "run", str(suite))
    assert r.exit_code == 2 and "changed during the run" in r.output, r.output
    assert json.loads(_kb(clean, "eval", "list", "--json").stdout) == before


def test_a_run_stores_the_tuning_its_answers_ran_under(clean: BuiltKB, tmp_path: Path) -> None:
    row = _store(clean, _params())
    suite = _refund_suite(tmp_path / "s.jsonl")
    out = tmp_path / "run.json"
    r = _kb(clean, "eval", "run", str(suite), "--json", str(out))
    assert r.exit_code == 0, r.output
    stored = json.loads(out.read_text())
    assert stored["tuning_sha256"] == row.sha256
    assert stored["cases"][0]["case_id"] == "a0"


def test_kb_eval_tune_under_a_baseline_ranking_stores_nothing(clean: BuiltKB,
                                                              tmp_path: Path) -> None:
    suite = _refund_suite(tmp_path / "s.jsonl", 12)
    r = _kb(clean, "eval", "tune", str(suite), "--as", "eve", KB_RETRIEVAL__FUSION="rrf")
    assert r.exit_code == 2 and "'rrf', a baseline" in r.output and "--dry-run" in r.output
    with Session(clean.engine) as s:
        assert tuning.history(s) == [] or all(t.params["retrieval"]["fusion"] != "rrf"
                                              for t in tuning.history(s))


# --- 3. a record fitted under a baseline fusion ------------------------------------------

def test_a_record_fitted_under_a_baseline_does_not_switch_canon_to_that_baseline() -> None:
    """A record fitted under a baseline ranking (fusion 'rrf', stored by another version,
    say) never switches Canon's production ranking to that baseline once the settings are
    back on Canon's fusion."""
    record = tuning.ActiveTuning(version=1, sha256="ab" * 32, params=_params("rrf"))
    policy = policy_for(Settings(), record)
    assert policy.retrieval.fusion in TUNABLE_FUSIONS, policy.retrieval.fusion


# --- 4. bad input -------------------------------------------------------------------------

def test_use_tuning_with_a_huge_number_is_a_clear_error(clean: BuiltKB) -> None:
    r = _kb(clean, "eval", "use-tuning", "99999999999999999999", "--as", "eve")
    assert r.exit_code == 2, (r.exit_code, r.output, repr(r.exception))


# --- 5. two threads following the clock ---------------------------------------------------

def test_a_policy_read_before_a_switch_never_outlives_it(clean: BuiltKB,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Questions follow the governance clock on several threads. Thread A reads the clock
    and the record in use just before a switch commits; thread B reads both after it and
    finishes first; A's reading lands last. The clock reading and its policy are kept as
    one pair, so the next question sees the clock moved past A's reading and reads again:
    the switched-to record is applied from then on, not when the clock next moves."""
    p = Assistant(engine=clean.engine, index=clean.assistant.index, settings=clean.settings,
                  clock=clean.clock)
    with clean.engine.connect() as conn:
        p.follow(conn)
    row = _store(clean, _params(), activate=False)
    real_active = tuning.active
    a_read, b_done = threading.Event(), threading.Event()

    def active(conn: Any) -> Any:
        got = real_active(conn)
        if threading.current_thread().name == "A":
            a_read.set()
            assert b_done.wait(10)  # A's (old) reading lands after B's
        return got

    monkeypatch.setattr(tuning, "active", active)
    with Session(clean.engine) as s:  # the clock moves, so A reads the record again
        from kb.serving import tick
        tick(s)
        s.commit()

    def follow() -> None:
        with clean.engine.connect() as conn:
            p.follow(conn)

    ta = threading.Thread(target=follow, name="A")
    ta.start()
    assert a_read.wait(10)
    with Session(clean.engine) as s:  # another process puts the record in use
        tuning.use(s, _eve(s), version=row.version, now=clean.clock(), problem=record_problem)
    tb = threading.Thread(target=follow, name="B")
    tb.start()
    tb.join(10)
    b_done.set()
    ta.join(10)
    assert p.policy.tuning_sha256 is None  # A's reading, from before the switch, landed last
    with clean.engine.connect() as conn:
        policy = p.follow(conn)  # the next question, no further governance change
    assert policy.tuning_sha256 == row.sha256


# --- 6. audit of concurrent switches ------------------------------------------------------

def test_concurrent_switches_audit_the_true_previous_record(
        clean: BuiltKB, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two evaluators switch at the same moment: each switch's audit event names the record
    that was really in use before it, so the events read as one chain."""
    import time

    one = _store(clean, _params(), activate=False)
    two = _store(clean, _params("article"), activate=False)
    from kb import audit

    real = audit.record

    def record(session: Session, **kw: Any) -> Any:
        if kw.get("action") == "tuning.used":
            time.sleep(0.5)  # the window in which the other switch reads the state
        return real(session, **kw)

    monkeypatch.setattr(audit, "record", record)
    errors: list[BaseException] = []

    def switch(v: int) -> None:
        try:
            with Session(clean.engine) as s:
                tuning.use(s, _eve(s), version=v, now=clean.clock(), problem=record_problem)
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=switch, args=(v,)) for v in (one.version, two.version)]
    for t in ts:
        t.start()
        time.sleep(0.1)
    for t in ts:
        t.join(30)
    assert not errors, errors
    with Session(clean.engine) as s:
        events = s.exec(select(AuditEvent).where(AuditEvent.action == "tuning.used")
                        .order_by(AuditEvent.id.desc()).limit(2)).all()  # type: ignore[union-attr]
        in_use = tuning.in_use(s)
    first, second = sorted(events, key=lambda e: e.id or 0)
    assert second.details["previous"] == first.details["tuning_version"]
    assert in_use is not None and in_use.version == second.details["tuning_version"]


# --- 7. --folds checked only after every case was asked -------------------------------------

def test_bad_folds_is_refused_before_any_case_is_asked(
        clean: BuiltKB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evals.tune as et

    asked: list[int] = []
    real = et.observe

    def observe(*a: Any, **kw: Any) -> Any:
        asked.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(et, "observe", observe)
    suite = _refund_suite(tmp_path / "s.jsonl", 3)
    r = _kb(clean, "eval", "tune", str(suite), "--folds", "1", "--dry-run")
    assert r.exit_code == 2 and "--folds must be at least 2" in r.output, r.output
    # --folds, like --negatives and --max-false-abstention, is checked before any work:
    assert asked == [], "every case of the suite was asked before --folds was refused"


# --- 8. a model whose numbers cannot be evaluated -----------------------------------------

@pytest.mark.parametrize("model", [
    {"weights": [0.0, 0.0, 0.0, 2.0, 0.0]},  # one weight short of its signals
    {"scale": [0.0] * 6},  # finite, but divides by zero
    {"features": []},  # no signals at all, six weights
])
def test_a_model_this_version_cannot_evaluate_is_refused_and_never_applied(
        clean: BuiltKB, model: dict[str, Any]) -> None:
    params = {**_params(), "abstention": {**MODEL.to_dict(), **model}}
    assert record_problem(params) is not None
    with pytest.raises(InvalidInput, match="cannot read its abstention model"):
        _store(clean, params)
    _store(clean, params, foreign=True)  # in use anyway (another version wrote it)
    fresh = Assistant(engine=clean.engine, index=clean.assistant.index,
                      settings=clean.settings, clock=clean.clock)
    result = fresh.ask(Question(text="how do refunds work?", audience="internal"))
    assert result.status in ("answered", "no_answer", "escalate")
    assert result.tuning_sha256 is None  # answered on the shipped settings
