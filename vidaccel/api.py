"""Public API: `accelerate`, `remove`, `summary`."""

from __future__ import annotations

import logging

from .caches.api import cache_summary, format_cache_summary
from .core.adapters import adapter_for
from .core.context import refuse_fraction_without_pipeline, remember_pipeline
from .core.features import SPARSE_ATTENTION, refuse_conflicts
from .core.models import named_transformers, transformers
from .core.registry import install_states, remove_state
from .core.validate import ints
from .freeswim.report import format_freeswim_report, freeswim_report
from .sparse.config import resolve_config
from .sparse.hooks import SparseAttentionState, install, uninstall
from .sparse.plan import PlanCache
from .sparse.report import format_sparse_report, sparse_report

logger = logging.getLogger(__name__)


def accelerate(pipe_or_transformer, config="radial"):
    """Route the self-attention of a diffusers video pipeline (or transformer) through sparse attention.

    Args:
        pipe_or_transformer: a pipeline with ``transformer`` (and ``transformer_2`` for Wan2.2, both
            accelerated), or a supported transformer module (`vidaccel.core.adapters.ADAPTERS`).
        config: ``"window"``, ``"radial"``, ``"tile_window"``, a `WindowAttentionConfig`,
            `TileWindowAttentionConfig`, `RadialAttentionConfig`, or a `TunedAttentionConfig` (the per-layer and
            per-head patterns of a `vidaccel.tune` profile). Unset radial fields take the model family's defaults.

    Returns the same object, so ``pipe = vidaccel.accelerate(pipe)`` works. Validation happens
    before anything is changed; call `vidaccel.remove` to restore the original exactly.
    """
    config = resolve_config(config)
    models = transformers(pipe_or_transformer)
    adapters = [adapter_for(m) for m in models]
    for model in models:
        refuse_conflicts(model, SPARSE_ATTENTION)
    # one state per transformer, all sharing one resolved config and one pattern object
    resolved = config.resolved(adapters[0].radial_defaults)
    pattern = resolved.build_pattern()  # None for a tuned profile: each layer has its own (`TunedAttentionConfig`)
    refuse_fraction_without_pipeline(resolved.dense_steps, pipe_or_transformer, "dense_steps",
                                     "accelerate the pipeline instead")
    states = [SparseAttentionState(config=resolved, pattern=pattern, adapter=a, attribute=name,
                                   **({"plan_cache": PlanCache(max_entries=64)} if pattern is None else {}))
              for (name, _), a in zip(named_transformers(pipe_or_transformer), adapters)]
    install_states(zip(models, states), SPARSE_ATTENTION.state_attr, install, uninstall)
    remember_pipeline(pipe_or_transformer)
    return pipe_or_transformer


def remove(pipe_or_transformer):
    """Undo `accelerate` exactly (hooks, instance attributes, caches). Returns the same object."""
    removed = [remove_state(m, SPARSE_ATTENTION.state_attr, uninstall) for m in transformers(pipe_or_transformer)]
    if not any(removed):
        logger.info("vidaccel.remove: nothing to remove (not accelerated).")
    return pipe_or_transformer


class Summary(dict):
    """What vidaccel runs on a pipeline; a dict that prints as a readable report.

    Keys: ``accelerated`` (sparse attention on), ``transformers`` (one dict per accelerated
    transformer), and, when those features are on, ``freeswim`` and ``caches``.
    """

    def __str__(self) -> str:
        sections = [format_sparse_report(self["transformers"])] if self.get("accelerated") else []
        if self.get("freeswim"):
            sections.append(format_freeswim_report(self["freeswim"]))
        sections += format_cache_summary(self.get("caches") or [])
        return "\n".join(sections) or "vidaccel: not accelerated"


def summary(pipe_or_transformer, grid=None, print_summary: bool = True, blocks: bool = False) -> Summary:
    """Report what is active: pattern per layer, density at the last (or given) grid, warm-up, plan cache,
    and the FreeSwim and cache sections.

    Args:
        grid: optional ``(T, H, W)`` to report densities for instead of the last grid run.
        blocks: also build the plan to report block density and tile shape when it is not cached
            (always done on CUDA; on a CPU this takes tens of seconds at 720p).
        print_summary: print the report (default True); the returned `Summary` prints the same text.
    """
    grid = ints("grid", grid, 3, labels="(T, H, W) in tokens", scalar=False, optional=True)
    reports = sparse_report(pipe_or_transformer, grid=grid, blocks=blocks)
    out = Summary(accelerated=bool(reports), transformers=reports)
    if freeswim := freeswim_report(pipe_or_transformer):
        out["freeswim"] = freeswim
    if caches := cache_summary(pipe_or_transformer):
        out["caches"] = caches
    if print_summary:
        print(out)
    return out


__all__ = ["accelerate", "remove", "summary", "Summary"]
