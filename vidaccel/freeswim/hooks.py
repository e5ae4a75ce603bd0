"""FreeSwim's dual path inside a Wan-like transformer, through diffusers hooks (docs/methods.md section 2).

The classes whose adapter has ``freeswim=True`` (Wan, Wan-VACE, SkyReels-V2, ChronoEdit): blocks of self- and
cross-attention (`ModelAdapter.blocks`, matched with their ``attn1`` / ``attn2`` by block name).

How one transformer call runs (hooks only, no model code copied):

* **Window branch** (always): every block's self-attention goes through `sparse_attention` with
  ``WindowPattern((T, k_h, k_w))``, ``k_h, k_w`` = the base resolution's token extent (inward
  borders; the Triton kernel on CUDA).
* **Conditional pass, guide step** (``step % cache_steps == 0``, or any step whose cache does not
  hold every block's entry for this shape, dtype and device): each block first runs on the
  *full branch*'s hidden states with dense self-attention; its cross-attention output is stored;
  then the block runs on the window branch's hidden states, whose cross-attention returns the
  stored output instead of computing its own. The two branches advance block by block, so only
  one extra hidden-state tensor is alive.
* **Conditional pass, other steps**: only the window branch runs (batch 1, no full-branch MLP
  work); every block's cross-attention returns the output stored at the last guide step.
* **Unconditional pass**: only the window branch, with its own cross-attention.
* **Block reuse inside** (`vidaccel.enable_block_reuse`, either order): the block hooks here wrap block reuse's,
  and each branch's block call runs with the tracker's ``path`` set to ``"full"`` or ``"window"``, so reuse keeps
  its deltas and its compute/reuse schedule per branch and per CFG pass (``BlockReuseConfig.freeswim_branches``
  says which branches reuse).
* **Self-attention outside the blocks** (Wan-VACE's control blocks, which turn the control video into hints):
  runs once per call, window attention when the dual path is active; both branches use its output.
* **Between blocks** (`ModelAdapter.run_breaks`, e.g. VACE adding a control hint after its ``vace_layers``):
  the model adds something to the window branch's hidden states that the full branch, run inside the block
  hooks, never sees; the next block's hook adds the same difference to the full branch. That is exact where
  the addition does not depend on the hidden states (VACE's hints come from the control blocks); classes whose
  additions do (Wan-Animate's face adapter) are refused by their adapter.

The paper replaces the cross-attention output *before* the output projection ``attn2.to_out``.
The projection is the same linear layer in both branches, so projecting the full branch's
pre-projection output gives exactly the full branch's ``attn2`` output; we store that, which lets
the window branch skip its whole cross-attention (query projection, attention and output
projection) on conditional passes. The tests check this against a literal pre-projection
replacement. For image-to-video models with image cross-attention (Wan2.1 I2V) the override
covers the whole cross-attention output (text + image), the paper's definition; the reference
code keeps the window branch's own image part.

Entropy-aware scaling (``entropy_scaling=True``): self-attention in a branch that attends
``N_attended`` keys per query uses ``sqrt(log N_attended / log N_train) / sqrt(d)``, with
``N_train = T * k_h * k_w`` (the base resolution's sequence at the same frame count). The window
branch attends ``N_train`` keys, so its scale stays ``1/sqrt(d)``; the full branch sharpens.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..core.adapters import ModelAdapter, block_of
from ..core.context import StepTracker
from ..core.hookset import HookSet
from ..core.nocopy import NotCopyable, VidaccelHook
from ..core.routing import AttentionPath, choose_path
from ..core.sdpa_swap import call_with_sdpa
from ..sparse.attention import sparse_attention
from ..sparse.config import RadialAttentionConfig, runs_dense
from ..sparse.patterns import Pattern, WindowPattern
from ..sparse.plan import PlanCache
from .cache import CrossAttentionCache
from .config import FreeSwimConfig, entropy_scale

logger = logging.getLogger(__name__)

BLOCK_HOOK = "vidaccel_freeswim_block"
SELF_ATTENTION_HOOK = "vidaccel_freeswim_self_attention"
CROSS_ATTENTION_HOOK = "vidaccel_freeswim_cross_attention"
_USER = "freeswim"


@dataclass
class FreeSwimState(NotCopyable):
    """Everything `enable_freeswim` installs on one transformer."""

    owner = _USER

    config: FreeSwimConfig
    adapter: ModelAdapter
    window: tuple[int, int]  # (k_h, k_w) tokens
    num_layers: int
    tracker: StepTracker | None = None
    full_config: RadialAttentionConfig | None = None  # the full branch's sparse attention; None = dense
    full_pattern: Pattern | None = None  # built once from full_config (kept alive for PlanCache keys)
    cache: CrossAttentionCache = field(default_factory=CrossAttentionCache)
    plan_cache: PlanCache = field(default_factory=PlanCache)
    patterns: dict = field(default_factory=dict)  # grid -> WindowPattern (kept alive for PlanCache keys)
    active: bool = True
    mode: str | None = None  # "full" | "window" | "window_override" while a block runs
    guide: bool = False  # the current conditional call runs the full branch
    full_hidden: torch.Tensor | None = None
    hooks: HookSet | None = None
    breaks: frozenset = frozenset()  # block indices after which the model adds to the hidden states
    window_out: torch.Tensor | None = None  # the window branch's output of the last block in `breaks`
    counts: dict = field(default_factory=lambda: {"guide_calls": 0, "reuse_calls": 0, "window_calls": 0,
                                                  "cross_attention_computed": 0, "cross_attention_reused": 0,
                                                  "full_attention_dense": 0, "full_attention_sparse": 0,
                                                  "control_window_calls": 0})
    peak_cache_bytes: int = 0
    last_grid: tuple | None = None
    attention_path: AttentionPath | None = None  # always the SDPA swap (`vidaccel.core.routing` says why)

    def pattern(self, grid) -> WindowPattern:
        if grid not in self.patterns:
            self.patterns[grid] = WindowPattern((grid[0], *self.window))
        return self.patterns[grid]

    def n_train(self, grid) -> int:
        return grid[0] * self.window[0] * self.window[1]

    def reset(self) -> None:
        """End of a generation: drop the cache entries and the full branch's hidden states."""
        self.cache.clear()
        self.full_hidden, self.window_out, self.mode, self.guide = None, None, None, False


