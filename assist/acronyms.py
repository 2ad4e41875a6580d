"""Acronyms the knowledge base defines, read into questions that use them.

Agents type the short form ("is the ETC waived", "SAR deadline") where an article may spell
it out once ("an early termination charge (ETC)") and use the long form everywhere else.
:func:`defined` harvests the definitions written as ``long form (ABBR)``, where the
abbreviation's letters are the initials of the words before it (small words such as "of"
may sit between them); :func:`expand` writes the long form after each abbreviation a
question uses, for retrieval only (answers, logs and audits keep the question as asked).
Only what this knowledge base defines is expanded, never a built-in list.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet

_DEFINED = re.compile(r"\(([A-Z][A-Za-z0-9&]{1,7})\)")
_WORDS = re.compile(r"[A-Za-z][\w'-]*")
_SMALL = frozenset({"a", "an", "and", "the", "of", "for", "to", "in", "on", "at", "by", "&"})
_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9&]*")


def _long_form(before: str, abbr: str) -> str | None:
    """The words ending ``before`` whose initials spell the letters of ``abbr``, if any."""
    letters = [ch.lower() for ch in abbr if ch.isalpha()]
    if len(letters) < 2 or sum(ch.isupper() for ch in abbr) < 2:  # "(ETC)", not "(Basic)"
        return None
    words = _WORDS.findall(before)
    used: list[str] = []
    i, j = len(words) - 1, len(letters) - 1
    while i >= 0 and j >= 0:
        word = words[i]
        if word[0].lower() == letters[j]:
            used.append(word)
            j -= 1
        elif word.lower() in _SMALL and used:
            used.append(word)
        else:
            return None
        i -= 1
    if j >= 0 or used[-1].lower() in _SMALL:
        return None
    return " ".join(reversed(used))


def defined(texts: Iterable[str], *, stop: AbstractSet[str] = frozenset()) -> dict[str, str]:
    """Abbreviation -> long form, as ``texts`` define them (``long form (ABBR)``). An
    abbreviation defined with two different long forms keeps the one written more often,
    and none on a tie. An abbreviation that is a word of ``stop`` in lower case ("IT",
    "US", "IS") is never kept: a question in capitals would read it everywhere."""
    seen: dict[str, Counter[str]] = {}
    for text in texts:
        if "(" not in text:
            continue
        for m in _DEFINED.finditer(text):
            if m.group(1).lower() in stop:
                continue
            long = _long_form(text[max(0, m.start() - 160): m.start()].rstrip(), m.group(1))
            if long:
                seen.setdefault(m.group(1), Counter())[long.lower()] += 1
    out = {}
    for abbr, forms in seen.items():
        ranked = forms.most_common(2)
        if len(ranked) == 1 or ranked[0][1] > ranked[1][1]:
            out[abbr] = ranked[0][0]
    return out


def used(question: str, table: Mapping[str, str]) -> dict[str, str]:
    """The abbreviations of ``table`` that ``question`` uses as written (case-sensitive:
    "ETC", not "etc") without spelling them out, with their long forms. None in a question
    typed in capitals ("IS THE ETC WAIVED"), where every word looks like one."""
    if not table:
        return {}
    letters = [ch for ch in question if ch.isalpha()]
    if len(letters) >= 8 and sum(ch.isupper() for ch in letters) >= 0.6 * len(letters):
        return {}
    low = question.lower()
    return {abbr: long for abbr in dict.fromkeys(_TOKEN.findall(question))
            if (long := table.get(abbr)) is not None and long not in low}


def expand(question: str, table: Mapping[str, str]) -> str:
    """``question`` with the long form written after each abbreviation it uses
    (:func:`used`)."""
    found = used(question, table)
    if not found:
        return question
    return _TOKEN.sub(lambda m: f"{m.group(0)} ({found[m.group(0)]})"
                      if m.group(0) in found else m.group(0), question)
