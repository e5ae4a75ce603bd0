"""How `vidaccel compare` times configurations, as pure functions on numbers (tested without a model).

- `schedule`: the timed generations in order. Configurations are interleaved: round by round, clip
  (prompt, seed) by clip, the baseline and then every configuration in turn, so a slow drift of the
  machine (thermal state, other processes, a GPU clock) falls on every configuration alike and
  each configuration's run sits next to the baseline run it is compared with.
- `auto_rounds`: how many rounds ``--repeats auto`` runs, judged from the first round.
- `spread`: median and min-max of a configuration's times per clip.
- `paired_speedup`: the speed-up over the baseline from paired runs (same round, prompt and seed):
  one ratio per pair, their median, their min-max as the interval, and a verdict. A speed-up is
  "faster" or "slower" only when every paired ratio is on the same side of 1.0; when the interval
  includes 1.0 it is "not significant"; a single pair gives no interval ("not tested").
"""

from __future__ import annotations

import statistics

AUTO_MAX_ROUNDS = 3
AUTO_BUDGET_S = 180.0  # timed seconds per configuration (mean over configurations) that --repeats auto may spend

FASTER, SLOWER, NOT_SIGNIFICANT, NOT_TESTED = "faster", "slower", "not significant", "not tested"


def schedule(configs: list[str], clips: list[tuple[int, int]], rounds: int, done=frozenset()) -> list[tuple]:
    """``(round, prompt_index, seed, config)`` in timing order, leaving out those in `done`
    (tuples ``(config, prompt_index, seed, round)`` already recorded)."""
    return [(r, i, s, c) for r in range(rounds) for i, s in clips for c in configs if (c, i, s, r) not in done]


def auto_rounds(first_round_s: dict[str, float], budget_s: float = AUTO_BUDGET_S,
                max_rounds: int = AUTO_MAX_ROUNDS) -> int:
    """Rounds for ``--repeats auto``: as many as keep each configuration's timed total within
    `budget_s` (mean over configurations of their first-round time, all clips), at least 1 and at
    most `max_rounds`. The tiny model on a CPU gets 3; a real model at full size gets 1."""
    times = [t for t in first_round_s.values() if t is not None]
    if not times:
        return max_rounds
    mean = sum(times) / len(times)
    if mean <= 0:
        return max_rounds
    return max(1, min(max_rounds, int(budget_s // mean)))


def spread(values) -> dict:
    """``{"median", "min", "max", "n"}`` of the numbers in `values` (None when there are none)."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def verdict(low: float | None, high: float | None, n: int) -> str | None:
    """FASTER / SLOWER when the whole interval [low, high] is above / below 1.0, NOT_SIGNIFICANT when
    it includes 1.0, NOT_TESTED with fewer than two pairs; None without any."""
    if n == 0 or low is None or high is None:
        return None
    if n < 2:
        return NOT_TESTED
    if low > 1.0:
        return FASTER
    if high < 1.0:
        return SLOWER
    return NOT_SIGNIFICANT


def paired_speedup(pairs) -> dict:
    """Speed-up from ``(baseline_s, config_s)`` pairs: ``speedup`` (median ratio), ``speedup_min``,
    ``speedup_max``, ``speedup_pairs`` (count), ``speedup_verdict`` and ``significant`` (True for
    faster or slower, False when the interval includes 1.0, None when not tested)."""
    ratios = [b / c for b, c in pairs if b is not None and c]
    s = spread(ratios)
    v = verdict(s["min"], s["max"], s["n"])
    return {"speedup": s["median"], "speedup_min": s["min"], "speedup_max": s["max"], "speedup_pairs": s["n"],
            "speedup_verdict": v, "significant": None if v in (None, NOT_TESTED) else v != NOT_SIGNIFICANT}
