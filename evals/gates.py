"""Regression gates: floors and tolerated drops from a baseline run.

```yaml
floors:            # the metric must be at least this
  hit@1: 0.80
  verbatim: 1.0
max_drop:          # the metric may fall at most this much below the baseline run
  hit@1: 0.03
lower_is_better: [wrong_answer_rate, latency_p95_ms]   # for these, floors are ceilings
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kb.errors import InvalidInput


@dataclass(frozen=True)
class Gate:
    floors: dict[str, float]
    max_drop: dict[str, float]
    lower_is_better: frozenset[str]


def load_gate(path: Path) -> Gate:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read gate file {path}: {exc}") from None
    unknown = set(data) - {"floors", "max_drop", "lower_is_better"}
    if unknown or not isinstance(data, dict):
        raise InvalidInput(f"{path}: unknown keys {sorted(unknown)}; a gate file has floors, "
                           "max_drop and lower_is_better")
    try:
        return Gate(
            floors={str(k): float(v) for k, v in (data.get("floors") or {}).items()},
            max_drop={str(k): float(v) for k, v in (data.get("max_drop") or {}).items()},
            lower_is_better=frozenset(data.get("lower_is_better") or []),
        )
    except (TypeError, ValueError, AttributeError):
        raise InvalidInput(f"{path}: floors and max_drop map metric names to numbers") from None


def check_gate(gate: Gate, metrics: dict[str, Any],
               baseline: dict[str, Any] | None) -> list[str]:
    """Every failure as a sentence (empty list: the gate passes)."""
    failures = []
    for name, floor in gate.floors.items():
        value = metrics.get(name)
        if value is None:
            failures.append(f"{name}: not measured in this run (no eligible cases)")
        elif name in gate.lower_is_better and value > floor:
            failures.append(f"{name} = {value:.4f} is above the ceiling {floor}")
        elif name not in gate.lower_is_better and value < floor:
            failures.append(f"{name} = {value:.4f} is below the floor {floor}")
    if baseline:
        for name, tol in gate.max_drop.items():
            value, base = metrics.get(name), baseline.get(name)
            if value is None or base is None:
                continue
            drop = (value - base) if name in gate.lower_is_better else (base - value)
            if drop > tol:
                failures.append(f"{name} moved from {base:.4f} to {value:.4f}, more than the "
                                f"tolerated {tol}")
    return failures
