"""`HookSet`: the one template by which every vidaccel feature installs and removes its hooks.

    hooks = HookSet(model, adapter, user="block_reuse")
    tracker = hooks.install(lambda h: h.add(block, MyHook(state), MY_HOOK_NAME))
    ...
    hooks.remove()   # exact: every hook in reverse order, the shared step tracker released

A feature keeps its `HookSet` in its state; its uninstall calls `remove`.
"""

from __future__ import annotations

import torch

from .adapters import ModelAdapter
from .context import StepTracker, attach_step_tracker, detach_step_tracker
from .nocopy import VidaccelHook
from .registry import invalidate_hook_caches, register_hook, unregister_hooks


class HookSet:
    """The hooks one feature registers on a model, plus its share of the model's step tracker.

    `install(register)` attaches the tracker and calls ``register(self)``, which adds hooks with
    `add`; on any failure everything added is removed again. `remove` undoes it exactly, in reverse.
    """

    def __init__(self, model: torch.nn.Module, adapter: ModelAdapter, user: str):
        self.model, self.adapter, self.user = model, adapter, user
        self.entries: list[tuple[torch.nn.Module, str, bool]] = []

    def add(self, module: torch.nn.Module, hook: VidaccelHook, name: str) -> None:
        if not isinstance(hook, VidaccelHook):  # a developer error: copies would share the hook
            raise TypeError(f"{type(hook).__name__} must subclass vidaccel.core.nocopy.VidaccelHook.")
        hook.owner = self.user
        self.entries.append((module, name, register_hook(module, hook, name)))

    def install(self, register) -> StepTracker:
        try:
            tracker = attach_step_tracker(self.model, self.adapter, self.user)
            register(self)
        except BaseException:
            self.remove()
            raise
        invalidate_hook_caches(self.model)
        return tracker

    def remove(self) -> None:
        for module, name, created in reversed(self.entries):
            unregister_hooks(module, [name], created)
        self.entries.clear()
        detach_step_tracker(self.model, self.user)
