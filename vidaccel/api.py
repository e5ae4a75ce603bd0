"""Public API: `accelerate`, `remove`, `summary`."""

from __future__ import annotations

import logging
import math

import torch

from .adapters import adapter_for
from .config import resolve_config
from .context import install_states, remove_state
from .freeswim_hooks import STATE_ATTR as FREESWIM_ATTR
from .hooks import SparseAttentionState, install, uninstall
from .plan import build_plan

logger = logging.getLogger(__name__)

_STATE_ATTR = "_vidaccel_sparse_attention"


def _transformers(pipe_or_transformer) -> list[torch.nn.Module]:
    """The transformers to accelerate: a pipeline's `transformer` (+ `transformer_2`), or the module itself."""
    if isinstance(pipe_or_transformer, torch.nn.Module):
        return [pipe_or_transformer]
    models = [getattr(pipe_or_transformer, name, None) for name in ("transformer", "transformer_2")]
    models = [m for m in models if m is not None]
    if not models:
        raise TypeError(
            f"{type(pipe_or_transformer).__name__} has no `transformer`: pass a diffusers video pipeline "
            f"(e.g. WanPipeline) or its transformer module."
        )
    return models


def accelerate(pipe_or_transformer, config="radial"):
    """Route the self-attention of a diffusers video pipeline (or transformer) through sparse attention.

    Args:
        pipe_or_transformer: a pipeline with ``transformer`` (and ``transformer_2`` for Wan2.2, both
            accelerated), or a supported transformer module (`vidaccel.adapters.ADAPTERS`).
        config: ``"window"``, ``"radial"``, a `WindowAttentionConfig` or a `RadialAttentionConfig`.
            Unset radial fields take the model family's defaults.

    Returns the same object, so ``pipe = vidaccel.accelerate(pipe)`` works. Validation happens
    before anything is changed; call `vidaccel.remove` to restore the original exactly.
    """
    config = resolve_config(config)
    models = _transformers(pipe_or_transformer)
    adapters = [adapter_for(m) for m in models]
    for model in models:
        if hasattr(model, _STATE_ATTR):
            raise RuntimeError(
                f"{type(model).__name__} is already accelerated by vidaccel. Call vidaccel.remove(pipe) first, "
                f"then accelerate with the new configuration."
            )
        if FREESWIM_ATTR in model.__dict__:
            raise RuntimeError(
                "FreeSwim is enabled on this model and brings its own window attention. Call "
                "vidaccel.disable_freeswim(pipe) first, or use FreeSwim alone."
            )
    # one state per transformer, all sharing one resolved config and one pattern object
    resolved = config.resolved(adapters[0].family)
    pattern = resolved.build_pattern()
    states = [SparseAttentionState(config=resolved, pattern=pattern, adapter=a) for a in adapters]
    install_states(zip(models, states), _STATE_ATTR, install, uninstall)
    return pipe_or_transformer


def remove(pipe_or_transformer):
    """Undo `accelerate` exactly (hooks, instance attributes, caches). Returns the same object."""
    removed = [remove_state(m, _STATE_ATTR, uninstall) for m in _transformers(pipe_or_transformer)]
    if not any(removed):
        logger.info("vidaccel.remove: nothing to remove (not accelerated).")
    return pipe_or_transformer


class Summary(dict):
    """What vidaccel runs on a pipeline; a dict that prints as a readable report."""

    def __str__(self) -> str:
        features = _feature_text(self)
        if not self.get("accelerated"):
            return features or "vidaccel: not accelerated"
        lines = []
        for t in self["transformers"]:
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
            lines.append(f"  dense warm-up: first {t['dense_steps']} steps, first {t['dense_layers']} layers")
            lines.append(f"  calls: {t['sparse_calls']} sparse, {t['dense_calls']} dense")
            c = t["plan_cache"]
            lines.append(f"  plan cache: {c['entries']}/{c['max_entries']} plans, {c['hits']} hits, {c['misses']} misses")
        return "\n".join(lines + ([features] if features else []))


def _feature_text(summary: dict) -> str:
    """Sections of features beside sparse attention (FreeSwim, caches)."""
    from .caches.api import format_cache_summary

    sections = format_cache_summary(summary.get("caches") or [])
    if summary.get("freeswim"):
        from .freeswim_hooks import format_freeswim_report

        sections.insert(0, format_freeswim_report(summary["freeswim"]))
    return "\n".join(sections)


def _layer_groups(n_layers: int, dense_layers: int, pattern_text: str) -> list[dict]:
    groups = []
    if dense_layers:
        groups.append({"layers": f"0-{min(dense_layers, n_layers) - 1}", "mode": "dense (dense_layers)"})
    if dense_layers < n_layers:
        groups.append({"layers": f"{dense_layers}-{n_layers - 1}", "mode": pattern_text})
    return groups


def summary(pipe_or_transformer, grid=None, print_summary: bool = True, blocks: bool = False) -> Summary:
    """Report what is active: pattern per layer, density at the last (or given) grid, warm-up, plan cache.

    Args:
        grid: optional ``(T, H, W)`` to report densities for instead of the last grid run.
        blocks: also build the plan to report block density and tile shape when it is not cached
            (always done on CUDA; on a CPU this takes tens of seconds at 720p).
    """
    out = Summary(accelerated=False, transformers=[])
    for model in _transformers(pipe_or_transformer):
        state = getattr(model, _STATE_ATTR, None)
        if state is None:
            continue
        out["accelerated"] = True
        g = grid if grid is not None else state.last_grid
        grid_info = None
        if g is not None:
            g = tuple(int(x) for x in g)
            plan = state.plan_cache.find(state.pattern, g)
            device = next(model.parameters()).device
            if plan is None and (device.type == "cuda" or blocks):
                # block statistics: seconds on a GPU, tens of seconds on a CPU at 720p
                plan = build_plan(state.pattern, g, tile_size=state.config.tile_size, device=device)
            grid_info = {"grid": list(g), "tokens": math.prod(g),
                         "density": plan.density if plan is not None else state.pattern.density(g),
                         "block_density": plan.block_density() if plan is not None else None,
                         "tile": list(plan.tile) if plan is not None else None}
        pattern_text = state.pattern.name + (f" ({grid_info['density']:.1%} dense)" if grid_info else "")
        n_layers = len(state.layer_names)
        out["transformers"].append({
            "class": type(model).__name__,
            "family": state.adapter.family,
            "pattern": state.pattern.name,
            "config": repr(state.config),
            "grid": grid_info,
            "layers": n_layers,
            "layer_groups": _layer_groups(n_layers, state.config.dense_layers or 0, pattern_text),
            "dense_steps": state.config.dense_steps or 0,
            "dense_layers": state.config.dense_layers or 0,
            "sparse_calls": sum(state.sparse_calls.values()),
            "dense_calls": sum(state.dense_calls.values()),
            "plan_cache": state.plan_cache.stats(),
        })
    from .freeswim_hooks import freeswim_report  # FreeSwim section: window, call counts, cache bytes

    if freeswim := freeswim_report(pipe_or_transformer):
        out["freeswim"] = freeswim
    from .caches.api import cache_summary  # K/V cache and block reuse section

    if caches := cache_summary(pipe_or_transformer):
        out["caches"] = caches
    if print_summary:
        print(out)
    return out


__all__ = ["accelerate", "remove", "summary", "Summary"]
