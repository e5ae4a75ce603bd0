"""Shared plumbing for every vidaccel hook: the per-call *step context* and exact hook bookkeeping.

`attach_step_tracker(model, adapter, user)` installs one pre-forward hook per transformer (shared
by all vidaccel features on it, reference-counted by `user`) that publishes a `StepContext`:
token grid after patchify, denoising step, CFG branch. The step comes from diffusers'
``cache_context(name, step_index=...)`` when the pipeline provides it, else from the timestep
sequence (a larger timestep starts a new generation, an equal one is another CFG pass).
diffusers resets stateful hooks at the end of each pipeline call, which starts a new generation.

`register_hook` / `unregister_hooks` add and remove diffusers hooks so that a module whose hook
registry vidaccel created gets back exactly its original attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from .adapters import ModelAdapter

STEP_HOOK = "vidaccel_step_context"
_TRACKER_ATTR = "_vidaccel_step_tracker"


@dataclass
class StepContext:
    grid: tuple[int, int, int]
    step: int
    branch: str  # diffusers cache_context name ("cond", "uncond", "cond_uncond") or "default"


@dataclass
class StepTracker:
    adapter: ModelAdapter
    current: StepContext | None = None
    last_grid: tuple | None = None
    last_timestep: float | None = None
    step: int = 0
    users: set = field(default_factory=set)
    created_registry: bool = False

    def new_generation(self) -> None:
        self.current, self.last_timestep, self.step = None, None, 0


class _ContextReader(BaseState):
    """diffusers sets the cache context on every `StateManager` of a stateful hook; we only read it."""

    def reset(self, *args, **kwargs) -> None:
        pass


class StepContextHook(ModelHook):
    """Pre-forward hook on a transformer: computes and publishes the `StepContext`."""

    _is_stateful = True

    def __init__(self, tracker: StepTracker):
        super().__init__()
        self.tracker = tracker
        self.context_reader = StateManager(_ContextReader)

    @torch.compiler.disable
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
            tr.step = 0
        elif t < tr.last_timestep:
            tr.step += 1
        tr.last_timestep = t
        return tr.step, branch

    def pre_forward(self, module, *args, **kwargs):
        grid = tuple(int(x) for x in self.tracker.adapter.grid(module, args, kwargs))
        if min(grid) <= 0:
            raise ValueError(f"The input gives an empty token grid {grid}; check the latent shape.")
        step, branch = self._step_and_branch(args, kwargs)
        self.tracker.current = StepContext(grid, step, branch)
        self.tracker.last_grid = grid
        return args, kwargs

    def reset_state(self, module):
        self.tracker.new_generation()
        self.context_reader.reset()
        return module


def register_hook(module: torch.nn.Module, hook: ModelHook, name: str) -> bool:
    """Register `hook` under `name`; True when vidaccel created the module's hook registry."""
    created = not hasattr(module, "_diffusers_hook") and "forward" not in module.__dict__
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
    return created


def unregister_hooks(module: torch.nn.Module, names, created: bool) -> None:
    """Remove hooks `names`. Once no hook is left, drop the `forward` instance attribute diffusers'
    registry leaves behind (when it is just the class method re-bound) and, if vidaccel created the
    registry, the registry too: the module gets back exactly its original attributes."""
    registry = getattr(module, "_diffusers_hook", None)
    if registry is None:
        return
    for name in names:
        registry.remove_hook(name, recurse=False)
    if registry.hooks:
        return
    forward = module.__dict__.get("forward")
    if getattr(forward, "__self__", None) is module and getattr(forward, "__func__", None) is type(module).forward:
        del module.__dict__["forward"]
    if created:
        del module._diffusers_hook


def attach_step_tracker(model: torch.nn.Module, adapter: ModelAdapter, user: str) -> StepTracker:
    """The model's shared `StepTracker`, installing its hook on first use."""
    tracker = model.__dict__.get(_TRACKER_ATTR)
    if tracker is None:
        tracker = StepTracker(adapter=adapter)
        tracker.created_registry = register_hook(model, StepContextHook(tracker), STEP_HOOK)
        model.__dict__[_TRACKER_ATTR] = tracker
    tracker.users.add(user)
    return tracker


def detach_step_tracker(model: torch.nn.Module, user: str) -> None:
    tracker = model.__dict__.get(_TRACKER_ATTR)
    if tracker is None:
        return
    tracker.users.discard(user)
    if not tracker.users:
        del model.__dict__[_TRACKER_ATTR]
        unregister_hooks(model, [STEP_HOOK], tracker.created_registry)
    if hasattr(model, "_diffusers_hook"):
        model._diffusers_hook.invalidate_child_registries_cache()


def install_states(pairs, attr: str, install, uninstall) -> None:
    """``install(model, state)`` for each ``(model, state)`` and keep the state at ``model.<attr>``.

    All or nothing: on any failure the installs already done are undone (`remove_state`) and the
    error re-raised, so a pipeline with two transformers is never left half-changed.
    """
    done = []
    try:
        for model, state in pairs:
            install(model, state)
            model.__dict__[attr] = state
            done.append(model)
    except BaseException:
        for model in done:
            remove_state(model, attr, uninstall)
        raise


def remove_state(model: torch.nn.Module, attr: str, uninstall) -> bool:
    """Undo `install_states` on one model; False when nothing was installed."""
    state = model.__dict__.pop(attr, None)
    if state is None:
        return False
    uninstall(model, state)
    return True
