"""diffusers hooks that route self-attention through `sparse_attention`.

The transformer's shared step tracker (`vidaccel.core.context`) publishes the step context (grid,
step, CFG branch); then

* `SparseAttentionHook` (``new_forward`` on each self-attention module) runs the module's own
  processor unchanged with its SDPA call routed to `sparse_attention` (`vidaccel.core.sdpa_swap`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from ..core.adapters import ModelAdapter
from ..core.context import StepContext, StepTracker, warmup_steps
from ..core.hookset import HookSet
from ..core.nocopy import NotCopyable, VidaccelHook
from ..core.sdpa_swap import call_with_sdpa
from .attention import attention_path, sparse_attention
from .config import runs_dense
from .plan import PlanCache

logger = logging.getLogger(__name__)

ATTENTION_HOOK = "vidaccel_sparse_attention"
_USER = "sparse_attention"


@dataclass
class SparseAttentionState(NotCopyable):
    """Everything one `accelerate` call installs on a transformer: config, pattern, plans, counters."""

    owner = _USER

    config: object
    pattern: object
    adapter: ModelAdapter
    plan_cache: PlanCache = field(default_factory=PlanCache)
    tracker: StepTracker | None = None
    layer_names: list = field(default_factory=list)
    hooks: HookSet | None = None
    sparse_calls: dict = field(default_factory=dict)
    dense_calls: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)  # "kernel" / "reference" / "dense" -> calls; "reference_reason"
    logged_dense: set = field(default_factory=set)
    last_warmup: tuple | None = None  # (dense steps, steps) of the last run whose schedule was known

    def is_dense(self, layer: int, context: StepContext) -> bool:
        return runs_dense(self.config, layer, context.step, context.num_steps)

    def check_warmup(self, context: StepContext) -> None:
        """At a run's first step: record the warm-up against the schedule, and warn (once per schedule) when it
        covers every step, so nothing would run sparse."""
        if context.num_steps is None:
            return
        dense = warmup_steps(self.config.dense_steps, context.num_steps)
        self.last_warmup = (dense, context.num_steps)
        if dense >= context.num_steps and ("whole", context.num_steps) not in self.logged_dense:
            self.logged_dense.add(("whole", context.num_steps))
            logger.warning(
                "vidaccel: the dense warm-up (dense_steps=%s) covers all %d steps of this run, so every step runs "
                "dense attention and nothing is accelerated. Give the warm-up as a fraction of the schedule "
                "(e.g. dense_steps=0.25) or as fewer steps.", self.config.dense_steps, context.num_steps)

    @property
    def last_grid(self):
        return self.tracker.last_grid if self.tracker is not None else None


class _SparseSDPA:
    """Stands in for `F.scaled_dot_product_attention` in one self-attention call: `sparse_attention`."""

    def __init__(self, state: SparseAttentionState, context: StepContext, layer: int):
        self.state, self.context, self.layer = state, context, layer

    def __call__(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                 enable_gqa=False):
        state, grid = self.state, self.context.grid
        if is_causal or dropout_p or enable_gqa:
            raise ValueError("vidaccel sparse attention supports non-causal, dropout-free attention without GQA.")
        n = math.prod(grid)
        text_len = query.shape[-2] - n
        position = state.adapter.text_position
        if text_len < 0 or (text_len > 0 and position == "none") or key.shape[-2] != query.shape[-2]:
            raise ValueError(
                f"Self-attention in {state.layer_names[self.layer]} has {query.shape[-2]} queries and "
                f"{key.shape[-2]} keys, but the token grid {grid} has {n} tokens. The sequence does not "
                f"match the latent shape; if you changed the model's patching, call vidaccel.remove() and "
                f"accelerate again."
            )
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            raise ValueError("vidaccel sparse attention supports boolean attention masks only (True = attend).")
        plan = state.plan_cache.get(state.pattern, grid, query.device, tile_size=state.config.tile_size)
        state.sparse_calls[self.layer] = state.sparse_calls.get(self.layer, 0) + 1
        path, reason = attention_path(query, attn_mask, plan, state.config.backend)
        state.paths[path] = state.paths.get(path, 0) + 1
        if reason is not None:
            state.paths["reference_reason"] = reason
        return sparse_attention(
            query, key, value, plan,
            text_len=text_len, text_position=position if text_len else "none",
            attn_mask=attn_mask, scale=scale, backend=state.config.backend,
        )


class SparseAttentionHook(VidaccelHook):
    """`new_forward` hook on one self-attention module (layer `layer`)."""

    def __init__(self, state: SparseAttentionState, layer: int):
        super().__init__()
        self.state, self.layer = state, layer

    def new_forward(self, module, *args, **kwargs):
        state, context = self.state, self.state.tracker.current
        original = self.fn_ref.original_forward
        if context is None:
            return original(*args, **kwargs)
        if self.layer == 0 and context.step == 0:
            state.check_warmup(context)
        if state.is_dense(self.layer, context):
            state.dense_calls[self.layer] = state.dense_calls.get(self.layer, 0) + 1
            self._log_dense_once(context.step)
            return original(*args, **kwargs)
        parallel_config = getattr(getattr(module, "processor", None), "_parallel_config", None)
        if parallel_config is not None:
            check_context_parallel(parallel_config.context_parallel_config, state.layer_names[self.layer])
        return call_with_sdpa(_SparseSDPA(state, context, self.layer), original, args, kwargs,
                              state.layer_names[self.layer])

    def _log_dense_once(self, step: int) -> None:
        key = "layer" if self.layer < (self.state.config.dense_layers or 0) else "step"
        if key not in self.state.logged_dense:
            self.state.logged_dense.add(key)
            logger.info(
                "vidaccel: dense attention by configuration (%s warm-up: dense_layers=%s, dense_steps=%s)",
                key, self.state.config.dense_layers, self.state.config.dense_steps,
            )


def check_context_parallel(cp, model_name: str) -> None:
    """Raise for a diffusers `ContextParallelConfig` that sparse attention cannot run under (ring attention)."""
    if cp is not None and (cp.ring_degree or 1) > 1:
        raise ValueError(
            f"{model_name} uses ring attention (ring_degree={cp.ring_degree}); vidaccel sparse attention needs "
            f"the whole sequence per rank. Use Ulysses instead: ContextParallelConfig(ulysses_degree=N)."
        )


def install(model: torch.nn.Module, state: SparseAttentionState) -> None:
    """Register the hooks on `model`; on any failure, remove what was registered and re-raise."""

    def register(hooks: HookSet) -> None:
        for layer, (name, module) in enumerate(state.adapter.self_attention(model)):
            state.layer_names.append(name)
            hooks.add(module, SparseAttentionHook(state, layer), ATTENTION_HOOK)

    state.hooks = HookSet(model, state.adapter, _USER)
    state.tracker = state.hooks.install(register)


def uninstall(model: torch.nn.Module, state: SparseAttentionState) -> None:
    """Remove the hooks `install` added, restoring modules exactly."""
    state.hooks.remove()
