"""One bad file never takes down `kb check`, `kb sync` or the service (issue 9, item 11).

Every article file is either parsed or rejected with :class:`InvalidArticle` naming the file,
the line, the field and the fix -- never any other exception -- and what is accepted can be
stored, served as JSON and used in date arithmetic."""

from __future__ import annotations

import json
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlmodel import Session
from typer.testing import CliRunner

from api.cli import app
from kb import governance, identity
from kb.articles import (
    EARLIEST_REVIEWED,
    ID_RE,
    LATEST_REVIEWED,
    MAX_REVIEW_EVERY_DAYS,
    MIN_REVIEW_EVERY_DAYS,
    ParsedArticle,
    parse_article,
)
from kb.errors import InvalidArticle
from kb.settings import Settings
from kb.sync import sync_folder

from .conftest import article_text, cli_env, write_article

# The 456-byte "billion laughs": nine levels of nine aliases, 9**9 strings once expanded.
BOMB_FRONT_MATTER = "lol: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"l{i}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


def _with_id(text: str, old: str, new_line: str) -> str:
    return text.replace(f"id: {old}\n", new_line + "\n", 1)


# The bad files of the issue, each with the field its error must name.
BAD_FILES: dict[str, tuple[str, str]] = {
    "bad-date.md": (article_text("bad-date", last_reviewed="2026-02-30"), "last_reviewed"),
    "loop.md": (article_text("loop", loop="&a [*a]"), "front matter"),
    "bomb.md": (article_text("bomb").replace("---\n# ", BOMB_FRONT_MATTER + "---\n# ", 1),
                "front matter"),
    "forever.md": (article_text("forever", review_every="10000y"), "review_every"),
    "newline-id.md": (_with_id(article_text("nl"), "nl", 'id: "x\\n"'), "id"),
    "long-id.md": (article_text("a" * 300, title="Long"), "id"),
}


def _write_good(content_dir: Path, rule: str) -> Path:
    return write_article(content_dir, "good", body=f"# Good\n## Rule\n{rule}\n")


def _problem_fields(exc: InvalidArticle) -> set[str]:
    return {p.field for p in exc.problems if p.severity == "error"}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_each_bad_file_is_an_invalid_article_naming_the_field(name: str) -> None:
    text, fld = BAD_FILES[name]
    with pytest.raises(InvalidArticle) as info:
        parse_article(text, path=name)
    assert fld in _problem_fields(info.value)
    assert all(p.path == name and p.line >= 1 and p.fix for p in info.value.problems)


def test_alias_bomb_is_refused_in_milliseconds_and_without_memory() -> None:
    text, _ = BAD_FILES["bomb.md"]
    assert len(BOMB_FRONT_MATTER.encode()) < 500
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(InvalidArticle) as info:
        parse_article(text, path="bomb.md")
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    [problem] = info.value.problems
    assert (problem.line, problem.field) == (6, "front matter")
    assert "anchors and aliases" in problem.message and "&anchor/*alias" in problem.fix
    assert elapsed < 0.5  # ~1 ms: refused at the first anchor, before anything expands
    assert peak < 5_000_000


@pytest.mark.parametrize("name", [*sorted(BAD_FILES), "all"])
def test_sync_imports_the_good_edit_beside_each_bad_file(
    name: str, session: Session, content_dir: Path
) -> None:
    _write_good(content_dir, "Within 30 days.")
    assert sync_folder(session, root=content_dir, author="alice").created == [("good", 1)]
    _write_good(content_dir, "Within 14 days.")
    for bad in sorted(BAD_FILES) if name == "all" else [name]:
        (content_dir / bad).write_text(BAD_FILES[bad][0], encoding="utf-8")

    report = sync_folder(session, root=content_dir, author="alice")

    assert report.updated == [("good", 2)]
    assert report.created == []
    expected = set(BAD_FILES) if name == "all" else {name}
    assert {p.path for p in report.errors} == expected
    [status] = governance.statuses(session, article_id="good")
    assert (status.state, status.pending_version) == ("pending", 2)


@pytest.fixture
def kb_cli(settings: Settings, session: Session):  # type: ignore[no-untyped-def]
    identity.bootstrap_admin(session, name="alice")  # `kb sync --as` names an existing user
    runner = CliRunner()
    env = cli_env(settings, KB_ALLOW_SELF_APPROVAL="0")

    def run(*args: str, code: int) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == code, (args, result.output, result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            result.exception)
        assert "Traceback" not in result.output
        return result.output

    return run


