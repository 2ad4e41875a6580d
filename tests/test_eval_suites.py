"""Eval suites: loading YAML and JSONL, one clear message per problem, and the demo suite."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from evals.suites import Case, find_suite, load_suite, suite_name
from kb.errors import InvalidInput

ROOT = Path(__file__).parent.parent
DEMO = ROOT / "evals/suites/demo.yaml"
DATASETS = ROOT.parent / "shared" / "datasets"

GOOD_YAML = """\
# a comment
- id: refund-window-1
  question: Can a customer get a refund 20 days into an annual plan?
  expect:
    articles: [refunds-annual-plans]
    section: Eligibility
    contains: ["30 days"]
  answerable: true
  audience: vendors
  group: refund-window
  locale: es
- id: offtopic-weather
  question: what's the weather tomorrow
  answerable: false
"""


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path, **kw: Any) -> str:
    with pytest.raises(InvalidInput) as info:
        load_suite(path, **kw)
    return str(info.value)


def test_load_yaml_suite(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_YAML)
    suite = load_suite(path)
    assert suite.name == tmp_path.name  # a generic 'suite' file is named after its folder
    assert suite.path == path
    assert len(suite.sha256) == 64
    assert suite.cases == (
        Case(id="refund-window-1",
             question="Can a customer get a refund 20 days into an annual plan?",
             articles=("refunds-annual-plans",), section="Eligibility", contains=("30 days",),
             answerable=True, audience="vendors", group="refund-window", locale="es"),
        Case(id="offtopic-weather", question="what's the weather tomorrow", articles=(),
             section=None, contains=(), answerable=False, audience=None, group=None,
             locale=None),
    )


def test_answerable_defaults_to_true(tmp_path: Path) -> None:
    path = write(tmp_path, "- {id: a, question: why, expect: {articles: [x]}}\n")
    assert load_suite(path).cases[0].answerable is True


def test_load_jsonl_suite_matches_yaml(tmp_path: Path) -> None:
    yaml_suite = load_suite(write(tmp_path, GOOD_YAML))
    lines = [
        {"id": c.id, "question": c.question,
         "expect": {"articles": list(c.articles), "section": c.section,
                    "contains": list(c.contains)},
         "answerable": c.answerable, "audience": c.audience, "group": c.group,
         "locale": c.locale}
        for c in yaml_suite.cases
    ]
    text = json.dumps(lines[0]) + "\n\n" + json.dumps(lines[1]) + "\n"
    jsonl_suite = load_suite(write(tmp_path, text, "suite.jsonl"))
    assert jsonl_suite.cases == yaml_suite.cases
    assert jsonl_suite.sha256 != yaml_suite.sha256


def test_sha256_tracks_file_bytes(tmp_path: Path) -> None:
    first = load_suite(write(tmp_path, GOOD_YAML)).sha256
    assert load_suite(write(tmp_path, GOOD_YAML)).sha256 == first
    assert load_suite(write(tmp_path, GOOD_YAML + "# edited\n")).sha256 != first


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "- id: a\n  question: [unclosed\n  answerable: true\n")
    message = problems(path)
    assert str(path) in message
    assert "invalid YAML" in message
    assert f"{path}:3:" in message
    assert "fix: fix the YAML syntax" in message


def test_invalid_jsonl_reports_every_bad_line(tmp_path: Path) -> None:
    good = json.dumps({"id": "a", "question": "q?", "expect": {"articles": ["x"]}})
    path = write(tmp_path, f"{good}\n{{not json\n{good[:-1]}\n", "suite.jsonl")
    message = problems(path)
    assert f"{path}:2: case #2: invalid JSON" in message
    assert f"{path}:3: case #3: invalid JSON" in message
    assert "fix: write exactly one JSON object per line" in message


def test_unreadable_and_unsupported_files(tmp_path: Path) -> None:
    message = problems(tmp_path / "missing.yaml")
    assert "cannot be read" in message and "missing.yaml" in message
    assert "unsupported file type '.txt'" in problems(write(tmp_path, GOOD_YAML, "suite.txt"))
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"- id: a\n  question: caf\xe9\n")
    assert "not valid UTF-8" in problems(bad)


def test_not_a_list(tmp_path: Path) -> None:
    message = problems(write(tmp_path, "id: a\nquestion: why\n"))
    assert "not a list of cases" in message
    assert "fix: write one case per list item" in message


def test_empty_suite(tmp_path: Path) -> None:
    assert "the suite has no cases" in problems(write(tmp_path, "# nothing yet\n"))
    assert "the suite has no cases" in problems(write(tmp_path, "", "suite.jsonl"))


def test_case_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- {id: a, question: why, expect: {articles: [x]}}\n- just text\n")
    message = problems(path)
    assert f"{path}:2: case #2: the case is a str, not a mapping" in message
    assert "fix: write the case as 'key: value' pairs" in message


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("{question: why, expect: {articles: [x]}}",
         "case #1: missing 'id' (fix: add 'id: <unique-slug>'"),
        ("{id: 7, question: why, expect: {articles: [x]}}",
         "case #1: 'id' must be a non-empty string, got 7 (fix: write the id as text"),
        ("{id: a, expect: {articles: [x]}}",
         "case 'a': missing 'question' (fix: add 'question:"),
        ("{id: a, question: '  ', expect: {articles: [x]}}",
         "case 'a': 'question' is empty or not text (fix: write the question"),
        ("{id: a, question: why, expect: {articles: [x]}, answerabel: false}",
         "case 'a': unknown key 'answerabel' (fix: did you mean 'answerable'?"),
        ("{id: a, question: why, expect: {article: [x]}}",
         "case 'a': unknown key 'expect.article' (fix: did you mean 'articles'?"),
        ("{id: a, question: why}",
         "case 'a': answerable case with no 'expect.articles' (fix: list the article id(s)"),
        ("{id: a, question: why, expect: {articles: []}, answerable: true}",
         "case 'a': answerable case with no 'expect.articles'"),
        ("{id: a, question: why, expect: {articles: [x]}, answerable: 'no'}",
         "case 'a': 'answerable' must be true or false, got 'no' (fix: write 'answerable: true'"),
        ("{id: a, question: why, expect: {articles: [x], contains: 30 days}}",
         "case 'a': 'expect.contains' must be a list of non-empty strings, got '30 days' "
         "(fix: write the phrases as a list"),
        ("{id: a, question: why, expect: {articles: [x], contains: [30, days]}}",
         "'expect.contains' must be a list of non-empty strings"),
        ("{id: a, question: why, expect: {articles: x}}",
         "'expect.articles' must be a list of non-empty strings, got 'x' (fix: write the "
         "expected article ids as a list"),
        ("{id: a, question: why, expect: [x]}",
         "case 'a': 'expect' must be a mapping"),
        ("{id: a, question: why, expect: {articles: [x]}, audience: vendor}",
         "case 'a': unknown audience 'vendor' (fix: use internal, vendors or vendor:<name>)"),
        ("{id: a, question: why, expect: {articles: [x]}, locale: Spanish}",
         "case 'a': invalid locale 'Spanish'"),
    ],
)
def test_each_case_problem_names_the_case_and_the_fix(
    tmp_path: Path, case: str, expected: str
) -> None:
    path = write(tmp_path, f"- {case}\n")
    message = problems(path)
    assert f"{path}:1: " in message
    assert expected in message
    assert message.count("(fix: ") == 1, message


def test_missing_articles_is_reported_next_to_other_expect_problems(tmp_path: Path) -> None:
    message = problems(write(tmp_path, "- {id: a, question: why, expect: {contains: 7}}\n"))
    assert "'expect.contains' must be a list of non-empty strings" in message
    assert "answerable case with no 'expect.articles'" in message


def test_question_too_long(tmp_path: Path) -> None:
    line = json.dumps({"id": "long", "question": "x" * 2001, "expect": {"articles": ["a"]}})
    message = problems(write(tmp_path, line + "\n", "suite.jsonl"))
    assert "case 'long': 'question' is 2001 characters (limit 2000)" in message
    assert "fix: shorten the question to at most 2000 characters" in message
    ok = json.dumps({"id": "ok", "question": "x" * 2000, "expect": {"articles": ["a"]}})
    assert len(load_suite(write(tmp_path, ok + "\n", "suite.jsonl")).cases) == 1


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        - id: dup
          question: one?
          expect: {articles: [x]}
        - id: dup
          question: two?
          expect: {articles: [x]}
        """)
    message = problems(path)
    assert f"{path}:4: case 'dup': duplicate case id (first used on line 1)" in message
    assert "fix: give every case a unique id" in message


