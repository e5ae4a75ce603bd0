"""The per-call *step context* every vidaccel hook reads, published by one shared tracker hook.

`attach_step_tracker(model, adapter, user)` installs one pre-forward hook per transformer (shared
by all vidaccel features on it, reference-counted by `user`) that publishes a `StepContext`:
token grid after patchify, denoising step, CFG branch. The step comes from diffusers'
``cache_context(name, step_index=...)`` when the pipeline provides it, else from the timestep
sequence (a larger timestep starts a new generation, an equal one is another CFG pass).
diffusers resets stateful hooks at the end of each pipeline call, which starts a new generation.

When a pipeline (not a bare transformer) was accelerated, the tracker also reads the number of denoising
steps of each generation from the pipeline's scheduler (`remember_pipeline`), so warm-ups given as a
fraction of the schedule (``dense_steps=0.25``) resolve per run (`warmup_steps`).

Features that decide per transformer call (sparse attention: dense or sparse, which plan) register a listener
(`HookSet.on_context`); the tracker calls each with the new context. The tracker's whole pre-forward runs eagerly
(``torch.compiler.disable``): under ``torch.compile`` its Python decisions (step counting, the listeners) stay out
of the graph, which then sees only their results (`vidaccel.core.attention_backend`).

The tracker is registered through `registry` like every other vidaccel hook. While it is attached,
``model.enable_cache`` first asks the feature table (`refuse_diffusers_cache`) whether diffusers'
cache may join the vidaccel features installed; a cache applied with diffusers' ``apply_*``
functions, and cache-dit enabled after vidaccel (the order it cannot undo), are checked by the tracker at the
start of each generation, before anything runs.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import torch
from diffusers.hooks.hooks import BaseState, StateManager

from .adapters import ModelAdapter
from .features import diffusers_caches, let_cache_dit_unwrap, refuse_cache_dit_after_vidaccel, refuse_diffusers_cache
from .models import transformers
from .nocopy import NotCopyable, VidaccelHook
from .registry import invalidate_hook_caches, register_hook, unregister_hooks

STEP_HOOK = "vidaccel_step_context"
_TRACKER_ATTR = "_vidaccel_step_tracker"


@dataclass
class StepContext:
    grid: tuple[int, int, int]
    step: int
    branch: str  # diffusers cache_context name ("cond", "uncond", "cond_uncond"), else "default", "default.1", ...
    # for the first, second, ... call at the same step
    num_steps: int | None = None  # denoising steps of this generation (the pipeline's schedule), when known


@dataclass
class StepTracker(NotCopyable):
    adapter: ModelAdapter
    current: StepContext | None = None
    last_grid: tuple | None = None
    last_timestep: float | None = None
    step: int = 0
    passes: int = 0  # earlier calls at this step without a diffusers cache_context (separate CFG passes)
    users: set = field(default_factory=set)
    created_registry: bool = False
    pipeline: weakref.ref | None = None  # set by `remember_pipeline`
    num_steps: int | None = None
    listeners: dict = field(default_factory=dict)  # user -> fn(model, args, kwargs, context), called per call
    # the branch of a multi-branch transformer call while it runs (FreeSwim: "full" or "window"), else None;
    # features that keep state per call (block reuse) keep it per path too
    path: str | None = None

    def new_generation(self) -> None:
        self.current, self.last_timestep, self.step, self.path = None, None, 0, None

    def schedule_length(self) -> int | None:
        """Steps of the pipeline's current schedule (``len(scheduler.timesteps)``, set before the denoising
        loop), or None for a bare transformer or a scheduler without timesteps yet."""
        pipe = self.pipeline() if self.pipeline is not None else None
        timesteps = getattr(getattr(pipe, "scheduler", None), "timesteps", None)
        return len(timesteps) if timesteps is not None else None


class _ContextReader(BaseState):
    """diffusers sets the cache context on every `StateManager` of a stateful hook; we only read it."""

    def reset(self, *args, **kwargs) -> None:
        pass


class StepContextHook(VidaccelHook):
    """Pre-forward hook on a transformer: computes and publishes the `StepContext`."""

    _is_stateful = True

    def __init__(self, tracker: StepTracker):
        super().__init__()
        self.tracker = tracker
        self.context_reader = StateManager(_ContextReader)

    def _step_and_branch(self, args, kwargs) -> tuple[int, str]:
        context = self.context_reader._context
        branch = context.name if context is not None else "default"
        if context is not None and context.step_index is not None:
            return int(context.step_index), branch
        tr = self.tracker
        timestep = tr.adapter.timestep(args, kwargs)
        if timestep is None:
            return tr.step, branch
        t = float(torch.as_tensor(timestep).float().max().item())  # one sync per transformer call
        if tr.last_timestep is None or t > tr.last_timestep:
            tr.step, tr.passes = 0, 0
        elif t < tr.last_timestep:
            tr.step, tr.passes = tr.step + 1, 0
        else:
            tr.passes += 1
        tr.last_timestep = t
        if context is None and tr.passes:
            # a pipeline without cache_context that runs CFG as separate calls: each pass is its own branch,
            # so caches keyed by branch never mix the conditional and unconditional passes
            return tr.step, f"{branch}.{tr.passes}"
        return tr.step, branch

    @torch.compiler.disable  # Python state only: one eager call per transformer call, before the graph
    def pre_forward(self, module, *args, **kwargs):
        tracker = self.tracker
        if tracker.current is None:  # a new generation: refuse caches applied behind enable_cache's back
            for cache in diffusers_caches(module):
                refuse_diffusers_cache(module, cache)
            refuse_cache_dit_after_vidaccel(module)
            tracker.num_steps = tracker.schedule_length()
        grid = tuple(int(x) for x in tracker.adapter.grid(module, args, kwargs))
        if min(grid) <= 0:
            raise ValueError(f"The input gives an empty token grid {grid}; check the latent shape.")
        step, branch = self._step_and_branch(args, kwargs)
        tracker.current = StepContext(grid, step, branch, tracker.num_steps)
        tracker.last_grid = grid
        for listener in tuple(tracker.listeners.values()):
            listener(module, args, kwargs, tracker.current)
        return args, kwargs

    def reset_state(self, module):
        self.tracker.new_generation()
        self.context_reader.reset()
        return module


class _CheckedEnableCache(NotCopyable):
    """Stands in for ``model.enable_cache`` while vidaccel is installed: the feature table decides first."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __call__(self, config, *args, **kwargs):
        refuse_diffusers_cache(self.model, type(config).__name__.removesuffix("Config"))
        return type(self.model).enable_cache(self.model, config, *args, **kwargs)


