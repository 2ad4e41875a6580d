"""evals.long_articles: long-article versions of a knowledge base and its suite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evals.long_articles import main, merge
from evals.suites import load_suite
from kb.articles import parse_article
from tests.conftest import write_article


class _Embed:
    """Refund texts point one way, router texts another."""

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.array([[1.0, 0.1] if "refund" in t.lower() else [0.1, 1.0] for t in texts])


def _kb(tmp_path: Path) -> tuple[Path, Path]:
    content = tmp_path / "content"
    for art_id, title, body in (
        ("refund-annual", "Annual refunds", "## Eligibility\nA refund within 14 days.\n"),
        ("refund-monthly", "Monthly refunds", "## When a refund applies\nNo refund "
                                              "after the first month.\n### Exceptions\nOutages.\n"),
        ("router-lights", "Router lights", "## What they mean\nWhite is fine.\n"),
    ):
        write_article(content, art_id, title=title, audience=["internal"],
                      body=f"# {title}\n{body}")
    write_article(content, "vendor-refunds", title="Vendor refunds", audience=["vendors"],
                  body="# Vendor refunds\n## Claims\nA refund needs a receipt.\n")
    (content / "broken.md").write_text("no front matter at all\n")
    suite = tmp_path / "suite.jsonl"
    cases = [
        {"id": "a", "question": "refund after 10 days?", "answerable": True,
         "expect": {"articles": ["refund-annual"], "section": "Eligibility"},
         "meta": {"gold_sections": [["refund-annual", "Eligibility"],
                                    ["refund-monthly", "Exceptions"]]}},
        {"id": "b", "question": "white light?", "answerable": True,
         "expect": {"articles": ["router-lights"]}},
        {"id": "c", "question": "weather tomorrow?", "answerable": False},
    ]
    suite.write_text("\n".join(json.dumps(c) for c in cases) + "\n")
    return content, suite


def test_close_articles_merge_into_one_long_article_and_the_suite_follows(
        tmp_path: Path) -> None:
    content, suite = _kb(tmp_path)
    out = tmp_path / "out"
    mapping = merge(content, suite, out, per_article=2, embed=_Embed())
    assert mapping["refund-annual"] == mapping["refund-monthly"] != mapping["router-lights"]
    # another audience is never merged with these, even on the same topic
    assert mapping["vendor-refunds"] not in {mapping["refund-annual"],
                                             mapping["router-lights"]}
    assert "broken" not in str(mapping)  # a file that does not parse is left out, not fatal
    merged = (out / "content" / f"{mapping['refund-annual']}.md").read_text()
    article = parse_article(merged)
    assert article.title.startswith("Part ") and article.audience == ("internal",)
    assert [s.heading_path for s in article.sections][1:] == [
        (article.title, "Eligibility"), (article.title, "When a refund applies"),
        (article.title, "When a refund applies", "Exceptions")]
    assert "Annual refunds" not in merged  # members' titles do not speak for the group
    loaded = load_suite(out / "suite.jsonl", known_articles=set(mapping.values()))
    first = loaded.cases[0]
    assert first.articles == (mapping["refund-annual"],)
    assert set(first.gold_sections) == {(mapping["refund-annual"], "Eligibility"),
                                        (mapping["refund-annual"], "Exceptions")}
    assert not loaded.cases[2].answerable


def test_the_command_refuses_to_write_into_a_folder_in_use(tmp_path: Path) -> None:
    content, suite = _kb(tmp_path)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.md").write_text("mine")
    with pytest.raises(SystemExit) as exc:
        main([str(content), str(suite), str(tmp_path / "used")])
    assert exc.value.code == 2
    assert (tmp_path / "used" / "keep.md").read_text() == "mine"


def test_a_title_like_line_inside_a_code_block_is_kept(tmp_path: Path) -> None:
    content = tmp_path / "content"
    body = ("# Router reset\n## Steps\nRun this:\n\n```sh\n# restart the router\nreboot\n```\n\n"
            "~~~~\n# still code\n~~~\n# still code after a shorter fence\n~~~~\n")
    write_article(content, "router-reset", title="Router reset", audience=["internal"],
                  body=body)
    suite = tmp_path / "suite.jsonl"
    suite.write_text(json.dumps({"id": "a", "question": "reset?", "answerable": True,
                                 "expect": {"articles": ["router-reset"]}}) + "\n")
    mapping = merge(content, suite, tmp_path / "out", embed=_Embed())
    merged = (tmp_path / "out" / "content" / f"{mapping['router-reset']}.md").read_text()
    assert "# Router reset" not in merged  # the title line goes
    assert "# restart the router\nreboot" in merged  # the shell comment stays
    assert "# still code\n~~~\n# still code after a shorter fence\n~~~~" in merged


def test_text_after_a_unicode_line_separator_is_not_a_title() -> None:
    """Markdown lines end at '\\n' only: '# then 2.' after a U+2028 is paragraph text."""
    from evals.long_articles import _body

    text = ("---\nid: a\ntitle: A\nowner: o\nreview_every: 90d\n---\n# A\n## Keypad\n"
            "To reach billing press the key marked\u2028# then 2.\nDone.\n")
    article = parse_article(text, path="a.md")
    assert [s.heading_path for s in article.sections] == [("A",), ("A", "Keypad")]
    body = _body(article, text)
    assert "# then 2." in body and "# A\n" not in body
