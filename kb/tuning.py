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


def store(session: Session, actor: Actor, *, suite: str, suite_sha256: str,
          params: dict[str, Any], metrics: dict[str, Any], now: datetime, note: str = "",
          activate: bool = True) -> Tuning:
    """Append a tuning record (and, by default, put it in use), audited, in one
    transaction."""
    require(actor, "tune")
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
        note: str = "") -> TuningState:
    """Put tuning ``version`` in use, or the shipped defaults with ``None`` (audited)."""
    require(actor, "tune")
    if version is not None and session.get(Tuning, version) is None:
        raise InvalidInput(f"no tuning version {version}; list them with `kb eval tunings`")
    state = _set_state(session, actor, version, now, note=note)
    session.commit()
    session.refresh(state)
    return state


def _set_state(session: Session, actor: Actor, version: int | None, now: datetime,
               note: str = "") -> TuningState:
    state = session.get(TuningState, 1)
    if state is None:
        state = TuningState(id=1)
    previous = state.version
    state.version, state.changed_at, state.changed_by = version, now, actor.id
    session.add(state)
    audit.record(session, actor=actor.id, action="tuning.used", at=now,
                 details={"tuning_version": version, "previous": previous, "note": note})
    tick(session)  # every answering process re-reads the tuning with its next question
    return state


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
