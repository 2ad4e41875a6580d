"""Parse and validate article files (Markdown with YAML front matter).

``parse_article`` turns the text of one file into a typed :class:`ParsedArticle` with exact
character spans into that text, or raises :class:`InvalidArticle` listing every problem with
its file, line, field and fix. ``read_article_file`` adds the file-level checks (size, UTF-8,
symlinks escaping the content folder).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.container import container_plugin
from mdit_py_plugins.front_matter import front_matter_plugin

from kb.errors import InvalidArticle, Problem

ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
TEAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
AUDIENCE_RE = re.compile(r"^(internal|vendors|vendor:[a-z0-9][a-z0-9-]*)$")
LOCALE_RE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
CADENCE_RE = re.compile(r"^(\d+)\s*([dwmy])$")
RISKS = ("low", "medium", "high")
REQUIRED = ("id", "title", "owner", "review_every")
CADENCE_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}


@dataclass(frozen=True)
class Section:
    """A heading and the text under it, up to the next heading (any level)."""

    heading_path: tuple[str, ...]
    anchor: str
    level: int
    start: int  # start of the heading line
    body_start: int  # first character after the heading line
    end: int  # end of the section, trailing blank lines excluded

    @property
    def heading(self) -> str:
        return self.heading_path[-1]


@dataclass(frozen=True)
class ApprovedBlock:
    """The inside of a ``::: approved`` container: language agents may say word for word."""

    start: int
    end: int
    section_anchor: str


@dataclass(frozen=True)
class ParsedArticle:
    id: str
    title: str
    owner: str
    review_every: str
    review_every_days: int
    risk: str
    audience: tuple[str, ...]
    locale: str
    tags: tuple[str, ...]
    escalate_to: str | None
    draft: bool
    last_reviewed: date | None
    extra: dict[str, Any]
    sections: tuple[Section, ...]
    approved_blocks: tuple[ApprovedBlock, ...]
    warnings: tuple[Problem, ...] = ()

    def metadata(self) -> dict[str, Any]:
        """Front-matter fields as JSON-ready data (stored with every version)."""
        return {
            "id": self.id,
            "title": self.title,
            "owner": self.owner,
            "review_every": self.review_every,
            "review_every_days": self.review_every_days,
            "risk": self.risk,
            "audience": list(self.audience),
            "locale": self.locale,
            "tags": list(self.tags),
            "escalate_to": self.escalate_to,
            "draft": self.draft,
            "last_reviewed": self.last_reviewed.isoformat() if self.last_reviewed else None,
            "extra": self.extra,
        }


@dataclass
class _Collector:
    path: str
    problems: list[Problem] = field(default_factory=list)

    def error(self, line: int, fld: str, message: str, fix: str) -> None:
        self.problems.append(Problem(self.path, line, fld, message, fix))

    def warn(self, line: int, fld: str, message: str, fix: str) -> None:
        self.problems.append(Problem(self.path, line, fld, message, fix, severity="warning"))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark").use(front_matter_plugin).use(container_plugin, name="approved")
    md.enable("table")
    return md


def parse_cadence(value: str) -> int:
    """``90d`` -> 90, ``6w`` -> 42, ``6m`` -> 180, ``1y`` -> 365. Raises ValueError."""
    match = CADENCE_RE.match(value.strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(value)
    return int(match.group(1)) * CADENCE_DAYS[match.group(2)]


def slugify(text: str) -> str:
    """GitHub-style anchor slug."""
    norm = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    norm = re.sub(r"[^a-z0-9\s-]", "", norm)
    return re.sub(r"[\s-]+", "-", norm).strip("-") or "section"


def _line_offsets(text: str) -> list[int]:
    offsets = [0]
    for match in re.finditer("\n", text):
        offsets.append(match.end())
    offsets.append(len(text))
    return offsets


def _rstrip_end(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


def _front_matter_lines(raw: str) -> dict[str, int]:
    """Map each top-level front-matter key to its line number (1-based, in the file)."""
    lines: dict[str, int] = {}
    try:
        node = yaml.compose(raw, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                lines[str(key_node.value)] = key_node.start_mark.line + 2  # +1 for '---'
    return lines


def _str_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _validate_front_matter(
    meta: dict[str, Any], lines: dict[str, int], c: _Collector
) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def line(key: str) -> int:
        return lines.get(key, 1)

    for key in REQUIRED:
        value = meta.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            c.error(1, key, f"required key '{key}' is missing or empty",
                    f"add `{key}: ...` to the front matter")
    art_id = meta.get("id")
    if art_id is not None:
        if not isinstance(art_id, str) or not ID_RE.match(art_id):
            c.error(line("id"), "id", f"'{art_id}' is not a valid id",
                    "use lowercase letters, digits and single hyphens, e.g. refunds-annual-plans")
        else:
            out["id"] = art_id
    title = meta.get("title")
    if title is not None:
        out["title"] = str(title).strip()
    owner = meta.get("owner")
    if owner is not None:
        if not isinstance(owner, str) or not TEAM_RE.match(owner):
            c.error(line("owner"), "owner", f"'{owner}' is not a valid owner",
                    "name one team or person id, e.g. billing-knowledge")
        else:
            out["owner"] = owner
    cadence = meta.get("review_every")
    if cadence is not None:
        try:
            out["review_every_days"] = parse_cadence(str(cadence))
            out["review_every"] = str(cadence).strip()
        except ValueError:
            c.error(line("review_every"), "review_every",
                    f"'{cadence}' is not a review cadence",
                    "write a positive number followed by d, w, m or y, e.g. 90d or 6m")
    risk = meta.get("risk", "low")
    if risk not in RISKS:
        c.error(line("risk"), "risk", f"unknown risk '{risk}'",
                "use one of: low, medium, high")
    else:
        out["risk"] = risk
    audience = _str_list(meta.get("audience", ["internal"]))
    if audience is None or not audience:
        c.error(line("audience"), "audience", "audience must be a non-empty list of names",
                "e.g. audience: [internal, vendors]")
    else:
        bad = [a for a in audience if not AUDIENCE_RE.match(a)]
        if bad:
            c.error(line("audience"), "audience", f"unknown audience {bad}",
                    "use internal, vendors or vendor:<name> (lowercase)")
        else:
            out["audience"] = tuple(dict.fromkeys(audience))
    locale = meta.get("locale", "en")
    if not isinstance(locale, str) or not LOCALE_RE.match(locale):
        c.error(line("locale"), "locale", f"'{locale}' is not a BCP 47 locale",
                "use a tag such as en, es or pt-BR")
    else:
        out["locale"] = locale
    tags = _str_list(meta.get("tags", []))
    if tags is None:
        c.error(line("tags"), "tags", "tags must be a list of words", "e.g. tags: [billing]")
    else:
        out["tags"] = tuple(t.strip().lower() for t in tags)
    esc = meta.get("escalate_to")
    if esc is not None and (not isinstance(esc, str) or not TEAM_RE.match(esc)):
        c.error(line("escalate_to"), "escalate_to", f"'{esc}' is not a team id",
                "name one team, e.g. billing-tier2")
    out["escalate_to"] = esc if isinstance(esc, str) else None
    draft = meta.get("draft", False)
    if not isinstance(draft, bool):
        c.error(line("draft"), "draft", f"'{draft}' is not true/false", "write draft: true")
    out["draft"] = bool(draft) if isinstance(draft, bool) else False
    reviewed = meta.get("last_reviewed")
    if isinstance(reviewed, datetime):
        reviewed = reviewed.date()
    if reviewed is not None and not isinstance(reviewed, date):
        c.error(line("last_reviewed"), "last_reviewed", f"'{reviewed}' is not a date",
                "write an ISO date, e.g. last_reviewed: 2026-03-01")
        reviewed = None
    out["last_reviewed"] = reviewed
    known = {*REQUIRED, "risk", "audience", "locale", "tags", "escalate_to", "draft",
             "last_reviewed"}
    out["extra"] = {k: _jsonable(v) for k, v in meta.items() if k not in known}
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _structure(
    text: str, tokens: list[Token], offsets: list[int], c: _Collector, title: str
) -> tuple[list[Section], list[ApprovedBlock], int]:
    """Sections, approved blocks and the character offset where the body starts."""
    body_line = 0
    headings: list[tuple[int, str, int, int]] = []  # level, text, line_start, line_end
    containers: list[tuple[int, int, bool]] = []  # line_start, line_end, closed
    for i, tok in enumerate(tokens):
        if tok.type == "front_matter" and tok.map:
            body_line = tok.map[1]
        elif tok.type == "heading_open" and tok.map and tok.tag in ("h1", "h2", "h3"):
            headings.append((int(tok.tag[1]), tokens[i + 1].content.strip(),
                             tok.map[0], tok.map[1]))
        elif tok.type == "container_approved_open" and tok.map:
            closed = False
            depth = 0
            for later in tokens[i + 1:]:
                if later.type == "container_approved_open":
                    depth += 1
                elif later.type == "container_approved_close":
                    if depth == 0:
                        closed = later.markup != ""
                        break
                    depth -= 1
            containers.append((tok.map[0], tok.map[1], closed))

    body_start = offsets[body_line]
    if not text[body_start:].strip():
        c.error(body_line + 1, "body", "the article has no body text",
                "write the article below the front matter, starting with '# <title>'")
        return [], [], body_start
    if not headings:
        c.error(body_line + 1, "body", "the article has no headings",
                "start the body with '# <title>' and use '##' for sections")

    sections: list[Section] = []
    seen: dict[str, int] = {}
    path: list[tuple[int, str]] = []
    for idx, (level, heading, l0, l1) in enumerate(headings):
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, heading))
        next_line = headings[idx + 1][2] if idx + 1 < len(headings) else len(offsets) - 1
        start, body = offsets[l0], offsets[l1]
        end = _rstrip_end(text, body, offsets[min(next_line, len(offsets) - 1)])
        slug = slugify(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchor = slug if n == 0 else f"{slug}-{n}"
        heading_path = tuple(h for _, h in path)
        if level > 1 and headings[0][0] == 1 and heading_path[0] != headings[0][1]:
            heading_path = (headings[0][1], *heading_path)
        sections.append(Section(heading_path, anchor, level, start, body, end))
    if headings and headings[0][0] == 1 and title and headings[0][1] != title:
        c.warn(headings[0][2] + 1, "title",
               f"the first heading '{headings[0][1]}' differs from the title '{title}'",
               "make the '# ' heading match the front-matter title")

    blocks: list[ApprovedBlock] = []
    for l0, l1, closed in containers:
        if not closed:
            c.error(l0 + 1, "approved", "'::: approved' block is never closed",
                    "add a line containing only ':::' after the approved text")
            continue
        start = offsets[l0 + 1]
        end = _rstrip_end(text, start, offsets[l1])
        if end <= start:
            c.error(l0 + 1, "approved", "'::: approved' block is empty",
                    "put the approved customer-facing wording inside the block")
            continue
        owner_section = next((s for s in reversed(sections) if s.start <= start), None)
        anchor = owner_section.anchor if owner_section else ""
        blocks.append(ApprovedBlock(start, end, anchor))
    return sections, blocks, body_start


def parse_article(text: str, *, path: str = "<text>") -> ParsedArticle:
    """Parse one article. Raises :class:`InvalidArticle` with every problem found."""
    c = _Collector(path)
    if "\x00" in text:
        c.error(1, "file", "the file contains NUL bytes", "save the article as plain UTF-8 text")
        raise InvalidArticle(c.errors)
    if not text.startswith("---"):
        c.error(1, "front matter", "the file does not start with YAML front matter",
                "begin the file with a '---' line, the id/title/owner/review_every keys, "
                "and a closing '---' line")
        raise InvalidArticle(c.errors)
    tokens = _markdown().parse(text)
    fm = next((t for t in tokens if t.type == "front_matter"), None)
    if fm is None:
        c.error(1, "front matter", "the front matter is not closed",
                "add a line containing only '---' after the front-matter keys")
        raise InvalidArticle(c.errors)
    try:
        meta = yaml.safe_load(fm.content) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        ln = mark.line + 2 if mark is not None else 1
        c.error(ln, "front matter", f"invalid YAML: {getattr(exc, 'problem', exc)}",
                "fix the YAML syntax (quote values that contain ':' or '#')")
        raise InvalidArticle(c.errors) from None
    if not isinstance(meta, dict):
        c.error(1, "front matter", "the front matter is not a mapping of keys to values",
                "write one 'key: value' per line")
        raise InvalidArticle(c.errors)
    fields = _validate_front_matter(meta, _front_matter_lines(fm.content), c)
    offsets = _line_offsets(text)
    sections, blocks, _ = _structure(text, tokens, offsets, c, fields.get("title", ""))
    if fields.get("risk") == "high" and not blocks and not c.errors:
        c.warn(1, "approved", "a high-risk article without a '::: approved' block is never "
               "served to agents", "wrap the customer-facing policy wording in '::: approved'")
    if c.errors:
        raise InvalidArticle(c.problems)
    return ParsedArticle(
        id=fields["id"],
        title=fields["title"],
        owner=fields["owner"],
        review_every=fields["review_every"],
        review_every_days=fields["review_every_days"],
        risk=fields["risk"],
        audience=fields["audience"],
        locale=fields["locale"],
        tags=fields["tags"],
        escalate_to=fields["escalate_to"],
        draft=fields["draft"],
        last_reviewed=fields["last_reviewed"],
        extra=fields["extra"],
        sections=tuple(sections),
        approved_blocks=tuple(blocks),
        warnings=tuple(c.problems),
    )


def decode_article_bytes(data: bytes, *, path: str, max_bytes: int) -> str:
    """Check size and encoding of a file's bytes and return its text."""
    if len(data) > max_bytes:
        raise InvalidArticle([Problem(
            path, 1, "file", f"the file is {len(data):,} bytes, over the {max_bytes:,}-byte limit",
            "split it into several articles, or raise KB_MAX_ARTICLE_BYTES")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidArticle([Problem(
            path, line, "file", f"the file is not valid UTF-8 (byte {exc.start})",
            "re-save the file with UTF-8 encoding")]) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n")


def check_inside(root: Path, path: Path) -> None:
    """Refuse a file that is (or links to) something outside the content folder."""
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise InvalidArticle([Problem(
            str(path), 1, "file", f"the file links to {real}, outside the content folder",
            "copy the article into the content folder instead of linking to it")])


def iter_article_files(root: Path) -> list[Path]:
    """Every ``*.md`` file under ``root`` (sorted; hidden folders and README.md skipped)."""
    files = []
    for path in sorted(root.rglob("*.md")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or path.name.lower() == "readme.md":
            continue
        files.append(path)
    return files
