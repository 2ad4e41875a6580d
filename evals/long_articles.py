"""Long-article versions of a knowledge base and its suite: does the answer path's lead hold
when articles are long manuals of many sections?

    python -m evals.long_articles CONTENT SUITE OUT [--per-article 6]
    kb eval bench OUT/suite.jsonl --content OUT/content

The shared development sets hold one- or two-passage articles, where finding the article
nearly always finds the section. A product manual holds long articles, each with many
sections, so the passage must be chosen within the article too. This tool merges articles
close in meaning (k-means, seeded, on the embedding model's vectors of each title and
opening) into one article per group: titled neutrally ("Part N", so no member's title
speaks for the others), every member's sections kept in order at their own level, its
top-level ``#`` heading dropped. Articles are grouped only with others of the same audience,
locale and risk, so no governance rule changes. The suite's expected articles and gold
sections (``meta.gold_sections``) are mapped to the merged ids; nothing else changes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kb.articles import ParsedArticle, parse_article
from kb.errors import InvalidArticle

_FRONT = re.compile(r"\A---\n.*?\n---\n", re.S)


def _body(article: ParsedArticle, text: str) -> str:
    """An article's Markdown without its front matter and its title heading line(s): the
    level-1 headings as the article parser reads them (a ``# `` line inside a fenced code
    block, or after a Unicode line separator, is text and stays)."""
    front = _FRONT.match(text)
    out: list[str] = []
    at = front.end() if front else 0
    for section in article.sections:
        if section.level == 1:
            out.append(text[at:section.start])
            at = section.body_start
    out.append(text[at:])
    return "".join(out).strip() + "\n"


def groups(vectors: np.ndarray, k: int, *, seed: int = 0, rounds: int = 30) -> list[int]:
    """A group per row: spherical k-means (cosine) with a seeded start."""
    x = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    k = max(1, min(k, len(x)))
    centres = x[np.random.default_rng(seed).choice(len(x), k, replace=False)]
    label = np.zeros(len(x), dtype=int)
    for _ in range(rounds):
        label = np.argmax(x @ centres.T, axis=1)
        for j in range(k):
            if (label == j).any():
                c = x[label == j].mean(axis=0)
                centres[j] = c / max(float(np.linalg.norm(c)), 1e-12)
    return [int(v) for v in label]


def merge(content: Path, suite: Path, out: Path, *, per_article: int = 6,
          embed: object | None = None) -> dict[str, str]:
    """Write ``out/content`` and ``out/suite.jsonl``; return original id -> merged id."""
    files = sorted(content.rglob("*.md"))
    articles: list[tuple[ParsedArticle, str]] = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        try:
            articles.append((parse_article(text, path=str(f)), text))
        except InvalidArticle as exc:  # one bad file never stops the others
            print(f"skipped {f}: {exc}", file=sys.stderr)
    if embed is None:
        from assist.embedder import MiniLMEmbedder

        embed = MiniLMEmbedder()
    buckets: dict[tuple[tuple[str, ...], str, str], list[int]] = {}
    for i, (a, _) in enumerate(articles):
        buckets.setdefault((a.audience, a.locale, a.risk), []).append(i)
    (out / "content").mkdir(parents=True, exist_ok=True)
    mapping: dict[str, str] = {}
    part = 0
    for members in buckets.values():
        texts = [f"{articles[i][0].title}. {_body(*articles[i])[:400]}" for i in members]
        vectors = np.asarray(embed.embed(texts))  # type: ignore[attr-defined]
        label = groups(vectors, max(1, round(len(members) / per_article)))
        for j in sorted(set(label)):
            part += 1
            group = [members[m] for m, g in enumerate(label) if g == j]
            first = articles[group[0]][0]
            new_id, title = f"part-{part:03d}", f"Part {part}"
            front = {"id": new_id, "title": title, "owner": first.owner,
                     "review_every": first.review_every, "risk": first.risk,
                     "audience": list(first.audience), "locale": first.locale,
                     "tags": list(dict.fromkeys(t for i in group
                                                for t in articles[i][0].tags))}
            if first.escalate_to:
                front["escalate_to"] = first.escalate_to
            head = "".join(f"{key}: {json.dumps(value)}\n" for key, value in front.items())
            bodies = "\n".join(_body(*articles[i]) for i in group)
            (out / "content" / f"{new_id}.md").write_text(
                f"---\n{head}---\n\n# {title}\n\n{bodies}", encoding="utf-8")
            mapping.update((articles[i][0].id, new_id) for i in group)
    lines = []
    for line in suite.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        case = json.loads(line)
        expect = case.get("expect") or {}
        if expect.get("articles"):
            expect["articles"] = list(dict.fromkeys(mapping.get(a, a)
                                                    for a in expect["articles"]))
        gold = (case.get("meta") or {}).get("gold_sections")
        if gold:
            case["meta"]["gold_sections"] = [[mapping.get(a, a), h] for a, h in gold]
        lines.append(json.dumps(case, ensure_ascii=False))
    (out / "suite.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return mapping


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.long_articles",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("content", type=Path, help="folder of articles")
    p.add_argument("suite", type=Path, help="suite (.jsonl) asked of those articles")
    p.add_argument("out", type=Path, help="where to write content/ and suite.jsonl")
    p.add_argument("--per-article", type=int, default=6,
                   help="about how many articles to merge into one (default 6)")
    args = p.parse_args(argv)
    if args.per_article < 1:
        p.error("--per-article must be at least 1")
    if args.out.exists() and any(args.out.iterdir()):
        p.error(f"{args.out} is not empty: choose a new folder")
    mapping = merge(args.content, args.suite, args.out, per_article=args.per_article)
    print(f"{len(mapping)} articles -> {len(set(mapping.values()))} in {args.out}/content; "
          f"suite mapped to {args.out}/suite.jsonl", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
