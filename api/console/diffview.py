"""Side-by-side diff rows of two versions (line level, with changed words marked)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from markupsafe import Markup, escape

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


@dataclass(frozen=True)
class Row:
    kind: str  # same | del | add | chg
    left_no: int | None
    left: Markup
    right_no: int | None
    right: Markup


def _words(a: str, b: str) -> tuple[Markup, Markup]:
    ta, tb = _TOKEN.findall(a), _TOKEN.findall(b)
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes():
        x, y = escape("".join(ta[i1:i2])), escape("".join(tb[j1:j2]))
        if op == "equal":
            left.append(x)
            right.append(y)
        else:
            if x:
                left.append(Markup("<del>") + x + Markup("</del>"))
            if y:
                right.append(Markup("<ins>") + y + Markup("</ins>"))
    return Markup("").join(left), Markup("").join(right)


def side_by_side(old: str, new: str, *, context: int | None = 3) -> list[Row | None]:
    """Rows for a two-column diff; ``None`` marks skipped unchanged lines (``context``
    lines are kept around each change; ``None`` context keeps every line)."""
    a, b = old.splitlines(), new.splitlines()
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    Opcode = tuple[str, int, int, int, int]
    groups: list[list[Opcode]] = (
        [list(matcher.get_opcodes())] if context is None
        else [list(g) for g in matcher.get_grouped_opcodes(context)])
    rows: list[Row | None] = []
    for n, group in enumerate(groups):
        if n or (group and (group[0][1] > 0 or group[0][3] > 0)):
            rows.append(None)
        for op, i1, i2, j1, j2 in group:
            if op == "equal":
                rows += [Row("same", i1 + k + 1, escape(a[i1 + k]), j1 + k + 1,
                             escape(b[j1 + k])) for k in range(i2 - i1)]
            elif op == "replace":
                for k in range(max(i2 - i1, j2 - j1)):
                    la = a[i1 + k] if i1 + k < i2 else None
                    lb = b[j1 + k] if j1 + k < j2 else None
                    if la is not None and lb is not None:
                        left, right = _words(la, lb)
                        rows.append(Row("chg", i1 + k + 1, left, j1 + k + 1, right))
                    elif la is not None:
                        rows.append(Row("del", i1 + k + 1, escape(la), None, Markup("")))
                    else:
                        rows.append(Row("add", None, Markup(""), j1 + k + 1, escape(lb or "")))
            elif op == "delete":
                rows += [Row("del", i1 + k + 1, escape(a[i1 + k]), None, Markup(""))
                         for k in range(i2 - i1)]
            else:
                rows += [Row("add", None, Markup(""), j1 + k + 1, escape(b[j1 + k]))
                         for k in range(j2 - j1)]
    return rows