class FreeSwimSelfAttentionHook(VidaccelHook):
    """`new_forward` on a block's self-attention: window (sparse) or full (dense) by the state's mode.

    ``control=True``: a self-attention module outside the treated blocks (VACE's control blocks), window attention
    whenever the dual path is active."""

    def __init__(self, state: FreeSwimState, layer: int, control: bool = False):
        super().__init__()
        self.state, self.layer, self.control = state, layer, control

    def new_forward(self, module, *args, **kwargs):
        state = self.state
        original = self.fn_ref.original_forward
        where = f"Self-attention of {'control block' if self.control else 'block'} {self.layer}"
        if self.control:
            if not state.active or state.tracker.current is None:
                return original(*args, **kwargs)
            state.counts["control_window_calls"] += 1
            return call_with_sdpa(self._window, original, args, kwargs, where)
        if state.mode is None:
            return original(*args, **kwargs)
        route = self._full if state.mode == "full" else self._window
        return call_with_sdpa(route, original, args, kwargs, where)

    def _check(self, query, key, grid):
        n = math.prod(grid)
        if query.shape[-2] != n or key.shape[-2] != n:
            raise ValueError(
                f"Self-attention of block {self.layer} has {query.shape[-2]} queries and {key.shape[-2]} keys, but the "
                f"token grid {grid} has {n} tokens; FreeSwim supports self-attention over the video tokens only."
            )

    def _full(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        state = self.state
        context = state.tracker.current
        grid = context.grid
        self._check(query, key, grid)
        sparse = state.full_config is not None and not runs_dense(state.full_config, self.layer, context.step,
                                                                   context.num_steps)
        state.counts["full_attention_sparse" if sparse else "full_attention_dense"] += 1
        if not sparse:
            if state.config.entropy_scaling:
                scale = entropy_scale(math.prod(grid), state.n_train(grid), query.shape[-1]) or scale
            return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                                  is_causal=is_causal, scale=scale, **kwargs)
        _check_sparse_call(dropout_p, is_causal, kwargs)
        plan = state.plan_cache.get(state.full_pattern, grid, query.device, tile_size=state.full_config.tile_size)
        if state.config.entropy_scaling:  # radial attends a varying number of keys: use the mean
            attended = max(1, round(plan.density * math.prod(grid)))
            scale = entropy_scale(attended, state.n_train(grid), query.shape[-1]) or scale
        return sparse_attention(query, key, value, plan, attn_mask=attn_mask, scale=scale,
                                backend=state.full_config.backend)

    def _window(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        state = self.state
        grid = state.tracker.current.grid
        self._check(query, key, grid)
        _check_sparse_call(dropout_p, is_causal, kwargs)
        pattern = state.pattern(grid)
        if state.config.entropy_scaling:
            attended = math.prod(pattern.effective_kernel(grid))
            scale = entropy_scale(attended, state.n_train(grid), query.shape[-1]) or scale
        plan = state.plan_cache.get(pattern, grid, query.device, tile_size=state.config.tile_size)
        return sparse_attention(query, key, value, plan, attn_mask=attn_mask, scale=scale,
                                backend=state.config.backend)


def _check_sparse_call(dropout_p, is_causal, kwargs) -> None:
    if dropout_p or is_causal or kwargs.get("enable_gqa"):
        raise ValueError("FreeSwim's sparse attention supports non-causal, dropout-free attention without GQA.")


class FreeSwimCrossAttentionHook(VidaccelHook):
    """`new_forward` on a block's cross-attention: store (full branch), replay (window override) or compute."""

    def __init__(self, state: FreeSwimState, layer: int):
        super().__init__()
        self.state, self.layer = state, layer

    def new_forward(self, module, hidden_states, *args, **kwargs):
        state = self.state
        original = self.fn_ref.original_forward
        if state.mode == "window_override":
            state.counts["cross_attention_reused"] += 1
            out = state.cache.load(self.layer, state.num_layers)
            if out.shape[:-1] != hidden_states.shape[:-1]:
                raise RuntimeError(
                    f"FreeSwim cached cross-attention of block {self.layer} has shape {tuple(out.shape)} but the "
                    f"window branch has {tuple(hidden_states.shape)}; call vidaccel.disable_freeswim and enable again."
                )
            return out
        out = original(hidden_states, *args, **kwargs)
        if state.mode is not None:
            state.counts["cross_attention_computed"] += 1
        if state.mode == "full":
            state.cache.store(self.layer, out, _cache_key(hidden_states))
            state.peak_cache_bytes = max(state.peak_cache_bytes, state.cache.nbytes()["total"])
        return out


def _cache_key(hidden_states: torch.Tensor):
    return (tuple(hidden_states.shape), hidden_states.dtype, str(hidden_states.device))


class FreeSwimBlockHook(VidaccelHook):
    """`new_forward` on a transformer block: runs the full branch (guide steps) then the window branch."""

    _is_stateful = True  # diffusers resets it at the end of every pipeline call

    def __init__(self, state: FreeSwimState, layer: int):
        super().__init__()
        self.state, self.layer = state, layer

    def new_forward(self, module, hidden_states, *args, **kwargs):
        state = self.state
        context = state.tracker.current
        original = self.fn_ref.original_forward
        if not state.active or context is None:
            return original(hidden_states, *args, **kwargs)
        conditional = context.branch != "uncond"
        if not (conditional and state.config.override):
            if self.layer == 0:
                state.counts["window_calls"] += 1
                state.last_grid = context.grid
            return self._run(original, "window", hidden_states, *args, **kwargs)
        if self.layer == 0:
            state.last_grid = context.grid
            state.guide = context.step % state.config.cache_steps == 0 or not state.cache.valid_for(
                _cache_key(hidden_states), state.num_layers
            )
            state.counts["guide_calls" if state.guide else "reuse_calls"] += 1
            state.full_hidden = hidden_states if state.guide else None
        if state.guide:
            if state.full_hidden is None:
                raise RuntimeError("FreeSwim full branch lost its hidden states; blocks must run in order from block 0.")
            if self.layer - 1 in state.breaks and state.window_out is not None:
                # what the model added between the blocks (VACE's control hint), added to the full branch too
                state.full_hidden = state.full_hidden + (hidden_states - state.window_out)
            full = self._run(original, "full", state.full_hidden, *args, **kwargs)
            state.full_hidden = full if self.layer + 1 < state.num_layers else None
        out = self._run(original, "window_override", hidden_states, *args, **kwargs)
        state.window_out = out if state.guide and self.layer in state.breaks else None
        return out

    def _run(self, original, mode, hidden_states, *args, **kwargs):
        state = self.state
        # the branch is published on the tracker: what runs inside the block (block reuse) keeps state per branch
        state.mode, state.tracker.path = mode, ("full" if mode == "full" else "window")
        try:
            return original(hidden_states, *args, **kwargs)
        finally:
            state.mode, state.tracker.path = None, None

    def reset_state(self, module):
        self.state.reset()
        return module


def blocks(model, adapter) -> list[tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]]:
    """(block, self-attention, cross-attention) per treated block (`ModelAdapter.blocks`), matched by block name."""
    selfs = {block_of(name): attn for name, attn in adapter.self_attention(model)}
    crosses = {block_of(name): attn for name, attn in (adapter.cross_attention or (lambda m: []))(model)}
    missing = [name for name, _ in adapter.blocks(model) if name not in crosses]
    if missing:
        raise ValueError(f"The ModelAdapter of {adapter.class_name} has freeswim=True, but block {missing[0]} has no "
                         f"module in its cross_attention list: FreeSwim needs a cross-attention module in every block "
                         f"(or set freeswim=False).")
    return [(block, selfs[name], crosses[name]) for name, block in adapter.blocks(model)]


