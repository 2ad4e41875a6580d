"""Load and validate eval suites (a YAML list of cases, or JSONL with one case per line).

``load_suite`` checks every case and raises :class:`InvalidInput` listing every problem found,
each with its file, line, case and fix. ``find_suite`` resolves ``demo`` to
``<suites_dir>/demo.yaml`` (or ``.yml`` / ``.jsonl``), or takes a path to a suite file.

A case may carry ``meta``: a free-form mapping of JSON values (its source, ticket, notes...),
kept on the :class:`Case` and stored with run results, never scored. One convention is read
from it: ``meta.gold_sections``, a list of ``[article_id, section heading]`` pairs naming every
right section (as the shared development sets write it); ``section_hit@1`` accepts any of them,
next to the headings of ``expect.section`` / ``expect.sections``.

``draft: true`` marks a case drafted from the query log (``kb eval draft``, evals/draft.py)
that nobody has checked yet: it is refused, with what to check, until the key is deleted.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kb.articles import AUDIENCE_RE, LOCALE_RE
from kb.errors import InvalidInput, Problem

SUITES_DIR = Path(__file__).resolve().parent / "suites"

SUFFIXES = (".yaml", ".yml", ".jsonl")
CASE_KEYS = ("id", "question", "expect", "answerable", "audience", "group", "locale", "meta",
             "draft")
EXPECT_KEYS = ("articles", "section", "sections", "contains")
GENERIC_STEMS = frozenset({"suite"})  # <set>/suite.jsonl is named after its folder
MAX_QUESTION = 2000


@dataclass(frozen=True)
class Case:
    """One eval question and what a correct response looks like."""

    id: str
    question: str
    articles: tuple[str, ...]  # any of these counts as a hit
    section: str | None  # heading text of the right section
    contains: tuple[str, ...]  # phrases the served text must contain
    answerable: bool  # False: the right behaviour is to abstain or escalate
    audience: str | None  # ask as this audience (None: the runner's default)
    group: str | None  # paraphrases of one question share a group
    locale: str | None
    # Every heading that counts as the right section: expect.section, then expect.sections.
    sections: tuple[str, ...] = ()
    # (article id, heading) pairs from meta.gold_sections: the right sections of named articles.
    gold_sections: tuple[tuple[str, str], ...] = ()
    # Free-form, JSON-serialisable; kept and shown, never scored (gold_sections aside).
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.section is not None and self.section not in self.sections:
            object.__setattr__(self, "sections", (self.section, *self.sections))


@dataclass(frozen=True)
class Suite:
    """A validated suite; ``sha256`` is the hash of the file bytes, for reproducible reports."""

    name: str
    path: Path
    cases: tuple[Case, ...]
    sha256: str


@dataclass(frozen=True)
class _Raw:
    """One case as read from the file, before validation."""

    index: int  # 1-based position in the suite
    line: int  # 1-based line where the case starts
    value: Any
    key_lines: dict[str, int]  # line of each key (YAML only)


class _Collector:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def add(self, line: int, where: str, message: str, fix: str) -> None:
        self.problems.append(Problem(str(self.path), line, where, message, fix))

    def raise_if_any(self) -> None:
        if self.problems:
            n = len(self.problems)
            head = f"eval suite {self.path} has {n} problem{'s' if n != 1 else ''}:"
            raise InvalidInput("\n".join([head, *(f"  {p}" for p in self.problems)]))


def _suggest(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{hint}allowed keys: {', '.join(allowed)}"


def _read_yaml(text: str, c: _Collector) -> list[_Raw] | None:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        c.add(line, "file", f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
              "fix the YAML syntax (quote questions that contain ': ', '#' or start with "
              "a quote)")
        return None
    if data is None:  # empty file or only comments
        return []
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        c.add(1, "file", f"the suite is a {type(data).__name__}, not a list of cases",
              "write one case per list item, each starting with '- id: ...'")
        return None
    raws: list[_Raw] = []
    for i, (value, item) in enumerate(zip(data, node.value, strict=True), start=1):
        key_lines: dict[str, int] = {}
        if isinstance(item, yaml.MappingNode):
            for key_node, _ in item.value:
                key_lines.setdefault(str(key_node.value), key_node.start_mark.line + 1)
        raws.append(_Raw(i, item.start_mark.line + 1, value, key_lines))
    return raws


def _read_jsonl(text: str, c: _Collector) -> list[_Raw]:
    raws: list[_Raw] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        index = len(raws) + 1
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            c.add(line_no, f"case #{index}", f"invalid JSON: {exc.msg} (column {exc.colno})",
                  "write exactly one JSON object per line")
            value = None
        raws.append(_Raw(index, line_no, value, {}))
    return raws


def _opt_str(
    value: Any, name: str, line: int, where: str, c: _Collector, fix: str
) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        c.add(line, where, f"'{name}' must be a non-empty string, got {value!r}", fix)
        return None
    return value


def _str_tuple(
    value: Any, name: str, line: int, where: str, c: _Collector, fix: str
) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        c.add(line, where, f"'{name}' must be a list of non-empty strings, got {value!r}", fix)
        return ()
    return tuple(value)


def _json_problem(value: Any, where: str) -> str | None:
    """Where ``value`` stops being JSON (``None`` when it is JSON all the way down)."""
    if value is None or isinstance(value, bool | int | str):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r}, not a JSON number"
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (problem := _json_problem(item, f"{where}[{i}]")) is not None:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has the key {key!r}, which is not text"
            if (problem := _json_problem(item, f"{where}.{key}")) is not None:
                return problem
        return None
    return f"{where} is a {type(value).__name__} ({value!r}), not a JSON value"


def _meta(value: Any, line: int, where: str, c: _Collector) -> dict[str, Any]:
    """The case's ``meta`` mapping, or ``{}`` after recording why it cannot be kept."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        c.add(line, where, f"'meta' must be a mapping, got {value!r}",
              "write 'meta:' followed by indented 'key: value' pairs (JSON: an object), or "
              "remove the key")
        return {}
    problem = _json_problem(value, "meta")
    if problem is not None:
        c.add(line, where, f"'meta' must hold only JSON values: {problem}",
              "use text, numbers, true/false, null, lists and mappings with text keys "
              "(quote dates and times)")
        return {}
    return value


