"""Settings: unknown KB_* variables are refused with the closest name; every setting is
described, and the README's settings table is generated from those descriptions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app as cli_app
from kb import settings as settings_module
from kb.errors import InvalidInput, InvalidSettings
from kb.settings import (
    TABLE_END,
    TABLE_START,
    Settings,
    check_environment,
    setting_names,
    settings_table,
    with_settings_table,
)

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No KB_* variable from the developer's shell leaks into these tests."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("KB_"):
            monkeypatch.delenv(key)
    return monkeypatch


@pytest.mark.parametrize(("name", "suggestion"), [
    ("KB_ANSWER__WITHOLD_STALE_HIGH_RISK", "KB_ANSWER__WITHHOLD_STALE_HIGH_RISK"),
    ("KB_DATADIR", "KB_DATA_DIR"),
    ("KB_RETRIEVAL__FUSIN", "KB_RETRIEVAL__FUSION"),
    ("KB_MIN_SCORE", "KB_ANSWER__MIN_SCORE"),  # the section left out
    ("kb_index__embeder", "KB_INDEX__EMBEDDER"),  # read case-insensitively, checked so too
])
def test_unknown_variable_is_refused_with_the_closest_name(
        clean_env: pytest.MonkeyPatch, name: str, suggestion: str) -> None:
    clean_env.setenv(name, "false")
    with pytest.raises(InvalidSettings) as info:
        Settings.from_env()
    assert str(info.value) == f"unknown setting {name}; did you mean {suggestion}?"
    assert isinstance(info.value, InvalidInput)  # exit code 2, HTTP 422


def test_every_unknown_variable_is_named_and_a_hopeless_one_points_to_the_table() -> None:
    with pytest.raises(InvalidSettings) as info:
        check_environment({"KB_XYZZY": "1", "KB_ANSWER__MIN_SCOR": "0.2", "HOME": "/root"})
    message = str(info.value)
    assert "unknown setting KB_ANSWER__MIN_SCOR; did you mean KB_ANSWER__MIN_SCORE?" in message
    assert "unknown setting KB_XYZZY; see the settings table in README.md" in message
    assert "HOME" not in message


def test_known_settings_sections_and_foreign_variables_pass() -> None:
    env = {name: "x" for name in setting_names()}
    env |= {"KB_TEST_DATABASE_URL": "postgresql+psycopg://x", "KB_TOKEN": "canon_x",
            "KB_ANSWER": '{"min_score": 0.2}', "kb_data_dir": "lower", "PATH": "/bin"}
    check_environment(env)  # raises on any refusal


def test_values_are_read_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KB_ANSWER__WITHHOLD_STALE_HIGH_RISK", "false")
    clean_env.setenv("KB_RETRIEVAL__FUSION", "rrf")
    clean_env.setenv("KB_ANSWER", '{"min_score": 0.25}')
    s = Settings.from_env()
    assert s.answer.withhold_stale_high_risk is False
    assert s.retrieval.fusion == "rrf"


def test_invalid_values_name_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KB_RETRIEVAL__DENSE_WEIGHT", "1.5")
    clean_env.setenv("KB_ALLOW_SELF_APPROVAL", "maybe")
    with pytest.raises(InvalidSettings) as info:
        Settings.from_env()
    message = str(info.value)
    assert "invalid setting KB_RETRIEVAL__DENSE_WEIGHT='1.5': Input should be less than or " \
           "equal to 1" in message
    assert "invalid setting KB_ALLOW_SELF_APPROVAL='maybe'" in message


def test_a_section_that_is_not_json_is_an_invalid_setting(
        clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KB_ANSWER", "min_score=0.2")
    with pytest.raises(InvalidSettings, match=r'invalid setting: .*field "answer"'):
        Settings.from_env()


def test_explicit_settings_ignore_the_check(clean_env: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    """Tests build Settings(...) with keyword arguments; only entry points check names."""
    clean_env.setenv("KB_NOT_A_SETTING", "1")
    s = Settings(data_dir=tmp_path / ".canon", content_dir=tmp_path / "content")
    assert s.data_dir == tmp_path / ".canon"


@pytest.mark.parametrize(("env", "expected"), [
    ({"KB_ANSWER__WITHOLD_STALE_HIGH_RISK": "false"},
     "unknown setting KB_ANSWER__WITHOLD_STALE_HIGH_RISK; did you mean "
     "KB_ANSWER__WITHHOLD_STALE_HIGH_RISK?"),
    ({"KB_MAX_ARTICLE_BYTES": "12"}, "invalid setting KB_MAX_ARTICLE_BYTES='12'"),
])
def test_the_cli_refuses_bad_settings_cleanly(clean_env: pytest.MonkeyPatch, tmp_path: Path,
                                              env: dict[str, str], expected: str) -> None:
    result = CliRunner().invoke(cli_app, ["status"],
                                env={"KB_DATA_DIR": str(tmp_path / ".canon"), **env})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "error:" in result.output
    assert expected in " ".join(result.output.split())  # rich may wrap long lines
    assert not (tmp_path / ".canon").exists()  # refused before anything was opened


def test_every_setting_is_described() -> None:
    missing = [name for name, field in settings_module._leaves(Settings)
               if not (field.description or "").strip()]
    assert missing == [], f"add Field(description=...) to {missing}"


def test_table_lists_every_setting_with_its_default() -> None:
    table = settings_table()
    rows = table.splitlines()[2:]
    assert [re.match(r"\| `([A-Z_]+)` \|", r).group(1) for r in rows  # type: ignore[union-attr]
            ] == setting_names()
    assert "| `KB_ANSWER__WITHHOLD_STALE_HIGH_RISK` | `true` |" in table
    assert "| `KB_RETRIEVAL__CANDIDATES` | `40` |" in table and "From 5 to 400." in table
    assert "One of `weighted`, `rrf`, `dense`, `lexical`, `zscore`, `article`." in table
    assert "| `KB_DATABASE_URL` | (unset) |" in table


def test_readme_holds_the_generated_table() -> None:
    """If this fails after adding a setting: `python -m kb.settings --write README.md`."""
    readme = README.read_text(encoding="utf-8")
    assert readme.count(TABLE_START) == 1 and readme.count(TABLE_END) == 1
    block = readme[readme.index(TABLE_START) + len(TABLE_START):readme.index(TABLE_END)]
    assert block == "\n" + settings_table(), \
        "README settings table is out of date: run `python -m kb.settings --write README.md`"


def test_the_table_can_be_printed_and_written(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert settings_module.main([]) == 0
    assert capsys.readouterr().out == settings_table()
    doc = tmp_path / "README.md"
    doc.write_text(f"# Intro\n{TABLE_START}\nold table\n{TABLE_END}\nAfter.\n")
    assert settings_module.main(["--write", str(doc)]) == 0
    assert doc.read_text() == f"# Intro\n{TABLE_START}\n{settings_table()}{TABLE_END}\nAfter.\n"
    assert with_settings_table(doc.read_text()) == doc.read_text()
    assert settings_module.main(["--bogus"]) == 2
