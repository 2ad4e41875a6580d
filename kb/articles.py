"""Parse and validate article files (Markdown with YAML front matter).

``parse_article`` turns the text of one file into a typed :class:`ParsedArticle` with exact
character spans into that text, or raises :class:`InvalidArticle` listing every problem with
its file, line, field and fix -- never any other exception, whatever the file holds.
``decode_article_bytes`` and ``check_inside`` add the file-level checks (size, UTF-8, symlinks
escaping the content folder).

The front matter is read with a guarded YAML loader: anchors and aliases are refused while
composing, before anything could expand (a "billion laughs" file costs a millisecond), as are
deep nesting, merge keys, over-long numbers and values no database or JSON response can hold.
Every value the parser accepts is bounded (ids and team names, a review cadence of 1 day to
10 years, a last review in 2000..2100), so nothing it stores can overflow a later read.
``parse_stored_version`` reads a version already stored without re-validating it.
"""

from __future__ import annotations

import math
import re
import reprlib
import unicodedata
from collections.abc import Mapping
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

ID_RE = re.compile(r"\A(?=.{1,100}\Z)[a-z0-9]+(?:-[a-z0-9]+)*\Z")
TEAM_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._@-]{0,99}\Z")
AUDIENCE_RE = re.compile(r"\A(?:internal|vendors|vendor:[a-z0-9][a-z0-9-]{0,62})\Z")
LOCALE_RE = re.compile(r"\A(?=.{2,35}\Z)[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*\Z")
CADENCE_RE = re.compile(r"\A([0-9]{1,6})\s*([dwmy])\Z")
ISO_DATE_RE = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
RISKS = ("low", "medium", "high")
REQUIRED = ("id", "title", "owner", "review_every")
CADENCE_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}
MAX_CADENCE_DAYS = 100 * 365  # parse_cadence: anything longer is a typo, and overflows dates
MIN_REVIEW_EVERY_DAYS, MAX_REVIEW_EVERY_DAYS = 1, 10 * 365
EARLIEST_REVIEWED, LATEST_REVIEWED = date(2000, 1, 1), date(2100, 12, 31)
MAX_TITLE_CHARS = 300
MAX_TAG_CHARS = 100
MAX_YAML_DEPTH = 20  # nesting of lists/mappings in the front matter
MAX_NUMBER_CHARS = 64  # longer numbers cost quadratic time (base-60 ints) or overflow JSON
MAX_JSON_INT = 2**63 - 1
FIXES = {
    "id": "use 1-100 lowercase letters, digits and single hyphens, e.g. refunds-annual-plans",
    "title": 'write the title as text, e.g. title: "Refunds for annual plans" '
             f"(at most {MAX_TITLE_CHARS} characters)",
    "owner": "name one team or person id (letters, digits, . _ @ -; at most 100 characters), "
             "e.g. billing-knowledge",
    "review_every": "write a number followed by d, w, m or y, between 1d and 10y, "
                    "e.g. 90d or 6m",
    "risk": "use one of: low, medium, high",
    "audience": "use internal, vendors or vendor:<name> (lowercase), "
                "e.g. audience: [internal, vendors]",
    "locale": "use a BCP 47 tag such as en, es or pt-BR",
    "tags": f"write a list of short words (at most {MAX_TAG_CHARS} characters each), "
            "e.g. tags: [billing]",
    "escalate_to": "name one team (letters, digits, . _ @ -; at most 100 characters), "
                   "e.g. billing-tier2",
    "draft": "write draft: true or draft: false",
    "last_reviewed": "write a real calendar date between 2000-01-01 and 2100-12-31 as "
                     "YYYY-MM-DD, e.g. last_reviewed: 2026-03-01",
}
_GENERIC_FIX = ("write the value out plainly: quote text, and remove explicit !!tags "
                "(numbers at most 64 characters, no NUL or invalid characters)")
_ALIAS_FIX = "write the value out instead of using an &anchor/*alias"
_TS_TAG = "tag:yaml.org,2002:timestamp"
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


