"""Acronyms a knowledge base defines, read into questions (assist/acronyms.py); through the
index and the answer path in tests/test_typos.py."""

from __future__ import annotations

from assist.acronyms import defined, expand, used
from assist.catalog import LexicalTokenizer
from tests.test_typos import _catalog


def test_definitions_are_read_where_the_initials_spell_the_abbreviation() -> None:
    table = defined([
        "If the customer leaves early they pay an early termination charge (ETC).",
        "Report it to the Treasury Inspector General for Tax Administration (TIGTA) at once.",
        "Keys are kept in a hardware security module (HSM); see the Product Availability "
        "Matrix (PAM).",
        "Reconnection fee waivers (FW02) need a reason.",
    ])
    assert table == {"ETC": "early termination charge",
                     "TIGTA": "treasury inspector general for tax administration",
                     "HSM": "hardware security module", "PAM": "product availability matrix",
                     "FW02": "fee waivers"}


def test_what_is_not_a_definition() -> None:
    assert defined([
        "Download the form (PDF) and post it.",        # the words before are not its initials
        "Choose a tier (Basic) or the other (Premium).",  # a word, not an abbreviation
        "Plans (see below) change yearly.",
        "(ETC) with nothing before it.",
        "charges of the (TC)",                          # a small word cannot start it
        "No brackets at all: early termination charge ETC.",
    ]) == {}


def test_an_abbreviation_defined_two_ways_keeps_the_usual_one_and_a_tie_keeps_none() -> None:
    assert defined(["an early termination charge (ETC)", "the early termination charge (ETC)",
                    "an extra traffic cost (ETC)"]) == {"ETC": "early termination charge"}
    assert defined(["an early termination charge (ETC)",
                    "an extra traffic cost (ETC)"]) == {}


def test_a_question_reads_the_long_form_after_the_abbreviation_it_uses() -> None:
    table = {"ETC": "early termination charge", "SAR": "subject access request"}
    assert expand("is the ETC waived?", table) == (
        "is the ETC (early termination charge) waived?")
    assert expand("SAR deadline, ETC", table) == (
        "SAR (subject access request) deadline, ETC (early termination charge)")
    # as written only: "etc" is a word, and "ETCs" another token
    assert expand("fees, taxes etc", table) == "fees, taxes etc"
    assert expand("ETCs", table) == "ETCs"
    # a question that already spells it out is left as it is
    assert expand("early termination charge (ETC) amount", table) == (
        "early termination charge (ETC) amount")
    assert expand("ETC", {}) == "ETC"
    assert expand("what is an ATO", table) == "what is an ATO"  # not defined here


def test_an_abbreviation_that_is_a_common_word_is_never_kept() -> None:
    text = ["Call the information technology (IT) desk.", "Customers in the United States (US)."]
    assert defined(text, stop=frozenset({"it", "us"})) == {}
    assert defined(text) == {"IT": "information technology", "US": "united states"}


def test_a_question_in_capitals_reads_no_abbreviation() -> None:
    table = {"ETC": "early termination charge", "TV": "television"}
    assert used("IS THE ETC WAIVED FOR TV", table) == {}
    assert used("is the ETC waived for TV", table) == {
        "ETC": "early termination charge", "TV": "television"}
    assert used("ETC?", table) == {"ETC": "early termination charge"}  # short: as written


def test_coverage_counts_the_abbreviation_or_its_long_form() -> None:
    """The long form is read into the question for finding passages, but coverage still
    weighs the question as asked: a passage that uses the abbreviation covers it as well as
    one that spells it out, and the added words never lower it."""
    cat = _catalog("The ETC is waived when the customer moves abroad.",
                   "An early termination charge is waived when the customer moves abroad.",
                   "The router is waived when the customer moves abroad.")
    tokenize = LexicalTokenizer()
    asked = set(tokenize("is the ETC waived"))
    alternatives = {"etc": frozenset(tokenize("early termination charge"))}
    short, long, neither = (cat.coverage(asked, cid, alternatives) for cid in cat.ids)
    assert short == long == 1.0 and neither < 1.0
    assert cat.coverage(asked, next(iter(cat.ids))) == 1.0  # as before, without alternatives
    assert cat.coverage(asked, list(cat.ids)[1]) < 1.0  # the long form alone, without them
