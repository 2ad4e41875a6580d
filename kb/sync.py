"""Sync a folder of article files into the governance database.

Idempotent and incremental: a file whose text is unchanged costs one read and one hash; a
changed file becomes a new *pending* version; a deleted file is only flagged (its approved
version keeps serving until retired). Each article is its own transaction, and one bad file
never blocks or changes the others.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from kb import audit
from kb.articles import (
    ParsedArticle,
    check_inside,
    decode_article_bytes,
    iter_article_files,
    parse_article,
)
from kb.errors import InvalidArticle, InvalidInput, Problem
from kb.models import Article, ArticleVersion, utcnow


@dataclass
class SyncReport:
    root: str
    created: list[tuple[str, int]] = field(default_factory=list)  # new articles (id, version)
    updated: list[tuple[str, int]] = field(default_factory=list)  # new pending versions
    unchanged: int = 0
    moved: list[tuple[str, str]] = field(default_factory=list)  # (id, new path)
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "created": [{"id": i, "version": n} for i, n in self.created],
            "updated": [{"id": i, "version": n} for i, n in self.updated],
            "unchanged": self.unchanged,
            "moved": [{"id": i, "path": p} for i, p in self.moved],
            "restored": self.restored,
            "removed": self.removed,
            "errors": [p.__dict__ for p in self.errors],
            "warnings": [p.__dict__ for p in self.problems if p.severity == "warning"],
        }


@dataclass
class _Candidate:
    rel: str
    text: str
    sha: str
    parsed: ParsedArticle


def _git_author_lookup(root: Path) -> Callable[[Path], str | None] | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or out.stdout.strip() != "true":
        return None

    def lookup(path: Path) -> str | None:
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", str(path)],
            capture_output=True, text=True, timeout=30, check=False,
        )
        if dirty.returncode != 0 or dirty.stdout.strip():
            return None  # edited since the last commit: its author is whoever syncs it
        res = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%ae", "--", str(path)],
            capture_output=True, text=True, timeout=30, check=False,
        )
        email = res.stdout.strip()
        return email or None

    return lookup


def content_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sync_folder(
    session: Session,
    *,
    root: Path,
    author: str | None = None,
    actor: str = "sync",
    default_author: str = "unknown",
    max_bytes: int = 512 * 1024,
    now: datetime | None = None,
    on_article: Callable[[str], None] | None = None,
) -> SyncReport:
    """Sync every article file under ``root``. See the module docstring for the rules."""
    if not root.is_dir():
        raise InvalidInput(
            f"content folder {root} does not exist or is not a folder; pass the folder that "
            "holds your .md articles (or set KB_CONTENT_DIR)"
        )
    root_key = str(root.resolve())
    report = SyncReport(root=root_key)
    articles = {a.id: a for a in session.exec(select(Article)).all()}
    by_path = {a.source_path: a for a in articles.values()
               if a.source_root == root_key and a.source_path}

    claims: dict[str, list[str]] = {}  # article id -> relative paths claiming it
    kept: set[str] = set()  # ids of known files that failed to parse this time
    candidates: list[_Candidate] = []
    for path in iter_article_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            check_inside(root, path)
            text = decode_article_bytes(path.read_bytes(), path=rel, max_bytes=max_bytes)
            sha = content_sha256(text)
            known = by_path.get(rel)
            if known is not None and known.latest_sha256 == sha:
                claims.setdefault(known.id, []).append(rel)
                report.unchanged += 1
                continue
            parsed = parse_article(text, path=rel)
        except InvalidArticle as exc:
            report.problems.extend(exc.problems)
            if rel in by_path:  # a broken edit does not mean the article was removed
                kept.add(by_path[rel].id)
            continue
        except OSError as exc:
            if rel in by_path:
                kept.add(by_path[rel].id)
            report.problems.append(Problem(rel, 1, "file", f"cannot read the file: {exc}",
                                           "check the file's permissions"))
            continue
        except Exception as exc:  # a parser bug must not stop the other files (reported)
            if rel in by_path:
                kept.add(by_path[rel].id)
            report.problems.append(Problem(
                rel, 1, "file", f"the file could not be parsed ({type(exc).__name__}: {exc})",
                "this is a bug in Canon: report it with the file; the other files were synced"))
            continue
        report.problems.extend(parsed.warnings)
        claims.setdefault(parsed.id, []).append(rel)
        candidates.append(_Candidate(rel, text, sha, parsed))

    duplicated = {i for i, paths in claims.items() if len(paths) > 1}
    for art_id in sorted(duplicated):
        paths = claims[art_id]
        for rel in paths:
            others = ", ".join(p for p in paths if p != rel)
            report.problems.append(Problem(
                rel, 2, "id", f"id '{art_id}' is also used by {others}",
                "give every article a unique id (rename one of them)"))
            if by_path.get(rel) is not None and by_path[rel].id == art_id:
                report.unchanged -= 1

    git_author = None if author else _git_author_lookup(root)
    at = now or utcnow()
    for cand in candidates:
        if cand.parsed.id in duplicated:
            continue
        if on_article:
            on_article(cand.parsed.id)
        who = author or (git_author(root / cand.rel) if git_author else None) or default_author
        part = SyncReport(root=root_key)  # reported only once committed
        try:
            _apply(session, part, articles, cand, root_key, who, actor, at)
            session.commit()
            report.created += part.created
            report.updated += part.updated
            report.moved += part.moved
            report.restored += part.restored
        except Exception as exc:
            session.rollback()
            articles = {a.id: a for a in session.exec(select(Article)).all()}
            report.problems.append(Problem(
                cand.rel, 1, "database", f"could not store the article: {exc}",
                "nothing was changed for this article; fix the cause and run `kb sync` again"))

    # Articles no file claims any more: flag them (they keep serving until retired).
    for rel, article in by_path.items():
        if article.removed_at is not None or article.id in claims or article.id in kept:
            continue
        article.removed_at = at
        session.add(article)
        audit.record(session, actor=actor, action="source_removed", article_id=article.id,
                     version=article.latest_version, details={"path": rel}, at=at)
        session.commit()
        report.removed.append(article.id)
    return report


def _apply(
    session: Session,
    report: SyncReport,
    articles: dict[str, Article],
    cand: _Candidate,
    root_key: str,
    author: str,
    actor: str,
    at: datetime,
) -> None:
    p = cand.parsed
    article = articles.get(p.id)
    if article is None:
        article = Article(id=p.id, title=p.title, owner=p.owner,
                          review_every_days=p.review_every_days, risk=p.risk, locale=p.locale,
                          created_at=at, meta=p.metadata())
        session.add(article)
        articles[p.id] = article
        session.flush()
    if article.removed_at is not None:
        article.removed_at = None
        report.restored.append(p.id)
        audit.record(session, actor=actor, action="source_restored", article_id=p.id,
                     version=article.latest_version, details={"path": cand.rel}, at=at)
    moved = article.source_path is not None and (
        article.source_path != cand.rel or article.source_root != root_key)
    if moved and article.latest_sha256 == cand.sha:
        report.moved.append((p.id, cand.rel))
        audit.record(session, actor=actor, action="source_moved", article_id=p.id,
                     version=article.latest_version,
                     details={"from": article.source_path, "to": cand.rel}, at=at)
    article.source_root, article.source_path = root_key, cand.rel
    if article.latest_sha256 != cand.sha:
        number = article.latest_version + 1
        session.add(ArticleVersion(
            article_id=p.id, number=number, content_sha256=cand.sha, text=cand.text,
            meta=p.metadata(), author=author, source_path=cand.rel, created_at=at))
        article.latest_version, article.latest_sha256 = number, cand.sha
        article.title, article.owner, article.risk, article.locale = (
            p.title, p.owner, p.risk, p.locale)
        article.review_every_days, article.meta = p.review_every_days, p.metadata()
        (report.created if number == 1 else report.updated).append((p.id, number))
        audit.record(session, actor=author, action="version_created", article_id=p.id,
                     version=number,
                     details={"path": cand.rel, "content_sha256": cand.sha, "via": actor,
                              "draft": p.draft},
                     at=at)
    article.updated_at = at
    session.add(article)
