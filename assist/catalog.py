"""The lexical catalog: every indexed chunk in memory, with BM25 and term statistics.

Built from what the store holds (:meth:`assist.store.ChromaStore.contents`) for one index
generation; :class:`assist.index.ChunkIndex` rebuilds it when the generation changes.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import bm25s
import numpy as np
import Stemmer
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

from assist.acronyms import defined
from assist.chunks import Chunk
from assist.sentences import SentenceVectors

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
# Chinese and Japanese, written without spaces between words, and Korean, whose words carry
# their particles: a run of these scripts is read as its overlapping character pairs, as
# Lucene's CJK analyser does, since no word boundaries are known; a lone character stays a
# term of its own. (The katakana middle dot U+30FB separates words, so it is not in a run.)
_CJK_CHARS = ("\u1100-\u11ff\u3005-\u3007\u3040-\u30fa\u30fc-\u30ff\u3130-\u318f"
              "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
              "\U00020000-\U0003134f")
_CJK = re.compile(f"[{_CJK_CHARS}]+")
# A run of those scripts, or a word of two or more other word characters, in text order.
_CJK_OR_TOKEN = re.compile(f"[{_CJK_CHARS}]+|(?:(?![{_CJK_CHARS}])\\w){{2,}}")
_WIDTH_FORMS = re.compile("[\uff00-\uffef]")  # fullwidth Latin, halfwidth katakana
_UNUSUAL = re.compile(f"[{_CJK_CHARS}\uff00-\uffef]")  # either of the above
_WORD = re.compile(r"\b[^\W\d_]+\b")  # a word of letters only (no digit, no underscore)
_STOPWORDS = frozenset(bm25s.stopwords.STOPWORDS_EN)
STOPWORDS = _STOPWORDS  # (the words no lexical step reads)

MIXED = -1  # manifest value of an article indexed at several versions at once
# A question that names no locale reads as another locale when that locale's texts use at
# least this much larger a share of its terms than the default locale's texts do.
LOCALE_MARGIN = 0.3
LOCALE_OWN_TERMS = 2  # ... and at least this many of its terms occur in no default-locale text
MIN_TYPO_LENGTH = 5  # shorter unknown terms have too many neighbours to mend safely


def _deletions(term: str) -> set[str]:
    return {term[:i] + term[i + 1:] for i in range(len(term))}


def _one_edit(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` differ by exactly one insertion, deletion, substitution or
    swap of two neighbouring letters."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


# Irregular plurals the stemmer leaves apart from their singular ("children" stems to
# "children", "child" to "child"). Not "lives" (also the verb) or "analyses" (also "he
# analyses", which the spelling rules read as "analyzes").
_IRREGULAR = {
    "children": "child", "men": "man", "women": "woman",
    "feet": "foot", "teeth": "tooth", "mice": "mouse", "geese": "goose",
    "wives": "wife", "knives": "knife", "halves": "half", "shelves": "shelf",
    "thieves": "thief", "crises": "crisis", "theses": "thesis", "hypotheses": "hypothesis",
    "criteria": "criterion", "phenomena": "phenomenon", "indices": "index",
    "appendices": "appendix", "matrices": "matrix", "vertices": "vertex",
}
# Verbs spelt -ise in British and -ize in American English. A list, not a rule: American
# English also writes advise, revise, supervise, surprise, promise, exercise..., and
# rewriting those would part "revised" from "revision".
_IZE_ROOTS = (
    "apolog|author|capital|categor|central|character|civil|computer|critic|custom|digit|"
    "emphas|energ|final|general|global|harmon|hospital|individual|initial|item|legal|local|"
    "maxim|memor|minim|mobil|modern|monet|normal|optim|organ|penal|personal|polar|popular|"
    "priorit|real|recogn|regular|sanit|serial|special|stabil|standard|steril|subsid|summar|"
    "symbol|synchron|util|visual")
# Every ending of one word family is rewritten, so a family is joined whole or left alone.
_FAMILY = "e|es|ed|ing|er|ers|ation|ations|ational|able|ably|ability"
# British and American spellings of one word read alike. Each rule rewrites a word only
# when enough letters precede the changed part ("hour", "four", "flour" stay), and
# questions and passages are rewritten the same way, so a rule can only join words.
_SPELLING: tuple[tuple[re.Pattern[str], Any], ...] = (
    (re.compile(r"^(\w{3,})our(s|ed|ing|ite|ites|able|ably|er|ers|ful|less|al|ally|ist|ists)?$"),
     r"\1or\2"),
    (re.compile(rf"^({_IZE_ROOTS})is({_FAMILY})$"), r"\1iz\2"),
    (re.compile(rf"^(\w{{2,}})ys({_FAMILY})$"), r"\1yz\2"),
    (re.compile(r"^(lic|def|off|pret)enc(e|es|ed|ing)$"), r"\1ens\2"),
    (re.compile(r"^(cent|theat|lit|fib|kilomet|centimet|millimet)r(e|es|ed|ing)$"),
     lambda m: m.group(1) + {"e": "er", "es": "ers", "ed": "ered", "ing": "ering"}[m.group(2)]),
    (re.compile(r"^(catal|dial|anal|prol|epil|monol)ogu(e|es|ed|ing|er|ers)$"),
     lambda m: m.group(1) + "og" + {"e": "", "es": "s"}.get(m.group(2), m.group(2))),
    (re.compile(r"^programme(s)?$"), r"program\1"),
)


def normal_word(word: str) -> str:
    """A lower-case word as the lexical index reads it: an irregular plural as its singular,
    a British spelling as the American one ("colour" → "color", "organise" → "organize",
    "licence" → "license", "centre" → "center", "catalogue" → "catalog")."""
    found = _IRREGULAR.get(word)
    if found is not None:
        return found
    if len(word) < 5:
        return word
    for pattern, repl in _SPELLING:
        new, n = pattern.subn(repl, word)
        if n:
            return new
    return word


class LexicalTokenizer:
    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self._normal: dict[str, str] = {}

    def __call__(self, text: str) -> list[str]:
        if not _UNUSUAL.search(text):  # most text: one scan to tell
            return self._words(_TOKEN.findall(text.lower()))
        if _WIDTH_FORMS.search(text):  # fullwidth "router" is "router"; halfwidth kana too
            text = unicodedata.normalize("NFKC", text)
        text = text.lower()
        if not _CJK.search(text):
            return self._words(_TOKEN.findall(text))
        # Terms in text order (what reads the words next to a number relies on it): each
        # run of CJK script as its character pairs, every other word as usual.
        out: list[str] = []
        for token in _CJK_OR_TOKEN.findall(text):
            if _CJK.match(token):
                out += ([token] if len(token) == 1
                        else [token[i:i + 2] for i in range(len(token) - 1)])
            else:
                out += self._words([token])
        return out

    def _words(self, tokens: list[str]) -> list[str]:
        """Words as the lexical index reads them: stop words out, word forms joined
        (:func:`normal_word`), stemmed."""
        normal = self._normal
        words = []
        for w in tokens:
            if w in _STOPWORDS:
                continue
            n = normal.get(w)
            if n is None:
                n = normal_word(w)
                if len(normal) < 200_000:
                    normal[w] = n
            words.append(n)
        return list(self._stemmer.stemWords(words))


@dataclass
class Catalog:
    generation: str
    chunks: list[Chunk]
    ids: dict[str, int]
    bm25: bm25s.BM25 | None
    masks: dict[tuple[str, str], NDArray[np.float32]]
    sizes: dict[tuple[str, str], int]  # chunks per (view, locale) collection
    views: set[str]
    idf: dict[str, float]
    terms: list[frozenset[str]]  # lexical terms of each chunk
    empty: dict[str, int]  # indexed versions with no chunks
    # lexical terms of each indexed article version (all its chunks), by (article, version)
    article_terms: dict[tuple[str, int], frozenset[str]]
    # sentence vectors of each chunk, by position (assist.sentences)
    sentences: SentenceVectors
    # every chunk's vector as a column, by position (unit length: dim x chunks), when the
    # index is small enough to search in memory (index.memory_search_max_chunks); None:
    # Chroma answers dense queries
    vectors: NDArray[np.float32] | None = None

    def dense(self, vectors: NDArray[np.float32],
              asks: Sequence[tuple[Sequence[str], str, int]]) -> list[list[tuple[str, float]]]:
        """For each question vector (unit length) and its (views, locale, n): the ``n``
        closest chunks of those collections, (chunk id, cosine similarity) best first; an
        exact search of :attr:`vectors`, which must be loaded."""
        assert self.vectors is not None
        q = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        with _ONE_BLAS_THREAD, _blas().limit(limits=1, user_api="blas"):
            # One BLAS thread: a server's cores are busy with other questions (OpenBLAS's
            # own threads spin while they wait, which cost a quarter of the throughput).
            sims = (q / np.where(norms > 0, norms, 1.0)) @ self.vectors  # questions x chunks
        out: list[list[tuple[str, float]]] = []
        for row, (views, locale, n) in zip(sims, asks, strict=True):
            mask = self.view_mask(views, locale)
            if mask is None or n <= 0:
                out.append([])
                continue
            rows = np.flatnonzero(mask)
            rows = rows[np.isfinite(row[rows])]  # a broken vector never ranks
            k = min(n, len(rows))
            if not k:
                out.append([])
                continue
            scores = row[rows]
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
            out.append([(self.chunks[i].id, float(scores[j]))
                        for i, j in zip(rows[top].tolist(), top.tolist(), strict=True)])
        return out

    def manifest(self) -> dict[str, int]:
        """Article id -> version number indexed (including served versions that have
        nothing to index).

        An article whose chunks are of more than one version, or that has chunks and an
        entry among the versions with nothing to index, is :data:`MIXED` (-1): a writer died
        between putting a version's chunks in and taking the previous ones out (``kill -9``
        of ``kb approve`` while it indexed). It matches no served version, so the next
        refresh re-indexes the article and removes the leftovers."""
        versions: dict[str, set[int]] = {}
        for c in self.chunks:
            versions.setdefault(c.article_id, set()).add(c.version)
        out = dict(self.empty)
        for article_id, numbers in versions.items():
            mixed = len(numbers) > 1 or article_id in self.empty
            out[article_id] = MIXED if mixed else next(iter(numbers))
        return out

    def mend(self, text: str, dictionary: AbstractSet[str] = frozenset()) -> str:
        """``text`` with misspelt words mended: a word of at least :data:`MIN_TYPO_LENGTH`
        letters that neither this knowledge base nor ``dictionary`` (real words: the
        embedding model's vocabulary) knows becomes the word one edit away (a letter
        inserted, dropped or changed, or two neighbours swapped) that the knowledge base
        uses most; with none, it stays. Only letters are mended: numbers never change
        ("2024" must not become "2025"), and a real word the knowledge base lacks stays
        unknown, so the coverage checks still see it."""
        words, _ = self.word_index

        def fix(m: re.Match[str]) -> str:
            word = m.group(0)
            low = word.lower()
            if (len(low) < MIN_TYPO_LENGTH or low in words or low in dictionary
                    or _CJK.search(low)):
                return word
            return self._nearest(low) or word

        return _WORD.sub(fix, text)

    @cached_property
    def acronyms(self) -> dict[str, str]:
        """Abbreviation -> long form, as this knowledge base's approved text defines them
        (:func:`assist.acronyms.defined`)."""
        return defined((c.text for c in self.chunks), stop=STOPWORDS)

    @cached_property
    def word_index(self) -> tuple[dict[str, int], dict[str, tuple[str, ...]]]:
        """What :meth:`mend` looks words up in, built on first use: how many chunks use each
        word (lower case, letters only), and the known words under each single-letter
        deletion of theirs (and under themselves)."""
        counts: dict[str, int] = {}
        for c in self.chunks:
            for w in set(_WORD.findall(c.lexical_text().lower())):
                if not _CJK.search(w):  # never mended (mend): no need to look them up
                    counts[w] = counts.get(w, 0) + 1
        near: dict[str, list[str]] = {}
        for w in counts:
            if len(w) >= MIN_TYPO_LENGTH - 1:
                for key in {w, *_deletions(w)}:
                    near.setdefault(key, []).append(w)
        return counts, {k: tuple(v) for k, v in near.items()}

    def _nearest(self, word: str) -> str | None:
        words, near = self.word_index
        found = {known for key in (word, *_deletions(word)) for known in near.get(key, ())
                 if _one_edit(word, known)}
        return min(found, key=lambda k: (-words[k], k)) if found else None

    def coverage(self, question: AbstractSet[str], cid: str,
                 alternatives: Mapping[str, frozenset[str]] | None = None) -> float:
        """Share of the ``question``'s IDF-weighted terms that occur in the chunk. Terms the
        knowledge base has never seen weigh most (``alternatives``: see :meth:`covered`)."""
        i = self.ids.get(cid)
        if i is None:
            return 0.0
        return self.covered(question, self.terms[i], alternatives)

    def article_coverage(self, question: AbstractSet[str], cid: str,
                         alternatives: Mapping[str, frozenset[str]] | None = None) -> float:
        """Share of the ``question``'s IDF-weighted terms that occur anywhere in the chunk's
        article version (every chunk of it the index holds)."""
        i = self.ids.get(cid)
        if i is None:
            return 0.0
        c = self.chunks[i]
        return self.covered(question, self.article_terms.get((c.article_id, c.version),
                                                             self.terms[i]), alternatives)

    @cached_property
    def view_terms(self) -> dict[tuple[str, str], frozenset[str]]:
        """The lexical terms of the chunks of each (view, locale) collection. Built on first
        use: only a caller who sees texts in more than one locale reads them
        (:meth:`question_locale`), so a knowledge base of one locale never holds them."""
        return {key: frozenset().union(*(self.terms[i] for i in np.flatnonzero(mask)))
                for key, mask in self.masks.items()}

    def question_locale(self, terms: AbstractSet[str] | Callable[[], AbstractSet[str]],
                        views: Sequence[str], default: str) -> str:
        """The locale a question that names none is asked in, as the texts the caller may
        see (its ``views``) read its ``terms`` (or a function giving them, called only when
        there is a choice to make): the locale whose texts use the largest share
        of them, if that share beats the ``default`` locale's texts' share by at least
        :data:`LOCALE_MARGIN` and at least :data:`LOCALE_OWN_TERMS` of the terms occur in
        that locale's texts and not in the default locale's (one brand name a Spanish
        text mentions does not make a question Spanish); ``default`` otherwise. A caller
        who sees texts of one locale only is asked in that one (there is nothing else to
        answer from), and one who sees none in ``default``. Texts the caller may not see
        never count, so the answer says nothing about them."""
        locales = {loc for (v, loc), n in self.sizes.items() if v in views and n > 0}
        if len(locales) <= 1:
            return next(iter(locales), default)
        if callable(terms):  # read the question only when there is a choice to make
            terms = terms()
        if not terms:
            return default
        vocab = self.view_terms

        def used(locale: str) -> set[str]:
            sets = [ts for v in views if (ts := vocab.get((v, locale))) is not None]
            return {t for t in terms if any(t in ts for ts in sets)}

        base = used(default)  # empty when the caller sees no text in the default locale
        floor = len(base) / len(terms) + LOCALE_MARGIN
        best, best_share = default, floor - 1e-9
        for locale in sorted(locales - {default}):
            found = used(locale)
            share = len(found) / len(terms)
            if share > best_share and len(found - base) >= LOCALE_OWN_TERMS:
                best, best_share = locale, share
        return best

    @cached_property
    def rarest(self) -> float:
        """The IDF of the rarest term (what a term the knowledge base never uses weighs)."""
        return max(self.idf.values(), default=1.0)

    def covered(self, question: AbstractSet[str], terms: AbstractSet[str],
                alternatives: Mapping[str, frozenset[str]] | None = None) -> float:
        """Share of the ``question``'s IDF-weighted terms among ``terms``; terms the knowledge
        base has never seen weigh as much as the rarest it has. ``alternatives``: a question
        term (an abbreviation) also counts as there when all the terms of its long form are
        (:mod:`assist.acronyms`)."""
        if not question:
            return 0.0
        unseen = self.rarest
        weights = {t: self.idf.get(t, unseen) for t in question}
        total = sum(weights.values())
        alt = alternatives or {}
        return sum(w for t, w in weights.items()
                   if t in terms or (t in alt and alt[t] <= terms)) / total if total else 0.0

    def lexical_ceiling(self, tokens: list[str]) -> float:
        """The most BM25 score a passage can get for these query terms: each known term's
        IDF x (k1 + 1), the saturation limit of its term frequency."""
        if self.bm25 is None:
            return 0.0
        k1 = float(getattr(self.bm25, "k1", 1.5))
        return sum(self.idf.get(t, 0.0) for t in set(tokens)) * (k1 + 1)

    def view_mask(self, views: Sequence[str], locale: str) -> NDArray[np.float32] | None:
        """1.0 at the positions of the chunks in any of these views' collections of
        ``locale``, else 0.0; None when none of them exists."""
        masks = [m for v in views if (m := self.masks.get((v, locale))) is not None]
        if not masks:
            return None
        return masks[0] if len(masks) == 1 else np.minimum(np.sum(masks, axis=0), 1.0)

    def lexical(self, tokens: list[str], *, views: Sequence[str], locale: str,
                n: int) -> list[tuple[str, float]]:
        """(chunk id, BM25 score), best first, within the views and locale."""
        mask = self.view_mask(views, locale)
        if self.bm25 is None or mask is None or not tokens:
            return []
        ids = self.bm25.get_tokens_ids(tokens)
        if not ids:
            return []
        scores = self.bm25.get_scores_from_ids(ids, weight_mask=mask)
        n = min(n, len(scores))
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top])]
        return [(self.chunks[i].id, float(scores[i])) for i in top if scores[i] > 0]


_ONE_BLAS_THREAD = threading.Lock()  # the limit below is process-wide: one setter at a time


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def build_catalog(
    generation: str, *, chunks: list[Chunk], ids: dict[str, int],
    membership: dict[tuple[str, str], list[int]], views: set[str], empty: dict[str, int],
    tokenize: Callable[[str], list[str]],
    sentences: Sequence[str | None] = (), dim: int = 1,
    vectors: NDArray[np.float32] | None = None,
) -> Catalog:
    """BM25, term statistics and per-collection masks for ``chunks`` (``membership``: the
    positions of the chunks of each (view, locale) collection); ``sentences``: each chunk's
    packed sentence vectors (:func:`assist.sentences.pack`, of ``dim``), by position;
    ``vectors``: every chunk's vector as a column, by position (unit length: dim x
    chunks), to search in memory (or None)."""
    bm25 = None
    corpus = [tokenize(c.lexical_text()) or ["_"] for c in chunks]
    if chunks:
        bm25 = bm25s.BM25()
        bm25.index(corpus, show_progress=False)
    terms = [frozenset(t) for t in corpus]
    by_article: dict[tuple[str, int], set[str]] = {}
    for c, ts in zip(chunks, terms, strict=True):
        by_article.setdefault((c.article_id, c.version), set()).update(ts)
    article_terms = {key: frozenset(ts) for key, ts in by_article.items()}
    df: dict[str, int] = {}
    for ts in terms:
        for t in ts:
            df[t] = df.get(t, 0) + 1
    n = len(chunks)
    idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
    masks = {}
    for key, rows in membership.items():
        mask = np.zeros(len(chunks), dtype=np.float32)
        mask[rows] = 1.0
        masks[key] = mask
    sizes = {key: len(rows) for key, rows in membership.items()}
    return Catalog(generation, chunks, ids, bm25, masks, sizes, views, idf, terms, empty,
                   article_terms, SentenceVectors(sentences, dim),
                   vectors if vectors is not None and vectors.shape[1] == len(chunks)
                   else None)