def attach_step_tracker(model: torch.nn.Module, adapter: ModelAdapter, user: str) -> StepTracker:
    """The model's shared `StepTracker`, installing its hook on first use."""
    tracker = model.__dict__.get(_TRACKER_ATTR)
    if tracker is None:
        tracker = StepTracker(adapter=adapter)
        tracker.created_registry = register_hook(model, StepContextHook(tracker), STEP_HOOK)
        model.__dict__[_TRACKER_ATTR] = tracker
        if hasattr(type(model), "enable_cache"):
            model.__dict__["enable_cache"] = _CheckedEnableCache(model)
    tracker.users.add(user)
    return tracker


def detach_step_tracker(model: torch.nn.Module, user: str) -> None:
    tracker = model.__dict__.get(_TRACKER_ATTR)
    if tracker is None:
        return
    tracker.users.discard(user)
    tracker.listeners.pop(user, None)
    if not tracker.users:
        del model.__dict__[_TRACKER_ATTR]
        model.__dict__.pop("enable_cache", None)
        unregister_hooks(model, [STEP_HOOK], tracker.created_registry)
        let_cache_dit_unwrap(model)
    invalidate_hook_caches(model)


def remember_pipeline(pipe_or_transformer) -> None:
    """Let the step trackers of a pipeline's transformers read its scheduler (weakly: the pipeline owns them).
    A bare transformer has no schedule to read; nothing to do."""
    if isinstance(pipe_or_transformer, torch.nn.Module):
        return
    for model in transformers(pipe_or_transformer):
        tracker = model.__dict__.get(_TRACKER_ATTR)
        if tracker is not None:
            tracker.pipeline = weakref.ref(pipe_or_transformer)


def refuse_fraction_without_pipeline(dense_steps, pipe_or_transformer, name: str, fix: str) -> None:
    """Raise before anything is installed when a fractional warm-up meets a bare transformer (no scheduler
    to read the number of steps from); `fix` names the call to make instead."""
    if isinstance(dense_steps, float) and isinstance(pipe_or_transformer, torch.nn.Module):
        raise ValueError(f"{name}={dense_steps} is a fraction of the schedule, which a bare transformer does not "
                         f"know: {fix}, or pass a step count (an int).")


def warmup_steps(dense_steps, num_steps: int | None, where: str = "dense_steps") -> int:
    """The dense warm-up in steps: an int is a step count; a float is a fraction of the schedule, rounded half
    up (``0.25`` of 50 steps -> 13, of 4 -> 1). None is 0.

    Raises ValueError naming the fix when a fraction meets an unknown schedule length."""
    if dense_steps is None:
        return 0
    if not isinstance(dense_steps, float):
        return int(dense_steps)
    if num_steps is None:
        raise ValueError(
            f"{where}={dense_steps} is a fraction of the schedule, but the number of denoising steps is unknown: "
            f"accelerate the pipeline (not its transformer) so vidaccel can read its scheduler, or pass a step count "
            f"(an int).")
    return math.floor(dense_steps * num_steps + 0.5)