def test_cli_check_and_sync_report_every_bad_file_and_import_the_good_one(
    kb_cli, content_dir: Path  # type: ignore[no-untyped-def]
) -> None:
    _write_good(content_dir, "Within 30 days.")
    kb_cli("sync", "--as", "alice", code=0)
    _write_good(content_dir, "Within 14 days.")
    for name, (text, _) in BAD_FILES.items():
        (content_dir / name).write_text(text, encoding="utf-8")

    checked = kb_cli("check", code=3)
    synced = kb_cli("sync", "--as", "alice", code=3)

    for output in (checked, synced):
        for name, (_, fld) in BAD_FILES.items():
            assert f"{name}:" in output and f": {fld}: " in output, (name, output)
    assert "anchors and aliases" in checked and "2026-02-30" in checked
    assert "0 new, 1 changed" in synced and f"{len(BAD_FILES)} errors" in synced
    status = json.loads(kb_cli("status", "good", "--json", code=0))
    assert (status["state"], status["pending_version"]) == ("pending", 2)
    kb_cli("status", code=0)  # every stored row still reads


# --- generated front matter ---------------------------------------------------------------

VALID: dict[str, list[str]] = {
    "id": ["refunds-annual-plans", "a", "x" * 100],
    "title": ["Refunds", "'Q: and A'", "404", "2026-03-01"],
    "owner": ["billing-knowledge", "a.person@example.com"],
    "review_every": ["90d", "1d", "10y", "520w", "'6 m'"],
    "risk": ["low", "medium", "high"],
    "audience": ["[internal, vendors]", "vendor:acme", "[internal]"],
    "locale": ["en", "pt-BR", "es-419"],
    "tags": ["[billing, refunds]", "[]", "billing"],
    "escalate_to": ["billing-tier2"],
    "draft": ["true", "false"],
    "last_reviewed": ["2026-03-01", "'2026-03-01'", "2026-03-01T10:00:00+05:00",
                      "2000-01-01", "2100-12-31 23:59:59"],
    "reviewed_by_legal": ["yes", "{by: legal, on: 2026-01-01}", "[1, 2.5, null]"],
}

# YAML fragments that have crashed, or could crash, a naive loader or what comes after it.
ODD: list[str] = [
    "&a [*a]", "*nowhere", "&x value", "[&y a, *y]", "<<: {a: 1}", "{<<: [{a: 1}, {b: 2}]}",
    "2026-02-30", "2026-02-30 10:00:00", "0001-01-01", "9999-12-31", "1999-12-31",
    "2026-13-01T25:61:61Z", "'2026-02-30'", "'2026-3-1'", "10000y", "0d", "999999y", "3651d",
    "11y", "-1d", "1.5d", '"90d\\n"', '"x\\n"', "'" + "a" * 300 + "'", "1" * 5000,
    "0x" + "f" * 300, "1:2:3:4:5", "1" + ":1" * 2000, ".nan", ".inf", "-.inf", "1e400",
    str(2**70), "!!binary aGVsbG8=", "!!set {a, b}", "!!omap [a: 1, b: 2]", "!!pairs [a: 1]",
    "!!int abc", "!!float x", "!!bool maybe", "!!timestamp nope", "!!null x", "!!str [a]",
    "!!map x", "!!seq x", "!!python/object/apply:os.system [ls]", "!custom x", '"\\0"',
    '"a\\ud800b"', "[" * 60 + "]" * 60, "{a: " * 30 + "b" + "}" * 30, "{[a]: 1}",
    "[{a: 1}, {b: 2}]", "{a: [1, 2]}", "[[a]]", "[]", "{}", "yes", "no", "null", "~", "",
    "''", "|\n  multi\n  line", ">-\n  folded", '"unterminated', "{", "]", "@at", "`tick`",
    "- a", "? complex", "\n  - a\n  - b", "\n  a: 1", "a: b: c", "'it''s'", "%TAG", "...",
    "a\x01b", "\x1b[31mred", "\x7f", "\ufeffbom", "\u2028", "tab\there", "caf\u00e9",
]