def _gold_sections(
    meta: dict[str, Any], line: int, where: str, c: _Collector
) -> tuple[tuple[str, str], ...]:
    """``meta.gold_sections`` as (article id, heading) pairs; ``()`` when absent or invalid."""
    value = meta.get("gold_sections")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(pair, list) and len(pair) == 2
        and all(isinstance(v, str) and v.strip() for v in pair)
        for pair in value
    ):
        c.add(line, where, "'meta.gold_sections' must be a list of [article_id, section "
              f"heading] pairs, got {value!r}",
              "write e.g. 'gold_sections: [[refunds-annual-plans, Eligibility]]', or rename "
              "the key if it means something else")
        return ()
    return tuple((a, h) for a, h in value)


def _validate_case(
    raw: _Raw, seen: dict[str, int], known: Collection[str] | None, c: _Collector
) -> Case | None:
    """Check one case, recording every problem; return the case when it has none."""
    before = len(c.problems)
    where = f"case #{raw.index}"
    if not isinstance(raw.value, dict):
        if raw.value is not None:  # None: already reported as invalid JSON
            c.add(raw.line, where, f"the case is a {type(raw.value).__name__}, not a mapping",
                  "write the case as 'key: value' pairs: id, question, expect, answerable")
        return None
    data: dict[str, Any] = raw.value

    def line(key: str) -> int:
        return raw.key_lines.get(key, raw.line)

    case_id = data.get("id")
    if isinstance(case_id, str) and case_id.strip():
        where = f"case '{case_id}'"
        if case_id in seen:
            c.add(line("id"), where, f"duplicate case id (first used on line {seen[case_id]})",
                  "give every case a unique id, e.g. add a '-2' suffix")
        else:
            seen[case_id] = line("id")
    elif case_id is None:
        c.add(raw.line, where, "missing 'id'", "add 'id: <unique-slug>' to the case")
    else:
        c.add(line("id"), where, f"'id' must be a non-empty string, got {case_id!r}",
              "write the id as text, e.g. 'id: refund-window-1'")

    for key in data:
        if str(key) not in CASE_KEYS:
            c.add(line(str(key)), where, f"unknown key '{key}'", _suggest(str(key), CASE_KEYS))

    question = data.get("question")
    if question is None:
        c.add(raw.line, where, "missing 'question'", "add 'question: <what an agent would ask>'")
    elif not isinstance(question, str) or not question.strip():
        c.add(line("question"), where, "'question' is empty or not text",
              "write the question as a non-empty string")
    elif len(question) > MAX_QUESTION:
        c.add(line("question"), where,
              f"'question' is {len(question)} characters (limit {MAX_QUESTION})",
              f"shorten the question to at most {MAX_QUESTION} characters")

    answerable = data.get("answerable", True)
    if not isinstance(answerable, bool):
        c.add(line("answerable"), where, f"'answerable' must be true or false, got {answerable!r}",
              "write 'answerable: true' or 'answerable: false' without quotes")
        answerable = None

    expect = data.get("expect")
    expect_problems = len(c.problems)
    if expect is None:
        expect = {}
    if not isinstance(expect, dict):
        c.add(line("expect"), where, f"'expect' must be a mapping, got {expect!r}",
              "write 'expect:' followed by indented 'articles: [...]' (and optionally "
              "section, sections, contains)")
        expect = {}
    for key in expect:
        if str(key) not in EXPECT_KEYS:
            c.add(line("expect"), where, f"unknown key 'expect.{key}'",
                  _suggest(str(key), EXPECT_KEYS))
    expect_typo = len(c.problems) > expect_problems
    articles = _str_tuple(expect.get("articles"), "expect.articles", line("expect"), where, c,
                          "write the expected article ids as a list, e.g. 'articles: [my-id]'")
    section = _opt_str(expect.get("section"), "expect.section", line("expect"), where, c,
                       "write the heading text of the right section, or remove the key")
    more_sections = _str_tuple(expect.get("sections"), "expect.sections", line("expect"),
                               where, c, "write the heading texts of the right sections as a "
                               "list, e.g. 'sections: [Eligibility, Exceptions]'")
    sections = tuple(dict.fromkeys(((section,) if section else ()) + more_sections))
    contains = _str_tuple(expect.get("contains"), "expect.contains", line("expect"), where, c,
                          "write the phrases as a list of strings, e.g. 'contains: [\"30 days\"]'")
    # A typo in 'expect' already explains missing articles: report it once.
    if answerable is True and not expect.get("articles") and not expect_typo:
        c.add(line("expect"), where, "answerable case with no 'expect.articles'",
              "list the article id(s) that answer it under expect.articles, or set "
              "'answerable: false' if the right behaviour is to abstain")
    if known is not None:
        unknown = [a for a in articles if a not in known]
        if unknown:
            c.add(line("expect"), where, f"unknown article id(s): {', '.join(unknown)}",
                  "use the id from the article's front matter (see `kb status`)")

    audience = _opt_str(data.get("audience"), "audience", line("audience"), where, c,
                        "use internal, vendors or vendor:<name>")
    if audience is not None and not AUDIENCE_RE.match(audience):
        c.add(line("audience"), where, f"unknown audience '{audience}'",
              "use internal, vendors or vendor:<name>")
    group = _opt_str(data.get("group"), "group", line("group"), where, c,
                     "write the group as a short slug shared by paraphrases, or remove the key")
    locale = _opt_str(data.get("locale"), "locale", line("locale"), where, c,
                      "write a language tag such as en or es-MX, or remove the key")
    if locale is not None and not LOCALE_RE.match(locale):
        c.add(line("locale"), where, f"invalid locale '{locale}'",
              "write a language tag such as en or es-MX")

    meta = _meta(data.get("meta"), line("meta"), where, c)
    gold_sections = _gold_sections(meta, line("meta"), where, c)

    draft = data.get("draft", False)
    if draft is True:
        c.add(line("draft"), where, "a draft case (from `kb eval draft`): its expectation is "
              "only what was served, or a guess",
              "check 'answerable' and 'expect' against the knowledge base (meta.review says "
              "what to check), then delete 'draft: true'")
    elif draft is not False:
        c.add(line("draft"), where, f"'draft' must be true or false, got {draft!r}",
              "delete the key once the case is checked")

    if len(c.problems) > before:
        return None
    assert isinstance(case_id, str) and isinstance(question, str) and answerable is not None
    return Case(id=case_id, question=question, articles=articles,
                section=sections[0] if sections else None, contains=contains,
                answerable=answerable, audience=audience, group=group, locale=locale,
                sections=sections, gold_sections=gold_sections, meta=meta)


