"""Article text as HTML: each section under its stable anchor, approved blocks marked.

Raw HTML in articles is never passed through (``html: False``) and link targets are
markdown-it's validated ones, so an article cannot inject script into the console."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from markdown_it import MarkdownIt
from mdit_py_plugins.container import container_plugin

from kb.articles import parse_article


@lru_cache(maxsize=1)
def _md() -> MarkdownIt:
    return (MarkdownIt("commonmark", {"html": False}).enable("table")
            .use(container_plugin, name="approved"))


@dataclass(frozen=True)
class RenderedSection:
    anchor: str
    heading_path: tuple[str, ...]
    level: int
    html: str


def sections_html(text: str) -> list[RenderedSection]:
    """The article's sections (headings and their text), rendered."""
    parsed = parse_article(text, path="<console>")
    return [RenderedSection(s.anchor, s.heading_path, s.level,
                            _md().render(text[s.start:s.end]))
            for s in parsed.sections]


@lru_cache(maxsize=512)
def cached_sections(content_sha256: str, text: str) -> tuple[RenderedSection, ...]:
    """Versions never change: render each one once."""
    return tuple(sections_html(text))


def block_html(text: str) -> str:
    html: str = _md().render(text)
    return html
