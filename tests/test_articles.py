"""Article parsing: sections, spans, approved blocks, and one clear error per bad input."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from kb.articles import (
    check_inside,
    decode_article_bytes,
    parse_article,
    parse_cadence,
    parse_stored_version,
    safe_review_days,
)
from kb.errors import InvalidArticle

from .conftest import article_text

HIGH = """\
---
id: refunds-annual-plans
title: Refunds for annual plans
owner: billing-knowledge
review_every: 90d
risk: high
audience: [internal, vendors]
tags: [billing, refunds]
escalate_to: billing-tier2
reviewed_by_legal: yes
---
# Refunds for annual plans
Intro paragraph.

## Eligibility
Refunds are possible in the first 30 days.

::: approved
A full refund is available within 30 days of purchase.
:::

### Exceptions
Not for promotional plans.

## Eligibility
Second section with the same heading.
"""


def test_sections_have_exact_spans_and_heading_paths() -> None:
    art = parse_article(HIGH, path="a.md")
    assert [s.heading_path for s in art.sections] == [
        ("Refunds for annual plans",),
        ("Refunds for annual plans", "Eligibility"),
        ("Refunds for annual plans", "Eligibility", "Exceptions"),
        ("Refunds for annual plans", "Eligibility"),
    ]
    assert [s.anchor for s in art.sections] == [
        "refunds-for-annual-plans", "eligibility", "exceptions", "eligibility-1"]
    elig = art.sections[1]
    assert HIGH[elig.start:elig.body_start] == "## Eligibility\n"
    assert HIGH[elig.body_start:elig.end].startswith("Refunds are possible")
    assert HIGH[elig.body_start:elig.end].endswith(":::")
    assert HIGH[art.sections[2].body_start:art.sections[2].end] == "Not for promotional plans."


def test_approved_blocks_are_exact_and_belong_to_their_section() -> None:
    art = parse_article(HIGH, path="a.md")
    [block] = art.approved_blocks
    assert HIGH[block.start:block.end] == (
        "A full refund is available within 30 days of purchase.")
    assert block.section_anchor == "eligibility"


def test_front_matter_fields_defaults_and_unknown_keys_kept() -> None:
    art = parse_article(HIGH, path="a.md")
    assert (art.id, art.risk, art.review_every_days) == ("refunds-annual-plans", "high", 90)
    assert art.audience == ("internal", "vendors")
    assert art.escalate_to == "billing-tier2"
    assert art.extra == {"reviewed_by_legal": True}
    plain = parse_article(article_text("plain"), path="p.md")
    assert (plain.risk, plain.audience, plain.locale, plain.tags) == (
        "low", ("internal",), "en", ())


@pytest.mark.parametrize(
    ("value", "days"), [("90d", 90), ("6w", 42), ("6m", 180), ("1y", 365), ("30 d", 30)])
def test_cadence(value: str, days: int) -> None:
    assert parse_cadence(value) == days


def _problems(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(InvalidArticle) as info:
        parse_article(text, path="bad.md")
    assert all(p.path == "bad.md" and p.fix for p in info.value.problems)
    return [(p.line, p.field, p.message) for p in info.value.problems if p.severity == "error"]


def test_missing_required_key_names_the_key() -> None:
    text = article_text("x").replace("owner: billing-knowledge\n", "")
    [(line, fld, msg)] = _problems(text)
    assert fld == "owner" and "missing" in msg and line == 1


def test_unknown_risk_names_the_line() -> None:
    [(line, fld, msg)] = _problems(article_text("x", risk="extreme"))
    assert (line, fld) == (6, "risk") and "extreme" in msg


@pytest.mark.parametrize("bad", ["90", "0d", "3 months", "d"])
def test_malformed_review_every(bad: str) -> None:
    [(line, fld, _)] = _problems(article_text("x", review_every=f"'{bad}'"))
    assert (line, fld) == (5, "review_every")


def test_invalid_id_and_audience_and_locale() -> None:
    text = article_text("x", audience=["Everyone"], locale="english!").replace(
        "id: x", "id: Not A Slug")
    fields = {f for _, f, _ in _problems(text)}
    assert fields == {"id", "audience", "locale"}


def test_empty_body() -> None:
    [(_, fld, msg)] = _problems(article_text("x", body=""))
    assert fld == "body" and "no body" in msg


def test_unclosed_front_matter_and_bad_yaml() -> None:
    [(_, fld, _)] = _problems("---\nid: x\n# Title\n")
    assert fld == "front matter"
    [(line, fld, msg)] = _problems("---\nid: x\ntitle: [unclosed\nowner: y\n---\n# T\n")
    assert fld == "front matter" and "YAML" in msg and line >= 3


def test_unclosed_approved_block() -> None:
    body = "# T\n## A\n::: approved\nnever closed\n"
    [(line, fld, _)] = _problems(article_text("x", title="T", body=body))
    assert fld == "approved" and line == 9


def test_high_risk_without_approved_block_warns() -> None:
    art = parse_article(article_text("x", risk="high"), path="a.md")
    assert [w.field for w in art.warnings] == ["approved"]


def test_non_utf8_file_names_the_line() -> None:
    data = article_text("x").encode() + b"\nbad byte \xff here\n"
    with pytest.raises(InvalidArticle) as info:
        decode_article_bytes(data, path="bad.md", max_bytes=100_000)
    [p] = info.value.problems
    assert "UTF-8" in p.message and p.line == 13


def test_size_limit() -> None:
    with pytest.raises(InvalidArticle) as info:
        decode_article_bytes(b"x" * 5000, path="big.md", max_bytes=4096)
    assert "over the 4,096-byte limit" in info.value.problems[0].message


def test_symlink_escaping_content_folder(tmp_path: Path) -> None:
    root = tmp_path / "content"
    root.mkdir()
    outside = tmp_path / "secret.md"
    outside.write_text(article_text("secret"))
    link = root / "secret.md"
    link.symlink_to(outside)
    with pytest.raises(InvalidArticle) as info:
        check_inside(root, link)
    assert "outside the content folder" in info.value.problems[0].message
    inside = root / "inside.md"
    inside.write_text(article_text("inside"))
    (root / "alias.md").symlink_to(inside)
    check_inside(root, root / "alias.md")  # a link that stays inside is fine


# --- bounds, anchors and odd values (issue 9, item 11) ------------------------------------


def _raw(**fields: str) -> str:
    base = {"id": "x", "title": "X", "owner": "billing-knowledge", "review_every": "90d"}
    front = "".join(f"{k}: {v}\n" for k, v in {**base, **fields}.items())
    return f"---\n{front}---\n# X\n## Rule\nWithin 30 days.\n"


@pytest.mark.parametrize("bad", ['"x\\n"', '"x\\r"', "'" + "a" * 101 + "'", "x--y", "-x", "X"])
def test_id_is_anchored_and_at_most_100_characters(bad: str) -> None:
    [(line, fld, _)] = _problems(_raw(id=bad))
    assert (line, fld) == (2, "id")
    assert parse_article(_raw(id="a" * 100), path="a.md").id == "a" * 100


@pytest.mark.parametrize(("key", "bad"), [
    ("owner", '"team\\n"'), ("owner", "a" * 101), ("escalate_to", '"tier2\\n"'),
    ("locale", '"en\\n"'), ("locale", "en-" + "-".join(["abcd"] * 10)),
    ("audience", '"internal\\n"'), ("audience", "vendor:" + "a" * 64),
])
def test_team_locale_and_audience_are_anchored_and_bounded(key: str, bad: str) -> None:
    assert [fld for _, fld, _ in _problems(_raw(**{key: bad}))] == [key]


@pytest.mark.parametrize(("value", "days"), [("1d", 1), ("10y", 3650), ("120m", 3600),
                                             ("521w", 3647)])
def test_review_every_within_one_day_and_ten_years(value: str, days: int) -> None:
    assert parse_article(_raw(review_every=value), path="a.md").review_every_days == days


@pytest.mark.parametrize("bad", ["10000y", "11y", "3651d", "0d", "9999999d", "90", "-1d"])
def test_review_every_out_of_bounds_names_the_bounds(bad: str) -> None:
    with pytest.raises(InvalidArticle) as info:
        parse_article(_raw(review_every=bad), path="bad.md")
    [p] = info.value.problems
    assert (p.line, p.field) == (5, "review_every") and "between 1d and 10y" in p.fix


def test_parse_cadence_refuses_what_would_overflow_dates() -> None:
    assert parse_cadence("100y") == 36500
    for bad in ("101y", "1000000y", "0d", "9\n0d", "\u0669\u0660d"):
        with pytest.raises(ValueError):
            parse_cadence(bad)


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-03-01", date(2026, 3, 1)), ("'2026-03-01'", date(2026, 3, 1)),
    ("2026-03-01T23:30:00-05:00", date(2026, 3, 1)), ("2000-01-01", date(2000, 1, 1)),
    ("2100-12-31 10:00:00", date(2100, 12, 31)),
])
def test_last_reviewed_accepts_dates_datetimes_and_quoted_dates(value: str, expected: date) -> None:
    assert parse_article(_raw(last_reviewed=value), path="a.md").last_reviewed == expected


@pytest.mark.parametrize(("bad", "says"), [
    ("2026-02-30", "day is out of range"), ("'2026-02-30'", "day is out of range"),
    ("2026-02-30 10:00:00", "day is out of range"), ("9999-12-31", "outside"),
    ("1999-12-31", "outside"), ("0001-01-01", "outside"), ("soon", "not a date"),
    ("[2026-03-01]", "not a date"), ("20260301", "not a date"),
])
def test_last_reviewed_invalid_or_far_away(bad: str, says: str) -> None:
    [(line, fld, msg)] = _problems(_raw(last_reviewed=bad))
    assert (line, fld) == (6, "last_reviewed") and says in msg


@pytest.mark.parametrize("yaml_text", [
    "loop: &a [*a]", "tags: &t [billing]\nmore: *t", "title2: &x X", "other: *undefined",
    "nested: {a: [1, &n 2]}",
])
def test_anchors_and_aliases_are_refused_naming_the_line(yaml_text: str) -> None:
    with pytest.raises(InvalidArticle) as info:
        parse_article(_raw().replace("---\n#", yaml_text + "\n---\n#"), path="bad.md")
    [p] = info.value.problems
    assert p.field == "front matter" and p.line >= 6 and "anchors and aliases" in p.message
    assert p.fix == "write the value out instead of using an &anchor/*alias"


@pytest.mark.parametrize(("fields", "field_name"), [
    ({"title": "[a, b]"}, "title"), ({"title": "yes"}, "title"),
    ({"title": "'" + "t" * 301 + "'"}, "title"),
    ({"tags": "[{a: 1}, {b: 2}]"}, "tags"), ({"tags": "['']"}, "tags"),
    ({"risk": "[high]"}, "risk"), ({"risk": "{high: 1}"}, "risk"), ({"draft": "maybe"}, "draft"),
    ({"id": "123"}, "id"), ({"owner": "{a: 1}"}, "owner"), ({"review_every": "90"}, "review_every"),
    ({"huge": "1" * 5000}, "huge"), ({"hex": "0x" + "f" * 300}, "hex"),
    ({"base60": "1" + ":1" * 5000}, "base60"), ({"big": str(2**64)}, "big"),
    ({"nan": ".nan"}, "nan"), ({"inf": "-.inf"}, "inf"), ({"bin": "!!binary aGVsbG8="}, "bin"),
    ({"set": "!!set {a, b}"}, "set"), ({"cast": "!!int abc"}, "cast"),
    ({"cast": "!!timestamp nope"}, "cast"), ({"nul": '"a\\0b"'}, "nul"),
    ({"sur": '"a\\ud800b"'}, "sur"), ({"obj": "!!python/object/apply:os.system [ls]"}, "obj"),
])
def test_odd_values_are_problems_of_their_own_field(
    fields: dict[str, str], field_name: str
) -> None:
    assert field_name in {fld for _, fld, _ in _problems(_raw(**fields))}


def test_a_key_given_twice_is_an_error() -> None:
    [(line, fld, msg)] = _problems(_raw().replace("title: X\n", "title: X\nid: y\n"))
    assert (line, fld) == (4, "id") and "lines 2 and 4" in msg


@pytest.mark.parametrize("yaml_text", [
    "deep: " + "[" * 30 + "]" * 30, "<<: {risk: high}", "weird: a\x01b", "k: v\n  bad: indent",
])
def test_front_matter_that_cannot_be_read_at_all(yaml_text: str) -> None:
    [(line, fld, _)] = _problems(_raw().replace("---\n#", yaml_text + "\n---\n#"))
    assert fld == "front matter" and line >= 6


def test_plain_numbers_and_dates_are_fine_titles() -> None:
    assert parse_article(_raw(title="404"), path="a.md").title == "404"
    assert parse_article(_raw(title="2026-03-01"), path="a.md").title == "2026-03-01"


def test_safe_review_days_clamps_stored_values() -> None:
    assert [safe_review_days(v) for v in (90, 3_650_000, 0, -5, None, "90", 1e300,
                                          float("nan"), True)] == [
        90, 3650, 1, 1, 1, 1, 3650, 1, 1]


def test_stored_version_reads_without_revalidating_its_front_matter() -> None:
    """A version stored by an older, looser parser (anchors, a 10000-year cadence) still
    yields its sections and approved blocks, with the fields it was stored with."""
    text = ("---\nid: legacy\ntitle: Legacy\nowner: ops\nreview_every: 10000y\n"
            "aud: &a [internal]\naudience: *a\n---\n# Legacy\n## Rule\n::: approved\n"
            "Say this.\n:::\n")
    with pytest.raises(InvalidArticle):
        parse_article(text, path="legacy.md")
    meta = {"id": "legacy", "title": "Legacy", "owner": "ops", "review_every": "10000y",
            "review_every_days": 3_650_000, "risk": "high", "audience": ["internal"],
            "locale": "en", "tags": [], "escalate_to": None, "draft": False,
            "last_reviewed": "2026-02-30", "extra": {"aud": ["internal"]}}
    art = parse_stored_version(text, path="legacy@v1", meta=meta)
    assert (art.id, art.risk, art.audience, art.review_every_days) == (
        "legacy", "high", ("internal",), 3650)
    assert art.last_reviewed is None
    [block] = art.approved_blocks
    assert text[block.start:block.end] == "Say this." and block.section_anchor == "rule"
