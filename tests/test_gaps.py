"""Content gaps grouped by meaning (issue 10): unanswered questions that mean the same land in
one gap, with its size, examples and the nearest served article."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from assist import indexer
from assist.embedder import MiniLMEmbedder
from assist.gaps import MeaningGroups
from assist.runtime import make_index
from evals.health import knowledge_health
from evals.trends import trends
from kb import governance
from kb.models import Flag, QueryLog
from kb.queue import review_queue
from kb.settings import Settings
from kb.sync import sync_folder

from .conftest import write_article

pytestmark = pytest.mark.slow
T0 = datetime(2027, 1, 5, 9, 0, tzinfo=UTC)

UNANSWERED = [
    "What's the weather tomorrow",
    "what will the weather be",
    "can I pay my bill with paypal",
    "do you accept paypal payments",
    "who won the football last night",
]


def test_unanswered_questions_group_by_meaning_with_the_nearest_article(
        settings: Settings, engine: Engine, content_dir: Path) -> None:
    write_article(content_dir, "payment-methods", title="Payment methods", owner="billing",
                  audience=["internal"],
                  body="# Payment methods\n## Cards and wallets\nCustomers pay by direct debit "
                       "or by debit or credit card. Digital wallets are not accepted.\n")
    write_article(content_dir, "payment-methods-es", title="Formas de pago", owner="billing",
                  audience=["internal"], locale="es", translation_of="payment-methods",
                  body="# Formas de pago\n## Tarjetas y monederos\nLos clientes pagan con "
                       "domiciliación bancaria o con tarjeta de débito o de crédito. No se "
                       "aceptan monederos digitales.\n")
    index = make_index(settings, embedder=MiniLMEmbedder())
    with Session(engine, expire_on_commit=False) as s:
        sync_folder(s, root=content_dir, author="writer")
        governance.approve_all(s, approver="lead")
        indexer.refresh(s, index)
        for i, q in enumerate(UNANSWERED):
            s.add(QueryLog(id=uuid.uuid4().hex, at=T0 - timedelta(hours=i), caller="agent",
                           audience="internal", locale="en", question=q, status="no_answer",
                           escalate_to="support-tier2", served=[]))
        answered = QueryLog(id=uuid.uuid4().hex, at=T0, caller="agent", audience="internal",
                            locale="en", question="is paying with paypal possible?",
                            status="answered", served=[])
        s.add(answered)
        s.commit()
        s.add(Flag(query_id=answered.id, owner="support-tier2", reason="wrong",
                   created_by="agent", created_at=T0))
        s.commit()
        groups = MeaningGroups(index, threshold=settings.answer.gap_similarity)
        gaps = [i for i in review_queue(s, now=T0, group_gaps=groups, nearest=groups.nearest)
                if i["kind"] == "gap"]
        by_wording = [i for i in review_queue(s, now=T0) if i["kind"] == "gap"]
    assert sorted(sorted(g["examples"]) for g in gaps) == sorted([
        sorted(UNANSWERED[:2]), sorted([*UNANSWERED[2:4], "is paying with paypal possible?"]),
        [UNANSWERED[4]]])
    assert [(g["count"], g["flagged"]) for g in gaps] == [(3, 1), (2, 0), (1, 0)]
    paypal = gaps[0]  # the biggest gap first: two unanswered, one answer flagged wrong
    assert paypal["nearest_article"]["article_id"] == "payment-methods"
    assert len(by_wording) == 6  # by normalised wording nothing matched
    # a question written in Spanish is shown next to the Spanish article
    spanish = groups.nearest("¿los clientes pagan con tarjeta de crédito o monederos?")
    assert spanish is not None and spanish["article_id"] == "payment-methods-es"
    english = groups.nearest("do customers pay with credit cards?")
    assert english is not None and english["article_id"] == "payment-methods"
    plain = MeaningGroups(index, threshold=settings.answer.gap_similarity,
                          detect_locale=False)  # answer.detect_locale off
    fixed = plain.nearest("¿los clientes pagan con tarjeta de crédito o monederos?")
    assert fixed is not None and fixed["article_id"] == "payment-methods"

    # Knowledge health and the dashboard count gaps the same way, by meaning.
    with Session(engine) as s:
        health = knowledge_health(s, now=T0, group_gaps=groups)
        trend = trends(s, now=T0, days=7, group_gaps=groups)
        by_words = knowledge_health(s, now=T0)
    assert sorted(g["count"] for g in health["outcomes_30d"]["top_gaps"]) == [1, 2, 2]
    assert sorted(n for _, n in trend.gaps) == [1, 2, 2]
    weather = next(g for g in health["outcomes_30d"]["top_gaps"] if "weather" in g["question"])
    assert weather["count"] == 2
    assert sorted(g["count"] for g in by_words["outcomes_30d"]["top_gaps"]) == [1, 1, 1, 1, 1]


def test_a_random_order_gives_the_same_groups(settings: Settings) -> None:
    index = make_index(settings, embedder=MiniLMEmbedder())
    groups = MeaningGroups(index, threshold=settings.answer.gap_similarity)
    forward = groups(UNANSWERED)
    backward = groups(UNANSWERED[::-1])[::-1]

    def partition(labels: list[int]) -> set[frozenset[str]]:
        out: dict[int, set[str]] = {}
        for q, g in zip(UNANSWERED, labels, strict=True):
            out.setdefault(g, set()).add(q)
        return {frozenset(v) for v in out.values()}

    assert partition(forward) == partition(backward)
    assert len(partition(forward)) == 3
