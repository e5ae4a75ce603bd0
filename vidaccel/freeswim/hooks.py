"""FreeSwim's dual path inside a Wan transformer, through diffusers hooks (METHODS.md section 2).

    vidaccel.enable_freeswim(pipe, vidaccel.FreeSwimConfig(base_size=(480, 832)))
    video = pipe(prompt, height=1088, width=1920, latents=..., ...)   # any hi-res denoising call
    vidaccel.disable_freeswim(pipe)                                    # exact restore

Most users want `vidaccel.pipelines.FreeSwimPipeline`, which adds the base-resolution stage,
the pixel-space upsampling and the re-noising around this.

How one transformer call runs (hooks only, no model code copied):

* **Window branch** (always): every block's self-attention goes through `sparse_attention` with
  ``WindowPattern((T, k_h, k_w))``, ``k_h, k_w`` = the base resolution's token extent (inward
  borders; the Triton kernel on CUDA).
* **Conditional pass, guide step** (``step % cache_steps == 0``): each block first runs on the
  *full branch*'s hidden states with dense self-attention; its cross-attention output is stored;
  then the block runs on the window branch's hidden states, whose cross-attention returns the
  stored output instead of computing its own. The two branches advance block by block, so only
  one extra hidden-state tensor is alive.
* **Conditional pass, other steps**: only the window branch runs (batch 1, no full-branch MLP
  work); every block's cross-attention returns the output stored at the last guide step.
* **Unconditional pass**: only the window branch, with its own cross-attention.

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
from diffusers.hooks import HookRegistry, ModelHook

from .adapters import ModelAdapter, adapter_for
from .attention import sparse_attention
from .config import RadialAttentionConfig, runs_dense
from .context import (
    StepTracker,
    attach_step_tracker,
    detach_step_tracker,
    install_states,
    register_hook,
    remove_state,
    unregister_hooks,
)
from .freeswim_cache import CrossAttentionCache
from .patterns import Pattern, WindowPattern
from .plan import PlanCache, check_tile_size
from .sdpa_swap import call_with_sdpa

logger = logging.getLogger(__name__)

BLOCK_HOOK = "vidaccel_freeswim_block"
SELF_ATTENTION_HOOK = "vidaccel_freeswim_self_attention"
CROSS_ATTENTION_HOOK = "vidaccel_freeswim_cross_attention"
_USER = "freeswim"
STATE_ATTR = "_vidaccel_freeswim"  # where the state lives on a transformer
_SPARSE_STATE_ATTR = "_vidaccel_sparse_attention"  # vidaccel.api's state: both would own self-attention
_BLOCK_REUSE_ATTR = "_vidaccel_block_reuse"  # vidaccel.caches block reuse skips blocks the full branch needs


@dataclass(frozen=True)
class FreeSwimConfig:
    """FreeSwim dual path (METHODS.md section 2).

    Args:
        base_size: the model's base (training) resolution in pixels ``(height, width)``; the window
            is its token extent. Default ``(480, 832)`` (Wan2.1).
        window: ``(k_h, k_w)`` in tokens, overriding the size derived from `base_size`
            (``base / (VAE factor x patch)``, e.g. 480x832 -> 30x52). The window spans all frames.
        cache_steps: the full branch runs every `cache_steps` denoising steps (guide steps) and its
            cross-attention outputs are reused in between. 1 = every step (no reuse). Default 2.
        override: replace the window branch's cross-attention with the full branch's (conditional
            pass). ``False`` leaves only the window attention (no full branch at all).
        entropy_scaling: scale self-attention logits by ``sqrt(log N_attended / log N_train)``.
            Default True (the reference code scales too, with constants for 2x).
        offload_cache: keep the cached outputs in pinned CPU memory, copied asynchronously
            (CUDA only; a no-op on CPU). Default False.
        full_attention: the full branch's self-attention. ``"dense"`` (default) is the method as
            defined: dense over the whole grid. ``"radial"`` or a `RadialAttentionConfig` runs radial
            attention instead (the sparse kernel on CUDA), an approximation beyond FreeSwim's
            definition: each token still sees its whole frame, the neighbouring frames and frame 0,
            farther frames in bands that narrow with distance, at O(n log n) cost (a guide step at
            1088x1920x81 on an H100: 18.4 -> 11.5 s; quality checked only on the shipped tiny model,
            where it matches the dense full branch - check it on yours). ``"radial"`` takes the Wan
            defaults (decay 0.2; the first 12 steps and block 0 dense); the config's ``dense_steps``
            count the refinement steps of the hi-res call.
        backend, tile_size: window attention performance knobs (see `WindowAttentionConfig`).
    """

    base_size: tuple[int, int] = (480, 832)
    window: tuple[int, int] | None = None
    cache_steps: int = 2
    override: bool = True
    entropy_scaling: bool = True
    offload_cache: bool = False
    full_attention: str | RadialAttentionConfig = "dense"
    backend: str = "auto"
    tile_size: int | str = "auto"

    def __post_init__(self):
        if len(tuple(self.base_size)) != 2 or not all(isinstance(x, int) and x > 0 for x in self.base_size):
            raise ValueError(f"base_size must be two positive ints (height, width) in pixels, got {self.base_size!r}.")
        if self.window is not None and (
            len(tuple(self.window)) != 2 or not all(isinstance(x, int) and x > 0 for x in self.window)
        ):
            raise ValueError(f"window must be two positive ints (k_h, k_w) in tokens or None, got {self.window!r}.")
        if not isinstance(self.cache_steps, int) or isinstance(self.cache_steps, bool) or self.cache_steps < 1:
            raise ValueError(f"cache_steps must be an int >= 1 (1 = full branch every step), got {self.cache_steps!r}.")
        if self.backend not in ("auto", "reference", "triton"):
            raise ValueError(f"backend must be 'auto', 'reference' or 'triton', got {self.backend!r}.")
        check_tile_size(self.tile_size)
        if not (self.full_attention in ("dense", "radial") or isinstance(self.full_attention, RadialAttentionConfig)):
            raise ValueError(
                f"full_attention must be 'dense', 'radial' or a vidaccel.RadialAttentionConfig (the full branch keeps "
                f"a whole-frame receptive field; a window there would defeat it), got {self.full_attention!r}."
            )

    def full_attention_config(self) -> RadialAttentionConfig | None:
        """The full branch's sparse attention config with Wan's defaults filled in; None = dense."""
        if self.full_attention == "dense":
            return None
        config = RadialAttentionConfig() if self.full_attention == "radial" else self.full_attention
        return config.resolved("wan")

    def window_tokens(self, spatial_factor: int) -> tuple[int, int]:
        """``(k_h, k_w)``: the explicit `window`, or `base_size` divided by `spatial_factor` (VAE x patch)."""
        if self.window is not None:
            return tuple(self.window)
        return (max(1, self.base_size[0] // spatial_factor), max(1, self.base_size[1] // spatial_factor))


def entropy_scale(n_attended: int, n_train: int, head_dim: int) -> float | None:
    """``sqrt(log n_attended / log n_train) / sqrt(head_dim)``; None (SDPA's default) when the ratio is 1."""
    if n_attended == n_train or n_train <= 1 or n_attended <= 1:
        return None
    return math.sqrt(math.log(n_attended) / math.log(n_train)) / math.sqrt(head_dim)


@dataclass
class FreeSwimState:
    """Everything `enable_freeswim` installs on one transformer."""

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
    created: dict = field(default_factory=dict)  # module id -> vidaccel created its hook registry
    counts: dict = field(default_factory=lambda: {"guide_calls": 0, "reuse_calls": 0, "window_calls": 0,
                                                  "cross_attention_computed": 0, "cross_attention_reused": 0,
                                                  "full_attention_dense": 0, "full_attention_sparse": 0})
    peak_cache_bytes: int = 0
    last_grid: tuple | None = None

    def pattern(self, grid) -> WindowPattern:
        if grid not in self.patterns:
            self.patterns[grid] = WindowPattern((grid[0], *self.window))
        return self.patterns[grid]

    def n_train(self, grid) -> int:
        return grid[0] * self.window[0] * self.window[1]

    def reset(self) -> None:
        """End of a generation: drop the cache entries and the full branch's hidden states."""
        self.cache.clear()
        self.full_hidden, self.mode, self.guide = None, None, False


class FreeSwimSelfAttentionHook(ModelHook):
    """`new_forward` on a block's self-attention: window (sparse) or full (dense) by the state's mode."""

    def __init__(self, state: FreeSwimState, layer: int):
        super().__init__()
        self.state, self.layer = state, layer

    def new_forward(self, module, *args, **kwargs):
        state = self.state
        original = self.fn_ref.original_forward
        if state.mode is None:
            return original(*args, **kwargs)
        route = self._full if state.mode == "full" else self._window
        return call_with_sdpa(route, original, args, kwargs, f"Self-attention of block {self.layer}")

    def _check(self, query, key, grid):
        n = math.prod(grid)
        if query.shape[-2] != n or key.shape[-2] != n:
            raise ValueError(
                f"Self-attention of block {self.layer} has {query.shape[-2]} queries and {key.shape[-2]} keys, but the "
                f"token grid {grid} has {n} tokens; FreeSwim supports Wan transformers with visual tokens only."
            )

    def _full(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        state = self.state
        context = state.tracker.current
        grid = context.grid
        self._check(query, key, grid)
        sparse = state.full_config is not None and not runs_dense(state.full_config, self.layer, context.step)
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


class FreeSwimCrossAttentionHook(ModelHook):
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


class FreeSwimBlockHook(ModelHook):
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
            full = self._run(original, "full", state.full_hidden, *args, **kwargs)
            state.full_hidden = full if self.layer + 1 < state.num_layers else None
        return self._run(original, "window_override", hidden_states, *args, **kwargs)

    def _run(self, original, mode, hidden_states, *args, **kwargs):
        self.state.mode = mode
        try:
            return original(hidden_states, *args, **kwargs)
        finally:
            self.state.mode = None

    def reset_state(self, module):
        self.state.reset()
        return module


def _blocks(model, adapter) -> list[tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]]:
    """(block, self-attention, cross-attention) per layer, from the adapter's module names."""
    selfs, crosses = adapter.self_attention(model), adapter.cross_attention(model)
    out = []
    for (name, attn1), (_, attn2) in zip(selfs, crosses):
        out.append((model.get_submodule(name.rsplit(".", 1)[0]), attn1, attn2))
    return out


def _install(model, state: FreeSwimState) -> None:
    try:
        state.tracker = attach_step_tracker(model, state.adapter, _USER)
        for layer, (block, attn1, attn2) in enumerate(_blocks(model, state.adapter)):
            for module, hook, name in ((block, FreeSwimBlockHook(state, layer), BLOCK_HOOK),
                                       (attn1, FreeSwimSelfAttentionHook(state, layer), SELF_ATTENTION_HOOK),
                                       (attn2, FreeSwimCrossAttentionHook(state, layer), CROSS_ATTENTION_HOOK)):
                state.created[id(module)] = register_hook(module, hook, name)
    except BaseException:
        _uninstall(model, state)
        raise
    HookRegistry.check_if_exists_or_initialize(model).invalidate_child_registries_cache()


def _uninstall(model, state: FreeSwimState) -> None:
    for block, attn1, attn2 in _blocks(model, state.adapter):
        for module, name in ((block, BLOCK_HOOK), (attn1, SELF_ATTENTION_HOOK), (attn2, CROSS_ATTENTION_HOOK)):
            if id(module) in state.created:
                unregister_hooks(module, [name], state.created.pop(id(module)))
    state.cache.release()
    state.reset()
    detach_step_tracker(model, _USER)


def _transformers(pipe_or_transformer) -> list[torch.nn.Module]:
    from .api import _transformers as models_of  # one definition of "the transformers of a pipeline"

    return models_of(pipe_or_transformer)


def _spatial_factor(pipe_or_transformer, model) -> int:
    vae_factor = getattr(pipe_or_transformer, "vae_scale_factor_spatial", 8)  # Wan's VAE: 8x
    return int(vae_factor) * int(model.config.patch_size[1])


def enable_freeswim(pipe_or_transformer, config: FreeSwimConfig | None = None):
    """Install FreeSwim's dual path on a Wan pipeline (both transformers of Wan2.2) or transformer.

    Every later call at any resolution runs the dual path until `disable_freeswim`; toggle it
    without removing the hooks with `set_freeswim_active`. Validation happens before anything is
    changed. Returns the same object.
    """
    config = config or FreeSwimConfig()
    if not isinstance(config, FreeSwimConfig):
        raise TypeError(f"config must be a vidaccel.FreeSwimConfig, got {type(config).__name__}.")
    models = _transformers(pipe_or_transformer)
    for model in models:
        adapter = adapter_for(model)
        if adapter.family != "wan":
            raise TypeError(f"FreeSwim supports Wan transformers (WanTransformer3DModel), got {type(model).__name__}.")
        if model.__dict__.get(STATE_ATTR) is not None:
            raise RuntimeError("FreeSwim is already enabled on this model. Call vidaccel.disable_freeswim(pipe) first.")
        if getattr(model, "_parallel_config", None) is not None:
            raise RuntimeError(
                "FreeSwim does not run under context parallelism (its window and full branches and the block-wise "
                "cross-attention cache assume the whole sequence on one rank). Use one GPU per video "
                "(data-parallel generation) for FreeSwim."
            )
        if hasattr(model, _SPARSE_STATE_ATTR):
            raise RuntimeError(
                "This model is accelerated with vidaccel.accelerate, which also replaces self-attention. FreeSwim "
                "brings its own window attention: call vidaccel.remove(pipe) first, then enable_freeswim."
            )
        if model.__dict__.get(_BLOCK_REUSE_ATTR) is not None:
            raise RuntimeError(
                "This model has vidaccel block reuse enabled, which skips blocks FreeSwim's two branches run. Call "
                "vidaccel.disable_block_reuse(pipe) first, then enable_freeswim."
            )
    states = []
    for model in models:
        adapter = adapter_for(model)
        spatial = _spatial_factor(pipe_or_transformer, model)
        full_config = config.full_attention_config()
        states.append(FreeSwimState(config=config, adapter=adapter, window=config.window_tokens(spatial),
                                    num_layers=len(adapter.self_attention(model)), full_config=full_config,
                                    full_pattern=full_config.build_pattern() if full_config else None,
                                    cache=CrossAttentionCache(offload=config.offload_cache)))
    install_states(zip(models, states), STATE_ATTR, _install, _uninstall)
    return pipe_or_transformer


def disable_freeswim(pipe_or_transformer):
    """Remove FreeSwim's hooks and cache, restoring the modules exactly. Returns the same object."""
    if not any([remove_state(m, STATE_ATTR, _uninstall) for m in _transformers(pipe_or_transformer)]):
        logger.info("vidaccel.disable_freeswim: FreeSwim was not enabled.")
    return pipe_or_transformer


def freeswim_states(pipe_or_transformer) -> list[tuple[torch.nn.Module, FreeSwimState]]:
    """(transformer, state) for every transformer FreeSwim is enabled on."""
    models = _transformers(pipe_or_transformer)
    return [(m, m.__dict__[STATE_ATTR]) for m in models if m.__dict__.get(STATE_ATTR) is not None]


def set_freeswim_active(pipe_or_transformer, active: bool) -> None:
    """Turn the dual path on or off without removing the hooks (off = the model's own computation)."""
    states = freeswim_states(pipe_or_transformer)
    if not states:
        raise RuntimeError("FreeSwim is not enabled: call vidaccel.enable_freeswim(pipe, config) first.")
    for _, state in states:
        state.reset()
        state.active = bool(active)


def freeswim_report(pipe_or_transformer) -> list[dict]:
    """One dict per transformer: config, window, last grid, call counts and cache bytes (for `summary`)."""
    out = []
    for model, state in freeswim_states(pipe_or_transformer):
        grid = state.last_grid
        density = None
        if grid is not None:
            density = math.prod(state.pattern(grid).effective_kernel(grid)) / math.prod(grid)
        out.append({
            "class": type(model).__name__, "config": repr(state.config), "active": state.active,
            "window": list(state.window), "grid": list(grid) if grid else None, "window_token_density": density,
            "full_attention": _describe_full(state.full_config),
            "layers": state.num_layers, "counts": dict(state.counts),
            "cache_bytes": state.cache.nbytes(), "peak_cache_bytes": state.peak_cache_bytes,
            "cache_dtype": str(state.cache.key[1]) if state.cache.key else None,
        })
    return out


def _describe_full(config: RadialAttentionConfig | None) -> str:
    if config is None:
        return "dense"
    return (f"radial (decay {config.decay_factor:g}{', sink' if config.sink else ''}; dense in the first "
            f"{config.dense_steps} steps and {config.dense_layers} blocks)")


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
        lines.append(f"  cache ({r['cache_dtype'] or 'empty'}): {_size(b['device'])} on device, {_size(b['host'])} "
                     f"pinned host (peak {_size(r['peak_cache_bytes'])})")
    return "\n".join(lines)


__all__ = [
    "FreeSwimConfig", "enable_freeswim", "disable_freeswim", "set_freeswim_active", "freeswim_report",
    "entropy_scale", "format_freeswim_report",
]
