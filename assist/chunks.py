"""Cut the served version of an article into retrievable chunks with exact spans.

A chunk is whole paragraph(s) of one section, or one ``::: approved`` block, and never
contains the ``:::`` marker lines. For ``risk: high`` articles the plain text is chunked and
indexed too, so a question finds the article by everything it says, but only its approved
blocks are servable (:attr:`Chunk.servable`, checked again against the database by the
answer path): the plain text only lifts the article's blocks in the ranking
(:func:`assist.retrieve.fuse`, ``article`` fusion) and is never served or quoted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kb.articles import ParsedArticle, parse_article, parse_stored_version, servable

# 2: the plain text of risk: high articles is indexed (never served);
# 3: passages of two or more sentences keep a vector per sentence (assist.sentences)
CHUNKER_VERSION = 3
_BLANK = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class Chunk:
    article_id: str
    version: int
    content_sha256: str
    start: int
    end: int
    heading_path: tuple[str, ...]
    anchor: str
    approved: bool  # an ``::: approved`` block
    title: str
    audience: tuple[str, ...]
    locale: str
    risk: str
    tags: tuple[str, ...]
    text: str

    @property
    def id(self) -> str:
        return chunk_id(self.article_id, self.version, self.start, self.end)

    @property
    def section(self) -> str:
        """The heading a suite names this chunk's section by: the last of its heading path,
        or the title for text before the first heading (as a citation's ``section[-1]``)."""
        return self.heading_path[-1] if self.heading_path else self.title

    @property
    def servable(self) -> bool:
        """May this chunk be served? Not the plain text of a ``risk: high`` article."""
        return servable(risk=self.risk, approved=self.approved)

    def embedding_text(self) -> str:
        """What the dense model sees: title and heading path count, then the passage."""
        path = " > ".join(dict.fromkeys((self.title, *self.heading_path)))
        return f"{path}\n{self.text}"

    def sentence_texts(self) -> list[str]:
        """What the dense model sees of each sentence (or line: a list item, a table row)
        of the passage, title and heading path first as for the passage; empty when the
        passage has fewer than two sentences of three words or more (its own vector says
        it all). See :mod:`assist.sentences`."""
        parts = [p.strip(" \t-*#>|") for p in _SENTENCE_END.split(self.text)]
        parts = [p for p in parts if len(p.split()) >= 3]
        if len(parts) < 2:
            return []
        path = " > ".join(dict.fromkeys((self.title, *self.heading_path)))
        return [f"{path}\n{p}" for p in parts]

    def lexical_text(self) -> str:
        """What BM25 sees: title, headings and tags, then the passage."""
        return " ".join((self.title, *self.heading_path, *self.tags, self.text))


def chunk_id(article_id: str, version: int, start: int, end: int) -> str:
    return f"{article_id}|{version}|{start}|{end}"


def chunk_article(cid: str) -> str:
    """The article id of a chunk id (:func:`chunk_id`)."""
    return cid.split("|", 1)[0]


def passage_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _paragraph_spans(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Non-blank paragraphs of ``text[start:end]`` as exact (start, end) spans."""
    pos = start
    for match in _BLANK.finditer(text, start, end):
        yield pos, match.start()
        pos = match.end()
    yield pos, end


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _group(
    text: str, spans: list[tuple[int, int]], max_chars: int
) -> Iterator[tuple[int, int]]:
    """Merge consecutive paragraphs into spans of at most ``max_chars`` (a single longer
    paragraph stays whole: passages are never cut mid-paragraph)."""
    cur: tuple[int, int] | None = None
    for s, e in spans:
        if cur is None:
            cur = (s, e)
        elif e - cur[0] <= max_chars:
            cur = (cur[0], e)
        else:
            yield cur
            cur = (s, e)
    if cur is not None:
        yield cur


def chunk_version(
    *, article_id: str, version: int, content_sha256: str, text: str, max_chars: int = 1200,
    parsed: ParsedArticle | None = None, meta: dict[str, Any] | None = None,
) -> list[Chunk]:
    """Chunks of one stored version (text as stored; spans index into it). With ``meta``
    (the version's stored fields) its front matter is not parsed again, so a version stored
    under an older, looser parser always reads."""
    path = f"{article_id}@v{version}"
    art = parsed or (parse_stored_version(text, path=path, meta=meta) if meta is not None
                     else parse_article(text, path=path))
    blocks_by_anchor: dict[str, list[tuple[int, int]]] = {}
    for b in art.approved_blocks:
        blocks_by_anchor.setdefault(b.section_anchor, []).append((b.start, b.end))

    def make(section_path: tuple[str, ...], anchor: str, s: int, e: int, approved: bool) -> Chunk:
        return Chunk(
            article_id=article_id, version=version, content_sha256=content_sha256,
            start=s, end=e, heading_path=section_path, anchor=anchor, approved=approved,
            title=art.title, audience=art.audience, locale=art.locale, risk=art.risk,
            tags=art.tags, text=text[s:e],
        )

    chunks: list[Chunk] = []
    for section in art.sections:
        blocks = blocks_by_anchor.get(section.anchor, [])
        for bs, be in blocks:
            chunks.append(make(section.heading_path, section.anchor, bs, be, True))
        # Plain text of the section, split around approved blocks (markers excluded).
        pieces: list[tuple[int, int]] = []
        cursor = section.body_start
        for bs, be in blocks:
            marker_open = text.rfind("\n", section.body_start, bs - 1) + 1
            pieces.append((cursor, max(cursor, marker_open)))
            close_line_end = text.find("\n", be + 1)
            cursor = section.end if close_line_end == -1 else min(close_line_end, section.end)
        pieces.append((cursor, section.end))
        for ps, pe in pieces:
            paras = [
                _strip(text, s, e) for s, e in _paragraph_spans(text, ps, pe)
            ]
            paras = [(s, e) for s, e in paras if e > s]
            for s, e in _group(text, paras, max_chars):
                chunks.append(make(section.heading_path, section.anchor, s, e, False))
    chunks.sort(key=lambda c: c.start)
    return chunks
