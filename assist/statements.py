"""Statements: the quantities a passage states, each with the thing it is about.

A *statement* is one quantity mention — an amount of money (``£31.40``, ``£48,000``,
``€5``, ``$10``), a percentage, or a number with a unit of time or speed (``30 days``,
``2 working days``, ``24 hours``, ``500 Mb/s``) — with what it is about: the stemmed content
words right next to it, the words of its sentence (a table cell comes with its row label
and column header, a list item with the sentence that introduces the list), the sentence
before it and the headings above it, quantities left out; the identifiers near it
(``Fibre 500``, ``P2``) and how it bounds the value (``within``, ``above``, ``for``...).

Two statements *clash* when they give different values in one unit for the same thing: the
words next to the two quantities overlap, their identifiers and bounds do not differ, and
both their topics and their sentences overlap enough (IDF-weighted: rare words say more).
A sentence that lists both values (a list of prices, a range) is no clash, nor is a value
the other side also states for a similar thing (two thresholds of one kind of rule).

A changed value *drifts* from the served text when another article still states the old
value for the same thing: equal values in similar sentences are strong evidence of one
thing, so drift needs less overlap than a clash (it catches a list item "the amount is
above £400" left behind by "Refunds above £250 wait for finance approval").

Used by the answer path (two passages that clash are never served together: escalate as
``ambiguous``) and by the approval check (``conflict`` findings).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache

from assist.catalog import LexicalTokenizer
from assist.chunks import Chunk

# --- quantities -----------------------------------------------------------------------------

_NUM = r"\d+(?:[.,]\d+)*"
_WORD_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fourteen": 14, "fifteen": 15,
    "twenty": 20, "thirty": 30, "sixty": 60, "ninety": 90,
}
_WORD_NUM = "|".join(sorted(_WORD_NUMBERS, key=len, reverse=True))
_TIME_UNIT = (r"(?:(?:full|whole|clear) )?(?:(?:business|working|calendar)[ -])?days?|"
              r"(?:(?:full|whole|clear) )?(?:weeks?|months?|years?)|hours?|hrs?|minutes?|mins?")
_SPEED_UNIT = r"[mg]b/?s|[mg]bps"
_QUANTITY = re.compile(
    # £31.40, £48,000, € 5, US$10, £1.2m
    r"(?P<cur>[£€$])\s?(?P<amount>" + _NUM + r")(?P<mult>\s?(?:k|m|bn)\b)?"
    r"|(?P<amount2>" + _NUM + r")\s?(?P<cur2>€|EUR\b|GBP\b|USD\b)"
    # 30 days, 2 working days, 30-day, 15 to 30 days, 5%, 500 Mb/s, five minutes
    r"|(?<![\w.,])(?P<num>" + _NUM + r"|" + _WORD_NUM + r")"
    r"(?:\s?(?:[\u2013-]|to|and|or)\s?(?P<num_to>" + _NUM + r"))?"
    r"(?:(?P<pct>\s?%|\s?per ?cent\b)|[ -](?P<unit>" + _TIME_UNIT + r"|" + _SPEED_UNIT
    + r")\b)",
    re.I,
)
# "£3.00 per month", "£10.01 per calendar day": a rate is another unit than an amount.
_RATE = re.compile(r"\s?(?:per|a|an|/)\s?(?:(?:calendar|working|business) )?"
                   r"(?P<per>day|week|month|year|hour)\b", re.I)
_CURRENCY = {"£": "£", "€": "€", "$": "$", "eur": "€", "gbp": "£", "usd": "$"}
_MULT = {"k": Decimal(1000), "m": Decimal(1_000_000), "bn": Decimal(1_000_000_000)}


def _number(raw: str) -> Decimal | None:
    """``31.40`` -> 31.4, ``48,000`` -> 48000, ``31,40`` -> 31.4, ``five`` -> 5."""
    word = _WORD_NUMBERS.get(raw.lower())
    if word is not None:
        return Decimal(word)
    parts = re.split(r"[.,]", raw)
    seps = re.findall(r"[.,]", raw)
    if len(parts) > 1 and all(len(p) == 3 for p in parts[1:]) and (
            len(set(seps)) == 1 and (len(parts) > 2 or seps[0] == ",")):
        digits = "".join(parts)  # thousands separators: 48,000 / 1,000,000 / 1.000.000
    elif seps:
        head, tail = raw[:raw.rfind(seps[-1])], raw[raw.rfind(seps[-1]) + 1:]
        digits = re.sub(r"[.,]", "", head) + "." + tail
    else:
        digits = raw
    try:
        return Decimal(digits)
    except InvalidOperation:
        return None


def _unit(raw: str) -> str:
    u = raw.lower().replace("-", " ")
    if re.fullmatch(_SPEED_UNIT, u):
        return ("mb/s" if u.startswith("m") else "gb/s")
    for short, full in (("hr", "hour"), ("min", "minute")):
        if u.rstrip("s") == short:
            return full
    u = u.rstrip("s")
    if "working" in u or "business" in u:
        return "working day"
    return u.split()[-1]


def _fmt(value: Decimal) -> str:
    return format(value.normalize(), "f")


@dataclass(frozen=True)
class Quantity:
    unit: str  # '£', '£/month', '€', '$', '%', 'day', 'working day', 'week', ..., 'mb/s'
    value: str  # normalised: '31.4', '48000', '30'
    start: int
    end: int
    label: str  # as written: '£31.40', '30 days'


def find_quantities(text: str) -> list[Quantity]:
    """Every quantity mention of ``text``, in order (a range gives one per end)."""
    out: list[Quantity] = []
    for m in _QUANTITY.finditer(text):
        start, end = m.span()
        cur = m.group("cur") or m.group("cur2")
        if cur:
            value = _number(m.group("amount") or m.group("amount2"))
            if value is None:
                continue
            if m.group("mult"):
                value *= _MULT[m.group("mult").strip().lower()]
            unit = _CURRENCY[cur.lower()]
            rate = _RATE.match(text, end)
            if rate:
                unit = f"{unit}/{rate.group('per').lower()}"
            out.append(Quantity(unit, _fmt(value), start, end, text[start:end]))
            continue
        unit = "%" if m.group("pct") else _unit(m.group("unit"))
        for raw in (m.group("num"), m.group("num_to")):
            if raw is None:
                continue
            value = _number(raw)
            if value is not None:
                out.append(Quantity(unit, _fmt(value), start, end, text[start:end]))
    return out


def quantities(text: str) -> set[tuple[str, str]]:
    """(unit, value) pairs such as ('day', '30') or ('£', '25') in a passage."""
    return {(q.unit, q.value) for q in find_quantities(text)}


# --- statements -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Statement:
    """One quantity a passage states, with what it is about."""

    unit: str
    value: str
    label: str  # the quantity as written: '£31.40', '30 days'
    start: int  # span of the quantity in the passage
    end: int
    sentence: str  # the sentence, list item or table row it stands in (for messages)
    relation: str | None  # how the value bounds the thing: max (within), min, above, ...
    near: frozenset[str]  # stemmed words of its clause right next to the quantity
    ids: frozenset[str]  # identifiers next to it (Fibre 500, P2, GW01): which one
    context: frozenset[str]  # stemmed content words of the sentence, quantities left out
    topic: frozenset[str]  # ... plus the sentence before it and the headings above it
    siblings: frozenset[str]  # values of the same unit in the same sentence (lists, ranges)


# Words that never say what a quantity is about (on top of the lexical stopwords).
_GENERIC = frozenset(re.findall(r"\S+", """
i me my we us our you your yours he she him his her they them their it its this that these
those who whom which what when where why how there here all any each every both either
neither some such no nor not only own same so too very just also even still again once ever
can could will would shall should may might must need needs have has had having do does did
done be been being am is are was were get gets got let lets make makes made s t d ll ve re m
don didn doesn isn aren wasn weren haven hasn won wouldn shouldn couldn cannot
about above after against along among around at before behind below beneath beside between
beyond by down during for from in inside into near of off on onto out outside over past since
through throughout till to toward towards under until up upon with within without via per
than then more most less least much many few other another further rather quite please
and or but if because while whether as though although unless however otherwise e g eg ie etc
"""))
_RELATIONS = (
    ("min", r"at least|no less than|not less than|a minimum of|minimum of|minimum"),
    ("max", r"within|up to|no later than|no more than|not more than|at most|maximum of|in"),
    ("above", r"above|over|more than|greater than|exceeding|exceeds|beyond|longer than|"
              r"older than"),
    ("below", r"below|under|less than|fewer than|shorter than|younger than"),
    ("after", r"after"),
    ("before", r"before"),
    ("for", r"for"),
    ("every", r"once every|every|each"),
)
_RELATION = re.compile(
    r"\b(?:" + "|".join(f"(?P<{name}>{words})" for name, words in _RELATIONS) + r")\s*$", re.I)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?;])[\"”')]*\s+(?=[\"“'(\[A-Z0-9£€$])")
_CLAUSE = re.compile(r"[,;:\[\]\u2013\u2014]|\s-\s|\b(?:and|or|but|so|which|while|then|because)\b")
_NEAR = 2  # content words either side of a quantity that say what it is
_IDS = 4  # ... and how far identifiers (Fibre 500) are looked for


@cache
def _tokenizer() -> LexicalTokenizer:
    return LexicalTokenizer()


@cache
def _generic() -> frozenset[str]:
    return frozenset(_tokenizer()(" ".join(_GENERIC))) | _GENERIC


def _stems(text: str) -> list[str]:
    """Stemmed content words (identifiers such as ``Fibre 500`` keep their number)."""
    generic = _generic()
    return [w for w in _tokenizer()(text) if w not in generic]


def _is_id(word: str) -> bool:
    return any(ch.isdigit() for ch in word)


@dataclass(frozen=True)
class _Segment:
    start: int
    end: int
    extra: str  # context from outside the span: a list's lead-in, a table's label and header
    prev: str  # the sentence before it in the same paragraph
    shown: str  # how the segment is quoted in messages


def _sentences(text: str, s: int, e: int) -> Iterator[tuple[int, int]]:
    cursor = s
    for m in _SENTENCE_END.finditer(text, s, e):
        yield cursor, m.start()
        cursor = m.end()
    if cursor < e:
        yield cursor, e


def _cells(text: str, s: int, e: int) -> list[tuple[int, int]]:
    line = text[s:e]
    bars = [i for i, ch in enumerate(line) if ch == "|"]
    return [(s + a + 1, s + b) for a, b in itertools.pairwise(bars)]


def _segments(text: str) -> Iterator[_Segment]:
    """The sentences of a passage: sentences of paragraphs, list items (with the sentence
    that introduces the list) and table cells (with the row label and column header)."""
    header: list[str] = []
    lead_in = ""
    para: list[tuple[int, int]] = []

    def flush() -> Iterator[_Segment]:
        nonlocal lead_in
        if not para:
            return
        spans = list(_sentences(text, para[0][0], para[-1][1]))
        para.clear()
        prev = ""
        for s, e in spans:
            yield _Segment(s, e, "", prev, text[s:e])
            prev = text[s:e]
        lead_in = prev.strip() if prev.strip().endswith(":") else ""

    pos = 0
    for line in text.split("\n"):
        s, e = pos, pos + len(line)
        pos = e + 1
        stripped = line.strip()
        if stripped.startswith("|"):
            yield from flush()
            cells = _cells(text, s, e)
            if not header:
                header = [text[a:b] for a, b in cells]
                continue
            if all(re.fullmatch(r"\s*:?-+:?\s*", text[a:b]) for a, b in cells):
                continue
            label = text[cells[0][0]:cells[0][1]] if cells else ""
            for i, (a, b) in enumerate(cells):
                col = header[i] if i < len(header) else ""
                yield _Segment(a, b, f"{label} {col}" if i else col, "", stripped)
            continue
        header = []
        if not stripped or stripped.startswith("#"):
            yield from flush()
            lead_in = "" if stripped else lead_in
            continue
        item = _LIST_ITEM.match(line)
        if item:
            yield from flush()
            prev = ""
            for a, b in _sentences(text, s + item.end(), e):
                yield _Segment(a, b, lead_in, prev, text[a:b])
                prev = text[a:b]
            continue
        para.append((s, e))
    yield from flush()


def _relation(before: str) -> str | None:
    m = _RELATION.search(before[-40:])
    return m.lastgroup if m else None


def extract(text: str, heading: str = "") -> tuple[Statement, ...]:
    """The statements of a passage; ``heading``: its title and headings (topic words).
    Cached: the answer path asks about the same chunks again and again."""
    return _extract(text, heading)


@lru_cache(maxsize=8192)  # the chunks answers keep coming back to
def _extract(text: str, heading: str) -> tuple[Statement, ...]:
    out: list[Statement] = []
    above = frozenset(_stems(heading))
    for seg in _segments(text):
        clause = text[seg.start:seg.end]
        found = find_quantities(clause)
        if not found:
            continue
        # The sentence with every quantity cut out.
        pieces, last = [], 0
        for q in found:
            pieces.append(clause[last:q.start])
            last = max(last, q.end)
        pieces.append(clause[last:])
        context = frozenset(_stems(" ".join(pieces) + " " + seg.extra))
        topic = context | frozenset(_stems(seg.prev)) | above
        shown = " ".join(seg.shown.split()).strip(" |")
        for i, q in enumerate(found):
            raw_before = clause[found[i - 1].end if i else 0:q.start]
            after = clause[q.end:found[i + 1].start if i + 1 < len(found) else len(clause)]
            left = _stems(_CLAUSE.split(raw_before)[-1])
            right = _stems(_CLAUSE.split(after)[0])
            near = left[-_NEAR:] + right[:_NEAR]
            wide = left[-_IDS:] + right[:_IDS]
            if len(near) < 2:  # a bare amount or a short list item: the label / lead-in say
                extra = _stems(seg.extra)
                near += extra
                wide += extra
            out.append(Statement(
                unit=q.unit, value=q.value, label=q.label, start=seg.start + q.start,
                end=seg.start + q.end, sentence=shown, relation=_relation(raw_before),
                near=frozenset(near), ids=frozenset(w for w in wide if _is_id(w)),
                context=context, topic=topic,
                siblings=frozenset(o.value for o in found if o.unit == q.unit)))
    return tuple(out)


def idf_of(texts: Iterable[str]) -> dict[str, float]:
    """Inverse document frequencies of stemmed words over ``texts`` (the same formula as the
    index's catalog, for callers without an index)."""
    docs = [frozenset(_tokenizer()(t)) for t in texts]
    df: dict[str, int] = {}
    for words in docs:
        for w in words:
            df[w] = df.get(w, 0) + 1
    n = len(docs)
    return {w: math.log(1 + (n - d + 0.5) / (d + 0.5)) for w, d in df.items()}


# --- conflicts ------------------------------------------------------------------------------

# Thresholds, chosen on the demo knowledge base (every pair of its articles is clean at these
# values but one, see tests/test_conflicts.py) and the conflicts reported in issue 9.
SAME_TOPIC = 0.45  # two statements are about one thing: their topics overlap this much ...
SAME_SENTENCE = 0.3  # ... and their sentences this much (IDF-weighted cosine)
RELATED = 0.3  # an equal value in sentences this similar states the same thing (drift)
RELATION_BONUS = 0.1  # both bound the value the same way (within / above / at least ...)

_unseen: list[tuple[Mapping[str, float], float]] = []  # the last table and its largest value


def _weight(words: Iterable[str], idf: Mapping[str, float] | None) -> float:
    """Sum of the words' IDF (1 each without a table; a word the table lacks weighs as
    much as its rarest word)."""
    if idf is None:
        return float(sum(1 for _ in words))
    last = _unseen[-1] if _unseen else None
    if last is None or last[0] is not idf:
        last = (idf, max(idf.values(), default=1.0))
        _unseen[:] = [last]
    return sum(idf.get(w, last[1]) for w in words)


def _cosine(a: frozenset[str], b: frozenset[str], idf: Mapping[str, float] | None) -> float:
    shared = a & b
    if not shared:
        return 0.0
    return _weight(shared, idf) / math.sqrt(_weight(a, idf) * _weight(b, idf))


def _comparable(a: Statement, b: Statement) -> bool:
    """Same unit; the words right next to the two quantities overlap; no different
    identifiers (Fibre 150 vs Fibre 500); not bounded differently (within vs for)."""
    return (a.unit == b.unit and bool(a.near & b.near)
            and not (a.ids and b.ids and a.ids != b.ids)
            and not (a.relation and b.relation and a.relation != b.relation))


def similarity(a: Statement, b: Statement, idf: Mapping[str, float] | None = None) -> float:
    """How much two statements are about the same thing, 0..1: 0 unless they are
    comparable (see :func:`_comparable`), else the mean of the IDF-weighted cosine overlaps
    of their sentences and of their topics (sentence, the sentence before, headings), plus a
    bonus when both bound the value the same way ("above £250" vs "above £400")."""
    if not _comparable(a, b):
        return 0.0
    score = (_cosine(a.context, b.context, idf) + _cosine(a.topic, b.topic, idf)) / 2
    if a.relation and a.relation == b.relation:
        score += RELATION_BONUS
    return min(score, 1.0)


def same_thing(a: Statement, b: Statement, idf: Mapping[str, float] | None = None) -> bool:
    """The two statements are about one thing (whatever their values): comparable, and
    both their topics and their sentences overlap enough."""
    return (_comparable(a, b) and _cosine(a.topic, b.topic, idf) >= SAME_TOPIC
            and _cosine(a.context, b.context, idf) >= SAME_SENTENCE)


def _related(a: Statement, b: Statement, idf: Mapping[str, float] | None) -> bool:
    """Looser than :func:`same_thing`: about something alike (for agreements)."""
    return (a.unit == b.unit and not (a.ids and b.ids and a.ids != b.ids)
            and max(_cosine(a.context, b.context, idf), _cosine(a.topic, b.topic, idf))
            >= RELATED)


def _also_states(value: str, about: Statement, side: Iterable[Statement],
                 idf: Mapping[str, float] | None) -> bool:
    """``side`` also states ``value`` for something like what ``about`` is about."""
    return any(o.value == value and _related(about, o, idf) for o in side)


def listed_together(clash: Clash, side: Iterable[Statement],
                    idf: Mapping[str, float] | None = None) -> bool:
    """The two values of ``clash`` are options listed in one sentence of ``side``."""
    return _lists_both(clash.a, clash.b, side, idf)


def _lists_both(a: Statement, b: Statement, side: Iterable[Statement],
                idf: Mapping[str, float] | None) -> bool:
    """A sentence of ``side`` lists both values for things like these (a guide "£5 for a
    missed callback, £10 for repeated transfers"): both are right, each for its case."""
    return any({a.value, b.value} <= o.siblings
               and (_related(a, o, idf) or _related(b, o, idf)) for o in side)


@dataclass(frozen=True)
class Clash:
    """Two statements that give different values for the same thing."""

    a: Statement
    b: Statement
    similarity: float
    was: Statement | None = None  # for a changed statement: what it said before

    def describe(self) -> str:
        if self.was is not None:
            return (f"'{self.was.sentence}' now says {self.a.label} instead of "
                    f"{self.was.label}, but '{self.b.sentence}' still says {self.b.label}")
        return f"'{self.a.sentence}' says {self.a.label}; '{self.b.sentence}' says {self.b.label}"


def clashes(a: Sequence[Statement], b: Sequence[Statement], *,
            idf: Mapping[str, float] | None = None, directed: bool = False,
            around: Sequence[Statement] = ()) -> list[Clash]:
    """Pairs of statements of ``a`` and ``b`` that give different values for the same
    thing, best match first.

    No clash when one sentence states both values (a list or a range), or when ``b`` also
    states ``a``'s value for a similar thing (then the two are different things of one kind,
    e.g. two approval thresholds). Unless ``directed``, the same holds the other way round;
    ``directed`` is for new text ``a`` checked against served text ``b``: the new text still
    stating the old value somewhere does not excuse the change. ``around``: more statements
    of the two articles (their other passages); a sentence there listing both values as
    options excuses the difference.
    """
    out: list[Clash] = []
    for sa in a:
        for sb in b:
            if sa.unit != sb.unit or sa.value == sb.value:
                continue
            if sb.value in sa.siblings or sa.value in sb.siblings:
                continue
            if not same_thing(sa, sb, idf):
                continue
            if _also_states(sa.value, sb, b, idf):
                continue
            if not directed and _also_states(sb.value, sa, a, idf):
                continue
            if _lists_both(sa, sb, itertools.chain(a, b, around), idf):
                continue
            out.append(Clash(sa, sb, similarity(sa, sb, idf)))
    out.sort(key=lambda c: -c.similarity)
    return out


def _masked(s: Statement) -> str:
    return s.sentence.replace(s.label, "\x00", 1)


def changes(old: Sequence[Statement],
            new: Sequence[Statement]) -> list[tuple[Statement | None, Statement]]:
    """The statements of ``new`` that ``old`` does not make, each with the statement it
    replaces (the same sentence with another value), if any."""
    said = {(s.unit, s.value, s.sentence) for s in old}
    by_sentence = {(s.unit, _masked(s)): s for s in old}
    return [(by_sentence.get((s.unit, _masked(s))), s) for s in new
            if (s.unit, s.value, s.sentence) not in said]


def drifts(was: Statement, now: Statement, others: Sequence[Statement],
           idf: Mapping[str, float] | None = None) -> list[Clash]:
    """A value changed from ``was`` to ``now``: the statements of ``others`` (one other
    article) that still state the old value for the same thing. Equal values in similar
    sentences are strong evidence of one thing, so this needs less overlap than a clash."""
    if was.value == now.value or _also_states(now.value, was, others, idf):
        return []
    out = [Clash(now, o, sim, was=was) for o in others
           if o.value == was.value and o.unit == was.unit
           and (sim := similarity(was, o, idf)) >= RELATED]
    out.sort(key=lambda c: -c.similarity)
    return out


def conflicting(a: str, b: str, idf: Mapping[str, float] | None = None) -> bool:
    """Two passages state different values for the same thing (e.g. 30 vs 14 days to ask
    for a refund)."""
    return bool(clashes(extract(a), extract(b), idf=idf))


def chunk_statements(chunk: Chunk) -> tuple[Statement, ...]:
    """The statements of an indexed chunk, its title and headings as topic words."""
    return extract(chunk.text, " ".join(dict.fromkeys((chunk.title, *chunk.heading_path))))


@dataclass(frozen=True)
class _Shelf:
    generation: str
    chunks: dict[str, list[Chunk]]
    statements: dict[str, tuple[Statement, ...]]


class Ledger:
    """The statements of each indexed article (all its chunks), regrouped when the index
    generation changes and extracted per article on first use."""

    def __init__(self) -> None:
        self._shelf: _Shelf | None = None

    def of(self, article_id: str, *, generation: str,
           chunks: Sequence[Chunk]) -> tuple[Statement, ...]:
        shelf = self._shelf
        if shelf is None or shelf.generation != generation:
            grouped: dict[str, list[Chunk]] = {}
            for c in chunks:
                grouped.setdefault(c.article_id, []).append(c)
            shelf = self._shelf = _Shelf(generation, grouped, {})
        found = shelf.statements.get(article_id)
        if found is None:
            found = tuple(s for c in shelf.chunks.get(article_id, ()) for s in chunk_statements(c))
            shelf.statements[article_id] = found
        return found
