"""Robustness to misspelt questions: a suite asked as written and with typos, typo
tolerance on and off, on one scratch workspace.

    python -m evals.typos SUITE --content DIR [--json]

Real agents type fast. Each case's question gets deterministic misspellings (seeded by the
case id): about a third of its words of six letters or more, at least one, each with one
edit (two neighbouring letters swapped, a letter dropped, doubled or changed). Digits are
never touched. Canon answers every case four times (clean / typos x
``index.typo_tolerance`` off / on) in process, and the usual metrics are printed side by
side. The clean rows show what mending costs on questions without typos (nothing, if the
rule is right); the typo rows show what it recovers.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

from evals.suites import Case, Suite

_LONG_WORD = re.compile(r"\b[A-Za-z]{6,}\b")
_KEYS = "qwertyuiopasdfghjklzxcvbnm"
ROWS = ("hit@1", "hit@5", "section_hit@1", "abstention_recall", "false_abstention",
        "wrong_answer_rate")


def misspell(text: str, seed: int, *, rate: float = 0.35) -> str:
    """``text`` with typos in about ``rate`` of its words of six letters or more (at least
    one, if it has any); deterministic for a seed."""
    rng = random.Random(seed)
    words = list(_LONG_WORD.finditer(text))
    if not words:
        return text
    picks = [w for w in words if rng.random() < rate] or [rng.choice(words)]
    out = text
    for w in sorted(picks, key=lambda m: -m.start()):
        s = w.group()
        i = rng.randrange(1, len(s) - 1)
        op = rng.choice(("swap", "drop", "double", "change"))
        if op == "swap" and s[i] == s[i + 1]:
            op = "change"  # swapping two equal letters would change nothing
        if op == "swap":
            s2 = s[:i] + s[i + 1] + s[i] + s[i + 2:]
        elif op == "drop":
            s2 = s[:i] + s[i + 1:]
        elif op == "double":
            s2 = s[:i] + s[i] + s[i:]
        else:
            s2 = s[:i] + rng.choice(_KEYS.replace(s[i].lower(), "")) + s[i + 1:]
        out = out[:w.start()] + s2 + out[w.end():]
    return out


def misspelt_suite(suite: Suite) -> Suite:
    """The suite with every question misspelt (seeded by each case's id)."""
    def seed(c: Case) -> int:
        return int(hashlib.sha256(c.id.encode("utf-8")).hexdigest()[:8], 16)

    return dataclasses.replace(suite, cases=tuple(dataclasses.replace(c, question=misspell(
        c.question, seed(c))) for c in suite.cases))


def run(suite_name: str, content: Path) -> dict[str, Any]:
    from evals.metrics import summarize
    from evals.runner import VerbatimChecker, in_process, run_suite
    from evals.suites import SUITES_DIR, find_suite, load_suite
    from evals.workspace import known_articles, scratch_workspace
    from kb.settings import Settings

    settings = Settings()
    out: dict[str, Any] = {}
    with scratch_workspace(content, settings) as ws:
        suite = load_suite(find_suite(suite_name, suites_dir=SUITES_DIR),
                           known_articles=known_articles(ws.engine))
        typos = misspelt_suite(suite)
        out["examples"] = [c.question for c in typos.cases[:3]]
        index = ws.assistant.index
        base = index.settings
        try:
            for tolerance in (False, True):
                index.settings = base.model_copy(update={"typo_tolerance": tolerance})
                for name, s in (("clean", suite), ("typos", typos)):
                    runs = run_suite(s, ask=in_process(ws.assistant),
                                     checker=VerbatimChecker(ws.engine))
                    m = summarize([r.result for r in runs])
                    key = f"{name}, tolerance {'on' if tolerance else 'off'}"
                    out[key] = {k: m[k] for k in ROWS}
                    print(f"  {key}: " + "  ".join(
                        f"{k} {m[k]:.3f}" for k in ROWS if m[k] is not None),
                        file=sys.stderr, flush=True)
        finally:
            index.settings = base
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.typos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", help="suite name in evals/suites or a suite file")
    parser.add_argument("--content", type=Path, required=True,
                        help="the folder of articles the suite is about")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    result = run(args.suite, args.content)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("| run | " + " | ".join(ROWS) + " |")
    print("|---" * (len(ROWS) + 1) + "|")
    for key, m in result.items():
        if key != "examples":
            print(f"| {key} | " + " | ".join(
                "-" if m[k] is None else f"{m[k]:.3f}" for k in ROWS) + " |")
    print("\nexamples: " + " / ".join(result["examples"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