def control_attention(model, adapter) -> list[torch.nn.Module]:
    """Self-attention modules outside the treated blocks (VACE's control blocks), in execution order."""
    inside = {block_of(name) for name, _ in adapter.blocks(model)}
    return [attn for name, attn in adapter.self_attention(model) if block_of(name) not in inside]


def install(model, state: FreeSwimState) -> None:
    """Register the block, self- and cross-attention hooks; on failure remove what was added and re-raise."""

    def register(hooks: HookSet) -> None:
        state.attention_path = choose_path(model, state.adapter, state.adapter.self_attention(model), _USER)
        for layer, attn in enumerate(control_attention(model, state.adapter)):
            hooks.add(attn, FreeSwimSelfAttentionHook(state, layer, control=True), SELF_ATTENTION_HOOK)
        for layer, (block, attn1, attn2) in enumerate(blocks(model, state.adapter)):
            hooks.add(block, FreeSwimBlockHook(state, layer), BLOCK_HOOK)
            hooks.add(attn1, FreeSwimSelfAttentionHook(state, layer), SELF_ATTENTION_HOOK)
            hooks.add(attn2, FreeSwimCrossAttentionHook(state, layer), CROSS_ATTENTION_HOOK)

    state.hooks = HookSet(model, state.adapter, _USER)
    state.tracker = state.hooks.install(register)


def uninstall(model, state: FreeSwimState) -> None:
    """Remove exactly what `install` added, release the cache (pinned host buffers too)."""
    state.hooks.remove()
    state.cache.release()
    state.reset()