def load_suite(path: Path, *, known_articles: Collection[str] | None = None) -> Suite:
    """Read and validate a suite; raise :class:`InvalidInput` listing every problem found.

    With ``known_articles``, every ``expect.articles`` id must be one of them.
    """
    c = _Collector(path)
    if path.suffix not in SUFFIXES:
        raise InvalidInput(f"eval suite {path}: unsupported file type '{path.suffix}'; "
                           f"use one of {', '.join(SUFFIXES)}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"eval suite {path} cannot be read ({exc.strerror or exc}); "
                           "check the path and its permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidInput(f"eval suite {path}:{line}: the file is not valid UTF-8; "
                           "save it as UTF-8") from None
    raws = _read_jsonl(text, c) if path.suffix == ".jsonl" else _read_yaml(text, c)
    if raws is not None and not raws:
        c.add(1, "file", "the suite has no cases", "add at least one case")
    c.raise_if_any()
    assert raws is not None
    seen: dict[str, int] = {}
    known = frozenset(known_articles) if known_articles is not None else None
    cases = [_validate_case(raw, seen, known, c) for raw in raws]
    c.raise_if_any()
    return Suite(name=suite_name(path), path=path,
                 cases=tuple(x for x in cases if x is not None),
                 sha256=hashlib.sha256(data).hexdigest())


