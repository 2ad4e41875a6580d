"""The web console in a real browser: Playwright drives Debian's Chromium against `kb serve`.

Nothing is downloaded: the browser is /usr/bin/chromium (`apt-get install chromium`; `.ci/run`
installs it). Without it locally these tests skip and say so. Screenshots of every page go to
``CANON_SCREENSHOTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import Session, col, select

from kb.console_models import ConsoleSession
from kb.models import AuditEvent

from .console_world import World, start_world, stop

CHROMIUM = os.environ.get("CANON_CHROMIUM", "/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists() and not shutil.which("chromium"),
                       reason="Chromium is not installed (apt-get install chromium); "
                              ".ci/run installs it so these tests run in CI"),
]
playwright_api = pytest.importorskip("playwright.sync_api")

REFUND_Q = "customer cancelled their annual plan 20 days in, can they get a refund?"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("console")
    w = start_world(root, root / "server.log")
    try:
        yield w
    finally:
        stop(w.server)
        w.engine.dispose()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("CANON_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


def _context(browser: Any, width: int = 1280) -> Any:
    return browser.new_context(viewport={"width": width, "height": 900},
                               base_url=None, reduced_motion="reduce")


def sign_in(page: Any, world: World, user: str) -> None:
    page.goto(f"{world.base}/ui/sign-in")
    page.get_by_label("API token").fill(world.tokens[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert "/ui/sign-in" not in page.url, page.content()


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core (the copy shipped in axe-playwright-python) run in the page: WCAG 2 A/AA."""
    import axe_playwright_python

    script = Path(axe_playwright_python.__file__).parent / "axe.min.js"
    page.evaluate(script.read_text(encoding="utf-8"))  # by DevTools: the page's CSP stays on
    result = page.evaluate("""async () => await axe.run(document, {runOnly: {type: 'tag',
        values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})""")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]} for v in result["violations"]]


def assert_accessible(page: Any) -> None:
    violations = axe_violations(page)
    assert not violations, json.dumps(violations, indent=1)


