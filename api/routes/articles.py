"""Open a cited article: its served version, scoped to the caller's audience."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AnyCaller, SessionDep
from api.params import ArticleId
from api.responses import declare
from api.schemas import ApprovedBlockOut, ArticleOut, SectionOut
from kb.articles import parse_article, stored_risk
from kb.errors import ArticleNotFound
from kb.governance import get_version, served_info

router = APIRouter(prefix="/v1/articles", tags=["articles"])


@router.get("/{article_id}", response_model=ArticleOut,
            responses=declare(params=True, not_found="No such article served to the caller's "
                                                     "audience (hidden and absent look alike)."))
def served_article(article_id: ArticleId, caller: AnyCaller, session: SessionDep) -> ArticleOut:
    """The served version. High-risk articles show only their approved blocks."""
    # Scoped in the lookup: "hidden" and "absent" leave by one path with one answer, so
    # nothing leaks across audiences, not even by timing.
    info = served_info(session, article_ids=[article_id],
                       audience=caller.audience).get(article_id)
    if info is None:
        raise ArticleNotFound(article_id)
    version = get_version(session, article_id=article_id, number=info.version)
    parsed = parse_article(version.text, path=article_id)
    high = stored_risk(info.meta) == "high"
    blocks = [ApprovedBlockOut(start=b.start, end=b.end, anchor=b.section_anchor,
                               text=version.text[b.start:b.end]) for b in parsed.approved_blocks]
    return ArticleOut(
        id=article_id, title=info.meta["title"], version=info.version,
        content_sha256=info.content_sha256, owner=info.meta["owner"],
        risk=stored_risk(info.meta), audience=info.meta.get("audience", []),
        locale=info.meta.get("locale", "en"), approved_at=info.approved_at,
        last_reviewed=info.freshness.anchor, review_due=info.freshness.due_at,
        stale=info.freshness.stale,
        sections=[SectionOut(heading_path=list(s.heading_path), anchor=s.anchor,
                             start=s.start, end=s.end) for s in parsed.sections],
        text=None if high else version.text,
        approved_blocks=blocks,
    )
