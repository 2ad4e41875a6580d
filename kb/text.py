"""Free text typed by people (questions, flag comments): what is accepted, in one place.

Every face (HTTP API, web console, CLI) passes what a person typed through
:func:`plain_text` before it is stored, indexed, logged or shown to someone else:

- zero-width characters (U+200B-U+200D, U+2060, U+FEFF) are removed: they are invisible
  paste artefacts that would only split words for retrieval and redaction;
- C0 and C1 control characters (except tab and newline), bidirectional overrides and
  isolates (which make text display differently from what it is: "Trojan Source"), lone
  surrogates and Unicode non-characters are refused with a message naming the character.
"""

from __future__ import annotations

import re
import unicodedata

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
_ZERO_WIDTH = re.compile(f"[{ZERO_WIDTH}]")
# C0 (except \t \n \r), DEL, C1, bidi marks/embeddings/overrides/isolates, the Arabic letter
# mark, interlinear annotation and object replacement, surrogates, non-characters.
_REFUSED = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\ufff9-\ufffc\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")

__all__ = ["ZERO_WIDTH", "plain_text", "refused_character"]


def _describe(ch: str) -> str:
    code = ord(ch)
    if 0xD800 <= code <= 0xDFFF:
        kind = "a lone surrogate (invalid Unicode)"
    elif code < 0x20 or 0x7F <= code <= 0x9F:
        kind = "a control character"
    elif unicodedata.bidirectional(ch) in {"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI",
                                           "FSI", "PDI", "LRM", "RLM", "ALM"}:
        kind = "a bidirectional-text control"
    else:
        kind = "a non-printing character"
    name = unicodedata.name(ch, "")
    return f"U+{code:04X}{f' {name}' if name else ''}, {kind}"


def refused_character(value: str) -> tuple[int, str] | None:
    """``(position, description)`` of the first character :func:`plain_text` refuses."""
    m = _REFUSED.search(value)
    return (m.start(), _describe(m.group())) if m else None


def plain_text(value: str, *, what: str = "the text") -> str:
    """``value`` without zero-width characters; ``ValueError`` (a sentence saying which
    character, where, and what to do) when it holds a refused character."""
    found = refused_character(value)
    if found is not None:
        position, description = found
        raise ValueError(f"{what} contains {description} at position {position}; "
                         "send plain text (retype it rather than pasting it)")
    return _ZERO_WIDTH.sub("", value)