def _get_json(url: str, token: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


# --- security ----------------------------------------------------------------------------


def test_no_token_no_console(browser: Any, world: World, shots: Path) -> None:
    ctx = _context(browser)
    page = ctx.new_page()
    for path in ("/ui", "/ui/desk", "/ui/health", "/ui/read/refunds-annual-plans"):
        page.goto(f"{world.base}{path}")
        assert "/ui/sign-in" in page.url, path
    page.get_by_label("API token").fill("canon_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text().startswith("invalid or expired token")
    page.screenshot(path=str(shots / "sign-in.png"))
    assert_accessible(page)
    ctx.close()


def test_session_cookie_is_httponly_samesite_and_expires(browser: Any, world: World) -> None:
    ctx = _context(browser)
    page = ctx.new_page()
    sign_in(page, world, "acme-agent")
    cookie = next(c for c in ctx.cookies() if c["name"] == "canon_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/ui"
    assert cookie["expires"] > 0  # a persistent cookie with an expiry, not forever
    assert page.evaluate("document.cookie") == ""  # scripts cannot read it
    ctx.close()


def test_expired_session_signs_out(browser: Any, world: World) -> None:
    ctx = _context(browser)
    page = ctx.new_page()
    sign_in(page, world, "acme-agent")
    with Session(world.engine) as s:  # the server's clock is pinned: move the expiry instead
        s.exec(update(ConsoleSession).where(col(ConsoleSession.user_name) == "acme-agent")
               .values(expires_at=ConsoleSession.created_at))  # type: ignore[call-overload]
        s.commit()
    page.goto(f"{world.base}/ui")
    assert "/ui/sign-in" in page.url
    assert "session has expired" in page.get_by_role("status").inner_text()
    ctx.close()


def test_cross_site_post_without_csrf_token_is_refused(browser: Any, world: World) -> None:
    ctx = _context(browser)
    page = ctx.new_page()
    sign_in(page, world, "acme-agent")
    # The session cookie rides along (same browser), but the token and origin do not match.
    r = page.request.post(f"{world.base}/ui/ask", form={"question": REFUND_Q})
    assert r.status == 403 and "CSRF" in r.text()
    r = page.request.post(f"{world.base}/ui/ask", form={"question": REFUND_Q,
                                                         "csrf_token": "guessed"})
    assert r.status == 403
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = page.request.post(f"{world.base}/ui/ask", form={"question": REFUND_Q,
                                                         "csrf_token": token},
                          headers={"Origin": "http://evil.example"})
    assert r.status == 403
    # A form on another site posting to the console: SameSite keeps the cookie at home, and
    # nothing is asked in the agent's name.
    with Session(world.engine) as s:
        before = len(s.exec(select(AuditEvent.id)).all())
    page.goto("data:text/html,<form method=post action='" + world.base + "/ui/ask'>"
              "<input name=question value=x><button>go</button></form>")
    page.get_by_role("button", name="go").click()
    page.wait_for_load_state()
    assert "/ui/sign-in" in page.url or "CSRF" in page.content()
    with Session(world.engine) as s:
        assert len(s.exec(select(AuditEvent.id)).all()) == before
    ctx.close()


def test_agent_gets_the_apis_404_for_owner_pages_and_other_audiences(
        browser: Any, world: World, shots: Path) -> None:
    ctx = _context(browser)
    page = ctx.new_page()
    sign_in(page, world, "acme-agent")
    for path in ("/ui/desk", "/ui/desk/articles/refunds-annual-plans",
                 "/ui/desk/articles/refunds-annual-plans/diff?from=1&to=2",
                 "/ui/desk/articles/refunds-annual-plans/versions/2/approve",
                 "/ui/desk/flags/1", "/ui/desk/search", "/ui/health"):
        response = page.goto(f"{world.base}{path}")
        assert response.status == 404, path
        assert page.get_by_role("heading", level=1).inner_text() == "Not found"
    # An article for another vendor (globex) and an internal-only one: the API's 404, same
    # words, for the page and for GET /v1/articles/{id}.
    for article in ("globex-scope-handoffs", "fraud-detection-rules"):
        api_status, body = _get_json(f"{world.base}/v1/articles/{article}",
                                     world.tokens["acme-agent"])
        response = page.goto(f"{world.base}/ui/read/{article}")
        assert api_status == response.status == 404, article
        assert body["detail"] in page.get_by_role("alert").inner_text()
    page.screenshot(path=str(shots / "not-found.png"))
    ctx.close()


# --- the agent ---------------------------------------------------------------------------


def test_agent_asks_reads_the_citation_and_flags(browser: Any, world: World,
                                                 shots: Path) -> None:
    ctx = _context(browser, width=400)  # a side panel next to the ticket
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=world.base)
    page = ctx.new_page()
    sign_in(page, world, "acme-agent")
    # Keyboard only: the skip link, then the question box, typed and sent with Ctrl+Enter.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.get_by_label("Customer's question").focus()
    page.keyboard.type(REFUND_Q)
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")
    heading = page.get_by_role("heading", level=2, name="Approved answer")
    assert heading.is_visible()
    assert page.evaluate("document.activeElement.id") == "answer-heading"
    passages = page.locator("article.passage")
    assert passages.count() >= 1
    first = passages.first
    text = first.locator("blockquote.verbatim").inner_text()
    assert "30 days" in text  # v1 serves: the pending 45-day edit is not approved
    cite = first.locator(".cite").inner_text()
    assert "v1" in cite and "approved" in cite and "owner billing-knowledge" in cite
    assert "high risk" in first.locator(".badge").inner_text()
    # No horizontal scrolling at 400 px.
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    first.get_by_role("button", name="Copy text").click()
    assert page.evaluate("navigator.clipboard.readText()") == text
    page.screenshot(path=str(shots / "answer-panel-400px.png"), full_page=True)
    assert_accessible(page)

    link = first.get_by_role("link").first
    href = link.get_attribute("href")
    assert re.fullmatch(r"/ui/read/refunds-annual-plans#[a-z0-9-]+", href or ""), href
    link.click()
    page.wait_for_load_state()
    anchor = href.split("#")[1]  # type: ignore[union-attr]
    assert page.locator(f"section#{anchor}").is_visible()
    assert page.get_by_role("heading", level=1).inner_text() == "Refunds for annual plans"
    page.screenshot(path=str(shots / "article-view.png"), full_page=True)
    assert_accessible(page)

    page.goto(f"{world.base}/ui")
    page.get_by_label("Customer's question").fill(REFUND_Q)
    page.get_by_role("button", name="Ask").click()
    first = page.locator("article.passage").first
    first.get_by_text("Flag this passage").click()
    first.get_by_label("Reason").select_option("outdated")
    first.get_by_label("Comment").fill("the new policy is 45 days")
    first.get_by_role("button", name="Send flag").click()
    assert "billing-knowledge" in page.get_by_role("status").inner_text()
    ctx.close()


def test_no_answer_shows_the_handoff_with_a_copy_button(browser: Any, world: World,
                                                        shots: Path) -> None:
    ctx = _context(browser)
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=world.base)
    page = ctx.new_page()
    sign_in(page, world, "acme-agent")
    page.get_by_label("Customer's question").fill("what's the weather going to be like "
                                                   "tomorrow?")
    page.get_by_role("button", name="Ask").click()
    assert page.get_by_role("heading", level=2).first.inner_text() == "No approved answer"
    handoff = page.get_by_role("region", name="Handoff")
    assert "Hand off to" in handoff.inner_text()
    handoff.get_by_role("button", name="Copy handoff for the ticket").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("Escalate to: ") and "Reason: no_answer" in copied
    page.screenshot(path=str(shots / "answer-no-answer.png"), full_page=True)
    assert_accessible(page)
    ctx.close()


# --- the owners' desk --------------------------------------------------------------------


def test_owner_sees_the_flag_and_the_diff(browser: Any, world: World, shots: Path) -> None:
    ctx = _context(browser)
    page = ctx.new_page()
    sign_in(page, world, "billing-owner")
    page.goto(f"{world.base}/ui/desk")
    flag = page.locator("li.kind-flag").filter(has_text=REFUND_Q).first
    assert flag.locator("mark").inner_text()  # the served span, highlighted
    page.screenshot(path=str(shots / "review-queue.png"), full_page=True)
    assert_accessible(page)
    flag.get_by_role("link").click()
    assert "the new policy is 45 days" in page.content()
    assert page.locator(".span-context mark").is_visible()
    page.screenshot(path=str(shots / "flag.png"), full_page=True)
    assert_accessible(page)
    page.get_by_role("link", name=re.compile("Compare v1")).click()
    page.wait_for_load_state()
    row = page.locator("table.diff tr.chg").first
    assert row.locator("del").inner_text().strip() == "30"
    assert row.locator("ins").inner_text().strip() == "45"
    page.screenshot(path=str(shots / "diff.png"), full_page=True)
    assert_accessible(page)
    ctx.close()


def test_approver_sees_the_findings_and_forces_with_a_note(browser: Any, world: World,
                                                           shots: Path) -> None:
    ctx = _context(browser)
    page = ctx.new_page()
    sign_in(page, world, "risk-approver")
    page.goto(f"{world.base}/ui/desk/articles/refunds-annual-plans")
    page.screenshot(path=str(shots / "article-page.png"), full_page=True)
    assert_accessible(page)
    page.get_by_role("link", name="Check & approve").click()
    page.wait_for_load_state()
    findings = page.locator("ol.findings > li")
    assert findings.count() >= 1
    assert "expectation broken" in findings.first.inner_text().lower()
    page.screenshot(path=str(shots / "approve-findings.png"), full_page=True)
    assert_accessible(page)
    page.get_by_role("button", name="Approve v2").click()  # not forced: refused
    assert "approving would change approved answers" in page.get_by_role("alert").inner_text()
    page.get_by_label("Approve despite these findings").check()
    page.get_by_role("button", name="Approve v2").click()  # forced without a note: refused
    assert "needs a note" in page.get_by_role("alert").inner_text()
    page.get_by_label("Note").fill("Finance moved the window to 45 days (CX-812)")
    page.get_by_label("Approve despite these findings").check()
    page.get_by_role("button", name="Approve v2").click()
    page.wait_for_load_state()
    assert "forced" in page.get_by_role("status").inner_text()
    versions = page.get_by_role("table").first
    assert "forced" in versions.locator("tr", has_text="v2").inner_text()
    audit_row = page.locator("section", has=page.get_by_role("heading", name="Audit log")) \
        .locator("tr", has_text="approved").first
    assert "Finance moved the window" in audit_row.inner_text()
    assert "risk-approver" in audit_row.inner_text()
    ctx.close()


def test_search_articles(browser: Any, world: World, shots: Path) -> None:
    ctx = _context(browser)
    page = ctx.new_page()
    sign_in(page, world, "billing-owner")
    page.goto(f"{world.base}/ui/desk/search")
    page.get_by_label("Owner").select_option("billing-knowledge")
    page.get_by_label("Tag").select_option("refunds")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("tbody tr")
    assert rows.count() >= 1
    assert all("billing-knowledge" in rows.nth(i).inner_text() for i in range(rows.count()))
    page.screenshot(path=str(shots / "search.png"), full_page=True)
    assert_accessible(page)
    ctx.close()


def test_sign_out_ends_the_session(browser: Any, world: World) -> None:
    ctx = _context(browser)
    page = ctx.new_page()
    sign_in(page, world, "billing-owner")
    cookie = next(c for c in ctx.cookies() if c["name"] == "canon_session")
    page.get_by_role("button", name="Sign out").click()
    assert "/ui/sign-in" in page.url
    # The old cookie is dead on the server, not just deleted in this browser.
    ctx.add_cookies([cookie])
    page.goto(f"{world.base}/ui/desk")
    assert "/ui/sign-in" in page.url
    ctx.close()


# --- the health dashboard ----------------------------------------------------------------


def test_dashboard_renders_every_chart_from_the_seeded_log(browser: Any, world: World,
                                                           shots: Path) -> None:
    ctx = _context(browser)
    page = ctx.new_page()
    sign_in(page, world, "risk-approver")
    page.goto(f"{world.base}/ui/health")
    figures = page.locator("figure.chart")
    ids = [figures.nth(i).get_attribute("id") for i in range(figures.count())]
    expected = {"chart-outcomes", "chart-volume", "chart-freshness", "chart-overdue",
                "chart-flags-open", "chart-flags-resolve", "chart-approval-lag",
                "chart-gaps", "chart-citations", "chart-vendor-acme", "chart-vendor-globex",
                "chart-eval-0"}
    assert expected <= set(ids), ids
    for i in range(figures.count()):
        figure = figures.nth(i)
        svg = figure.locator("svg")
        assert svg.get_attribute("role") == "img" and svg.bounding_box()["height"] > 40
        assert "no data" not in (svg.text_content() or ""), figure.get_attribute("id")
        assert figure.locator("tbody tr").count() >= 1
    # Dates on the axis, units in the table view.
    outcomes = page.locator("#chart-outcomes")
    assert re.search(r"\d{4}-\d{2}-\d{2} to \d{4}-\d{2}-\d{2}", outcomes.inner_text())
    outcomes.get_by_text("Table of the numbers").click()
    assert "answered (%)" in outcomes.locator("thead").inner_text()
    assert re.fullmatch(r"\d+%", outcomes.locator("tbody tr td").first.inner_text())
    scorecard = page.locator("table", has=page.get_by_text("Flags raised"))
    acme = scorecard.locator("tr", has_text="vendor:acme")
    assert re.search(r"\d+%", acme.inner_text()) and "can i pay with crypto" in \
        scorecard.inner_text() + page.locator("#chart-gaps").inner_text()
    page.get_by_role("button", name="Compare").click()
    assert "cases changed outcome" in page.content()
    page.screenshot(path=str(shots / "health-dashboard.png"), full_page=True)
    assert_accessible(page)
    ctx.close()
