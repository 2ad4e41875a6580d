"""`kb eval draft`: a suite to review, drafted from what agents really asked (the real answer
path's query log, the real CLI, real SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from api.cli import app
from assist import indexer
from assist.answer import AssistResult, Question
from assist.runtime import make_assistant, make_index
from evals.suites import load_suite
from kb import governance
from kb.errors import InvalidInput
from kb.flags import create_flag
from kb.models import Flag, QueryLog
from kb.redact import redact
from kb.settings import Settings
from kb.sync import sync_folder
from tests.kbs import shared_embedder

from .conftest import cli_env, write_article

pytestmark = pytest.mark.slow
NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)


class _Ticking:
    """A clock a minute later at every reading: the newest asking is the last one asked."""

    def __init__(self, start: datetime) -> None:
        self.at = start

    def __call__(self) -> datetime:
        self.at += timedelta(minutes=1)
        return self.at


def _ask_and_flag(settings: Settings, engine: Engine, content_dir: Path) -> list[AssistResult]:
    write_article(content_dir, "payment-methods", title="Payment methods", owner="billing",
                  audience=["internal"],
                  body="# Payment methods\n## Cards\nCustomers pay by direct debit or by debit "
                       "or credit card.\n## Wallets\nDigital wallets such as PayPal are not "
                       "accepted.\n")
    write_article(content_dir, "router-lights", title="Router lights", owner="tech",
                  audience=["internal"],
                  body="# Router lights\n## What the lights mean\nA white light means the "
                       "router is online. A red light means there is no connection.\n")
    settings = settings.model_copy(update={"now": NOW})
    index = make_index(settings, embedder=shared_embedder())
    with Session(engine, expire_on_commit=False) as s:
        sync_folder(s, root=content_dir, author="writer")
        governance.approve_all(s, approver="lead")
        indexer.refresh(s, index)
    assistant = make_assistant(settings, engine, index, clock=_Ticking(NOW - timedelta(hours=1)))
    asked = ["Can customers pay with PayPal?", "can customers pay with paypal",
             "  can customers pay  with PayPal ?? ", "what does a red light on the router mean",
             "who won the football last night"]
    results = [assistant.ask(Question(text=q, audience="internal", caller="agent-1"))
               for q in asked]
    # the eval runner's own questions are not agents' questions
    assistant.ask(Question(text="what does a white light mean", audience="internal",
                           caller="eval"))
    with Session(engine, expire_on_commit=False) as s:
        # asked 40 days ago: outside --days 30
        s.add(QueryLog(id=uuid.uuid4().hex, at=NOW - timedelta(days=40), caller="agent-2",
                       audience="internal", locale="en", question="can I pay by cheque",
                       status="no_answer", served=[]))
        s.commit()
    with Session(engine, expire_on_commit=False) as s:
        router = s.exec(select(QueryLog).where(QueryLog.id == results[3].query_id)).one()
        create_flag(s, query=router, by="agent-1", reason="wrong", comment="it is the red one",
                    now=NOW)
        # on the first of three askings; "unclear" does not say the article is the wrong one
        first = s.exec(select(QueryLog).where(QueryLog.id == results[0].query_id)).one()
        create_flag(s, query=first, by="agent-1", reason="unclear", now=NOW)
    assert [r.status for r in results[:4]] == ["answered"] * 4, [r.status for r in results]
    assert results[4].status != "answered"
    return results


def test_a_draft_holds_the_asked_questions_and_no_suite_takes_it_unreviewed(
        settings: Settings, engine: Engine, content_dir: Path, tmp_path: Path) -> None:
    results = _ask_and_flag(settings, engine, content_dir)
    newest = results[2].passages[0].citation  # what the newest of three askings was served
    env = cli_env(settings, KB_NOW=NOW.isoformat())
    out = tmp_path / "draft.jsonl"
    result = CliRunner().invoke(app, ["eval", "draft", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "wrote 4 draft cases" in result.output and "1 flagged" in result.output
    cases = [json.loads(line) for line in out.read_text().splitlines()]
    by_question = {c["question"].strip().casefold(): c for c in cases}
    assert len(cases) == 4  # three wordings of one question are one case; eval's is left out
    paypal = cases[0]  # asked three times: first
    assert paypal["meta"]["asked"] == 3 and paypal["answerable"] is True
    assert paypal["meta"]["query_id"] == results[2].query_id  # the newest asking speaks
    assert paypal["expect"] == {"articles": ["payment-methods"], "section": newest.section[-1]}
    assert newest.article_id == "payment-methods" and newest.section[-1] in {"Cards", "Wallets"}
    assert paypal["draft"] is True
    assert paypal["meta"]["served"][0] == {"article_id": "payment-methods",
                                           "version": newest.version, "start": newest.start,
                                           "end": newest.end, "section": newest.section[-1]}
    assert paypal["meta"]["flags"] == [{"reason": "unclear", "comment": ""}]
    router = by_question["what does a red light on the router mean"]
    assert router["answerable"] is True and "expect" not in router  # flagged wrong
    assert router["meta"]["flags"] == [{"reason": "wrong", "comment": "it is the red one"}]
    assert "flagged" in router["meta"]["review"]
    football = by_question["who won the football last night"]
    assert football["answerable"] is False and "expect" not in football
    assert by_question["can i pay by cheque"]["meta"]["status"] == "no_answer"

    # No suite takes a draft case: each is refused with what to check.
    with pytest.raises(InvalidInput) as refused:
        load_suite(out)
    assert str(refused.value).count("a draft case") == 4
    # Once an evaluator has checked them, it is a suite.
    router["expect"] = {"articles": ["router-lights"]}
    for c in cases:
        del c["draft"]
    reviewed = tmp_path / "reviewed.jsonl"
    reviewed.write_text("".join(json.dumps(c) + "\n" for c in cases))
    suite = load_suite(reviewed, known_articles={"payment-methods", "router-lights"})
    assert [c.answerable for c in suite.cases] == [c["answerable"] for c in cases]

    # An existing draft is never overwritten without --force.
    before = out.read_text()
    again = CliRunner().invoke(app, ["eval", "draft", str(out), "--days", "30"], env=env)
    assert again.exit_code != 0 and "--force" in again.output and out.read_text() == before
    recent = CliRunner().invoke(app, ["eval", "draft", str(out), "--days", "30", "--force",
                                      "--limit", "2", "--json"], env=env)
    assert recent.exit_code == 0, recent.output
    assert json.loads(recent.stdout)["cases"] == 2
    kept = [json.loads(line)["question"] for line in out.read_text().splitlines()]
    assert "can I pay by cheque" not in kept and kept[0] == paypal["question"]


def _log(engine: Engine, question: str, *, caller: str = "agent-1", comment: str | None = None,
         at: datetime = NOW) -> None:
    qid = uuid.uuid4().hex
    with Session(engine) as s:
        s.add(QueryLog(id=qid, at=at, caller=caller, audience="internal", locale="en",
                       question=question, status="no_answer", served=[]))
        s.flush()
        if comment is not None:
            s.add(Flag(query_id=qid, owner="support-tier2", reason="missing", comment=comment,
                       created_by=caller, created_at=at))
        s.commit()


def test_a_gates_user_is_left_out_and_stored_text_is_redacted_again(
        settings: Settings, engine: Engine, tmp_path: Path) -> None:
    # a row kept before the redactor learnt these forms (stored as asked)
    raw_question = "refund for card 4111 1111 1111 1111 please"
    raw_comment = "customer said call her on +44 20 7946 0958"
    assert redact(raw_question) != raw_question and redact(raw_comment) != raw_comment
    _log(engine, raw_question, comment=raw_comment)
    for _ in range(3):  # a gate run against the server after each deploy
        _log(engine, "how do refunds work?", caller="ci-gate")
    env = cli_env(settings, KB_NOW=NOW.isoformat())
    out = tmp_path / "draft.jsonl"
    r = CliRunner().invoke(app, ["eval", "draft", str(out), "--exclude-caller", "ci-gate"],
                           env=env)
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "4111 1111 1111 1111" not in text and "7946 0958" not in text
    assert "how do refunds work?" not in text and len(text.splitlines()) == 1
    r = CliRunner().invoke(app, ["eval", "draft", str(out), "--force"], env=env)
    assert "how do refunds work?" in out.read_text()  # without --exclude-caller: drafted


@pytest.mark.parametrize("args", [
    ["{tmp}/no-such-dir/draft.jsonl"],  # the folder is missing
    ["{tmp}/dir.jsonl", "--force"],  # a folder named like the output
    ["{tmp}/ok.jsonl", "--days", "100000000"],  # past any date
    ["{tmp}/draft.txt"],  # not JSONL
])
def test_bad_draft_arguments_are_clear_errors(settings: Settings, engine: Engine,
                                              tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "dir.jsonl").mkdir()
    r = CliRunner().invoke(app, ["eval", "draft", *[a.format(tmp=tmp_path) for a in args]],
                           env=cli_env(settings))
    assert r.exit_code == 2, (r.exit_code, r.output, repr(r.exception))
    assert not (tmp_path / "ok.jsonl").exists() and not (tmp_path / "draft.txt").exists()