KEYS = list(VALID)


_ANY = st.one_of(
    st.sampled_from(ODD),
    st.text(max_size=20).map(json.dumps),  # any string, as a YAML double-quoted scalar
    st.text(max_size=20),  # raw, possibly breaking the YAML
    st.integers().map(str),
    st.floats().map(repr),
    st.dates().map(str),
    st.datetimes(timezones=st.none() | st.just(UTC)).map(lambda d: d.isoformat()),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=5,
    ).map(json.dumps),
)
VALUES = {key: st.sampled_from(valid) | _ANY for key, valid in VALID.items()}


@st.composite
def front_matter(draw: st.DrawFn) -> str:
    """Every key, in any order, often missing; ``mostly_valid`` examples keep most values
    valid so that what is accepted gets checked too."""
    mostly_valid = draw(st.booleans())
    lines = []
    for key in draw(st.permutations(KEYS)):
        if draw(st.integers(0, 9)) >= 8:
            continue  # missing
        valid = mostly_valid and draw(st.integers(0, 9)) < 9
        lines.append(f"{key}: {draw(st.sampled_from(VALID[key]) if valid else VALUES[key])}")
    for key in draw(st.lists(st.sampled_from([*KEYS, "1", "null", "[a]", "? x", "<<"]),
                             max_size=2)):
        lines.append(f"{key}: {draw(VALUES.get(key, _ANY))}")
    return "---\n" + "\n".join(lines) + "\n---\n# Refunds\nIntro.\n\n## Rule\nWithin 30 days.\n"


def _check_accepted(art: ParsedArticle) -> None:
    """What the parser accepts can be stored, served as JSON and used for dates."""
    assert ID_RE.match(art.id) and len(art.id) <= 100 and "\n" not in art.id
    assert MIN_REVIEW_EVERY_DAYS <= art.review_every_days <= MAX_REVIEW_EVERY_DAYS
    if art.last_reviewed is not None:
        assert EARLIEST_REVIEWED <= art.last_reviewed <= LATEST_REVIEWED
    datetime(2100, 12, 31, tzinfo=UTC) + timedelta(days=art.review_every_days)
    json.dumps(art.metadata(), allow_nan=False).encode("utf-8")
    assert len(art.owner) <= 100 and len(art.locale) <= 35 and len(art.title) <= 300


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(front_matter())
def test_generated_front_matter_is_parsed_or_rejected_with_problems(text: str) -> None:
    try:
        art = parse_article(text, path="gen.md")
    except InvalidArticle as exc:
        event("rejected")
        assert exc.problems
        for p in exc.problems:
            assert p.path == "gen.md" and p.line >= 1
            assert p.field and p.message and p.fix
        return
    event("accepted")
    _check_accepted(art)


def _raw_article(fields: dict[str, str]) -> str:
    front = "".join(f"{key}: {value}\n" for key, value in fields.items())
    return f"---\n{front}---\n# X\nIntro.\n\n## Rule\nWithin 30 days.\n"


@pytest.mark.parametrize("odd", ODD)
def test_every_odd_value_in_every_key_is_parsed_or_rejected(odd: str) -> None:
    base = {"id": "x", "title": "X", "owner": "billing-knowledge", "review_every": "90d"}
    for key in [*KEYS, "extra_key"]:
        try:
            _check_accepted(parse_article(_raw_article({**base, key: odd}), path="odd.md"))
        except InvalidArticle as exc:
            assert exc.problems and all(p.path == "odd.md" and p.fix for p in exc.problems)


def test_a_parser_bug_on_one_file_is_reported_and_the_others_sync(
    session: Session, content_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line of defence: an exception the parser should never raise is reported
    against its file (as a bug) instead of stopping the sync."""
    import kb.sync

    def parse(text: str, *, path: str) -> ParsedArticle:
        if path == "boom.md":
            raise RecursionError("simulated parser bug")
        return parse_article(text, path=path)

    monkeypatch.setattr(kb.sync, "parse_article", parse)
    write_article(content_dir, "boom")
    _write_good(content_dir, "Within 30 days.")
    report = sync_folder(session, root=content_dir, author="alice")
    assert report.created == [("good", 1)]
    [problem] = report.errors
    assert problem.path == "boom.md" and "RecursionError" in problem.message
    assert "bug" in problem.fix
