"""The sparse-attention section of `vidaccel.summary`: pattern per layer, densities, warm-up, plan cache."""

from __future__ import annotations

import math


from ..core.features import SPARSE_ATTENTION, state_of
from ..core.models import transformers
from .plan import build_plan


def _layer_groups(n_layers: int, dense_layers: int, pattern_text: str) -> list[dict]:
    groups = []
    if dense_layers:
        groups.append({"layers": f"0-{min(dense_layers, n_layers) - 1}", "mode": "dense (dense_layers)"})
    if dense_layers < n_layers:
        groups.append({"layers": f"{dense_layers}-{n_layers - 1}", "mode": pattern_text})
    return groups


def _grid_info(model, state, grid, blocks: bool) -> dict | None:
    g = grid if grid is not None else state.last_grid
    if g is None:
        return None
    g = tuple(int(x) for x in g)
    plan = state.plan_cache.find(state.pattern, g)
    device = next(model.parameters()).device
    if plan is None and (device.type == "cuda" or blocks):
        # block statistics: seconds on a GPU, tens of seconds on a CPU at 720p
        plan = build_plan(state.pattern, g, tile_size=state.config.tile_size, device=device)
    return {"grid": list(g), "tokens": math.prod(g),
            "density": plan.density if plan is not None else state.pattern.density(g),
            "block_density": plan.block_density() if plan is not None else None,
            "tile": list(plan.tile) if plan is not None else None}


def sparse_report(pipe_or_transformer, grid=None, blocks: bool = False) -> list[dict]:
    """One dict per accelerated transformer (see `vidaccel.summary` for the arguments)."""
    out = []
    for model in transformers(pipe_or_transformer):
        state = state_of(model, SPARSE_ATTENTION)
        if state is None:
            continue
        n_layers = len(state.layer_names)
        if state.pattern is None:  # a tuned profile: each layer's head groups
            tuned = state.config.profile.model(state.attribute)
            grid_info, name = None, (f"tuned (mean recall {tuned.recall:.3f}, {tuned.cost:.1%} of dense attention "
                                     f"work at grid {tuple(tuned.grid)})")
            groups = [{"layers": str(layer.index), "mode": ", ".join(
                f"{choice} x{len(heads)}" for choice, heads in tuned.head_groups(layer.index).items())}
                for layer in tuned.layers]
        else:
            grid_info = _grid_info(model, state, grid, blocks)
            name = state.pattern.name
            pattern_text = name + (f" ({grid_info['density']:.1%} dense)" if grid_info else "")
            groups = _layer_groups(n_layers, state.config.dense_layers or 0, pattern_text)
        out.append({
            "class": type(model).__name__,
            "family": state.adapter.family,
            "pattern": name,
            "config": repr(state.config),
            "grid": grid_info,
            "layers": n_layers,
            "layer_groups": groups,
            "dense_steps": state.config.dense_steps or 0,
            "last_warmup": list(state.last_warmup) if state.last_warmup else None,  # [dense steps, steps]
            "dense_layers": state.config.dense_layers or 0,
            "sparse_calls": sum(state.sparse_calls.values()),
            "dense_calls": sum(state.dense_calls.values()),
            "plan_cache": state.plan_cache.stats(),
            "attention_path": state.attention_path.name,  # "backend" or "sdpa_swap" (vidaccel.core.routing)
            "attention_path_reason": state.attention_path.reason,
            "paths": {k: v for k, v in state.paths.items() if k != "reference_reason"},
            "reference_reason": state.paths.get("reference_reason"),
        })
    return out


_PATH_TEXT = {"backend": "vidaccel attention backend in diffusers' dispatcher, traced by torch.compile",
              "sdpa_swap": "SDPA swap, eager under torch.compile (a graph break per attention module)"}


def _warmup_text(t: dict) -> str:
    steps, last = t["dense_steps"], t["last_warmup"]
    text = f"first {steps:g} of the steps" if isinstance(steps, float) else f"first {steps} steps"
    return text + (f" ({last[0]} of {last[1]} in the last run)" if last else "")


def format_sparse_report(reports: list[dict]) -> str:
    lines = []
    for t in reports:
        lines.append(f"vidaccel on {t['class']} ({t['family']}): {t['pattern']}")
        lines.append(f"  config: {t['config']}")
        g = t["grid"]
        if g is None:
            lines.append("  grid: not run yet (pass grid=(T, H, W) to see densities)")
        else:
            blocks = (f"block density {g['block_density']:.1%} with tile {tuple(g['tile'])}"
                      if g["tile"] else "no plan built yet for this grid")
            lines.append(f"  grid {tuple(g['grid'])} = {g['tokens']} tokens: token density {g['density']:.1%}, "
                         + blocks)
        for group in t["layer_groups"]:
            lines.append(f"  layers {group['layers']}: {group['mode']}")
        lines.append(f"  dense warm-up: {_warmup_text(t)}, first {t['dense_layers']} layers")
        if t["last_warmup"] and t["last_warmup"][0] >= t["last_warmup"][1]:
            lines.append(f"  WARNING: the warm-up covered all {t['last_warmup'][1]} steps of the last run: nothing ran "
                         f"sparse. Use a fraction of the schedule (e.g. dense_steps=0.25) or fewer steps.")
        lines.append(f"  calls: {t['sparse_calls']} sparse, {t['dense_calls']} dense")
        lines.append(f"  attention path: {_PATH_TEXT[t['attention_path']]} ({t['attention_path_reason']})")
        if t["paths"].get("reference"):
            lines.append(f"  SLOW PATH: {t['paths']['reference']} sparse calls ran the exact reference "
                         f"({t['reference_reason']}); it is slower than dense attention, not faster. The speed-up "
                         f"needs the Triton kernel (a CUDA GPU); on this device dense attention is quicker.")
        c = t["plan_cache"]
        lines.append(f"  plan cache: {c['entries']}/{c['max_entries']} plans, {c['hits']} hits, {c['misses']} misses")
    return "\n".join(lines)


__all__ = ["sparse_report", "format_sparse_report"]
