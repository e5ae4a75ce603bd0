"""Public functions of the caches: enable/disable the K/V cache and block reuse, and their summary."""

from __future__ import annotations

import logging

from ..core.adapters import adapter_for
from ..core.features import BLOCK_REUSE, KV_CACHE, Feature, refuse_conflicts, state_of
from ..core.models import named_transformers
from ..core.registry import install_states, remove_state
from . import block_reuse, kv_cache
from .block_reuse import BlockReuseState, background_runs, resolve_config
from .kv_cache import KVCacheConfig, KVCacheState

logger = logging.getLogger(__name__)


def _install_all(pipe_or_transformer, feature: Feature, make_state, install, uninstall):
    """Validate every transformer first (`refuse_conflicts`, `make_state`), then install on each; undo all
    on failure."""
    named = named_transformers(pipe_or_transformer)
    for _, model in named:
        adapter_for(model)
        refuse_conflicts(model, feature)
    states = [(model, make_state(name, model)) for name, model in named]
    install_states(states, feature.state_attr, install, uninstall)
    return pipe_or_transformer


def enable_kv_cache(pipe_or_transformer, max_prompts: int = 4, *, config: KVCacheConfig | None = None):
    """Cache cross-attention keys/values across denoising steps: exact, bit-identical outputs.

    Applies to transformers with separate text cross-attention (Wan 2.1/2.2 T2V and I2V including
    the image K/V, LTX-Video); joint-attention models (CogVideoX, HunyuanVideo) raise a ValueError
    explaining why it cannot be exact there. Keys are the CFG branch and the prompt's content (up to
    `max_prompts` prompts per transformer, least recently used dropped first; or pass a
    `KVCacheConfig` as `config`). The cache is cleared at the end of every pipeline call. Returns the
    same object; `disable_kv_cache` restores it exactly.
    """
    config = config if config is not None else KVCacheConfig(max_prompts=max_prompts)
    for _, model in named_transformers(pipe_or_transformer):
        kv_cache.check_supported(model, adapter_for(model))
    return _install_all(pipe_or_transformer, KV_CACHE,
                        lambda name, model: KVCacheState(adapter_for(model), max_prompts=config.max_prompts),
                        kv_cache.install, kv_cache.uninstall)


def enable_block_reuse(pipe_or_transformer, config="profiled", *, profile=None):
    """Reuse the residual deltas of background blocks on most denoising steps (ProfilingDiT).

    Args:
        config: ``"profiled"`` (warm-up 6 steps, then compute every 6th: 14 of 50 steps compute),
            ``"adaptive"`` (also recompute when a probe block drifts; at most 10 steps apart), or a
            `BlockReuseConfig`.
        profile: a profile JSON path or `Profile` from `vidaccel.profile` / ``vidaccel profile``
            (shortcut for ``config.profile``). It must come from this model (class, config and number
            of blocks are checked, with every difference named).

    Composes with `vidaccel.accelerate` (sparse attention) and `enable_kv_cache`; diffusers' own
    step caches (FirstBlockCache, MagCache, TaylorSeer, Pyramid Attention Broadcast, ...) are
    refused. Returns the same object; `disable_block_reuse` restores it exactly.
    """
    config = resolve_config(config, profile)

    def make_state(name, model):
        adapter = adapter_for(model)
        names = [n for n, _ in adapter.blocks(model)]
        grid, source = None, "background_blocks"
        if config.background_blocks is not None:
            background = list(config.background_blocks)
        else:
            entry = config.profile.model(name)
            entry.check(model, len(names))
            background, grid, source = entry.background_blocks, entry.grid, "profile"
        bad = [i for i in background if not 0 <= i < len(names)]
        if bad or (config.adaptive and not 0 <= config.probe_block < len(names)):
            raise ValueError(f"Block indices {bad or [config.probe_block]} are out of range: "
                             f"{type(model).__name__} has {len(names)} blocks (0-{len(names) - 1}).")
        first = config.probe_block + 1 if config.adaptive else 0
        return BlockReuseState(config=config, adapter=adapter, runs=background_runs(background, names, first,
                                                                                      adapter.breaks(model)),
                               block_names=names, source=source, profile_grid=tuple(grid) if grid else None)

    return _install_all(pipe_or_transformer, BLOCK_REUSE, make_state, block_reuse.install, block_reuse.uninstall)


