"""Tuning records: retrieval and abstention parameters fitted to one knowledge base.

``kb eval tune`` fits them on an evaluator's suite (see :mod:`evals.tune`) and stores them
here as an append-only, versioned record with its cross-validated metrics. One row of
``tuning_state`` names the version the answer path uses (``None``: the shipped defaults).
Storing or switching a record is audited and advances the governance clock, so every
process answering questions picks the change up with its next question.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlmodel import Session, col, select

from kb import audit
from kb.errors import InvalidInput
from kb.models import Tuning, TuningState
from kb.permissions import Actor, require
from kb.serving import tick


@dataclass(frozen=True)
class ActiveTuning:
    """The tuning the answer path applies: its version, hash and parameters."""

    version: int
    sha256: str
    params: dict[str, Any]


def params_sha256(params: dict[str, Any]) -> str:
    """The hash of the canonical JSON of ``params`` (sorted keys, no spaces)."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# Why the answering code cannot apply a record's parameters, None when it can (the answer
# path's rule, assist.calibration.record_problem, passed in by the caller: kb imports
# nothing of the layers above it).
Applicable = Callable[[Mapping[str, Any]], "str | None"]

MAX_VERSION = 2**63 - 1  # the largest integer every supported database stores


def _refuse_unusable(params: Mapping[str, Any], problem: Applicable, what: str) -> None:
    why = problem(params)
    if why is not None:
        raise InvalidInput(f"{what} cannot be applied by this version of Canon: {why}. "
                           "Refit it with `kb eval tune` under the shipped ranking, or keep "
                           "the one in use")


def store(session: Session, actor: Actor, *, suite: str, suite_sha256: str,
          params: dict[str, Any], metrics: dict[str, Any], now: datetime, problem: Applicable,
          note: str = "", activate: bool = True) -> Tuning:
    """Append a tuning record (and, by default, put it in use), audited, in one
    transaction. A record the answer path could not apply (``problem``) is refused."""
    require(actor, "tune")
    _refuse_unusable(params, problem, "this tuning")
    _serialise(session)
    row = Tuning(at=now, created_by=actor.id, suite=suite, suite_sha256=suite_sha256,
                 sha256=params_sha256(params), params=params, metrics=metrics, note=note)
    session.add(row)
    session.flush()
    assert row.version is not None
    audit.record(session, actor=actor.id, action="tuning.stored", at=now,
                 details={"tuning_version": row.version, "sha256": row.sha256,
                          "suite": suite, "suite_sha256": suite_sha256,
                          "activated": activate, "note": note})
    if activate:
        _set_state(session, actor, row.version, now)
    session.commit()
    session.refresh(row)
    return row


def use(session: Session, actor: Actor, *, version: int | None, now: datetime,
        problem: Applicable, note: str = "") -> TuningState:
    """Put tuning ``version`` in use, or the shipped defaults with ``None`` (audited). A
    record the answer path could not apply (``problem``: one written by another version of
    Canon sharing the database, say) is refused: answering would fall back to the shipped
    settings while the record showed as in use."""
    require(actor, "tune")
    _serialise(session)
    if version is not None:
        row = session.get(Tuning, version) if 0 < version <= MAX_VERSION else None
        if row is None:
            raise InvalidInput(f"no tuning version {version}; list them with `kb eval tunings`")
        _refuse_unusable(row.params, problem, f"tuning v{version}")
    state = _set_state(session, actor, version, now, note=note)
    session.commit()
    session.refresh(state)
    return state


def _set_state(session: Session, actor: Actor, version: int | None, now: datetime,
               note: str = "") -> TuningState:
    state = session.exec(select(TuningState).where(TuningState.id == 1)
                         .with_for_update()).first()
    if state is None:
        state = TuningState(id=1)
    previous = state.version
    state.version, state.changed_at, state.changed_by = version, now, actor.id
    session.add(state)
    audit.record(session, actor=actor.id, action="tuning.used", at=now,
                 details={"tuning_version": version, "previous": previous, "note": note})
    return state


def _serialise(session: Session) -> None:
    """Tick the governance clock first thing in the transaction: every answering process
    re-reads the tuning with its next question, and the clock's row stays locked until
    commit (SQLite: the write lock), so two changes to the record in use run one after the
    other and each audits the true previous one."""
    tick(session)


def history(session: Session) -> list[Tuning]:
    """Every tuning record, newest first."""
    return list(session.exec(select(Tuning).order_by(col(Tuning.version).desc())).all())


def in_use(session: Session) -> Tuning | None:
    state = session.get(TuningState, 1)
    if state is None or state.version is None:
        return None
    return session.get(Tuning, state.version)


def active(conn: Connection) -> ActiveTuning | None:
    """The tuning the answer path applies (read on a connection, when the governance clock
    moved)."""
    with Session(bind=conn) as session:
        row = in_use(session)
        if row is None or row.version is None:
            return None
        return ActiveTuning(version=row.version, sha256=row.sha256, params=dict(row.params))