def test_unknown_article_ids(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_YAML)
    message = problems(path, known_articles={"billing-bill-explained"})
    assert f"{path}:4: case 'refund-window-1': unknown article id(s): refunds-annual-plans" \
        in message
    assert "fix: use the id from the article's front matter" in message
    assert len(load_suite(path, known_articles={"refunds-annual-plans"}).cases) == 2


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        - id: a
          question: fine?
          expect: {articles: [known]}
        - question: no id?
          expect: {articles: [known]}
        - id: a
          question: duplicate id?
          expect: {articles: [ghost]}
          answerable: "yes"
          grup: typo
        - id: c
          question: nothing expected?
        - 42
        """)
    message = problems(path, known_articles={"known"})
    assert message.startswith(f"eval suite {path} has 7 problems:")
    for expected in (
        f"{path}:4: case #2: missing 'id'",
        f"{path}:6: case 'a': duplicate case id",
        f"{path}:8: case 'a': unknown article id(s): ghost",
        f"{path}:9: case 'a': 'answerable' must be true or false",
        f"{path}:10: case 'a': unknown key 'grup' (fix: did you mean 'group'?",
        f"{path}:11: case 'c': answerable case with no 'expect.articles'",
        f"{path}:13: case #5: the case is a int, not a mapping",
    ):
        assert expected in message, expected


def test_find_suite_by_name_and_by_path(tmp_path: Path) -> None:
    suites = tmp_path / "suites"
    suites.mkdir()
    yaml_suite = write(suites, GOOD_YAML, "demo.yaml")
    jsonl_suite = write(suites, "", "smoke.jsonl")
    assert find_suite("demo", suites_dir=suites) == yaml_suite
    assert find_suite("smoke", suites_dir=suites) == jsonl_suite
    assert find_suite("demo.yaml", suites_dir=suites) == yaml_suite
    assert find_suite(str(yaml_suite), suites_dir=tmp_path / "elsewhere") == yaml_suite
    other = write(tmp_path, GOOD_YAML, "mine.yml")
    assert find_suite(str(other), suites_dir=suites) == other


def test_find_suite_not_found_lists_available_suites(tmp_path: Path) -> None:
    suites = tmp_path / "suites"
    suites.mkdir()
    write(suites, GOOD_YAML, "demo.yaml")
    write(suites, GOOD_YAML, "smoke.yml")
    write(suites, "notes", "README.md")
    with pytest.raises(InvalidInput) as info:
        find_suite("dmeo", suites_dir=suites)
    message = str(info.value)
    assert "eval suite 'dmeo' not found" in message
    assert "available suites: demo, smoke;" in message
    assert "README" not in message
    with pytest.raises(InvalidInput, match="available suites: none"):
        find_suite("demo", suites_dir=tmp_path / "missing")
    with pytest.raises(InvalidInput, match="not found"):
        find_suite(str(tmp_path / "nope" / "demo.yaml"), suites_dir=suites)


def test_find_suite_ambiguous_name(tmp_path: Path) -> None:
    write(tmp_path, GOOD_YAML, "demo.yaml")
    write(tmp_path, "", "demo.jsonl")
    with pytest.raises(InvalidInput, match="ambiguous"):
        find_suite("demo", suites_dir=tmp_path)


def test_demo_suite_is_large_valid_and_names_real_articles() -> None:
    article_ids = {p.stem for p in (ROOT / "content").rglob("*.md")}
    suite = load_suite(DEMO, known_articles=article_ids)
    ids = [c.id for c in suite.cases]
    assert len(ids) >= 150
    assert len(set(ids)) == len(ids)
    assert sum(not c.answerable for c in suite.cases) >= 20
    groups = Counter(c.group for c in suite.cases if c.group is not None)
    assert sum(n >= 3 for n in groups.values()) >= 25
    named = {a for c in suite.cases for a in c.articles}
    assert named, "the demo suite names no articles"
    assert named <= article_ids, sorted(named - article_ids)
    assert find_suite("demo", suites_dir=DEMO.parent) == DEMO


META_YAML = """\
- id: scams-1
  question: What are the most common scams?
  expect:
    articles: [scams-danville, fraud-answers]
    section: They may claim to be a U
    sections: [Imposter scams, They may claim to be a U]
  meta:
    source: ticket-4411
    turn: 3
    score: 0.5
    inferred: false
    note: null
    gold_sections: [[scams-danville, They may claim to be a U], [fraud-answers, Imposter scams]]
    nested: {ids: [a, b], more: {deep: true}}
