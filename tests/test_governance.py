"""Approval rules (four-eyes, superseded, drafts), reviews, staleness, history, diff."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from kb import governance
from kb.errors import ArticleNotFound, Conflict, Forbidden, NotApproved, VersionNotFound
from kb.models import Approval, AuditEvent, utcnow
from kb.sync import sync_folder

from .conftest import article_text, write_article


def _sync(session: Session, root: Path, author: str = "alice") -> None:
    report = sync_folder(session, root=root, author=author)
    assert not report.errors, report.errors


def _approval_count(session: Session) -> int:
    return session.exec(select(func.count()).select_from(Approval)).one()


def test_self_approval_is_refused_and_changes_nothing(session: Session, content_dir: Path) -> None:
    write_article(content_dir, "mine")
    _sync(session, content_dir, author="Alice@Example.com")
    events = session.exec(select(func.count()).select_from(AuditEvent)).one()
    with pytest.raises(Forbidden, match="four-eyes"):
        governance.approve(session, article_id="mine", approver="alice@example.com")
    assert _approval_count(session) == 0
    assert session.exec(select(func.count()).select_from(AuditEvent)).one() == events
    assert governance.served_version(session, article_id="mine") is None
    # single-person teams can switch the rule off
    governance.approve(session, article_id="mine", approver="alice@example.com",
                       allow_self=True)
    assert governance.served_version(session, article_id="mine") is not None


def test_missing_article_or_version(session: Session, content_dir: Path) -> None:
    write_article(content_dir, "exists")
    _sync(session, content_dir)
    with pytest.raises(ArticleNotFound, match="kb sync"):
        governance.approve(session, article_id="nope", approver="bob")
    with pytest.raises(VersionNotFound, match="no version 7"):
        governance.approve(session, article_id="exists", version=7, approver="bob")


def test_superseded_and_double_approval_refused(session: Session, content_dir: Path) -> None:
    path = write_article(content_dir, "doc")
    _sync(session, content_dir)
    path.write_text(article_text("doc", body="# Doc\n## A\nNew text.\n"))
    _sync(session, content_dir)
    with pytest.raises(Conflict, match="superseded by version 2"):
        governance.approve(session, article_id="doc", version=1, approver="bob")
    governance.approve(session, article_id="doc", approver="bob")
    with pytest.raises(Conflict, match="already approved"):
        governance.approve(session, article_id="doc", version=2, approver="carol")


def test_drafts_are_not_approved(session: Session, content_dir: Path) -> None:
    write_article(content_dir, "wip", draft=True)
    write_article(content_dir, "ready")
    _sync(session, content_dir)
    with pytest.raises(Conflict, match="draft"):
        governance.approve(session, article_id="wip", approver="bob")
    bulk = governance.approve_all(session, approver="bob")
    assert bulk.approved == [("ready", 1)]
    assert [(i, n) for i, n, _ in bulk.skipped] == [("wip", 1)]
    states = {s.id: s.state for s in governance.statuses(session)}
    assert states == {"ready": "approved", "wip": "draft"}


def test_approve_all_skips_own_versions(session: Session, content_dir: Path) -> None:
    write_article(content_dir, "by-bob")
    _sync(session, content_dir, author="bob")
    write_article(content_dir, "by-alice")
    _sync(session, content_dir, author="alice")
    bulk = governance.approve_all(session, approver="bob")
    assert bulk.approved == [("by-alice", 1)]
    assert bulk.skipped[0][:2] == ("by-bob", 1) and "four-eyes" in bulk.skipped[0][2]


def test_review_restarts_clock_and_staleness(session: Session, content_dir: Path) -> None:
    write_article(content_dir, "cadence", review_every="30d")
    _sync(session, content_dir)
    t0 = utcnow() - timedelta(days=40)
    governance.approve(session, article_id="cadence", approver="bob", now=t0)
    [row] = governance.stale_articles(session)
    assert row.id == "cadence" and row.freshness is not None and row.freshness.stale
    governance.review(session, article_id="cadence", reviewer="carol")
    assert governance.stale_articles(session) == []
    due = governance.stale_articles(session, due_within=timedelta(days=31))
    assert [r.id for r in due] == ["cadence"]
    # a review that found problems does not restart the clock
    later = utcnow() + timedelta(days=35)
    governance.review(session, article_id="cadence", reviewer="carol", outcome="needs_update",
                      now=later)
    assert [r.id for r in governance.stale_articles(session, now=later)] == ["cadence"]


def test_last_reviewed_in_front_matter_backdates_the_clock(
    session: Session, content_dir: Path
) -> None:
    old = (utcnow() - timedelta(days=200)).date().isoformat()
    write_article(content_dir, "imported-old", review_every="90d", last_reviewed=old)
    write_article(content_dir, "imported-new", review_every="90d")
    _sync(session, content_dir)
    governance.approve_all(session, approver="bob")
    assert [r.id for r in governance.stale_articles(session)] == ["imported-old"]
    assert [r.id for r in governance.stale_articles(session, owner="nobody")] == []


def test_review_needs_an_approved_version(session: Session, content_dir: Path) -> None:
    write_article(content_dir, "pending-only")
    _sync(session, content_dir)
    with pytest.raises(NotApproved, match="no approved version"):
        governance.review(session, article_id="pending-only", reviewer="bob")


def test_retired_article_can_come_back_with_a_new_approved_version(
    session: Session, content_dir: Path
) -> None:
    path = write_article(content_dir, "phoenix")
    _sync(session, content_dir)
    governance.approve(session, article_id="phoenix", approver="bob")
    governance.retire(session, article_id="phoenix", by="bob")
    with pytest.raises(Conflict, match="already retired"):
        governance.retire(session, article_id="phoenix", by="bob")
    assert governance.served_version(session, article_id="phoenix") is None
    path.write_text(article_text("phoenix", body="# Phoenix\n## A\nReborn.\n"))
    _sync(session, content_dir)
    assert governance.served_version(session, article_id="phoenix") is None
    governance.approve(session, article_id="phoenix", approver="bob")
    served = governance.served_version(session, article_id="phoenix")
    assert served is not None and served.number == 2
    assert governance.served_numbers(session) == {"phoenix": 2}


def test_history_and_diff(session: Session, content_dir: Path) -> None:
    path = write_article(content_dir, "hist", body="# Hist\n## A\nWithin 30 days.\n")
    _sync(session, content_dir)
    governance.approve(session, article_id="hist", approver="bob", note="first")
    path.write_text(article_text("hist", body="# Hist\n## A\nWithin 14 days.\n"))
    _sync(session, content_dir, author="carol")
    governance.review(session, article_id="hist", reviewer="dave")
    h = governance.history(session, article_id="hist")
    assert [v["number"] for v in h["versions"]] == [1, 2]
    assert h["versions"][0]["approval"]["approver"] == "bob"
    assert h["versions"][0]["approval"]["note"] == "first"
    assert h["versions"][1]["approval"] is None and h["versions"][1]["author"] == "carol"
    assert h["reviews"][0]["reviewer"] == "dave" and h["served_version"] == 1
    text = governance.diff(session, article_id="hist", a=1, b=2)
    assert "-Within 30 days." in text and "+Within 14 days." in text
    assert text.startswith("--- hist@v1\n+++ hist@v2\n")
    with pytest.raises(VersionNotFound):
        governance.diff(session, article_id="hist", a=1, b=3)
