"""When block reuse computes: warm-up, then a fixed or decreasing interval (ProfilingDiT's schedule)."""

from __future__ import annotations


def interval_at(step: int, warmup_steps: int, interval: int, min_interval: int | None, num_steps: int | None) -> int:
    """The compute interval in force at `step`.

    Fixed: `interval`. Decreasing (ProfilingDiT): ``T_s = T_max - (T_max - T_min)(s - s0)/(S - s0)``
    with ``T_max = interval``, ``T_min = min_interval``, ``s0 = warmup_steps``, ``S = num_steps``,
    rounded to the nearest step and at least 1.
    """
    if min_interval is None:
        return interval
    span = max(num_steps - warmup_steps, 1)
    t = interval - (interval - min_interval) * (step - warmup_steps) / span
    return max(1, int(round(t)))


def scheduled_compute(step: int, last_compute: int | None, warmup_steps: int, interval: int,
                      min_interval: int | None = None, num_steps: int | None = None) -> bool:
    """Whether `step` runs every block, given the last step that did (None: nothing cached yet).

    Steps ``0 .. warmup_steps`` compute (the warm-up and the first step after it, as in ProfilingDiT's
    code); later a step computes once ``interval_at(last_compute)`` steps have passed.
    """
    if last_compute is None or step <= warmup_steps or step <= last_compute:
        return True  # nothing cached, warm-up, or a new generation restarted the step count
    return step - last_compute >= interval_at(last_compute, warmup_steps, interval, min_interval, num_steps)


def compute_steps(num_steps: int, warmup_steps: int = 6, interval: int = 6,
                  min_interval: int | None = None) -> list[bool]:
    """``result[s]`` is True where step `s` runs every block (the rest reuse background deltas).

    With ``interval=1`` every step computes. The defaults give ProfilingDiT's 14 compute steps of 50
    (0-6, 12, 18, ..., 48).
    """
    flags, last = [], None
    for s in range(num_steps):
        compute = scheduled_compute(s, last, warmup_steps, interval, min_interval, num_steps)
        if compute:
            last = s
        flags.append(compute)
    return flags
