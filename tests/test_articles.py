"""Article parsing: sections, spans, approved blocks, and one clear error per bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb.articles import check_inside, decode_article_bytes, parse_article, parse_cadence
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