def stored_risk(meta: Mapping[str, Any]) -> str:
    """A stored version's risk as every rule reads it (chunking, serving, withholding, the
    article view): a value that is not a known level (a version stored under an older,
    looser parser) counts as ``high``, the safe side."""
    risk = meta.get("risk")
    return risk if isinstance(risk, str) and risk in RISKS else "high"


def servable(*, risk: str, approved: bool) -> bool:
    """The serving rule for high-risk text, in one place: a ``risk: high`` article is served
    only through its ``::: approved`` blocks. A level that is not ``low`` or ``medium``
    counts as high (see :func:`stored_risk`)."""
    return approved or risk in ("low", "medium")


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


def _cadence_days(value: str) -> int | None:
    match = CADENCE_RE.match(value.strip())
    return int(match.group(1)) * CADENCE_DAYS[match.group(2)] if match else None


def parse_cadence(value: str) -> int:
    """``90d`` -> 90, ``6w`` -> 42, ``6m`` -> 180, ``1y`` -> 365. Raises ValueError, also for
    zero and for more than 100 years (which would overflow date arithmetic)."""
    days = _cadence_days(value)
    if days is None or not 0 < days <= MAX_CADENCE_DAYS:
        raise ValueError(value)
    return days


def safe_review_days(value: Any) -> int:
    """A stored ``review_every_days`` clamped to what the parser accepts today (1 day .. 10
    years), so date arithmetic on rows stored by older versions can never overflow. Anything
    that is not a number counts as 1 day: unknown cadences fall due rather than never."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return MIN_REVIEW_EVERY_DAYS
    return int(min(max(value, MIN_REVIEW_EVERY_DAYS), MAX_REVIEW_EVERY_DAYS))


def slugify(text: str) -> str:
    """GitHub-style anchor slug."""
    norm = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    norm = re.sub(r"[^a-z0-9\s-]", "", norm)
    return re.sub(r"[\s-]+", "-", norm).strip("-") or "section"


def _line_offsets(text: str) -> list[int]:
    """Where each line starts, counting lines as markdown-it does (``\r\n``, a lone ``\r``
    and ``\n`` each end one), so its token line numbers index this list."""
    offsets = [0]
    for match in re.finditer("\r\n?|\n", text):
        offsets.append(match.end())
    offsets.append(len(text))
    return offsets


def _rstrip_end(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


class _Refused(Exception):
    """The front matter uses a YAML feature Canon refuses (raised before anything expands)."""

    def __init__(self, mark: Any, message: str, fix: str) -> None:
        super().__init__(message)
        self.line = (mark.line + 2) if mark is not None else 1  # +1 for '---', +1 1-based
        self.message, self.fix = message, fix


class _FrontMatterLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors, aliases and deep nesting while composing
    (before any alias could be expanded), and turns every value it cannot construct into a
    ``ConstructorError`` that carries the value's position."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(event.start_mark,
                           "YAML anchors and aliases (&name, *name) are not allowed in "
                           "front matter", _ALIAS_FIX)
        if self._depth >= MAX_YAML_DEPTH:
            raise _Refused(event.start_mark,
                           f"the front matter nests lists/mappings more than {MAX_YAML_DEPTH} "
                           "levels deep", "flatten the value")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        if (isinstance(node, yaml.ScalarNode) and node.tag in _NUMBER_TAGS
                and len(node.value) > MAX_NUMBER_CHARS):
            raise yaml.constructor.ConstructorError(
                None, None, f"the number {_show(node.value)} is longer than "
                f"{MAX_NUMBER_CHARS} characters", node.start_mark)
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError,
                IndexError) as exc:
            shown = _show(node.value) if isinstance(node, yaml.ScalarNode) else "the value"
            what = "a valid date" if node.tag == _TS_TAG else f"a valid {node.tag.split(':')[-1]}"
            why = f" ({exc})" if type(exc) is ValueError else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"{shown} is not {what}{why}", node.start_mark) from None

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.constructor.ConstructorError(
                    None, None, "YAML merge keys (<<) are not allowed in front matter; write "
                    "the keys out", key_node.start_mark)
        super().flatten_mapping(node)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxdict = _REPR.maxset = _REPR.maxtuple = 5
_REPR.maxlevel = 3


def _show(value: Any) -> str:
    """A value for an error message: quoted, escaped when it hides characters, shortened."""
    if isinstance(value, str) and value.isprintable() and len(value) <= 80:
        return f"'{value}'"
    if isinstance(value, date):
        return value.isoformat()
    return _REPR.repr(value)


def _bad_chars(value: Any) -> bool:
    """True when a string anywhere in ``value`` holds NUL or a lone surrogate (from YAML
    escapes such as "\\0" or "\\ud800"): neither can be stored or encoded."""
    if isinstance(value, str):
        return "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_bad_chars(k) or _bad_chars(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_bad_chars(v) for v in value)
    return False


def _load_front_matter(raw: str, c: _Collector) -> tuple[dict[Any, Any], dict[str, int]] | None:
    """The front matter as a mapping, and each top-level key's line in the file.

    A key whose value cannot be read is reported against that key and left out; a
    document that cannot be read at all is reported and gives ``None``."""
    try:
        loader = _FrontMatterLoader(raw)
    except yaml.reader.ReaderError as exc:  # characters YAML refuses outright
        code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1])
        c.error(raw[:exc.position].count("\n") + 2, "front matter",
                f"the front matter contains the character U+{code:04X}, which YAML does not "
                "allow", "remove the control or invalid character")
        return None
    try:
        try:
            node = loader.get_single_node()
            if isinstance(node, yaml.MappingNode):
                loader.flatten_mapping(node)  # merge keys (`<<: {...}`)
        except _Refused as exc:
            c.error(exc.line, "front matter", str(exc), exc.fix)
            return None
        except yaml.YAMLError as exc:
            _yaml_error(exc, c)
            return None
        except RecursionError:  # belt and braces: the depth limit should stop this first
            c.error(1, "front matter", "the front matter nests too deeply", "flatten it")
            return None
        if node is None:
            return {}, {}
        if not isinstance(node, yaml.MappingNode):
            c.error(node.start_mark.line + 2, "front matter",
                    "the front matter is not a mapping of keys to values",
                    "write one 'key: value' per line")
            return None
        meta: dict[Any, Any] = {}
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 2
            try:
                key = loader.construct_object(key_node, deep=True)
                hash(key)
            except (yaml.YAMLError, TypeError) as exc:
                c.error(line, "front matter", f"a key cannot be read: {_problem_text(exc)}",
                        "write every key as a plain word followed by ':'")
                continue
            name = key if isinstance(key, str) else str(key)
            if _bad_chars(key):
                c.error(line, "front matter", f"the key {_show(key)} contains a NUL or "
                        "invalid character", "write the key as a plain word")
                continue
            if key in meta:
                c.error(line, name, f"'{name}' appears twice (lines {lines.get(name)} and "
                        f"{line})", "keep only one of them")
                continue
            try:
                value = loader.construct_object(value_node, deep=True)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                c.error(mark.line + 2 if mark is not None else line, name,
                        _problem_text(exc), FIXES.get(name, _GENERIC_FIX))
                continue
            if _bad_chars(value):
                c.error(line, name, "the value contains a NUL or invalid character "
                        "(an escape such as \\0 or \\ud800)", "remove the escape")
                continue
            meta[key] = value
            lines[name] = line
        return meta, lines
    finally:
        loader.dispose()


def _problem_text(exc: BaseException) -> str:
    return str(getattr(exc, "problem", None) or exc)


def _yaml_error(exc: yaml.YAMLError, c: _Collector) -> None:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 2 if mark is not None else 1
    c.error(line, "front matter", f"invalid YAML: {_problem_text(exc)}",
            "fix the YAML syntax (quote values that contain ':' or '#')")


def _str_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _team(value: Any) -> bool:
    return isinstance(value, str) and TEAM_RE.match(value) is not None


def _title(value: Any) -> str | None:
    """Text, or a plain number or date YAML read from an unquoted title (``title: 404``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str | date):
        return str(value).strip()
    if isinstance(value, int | float) and math.isfinite(value):
        return str(value)
    return None


