"""diffusers hooks that route self-attention through `sparse_attention`.

Two hooks per accelerated transformer, sharing one `SparseAttentionState`:

* `StepContextHook` (pre-forward on the transformer) publishes the *step context*: the token
  grid after patchify, the denoising step and the CFG branch name (from diffusers'
  ``cache_context`` when the pipeline sets one, else inferred from the timestep sequence).
* `SparseAttentionHook` (``new_forward`` on each self-attention module) runs the module's own
  processor unchanged, inside a `TorchFunctionMode` that swaps its
  ``F.scaled_dot_product_attention`` call for `sparse_attention`. No processor code is copied,
  and the swap is scoped to that one call (nothing process-global is patched).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager
from torch.overrides import TorchFunctionMode

from .adapters import ModelAdapter
from .attention import sparse_attention
from .plan import PlanCache

logger = logging.getLogger(__name__)

STEP_HOOK = "vidaccel_step_context"
ATTENTION_HOOK = "vidaccel_sparse_attention"


@dataclass
class StepContext:
    grid: tuple[int, int, int]
    step: int
    branch: str


@dataclass
class SparseAttentionState:
    """Everything one `accelerate` call installs: config, pattern, plans, step tracking, counters."""

    config: object
    pattern: object
    adapter: ModelAdapter
    plan_cache: PlanCache = field(default_factory=PlanCache)
    current: StepContext | None = None
    last_timestep: float | None = None
    step: int = 0
    last_grid: tuple | None = None
    layer_names: list = field(default_factory=list)
    sparse_calls: dict = field(default_factory=dict)
    dense_calls: dict = field(default_factory=dict)
    logged_dense: set = field(default_factory=set)

    def is_dense(self, layer: int, step: int) -> bool:
        return layer < (self.config.dense_layers or 0) or step < (self.config.dense_steps or 0)

    def new_generation(self) -> None:
        self.current, self.last_timestep, self.step = None, None, 0


class _ContextReader(BaseState):
    """Placeholder state: diffusers sets the cache context on every `StateManager` of a stateful hook."""

    def reset(self, *args, **kwargs) -> None:
        pass


class StepContextHook(ModelHook):
    """Pre-forward hook on a transformer: computes and publishes the `StepContext`."""

    _is_stateful = True

    def __init__(self, state: SparseAttentionState):
        super().__init__()
        self.state = state
        self.context_reader = StateManager(_ContextReader)

    @torch.compiler.disable
    def _step_and_branch(self, args, kwargs) -> tuple[int, str]:
        context = self.context_reader._context
        branch = context.name if context is not None else "default"
        if context is not None and context.step_index is not None:
            return int(context.step_index), branch
        timestep = self.state.adapter.timestep(args, kwargs)
        if timestep is None:
            return self.state.step, branch
        # Timesteps fall during a generation: a larger one starts a new generation, an equal one
        # is another CFG pass of the same step. (.item() syncs once per transformer call.)
        t = float(torch.as_tensor(timestep).float().max().item())
        s = self.state
        if s.last_timestep is None or t > s.last_timestep:
            s.step = 0
        elif t < s.last_timestep:
            s.step += 1
        s.last_timestep = t
        return s.step, branch

    def pre_forward(self, module, *args, **kwargs):
        grid = tuple(int(x) for x in self.state.adapter.grid(module, args, kwargs))
        if min(grid) <= 0:
            raise ValueError(f"The input gives an empty token grid {grid}; check the latent shape.")
        step, branch = self._step_and_branch(args, kwargs)
        self.state.current = StepContext(grid, step, branch)
        self.state.last_grid = grid
        return args, kwargs

    def reset_state(self, module):
        # diffusers resets stateful hooks at the end of every pipeline call: a new generation
        self.state.new_generation()
        self.context_reader.reset()
        return module


class _SDPAToSparse(TorchFunctionMode):
    """Scoped swap of `F.scaled_dot_product_attention` for `sparse_attention`."""

    def __init__(self, state: SparseAttentionState, context: StepContext, layer: int):
        super().__init__()
        self.state, self.context, self.layer = state, context, layer
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        self.calls += 1
        return self._sparse(*args, **kwargs)

    def _sparse(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
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
        return sparse_attention(
            query, key, value, plan,
            text_len=text_len, text_position=position if text_len else "none",
            attn_mask=attn_mask, scale=scale, backend=state.config.backend,
        )


class SparseAttentionHook(ModelHook):
    """`new_forward` hook on one self-attention module (layer `layer`)."""

    def __init__(self, state: SparseAttentionState, layer: int):
        super().__init__()
        self.state, self.layer = state, layer

    def new_forward(self, module, *args, **kwargs):
        state, context = self.state, self.state.current
        original = self.fn_ref.original_forward
        if context is None:
            return original(*args, **kwargs)
        if state.is_dense(self.layer, context.step):
            state.dense_calls[self.layer] = state.dense_calls.get(self.layer, 0) + 1
            self._log_dense_once(context.step)
            return original(*args, **kwargs)
        mode = _SDPAToSparse(state, context, self.layer)
        with mode:
            output = original(*args, **kwargs)
        if mode.calls == 0:
            raise RuntimeError(
                f"{state.layer_names[self.layer]} did not call PyTorch SDPA, so sparse attention could not be "
                f"applied. vidaccel needs diffusers' native attention backend: call "
                f"`transformer.reset_attention_backend()` or unset DIFFUSERS_ATTN_BACKEND, then run again."
            )
        return output

    def _log_dense_once(self, step: int) -> None:
        key = "layer" if self.layer < (self.state.config.dense_layers or 0) else "step"
        if key not in self.state.logged_dense:
            self.state.logged_dense.add(key)
            logger.info(
                "vidaccel: dense attention by configuration (%s warm-up: dense_layers=%s, dense_steps=%s)",
                key, self.state.config.dense_layers, self.state.config.dense_steps,
            )


def _register(module: torch.nn.Module, hook: ModelHook, name: str, created: set) -> None:
    if not hasattr(module, "_diffusers_hook") and "forward" not in module.__dict__:
        created.add(id(module))
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)


def install(model: torch.nn.Module, state: SparseAttentionState) -> set:
    """Register the hooks on `model`; on any failure, remove what was registered and re-raise.

    Returns the ids of the modules whose hook registry vidaccel created (for an exact `uninstall`).
    """
    created: set = set()
    try:
        _register(model, StepContextHook(state), STEP_HOOK, created)
        for layer, (name, module) in enumerate(state.adapter.self_attention(model)):
            state.layer_names.append(name)
            _register(module, SparseAttentionHook(state, layer), ATTENTION_HOOK, created)
    except BaseException:
        uninstall(model, state, created)
        raise
    HookRegistry.check_if_exists_or_initialize(model).invalidate_child_registries_cache()
    return created


def uninstall(model: torch.nn.Module, state: SparseAttentionState, created: set) -> None:
    """Remove vidaccel's hooks; modules whose registry vidaccel created get their exact original state."""
    modules = [model] + [module for _, module in state.adapter.self_attention(model)]
    for module in modules:
        registry = getattr(module, "_diffusers_hook", None)
        if registry is None:
            continue
        for name in (STEP_HOOK, ATTENTION_HOOK):
            registry.remove_hook(name, recurse=False)
        if not registry.hooks and id(module) in created:
            # the registry re-bound `forward` as an instance attribute; drop it to restore the class method
            module.__dict__.pop("forward", None)
            del module._diffusers_hook
    if hasattr(model, "_diffusers_hook"):
        model._diffusers_hook.invalidate_child_registries_cache()