def suite_name(path: Path) -> str:
    """The name runs are stored under: the file name without its suffix, or the folder's name
    for a generic file name (``datasets/mtrag-govt/suite.jsonl`` is ``mtrag-govt``), so two
    sets laid out alike never share a run history."""
    if path.stem in GENERIC_STEMS and path.resolve().parent.name:
        return path.resolve().parent.name
    return path.stem


def available_suites(suites_dir: Path) -> list[str]:
    """Names of the suites in ``suites_dir`` (file names without the suffix), sorted."""
    if not suites_dir.is_dir():
        return []
    return sorted({p.stem for p in suites_dir.iterdir() if p.is_file() and p.suffix in SUFFIXES})


def find_suite(name_or_path: str, *, suites_dir: Path) -> Path:
    """Resolve a suite path, or a bare name such as ``demo`` looked up in ``suites_dir``."""
    given = Path(name_or_path)
    if given.is_file():
        return given
    candidates: list[Path] = []
    if len(given.parts) == 1:
        if given.suffix in SUFFIXES:
            candidates = [suites_dir / given]
        else:
            candidates = [suites_dir / f"{name_or_path}{s}" for s in SUFFIXES]
    found = [p for p in candidates if p.is_file()]
    if len(found) > 1:
        raise InvalidInput(f"eval suite '{name_or_path}' is ambiguous: "
                           f"{', '.join(str(p) for p in found)}; pass the file path instead")
    if found:
        return found[0]
    names = available_suites(suites_dir)
    listing = ", ".join(names) if names else "none"
    raise InvalidInput(f"eval suite '{name_or_path}' not found (looked for a file at that path "
                       f"and for {'/'.join(SUFFIXES)} in {suites_dir}); available suites: "
                       f"{listing}; pass one of these names or a path to a suite file")
