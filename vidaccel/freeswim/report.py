"""The FreeSwim section of `vidaccel.summary`: window, call counts, full-branch attention, cache bytes."""

from __future__ import annotations

import math

from ..sparse.config import RadialAttentionConfig
from .api import freeswim_states


def freeswim_report(pipe_or_transformer) -> list[dict]:
    """One dict per transformer: config, window, last grid, token densities of the window and the full branch
    there, call counts and cache bytes (for `summary`)."""
    out = []
    for model, state in freeswim_states(pipe_or_transformer):
        grid = state.last_grid
        density = full_density = None
        if grid is not None:
            density = math.prod(state.pattern(grid).effective_kernel(grid)) / math.prod(grid)
            full_density = state.full_pattern.density(grid) if state.full_pattern is not None else 1.0
        out.append({
            "class": type(model).__name__, "config": repr(state.config), "active": state.active,
            "window": list(state.window), "grid": list(grid) if grid else None, "window_token_density": density,
            "full_attention": _describe_full(state.full_config), "full_token_density": full_density,
            "layers": state.num_layers, "counts": dict(state.counts),
            "cache_bytes": state.cache.nbytes(), "peak_cache_bytes": state.peak_cache_bytes,
            "cache_dtype": str(state.cache.key[1]) if state.cache.key else None,
            "attention_path": state.attention_path.name, "attention_path_reason": state.attention_path.reason,
        })
    return out


def _describe_full(config: RadialAttentionConfig | None) -> str:
    if config is None:
        return "dense"
    return (f"radial (decay {config.decay_factor:g}{', sink' if config.sink else ''}; dense in the first "
            f"{config.dense_steps:g} {'of the steps' if isinstance(config.dense_steps, float) else 'steps'} and "
            f"{config.dense_layers} blocks)")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def format_freeswim_report(reports: list[dict]) -> str:
    lines = []
    for r in reports:
        c, b = r["counts"], r["cache_bytes"]
        lines.append(f"FreeSwim on {r['class']}: {'active' if r['active'] else 'inactive'}, window "
                     f"{r['window'][0]}x{r['window'][1]} tokens over all frames")
        lines.append(f"  config: {r['config']}")
        if r["grid"] is not None:
            lines.append(f"  last grid {tuple(r['grid'])}: window token density {r['window_token_density']:.1%}")
        lines.append(f"  conditional calls: {c['guide_calls']} guide (full branch), {c['reuse_calls']} reuse; "
                     f"window branch only (unconditional or no override): {c['window_calls']}")
        lines.append(f"  cross-attention: {c['cross_attention_computed']} computed, {c['cross_attention_reused']} "
                     f"replayed from the full branch")
        lines.append(f"  full branch self-attention: {r['full_attention']}; {c['full_attention_sparse']} sparse, "
                     f"{c['full_attention_dense']} dense calls")
        if c.get("control_window_calls"):
            lines.append(f"  control blocks (outside the dual path, shared by both branches): "
                         f"{c['control_window_calls']} window self-attention calls")
        lines.append(f"  cache ({r['cache_dtype'] or 'empty'}): {_size(b['device'])} on device, {_size(b['host'])} "
                     f"pinned host (peak {_size(r['peak_cache_bytes'])})")
        lines.append(f"  attention path: SDPA swap, eager under torch.compile ({r['attention_path_reason']})")
    return "\n".join(lines)


__all__ = ["freeswim_report", "format_freeswim_report"]