def _reviewed(value: Any) -> tuple[date | None, str | None]:
    """``last_reviewed`` as a date, or the reason it is not one."""
    if isinstance(value, datetime):
        value = value.date()
    elif isinstance(value, str) and ISO_DATE_RE.match(value.strip()):
        try:
            value = date.fromisoformat(value.strip())
        except ValueError as exc:
            return None, f"{_show(value)} is not a valid date ({exc})"
    if not isinstance(value, date):
        return None, f"{_show(value)} is not a date"
    if not EARLIEST_REVIEWED <= value <= LATEST_REVIEWED:
        return None, (f"{value.isoformat()} is outside {EARLIEST_REVIEWED.isoformat()} .. "
                      f"{LATEST_REVIEWED.isoformat()}")
    return value, None


class _Unstorable(ValueError):
    pass


def _jsonable(value: Any) -> Any:
    """A front-matter value as JSON data that every database and response can hold."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_JSON_INT:
            raise _Unstorable(f"the number {_show(value)} is too large to store")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Unstorable(f"{value} is not a number that can be stored")
        return value
    if isinstance(value, date):  # date and datetime
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):  # tuples come from !!omap and !!pairs
        return [_jsonable(v) for v in value]
    raise _Unstorable(f"a {type(value).__name__} value (from a YAML tag such as !!binary or "
                      "!!set) cannot be stored")


def _validate_front_matter(
    meta: dict[Any, Any], lines: dict[str, int], c: _Collector
) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def line(key: str) -> int:
        return lines.get(key, 1)

    def error(key: str, message: str) -> None:
        c.error(line(key), key, message, FIXES.get(key, _GENERIC_FIX))

    reported = {p.field for p in c.problems}  # keys whose value could not even be read
    for key in REQUIRED:
        value = meta.get(key)
        if key not in reported and (value is None or (isinstance(value, str)
                                                      and not value.strip())):
            c.error(1, key, f"required key '{key}' is missing or empty",
                    f"add `{key}: ...` to the front matter")
    art_id = meta.get("id")
    if art_id is not None:
        if not isinstance(art_id, str) or not ID_RE.match(art_id):
            error("id", f"{_show(art_id)} is not a valid id")
        else:
            out["id"] = art_id
    title = meta.get("title")
    if title is not None:
        text = _title(title)
        if text is None:
            error("title", f"the title {_show(title)} is not text")
        elif len(text) > MAX_TITLE_CHARS:
            error("title", f"the title is {len(text)} characters long, over the "
                  f"{MAX_TITLE_CHARS}-character limit")
        else:
            out["title"] = text
    owner = meta.get("owner")
    if owner is not None:
        if not _team(owner):
            error("owner", f"{_show(owner)} is not a valid owner")
        else:
            out["owner"] = owner
    cadence = meta.get("review_every")
    if cadence is not None:
        days = _cadence_days(cadence) if isinstance(cadence, str) else None
        if days is None:
            error("review_every", f"{_show(cadence)} is not a review cadence")
        elif not MIN_REVIEW_EVERY_DAYS <= days <= MAX_REVIEW_EVERY_DAYS:
            error("review_every", f"{_show(cadence)} is {days:,} days; a review cadence must "
                  "be between 1 day and 10 years")
        else:
            out["review_every_days"] = days
            out["review_every"] = cadence.strip()
    risk = meta.get("risk", "low")
    if not isinstance(risk, str) or risk not in RISKS:
        error("risk", f"unknown risk {_show(risk)}")
    else:
        out["risk"] = risk
    audience = _str_list(meta.get("audience", ["internal"]))
    if audience is None or not audience:
        error("audience", "audience must be a non-empty list of names")
    else:
        bad = [a for a in audience if not AUDIENCE_RE.match(a)]
        if bad:
            error("audience", f"unknown audience {_show(bad)}")
        else:
            out["audience"] = tuple(dict.fromkeys(audience))
    locale = meta.get("locale", "en")
    if not isinstance(locale, str) or not LOCALE_RE.match(locale):
        error("locale", f"{_show(locale)} is not a BCP 47 locale")
    else:
        out["locale"] = locale
    tags = _str_list(meta.get("tags", []))
    if tags is None:
        error("tags", "tags must be a list of words")
    elif any(not t.strip() or len(t) > MAX_TAG_CHARS for t in tags):
        error("tags", f"tags must be non-empty words of at most {MAX_TAG_CHARS} characters")
    else:
        out["tags"] = tuple(t.strip().lower() for t in tags)
    esc = meta.get("escalate_to")
    if esc is not None and not _team(esc):
        error("escalate_to", f"{_show(esc)} is not a team id")
    out["escalate_to"] = esc if _team(esc) else None
    draft = meta.get("draft", False)
    if not isinstance(draft, bool):
        error("draft", f"{_show(draft)} is not true/false")
    out["draft"] = draft if isinstance(draft, bool) else False
    reviewed = meta.get("last_reviewed")
    out["last_reviewed"] = None
    if reviewed is not None:
        out["last_reviewed"], why = _reviewed(reviewed)
        if why:
            error("last_reviewed", why)
    known = {*REQUIRED, "risk", "audience", "locale", "tags", "escalate_to", "draft",
             "last_reviewed"}
    extra: dict[str, Any] = {}
    for key, value in meta.items():
        if key in known:
            continue
        name = key if isinstance(key, str) else str(key)
        try:
            extra[name] = _jsonable(value)
        except _Unstorable as exc:
            error(name, str(exc))
    out["extra"] = extra
    return out


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
    loaded = _load_front_matter(fm.content, c)
    if loaded is None:
        raise InvalidArticle(c.errors)
    meta, lines = loaded
    fields = _validate_front_matter(meta, lines, c)
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


def parse_stored_version(text: str, *, path: str, meta: dict[str, Any]) -> ParsedArticle:
    """Sections and approved blocks of a version already stored, with the fields it was
    stored with (``version.meta``), never re-validating its front matter.

    For reading stored versions (chunking, serving): a version accepted by an older, looser
    parser, or whose YAML today's parser refuses, still reads, and its YAML is not even
    loaded. Structural problems found now are ignored; they were checked at import."""
    c = _Collector(path)
    sections, blocks, _ = _structure(text, _markdown().parse(text), _line_offsets(text), c,
                                     str(meta.get("title") or ""))

    def strs(value: Any, default: tuple[str, ...]) -> tuple[str, ...]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        return default

    reviewed: date | None = None
    if isinstance(meta.get("last_reviewed"), str):
        try:
            reviewed = date.fromisoformat(meta["last_reviewed"])
        except ValueError:
            reviewed = None
    return ParsedArticle(
        id=str(meta.get("id") or path),
        title=str(meta.get("title") or ""),
        owner=str(meta.get("owner") or ""),
        review_every=str(meta.get("review_every") or ""),
        review_every_days=safe_review_days(meta.get("review_every_days")),
        risk=stored_risk(meta),
        audience=strs(meta.get("audience"), ("internal",)),
        locale=str(meta.get("locale") or "en"),
        tags=strs(meta.get("tags"), ()),
        escalate_to=meta["escalate_to"] if isinstance(meta.get("escalate_to"), str) else None,
        draft=meta.get("draft") is True,
        last_reviewed=reviewed,
        extra=meta["extra"] if isinstance(meta.get("extra"), dict) else {},
        sections=tuple(sections),
        approved_blocks=tuple(blocks),
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
