"""Candidate patterns for tuning: each one a sparse-attention config (or dense), written as a small spec.

A spec is JSON data that names one pattern independently of the performance knobs::

    {"kind": "dense"}
    {"kind": "window", "kernel": [kt, kh, kw]}                 (NATTEN window, dilation and stride 1)
    {"kind": "tile_window", "kernel": [kt, kh, kw], "tile": [tt, th, tw]}
    {"kind": "radial", "decay_factor": d}                      (sink on, 128-token blocks)

`default_candidates(grid)` is the set `vidaccel.tune` measures unless told otherwise: windows of a quarter
to three quarters of the grid per dimension, their tile-aligned versions, radial decays 0.1-1 (each only
where it is sparser than dense at the grid), and dense.
Windows are in tokens, so a spec measured on one grid is moved to another by `scaled_spec` (each window
dimension scaled with the grid, rounded to odd, at most the grid); radial and dense are defined by their
rule and stay as they are.
"""

from __future__ import annotations

import warnings

from .config import RadialAttentionConfig, TileWindowAttentionConfig, WindowAttentionConfig, choose_tile
from .patterns import Pattern
from .patterns.window import odd_multiple

KINDS = ("dense", "window", "tile_window", "radial")
_KEYS = {"dense": set(), "window": {"kernel"}, "tile_window": {"kernel", "tile"}, "radial": {"decay_factor"}}


def check_spec(spec, where: str = "candidate") -> dict:
    """`spec` validated (kind, keys, values through the config classes); ValueError names the fix."""
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        raise ValueError(f"{where} must be an object with 'kind' one of {', '.join(KINDS)}, got {spec!r}.")
    extra, missing = set(spec) - {"kind"} - _KEYS[spec["kind"]], _KEYS[spec["kind"]] - set(spec)
    if extra or missing:
        raise ValueError(f"{where} {spec!r}: a {spec['kind']} candidate takes exactly "
                         f"{sorted(_KEYS[spec['kind']]) or 'no other keys'}.")
    config(spec)  # the config classes check the values
    return spec


def config(spec: dict, **knobs):
    """The attention config of a spec (None for dense); `knobs`: backend, tile_size."""
    kind = spec["kind"]
    if kind == "dense":
        return None
    if kind == "window":
        return WindowAttentionConfig(kernel=tuple(spec["kernel"]), dense_steps=0, dense_layers=0, **knobs)
    if kind == "tile_window":
        knobs.pop("tile_size", None)  # the pattern brings its tile
        return TileWindowAttentionConfig(kernel=tuple(spec["kernel"]), tile=tuple(spec["tile"]), dense_steps=0,
                                         dense_layers=0, **knobs)
    return RadialAttentionConfig(decay_factor=float(spec["decay_factor"]), dense_steps=0, dense_layers=0, **knobs)


def pattern(spec: dict) -> Pattern | None:
    """The pattern of a spec (None for dense)."""
    c = config(spec)
    return None if c is None else c.build_pattern()


def name(spec: dict) -> str:
    """A short readable name: ``dense``, ``window(5,7,7)``, ``tile_window(9,12,16)/(1,4,16)``, ``radial(0.2)``."""
    kind = spec["kind"]
    if kind == "dense":
        return "dense"
    if kind == "radial":
        return f"radial({spec['decay_factor']:g})"
    text = f"{kind}({','.join(map(str, spec['kernel']))})"
    return text + (f"/({','.join(map(str, spec['tile']))})" if kind == "tile_window" else "")


def _window_size(value: float, length: int) -> int:
    """`value` tokens rounded to an odd size (a centred window), at most the whole dimension."""
    k = max(1, int(round(value)))
    return min(k if k % 2 else k + 1, length)


def default_candidates(grid) -> list[dict]:
    """The candidates `vidaccel.tune` measures at `grid` ``(T, H, W)`` (duplicates removed, dense last)."""
    specs = []
    for fraction in (0.25, 0.375, 0.5, 0.75):
        kernel = [_window_size(fraction * n, n) for n in grid]
        specs.append({"kind": "window", "kernel": kernel})
        tile = choose_tile(kernel)  # what TileWindowAttentionConfig's tile="auto" picks
        rounded = [odd_multiple(k, t) for k, t in zip(kernel, tile)]
        if all(r <= n for r, n in zip(rounded, grid)):  # a tile window wider than the grid is dense
            specs.append({"kind": "tile_window", "kernel": rounded, "tile": list(tile)})  # canonical: the rounded size
    specs += [{"kind": "radial", "decay_factor": d} for d in (0.1, 0.2, 0.5, 1.0)]
    unique = []
    with warnings.catch_warnings():  # radial warns when it is dense at the grid: such candidates are left out
        warnings.simplefilter("ignore")
        for s in specs:
            if s not in unique and pattern(s).density(tuple(grid)) < 1.0:
                unique.append(s)
    return [*unique, {"kind": "dense"}]


def scaled_spec(spec: dict, grid_from, grid_to) -> dict:
    """`spec` measured at `grid_from`, moved to `grid_to`: window dimensions scale with the grid (odd, at most
    the grid); radial and dense are unchanged."""
    if spec["kind"] not in ("window", "tile_window") or tuple(grid_from) == tuple(grid_to):
        return spec
    kernel = [_window_size(k * b / a, b) if k < a else b for k, a, b in zip(spec["kernel"], grid_from, grid_to)]
    return {**spec, "kernel": kernel}