- id: plain
  question: No meta here?
  expect: {sections: [Eligibility, Exceptions], articles: [refunds]}
"""


def test_meta_and_sections_are_kept_on_the_case(tmp_path: Path) -> None:
    first, plain = load_suite(write(tmp_path, META_YAML)).cases
    assert first.meta == {
        "source": "ticket-4411", "turn": 3, "score": 0.5, "inferred": False, "note": None,
        "gold_sections": [["scams-danville", "They may claim to be a U"],
                          ["fraud-answers", "Imposter scams"]],
        "nested": {"ids": ["a", "b"], "more": {"deep": True}},
    }
    # expect.section comes first, then expect.sections without repeats.
    assert first.section == "They may claim to be a U"
    assert first.sections == ("They may claim to be a U", "Imposter scams")
    assert first.gold_sections == (("scams-danville", "They may claim to be a U"),
                                   ("fraud-answers", "Imposter scams"))
    # expect.sections alone replaces expect.section; its first heading is the section.
    assert plain.meta == {} and plain.gold_sections == ()
    assert plain.sections == ("Eligibility", "Exceptions")
    assert plain.section == "Eligibility"
    # meta does not enter the hash, so cases stay usable in sets.
    assert len({first, plain}) == 2


def test_meta_in_jsonl_matches_yaml(tmp_path: Path) -> None:
    yaml_cases = load_suite(write(tmp_path, META_YAML)).cases
    lines = [json.dumps({"id": c.id, "question": c.question,
                         "expect": {"articles": list(c.articles), "sections": list(c.sections)},
                         "meta": dict(c.meta)}) for c in yaml_cases]
    jsonl_cases = load_suite(write(tmp_path, "\n".join(lines) + "\n", "suite.jsonl")).cases
    assert jsonl_cases == yaml_cases
    assert [c.meta for c in jsonl_cases] == [c.meta for c in yaml_cases]


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ("ticket-4411", "'meta' must be a mapping, got 'ticket-4411' (fix: write 'meta:'"),
        ("[a, b]", "'meta' must be a mapping, got ['a', 'b']"),
        ("{asked: 2024-05-01}",
         "'meta' must hold only JSON values: meta.asked is a date (datetime.date(2024, 5, 1)), "
         "not a JSON value (fix: use text, numbers, true/false, null, lists and mappings with "
         "text keys (quote dates and times))"),
        ("{notes: [ok, {7: seven}]}",
         "'meta' must hold only JSON values: meta.notes[1] has the key 7, which is not text"),
        ("{score: .nan}",
         "'meta' must hold only JSON values: meta.score is nan, not a JSON number"),
        ("{gold_sections: [Eligibility]}",
         "'meta.gold_sections' must be a list of [article_id, section heading] pairs, got "
         "['Eligibility'] (fix: write e.g. 'gold_sections: [[refunds-annual-plans, "
         "Eligibility]]'"),
        ("{gold_sections: [[a, b, c]]}", "'meta.gold_sections' must be a list of [article_id"),
        ("{gold_sections: [[a, '']]}", "'meta.gold_sections' must be a list of [article_id"),
    ],
)
def test_meta_problems_name_the_case_and_the_fix(
    tmp_path: Path, meta: str, expected: str
) -> None:
    path = write(tmp_path, f"- id: a\n  question: why\n  expect: {{articles: [x]}}\n"
                           f"  meta: {meta}\n")
    message = problems(path)
    assert f"{path}:4: case 'a': " + expected in message
    assert message.count("(fix: ") == 1, message


def test_expect_sections_must_be_a_list_of_headings(tmp_path: Path) -> None:
    message = problems(write(tmp_path, "- {id: a, question: why, "
                                       "expect: {articles: [x], sections: Eligibility}}\n"))
    assert ("case 'a': 'expect.sections' must be a list of non-empty strings, got "
            "'Eligibility' (fix: write the heading texts of the right sections as a list") \
        in message
    message = problems(write(tmp_path, "- {id: a, question: why, "
                                       "expect: {articles: [x], sectoins: [A]}}\n"))
    assert "unknown key 'expect.sectoins' (fix: did you mean 'sections'?" in message


def test_suite_name_is_the_file_stem_or_the_folder_of_a_generic_file(tmp_path: Path) -> None:
    assert suite_name(Path("evals/suites/demo.yaml")) == "demo"
    assert suite_name(tmp_path / "mtrag-govt" / "suite.jsonl") == "mtrag-govt"
    assert suite_name(tmp_path / "mtrag-govt" / "smoke.jsonl") == "smoke"
    (tmp_path / "sets" / "govt").mkdir(parents=True)
    path = write(tmp_path / "sets" / "govt",
                 "- {id: a, question: why, expect: {articles: [x]}}\n", "suite.yaml")
    assert load_suite(path).name == "govt"


@pytest.mark.parametrize("name", ["mtrag-govt", "mtrag-cloud"])
def test_shared_development_sets_load_with_their_meta(name: str) -> None:
    folder = DATASETS / name
    if not (folder / "suite.jsonl").is_file():
        pytest.skip(f"shared data set {folder} not present")
    article_ids = {p.stem for p in (folder / "content").rglob("*.md")}
    path = find_suite(str(folder / "suite.jsonl"), suites_dir=DEMO.parent)
    suite = load_suite(path, known_articles=article_ids)
    assert suite.name == name
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(suite.cases) == len(raw)
    for case, data in zip(suite.cases, raw, strict=True):
        assert case.meta == data["meta"]
        gold = data["meta"].get("gold_sections") or []
        assert case.gold_sections == tuple((a, h) for a, h in gold)
        assert case.section == data["expect"].get("section")
    assert any(len(c.gold_sections) > 1 for c in suite.cases if c.answerable)