def _disable(pipe_or_transformer, feature: Feature, uninstall) -> bool:
    return any([remove_state(model, feature.state_attr, uninstall)
                for _, model in named_transformers(pipe_or_transformer)])


def disable_kv_cache(pipe_or_transformer):
    """Remove the K/V cache exactly (hooks, attributes, cached tensors). Returns the same object."""
    _disable(pipe_or_transformer, KV_CACHE, kv_cache.uninstall)
    return pipe_or_transformer


def disable_block_reuse(pipe_or_transformer):
    """Remove block reuse exactly (hooks, attributes, cached deltas). Returns the same object."""
    _disable(pipe_or_transformer, BLOCK_REUSE, block_reuse.uninstall)
    return pipe_or_transformer


def disable_caches(pipe_or_transformer):
    """Remove every vidaccel cache (K/V cache and block reuse). Sparse attention stays (`vidaccel.remove`)."""
    kv = _disable(pipe_or_transformer, KV_CACHE, kv_cache.uninstall)
    reuse = _disable(pipe_or_transformer, BLOCK_REUSE, block_reuse.uninstall)
    if not (kv or reuse):
        logger.info("vidaccel.disable_caches: no vidaccel cache was enabled.")
    return pipe_or_transformer


def cache_summary(pipe_or_transformer) -> list[dict]:
    """One dict per transformer with an active vidaccel cache: what is cached and the counters so far."""
    out = []
    for name, model in named_transformers(pipe_or_transformer):
        kv: KVCacheState | None = state_of(model, KV_CACHE)
        reuse: BlockReuseState | None = state_of(model, BLOCK_REUSE)
        if kv is None and reuse is None:
            continue
        entry = {"attribute": name, "class": type(model).__name__}
        if kv is not None:
            entry["kv_cache"] = {"projections": len(kv.projection_names), "hits": kv.hits, "misses": kv.misses,
                                 "prompts": len(kv.prompts)}
        if reuse is not None:
            c = reuse.config
            entry["block_reuse"] = {
                "source": reuse.source, "runs": [list(r) for r in reuse.runs],
                "reused_blocks": len(reuse.reused_blocks),
                "blocks": len(reuse.block_names), "warmup_steps": c.warmup_steps, "interval": c.interval,
                "min_interval": c.min_interval, "adaptive": c.adaptive, "drift_threshold": c.drift_threshold,
                "computed_steps": reuse.computed_steps, "reused_steps": reuse.reused_steps,
                "drift_recomputes": reuse.drift_recomputes, "reused_block_calls": reuse.reused_block_calls,
                "freeswim_branches": {path: {"computed": n[0], "reused": n[1]} for path, n in reuse.path_calls.items()},
            }
        out.append(entry)
    return out


def format_cache_summary(entries: list[dict]) -> list[str]:
    lines = []
    for e in entries:
        if "kv_cache" in e:
            k = e["kv_cache"]
            lines.append(f"K/V cache on {e['class']}: {k['projections']} cross-attention projections, "
                         f"{k['hits']} hits, {k['misses']} computed, {k['prompts']} prompts held")
        if "block_reuse" in e:
            r = e["block_reuse"]
            mode = "adaptive" if r["adaptive"] else "scheduled"
            lines.append(f"block reuse on {e['class']} ({mode}, from {r['source']}): "
                         f"{r['reused_blocks']}/{r['blocks']} "
                         f"blocks in runs {r['runs']}; warm-up {r['warmup_steps']}, interval {r['interval']}; "
                         f"transformer calls: {r['computed_steps']} computed, {r['reused_steps']} reused "
                         f"({r['drift_recomputes']} recomputed on drift)")
            for path, n in r.get("freeswim_branches", {}).items():
                lines.append(f"  FreeSwim {path} branch: {n['computed']} calls computed, {n['reused']} reused")
    return lines
