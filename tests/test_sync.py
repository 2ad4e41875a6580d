"""Sync rules: idempotent, incremental, per-article transactions, nothing lost."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlmodel import Session, func, select

from kb import governance
from kb.models import Approval, Article, ArticleVersion, AuditEvent
from kb.sync import sync_folder

from .conftest import article_text, write_article


def _counts(session: Session) -> tuple[int, int, int, int]:
    return (
        session.exec(select(func.count()).select_from(Article)).one(),
        session.exec(select(func.count()).select_from(ArticleVersion)).one(),
        session.exec(select(func.count()).select_from(Approval)).one(),
        session.exec(select(func.count()).select_from(AuditEvent)).one(),
    )


def _snapshot(session: Session) -> list[tuple[str, int, str, str]]:
    return sorted(
        (v.article_id, v.number, v.content_sha256, v.text)
        for v in session.exec(select(ArticleVersion))
    )


def test_sync_twice_creates_nothing_the_second_time(session: Session, content_dir: Path) -> None:
    for i in range(3):
        write_article(content_dir, f"article-{i}", path=f"topic/article-{i}.md")
    first = sync_folder(session, root=content_dir, author="alice")
    assert sorted(first.created) == [("article-0", 1), ("article-1", 1), ("article-2", 1)]
    before = _counts(session)
    second = sync_folder(session, root=content_dir, author="alice")
    assert (second.created, second.updated, second.unchanged) == ([], [], 3)
    assert _counts(session) == before


def test_edit_creates_pending_version_and_old_text_keeps_serving(
    session: Session, content_dir: Path
) -> None:
    path = write_article(content_dir, "refunds", body="# Refunds\n## Rule\nWithin 30 days.\n")
    sync_folder(session, root=content_dir, author="alice")
    governance.approve(session, article_id="refunds", approver="bob")
    v1 = governance.served_version(session, article_id="refunds")
    assert v1 is not None and "30 days" in v1.text

    path.write_text(article_text("refunds", body="# Refunds\n## Rule\nWithin 14 days.\n"))
    report = sync_folder(session, root=content_dir, author="alice")
    assert report.updated == [("refunds", 2)]
    served = governance.served_version(session, article_id="refunds")
    assert served is not None and served.number == 1 and "30 days" in served.text
    [st] = governance.statuses(session, article_id="refunds")
    assert (st.state, st.served_version, st.pending_version) == ("approved+pending", 1, 2)

    governance.approve(session, article_id="refunds", approver="bob")
    served = governance.served_version(session, article_id="refunds")
    assert served is not None and served.number == 2 and "14 days" in served.text


def test_bad_file_reports_error_and_changes_nothing_stored(
    session: Session, content_dir: Path
) -> None:
    good = write_article(content_dir, "good")
    other = write_article(content_dir, "other")
    sync_folder(session, root=content_dir, author="alice")
    governance.approve(session, article_id="good", approver="bob")
    before_versions, before_counts = _snapshot(session), _counts(session)

    good.write_text(article_text("good", risk="catastrophic"))  # broken edit of a served article
    (content_dir / "binary.md").write_bytes(b"---\nid: bin\n\xff\xfe\n")
    other.write_text(article_text("other", body="# Other\n## New\nChanged text.\n"))
    report = sync_folder(session, root=content_dir, author="carol")

    assert {p.path for p in report.errors} == {"good.md", "binary.md"}
    assert any("catastrophic" in p.message for p in report.errors)
    assert report.updated == [("other", 2)]  # one bad file does not block the others
    assert report.removed == []  # a broken file is not a removed article
    after = _snapshot(session)
    assert [v for v in after if v[0] == "good"] == [v for v in before_versions if v[0] == "good"]
    served = governance.served_version(session, article_id="good")
    assert served is not None and served.number == 1
    assert _counts(session)[2] == before_counts[2]


def test_deleted_file_keeps_serving_until_retired(session: Session, content_dir: Path) -> None:
    path = write_article(content_dir, "old-policy")
    sync_folder(session, root=content_dir, author="alice")
    governance.approve(session, article_id="old-policy", approver="bob")
    path.unlink()
    report = sync_folder(session, root=content_dir, author="alice")
    assert report.removed == ["old-policy"]
    assert governance.served_version(session, article_id="old-policy") is not None
    [st] = governance.statuses(session, article_id="old-policy")
    assert st.removed_from_source and st.state == "approved"
    again = sync_folder(session, root=content_dir, author="alice")
    assert again.removed == []  # reported once

    governance.retire(session, article_id="old-policy", by="bob")
    assert governance.served_version(session, article_id="old-policy") is None
    [st] = governance.statuses(session, article_id="old-policy")
    assert st.state == "retired"


def test_duplicate_ids_are_refused_for_both_files(session: Session, content_dir: Path) -> None:
    write_article(content_dir, "same", path="a/same.md")
    write_article(content_dir, "same", path="b/same.md", title="Another")
    report = sync_folder(session, root=content_dir, author="alice")
    assert sorted(p.path for p in report.errors) == ["a/same.md", "b/same.md"]
    assert all("also used by" in p.message for p in report.errors)
    assert session.get(Article, "same") is None


def test_moved_file_keeps_its_history(session: Session, content_dir: Path) -> None:
    path = write_article(content_dir, "moving", path="old/moving.md")
    sync_folder(session, root=content_dir, author="alice")
    target = content_dir / "new" / "moving.md"
    target.parent.mkdir()
    path.rename(target)
    report = sync_folder(session, root=content_dir, author="alice")
    assert report.moved == [("moving", "new/moving.md")]
    assert (report.created, report.updated, report.removed) == ([], [], [])
    article = session.get(Article, "moving")
    assert article is not None and article.source_path == "new/moving.md"


def test_changed_id_flags_the_old_article_removed(session: Session, content_dir: Path) -> None:
    path = write_article(content_dir, "first-name", path="a.md")
    sync_folder(session, root=content_dir, author="alice")
    path.write_text(article_text("second-name"))
    report = sync_folder(session, root=content_dir, author="alice")
    assert report.created == [("second-name", 1)] and report.removed == ["first-name"]


def test_author_from_git_when_content_is_a_checkout(session: Session, content_dir: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(content_dir), *args], check=True, capture_output=True)

    git("init", "-q")
    write_article(content_dir, "from-git")
    git("add", ".")
    git("-c", "user.email=dana@example.com", "-c", "user.name=Dana", "commit", "-qm", "add")
    write_article(content_dir, "no-git-author", path="sub/x.md")
    report = sync_folder(session, root=content_dir)
    assert len(report.created) == 2
    authors = {v.article_id: v.author for v in session.exec(select(ArticleVersion))}
    assert authors == {"from-git": "dana@example.com", "no-git-author": "unknown"}


def test_every_change_is_audited(session: Session, content_dir: Path) -> None:
    path = write_article(content_dir, "audited")
    sync_folder(session, root=content_dir, author="alice")
    governance.approve(session, article_id="audited", approver="bob", note="ok")
    governance.review(session, article_id="audited", reviewer="carol")
    path.unlink()
    sync_folder(session, root=content_dir, author="alice")
    governance.retire(session, article_id="audited", by="bob")
    actions = [e.action for e in session.exec(
        select(AuditEvent).where(AuditEvent.article_id == "audited").order_by(AuditEvent.id))]
    assert actions == ["version_created", "version_approved", "article_reviewed",
                       "source_removed", "article_retired"]
    created = session.exec(select(AuditEvent).where(AuditEvent.action == "version_created")).one()
    assert created.actor == "alice" and created.details["content_sha256"]


def test_failure_while_storing_one_article_rolls_back_only_that_article(
    session: Session, content_dir: Path
) -> None:
    """A failure mid-sync (here: a conflicting row written by someone else) leaves every
    served version and recorded event as it was; the other articles still sync."""
    first = write_article(content_dir, "first", body="# First\n## A\nOld text.\n")
    second = write_article(content_dir, "second", body="# Second\n## A\nOld text.\n")
    sync_folder(session, root=content_dir, author="alice")
    governance.approve_all(session, approver="bob")
    before = _snapshot(session)
    events = _counts(session)[3]
    # Another writer already took version 2 of "first": our insert will violate the key.
    session.add(ArticleVersion(article_id="first", number=2, content_sha256="x" * 64,
                               text="conflicting", meta={}, author="mallory"))
    session.commit()
    first.write_text(article_text("first", body="# First\n## A\nNew text.\n"))
    second.write_text(article_text("second", body="# Second\n## A\nNew text.\n"))
    report = sync_folder(session, root=content_dir, author="alice")
    assert [p.path for p in report.errors] == ["first.md"]
    assert "nothing was changed for this article" in report.errors[0].fix
    assert report.updated == [("second", 2)]
    served = governance.served_version(session, article_id="first")
    assert served is not None and served.number == 1 and "Old text." in served.text
    after = _snapshot(session)
    assert [v for v in after if v[0] == "first" and v[1] == 1] == [
        v for v in before if v[0] == "first"]
    assert _counts(session)[3] == events + 1  # only "second"'s version_created
