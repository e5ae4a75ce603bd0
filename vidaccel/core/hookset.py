"""`HookSet`: the one template by which every vidaccel feature installs and removes its hooks.

    hooks = HookSet(model, adapter, user="block_reuse")
    tracker = hooks.install(lambda h: h.add(block, MyHook(state), MY_HOOK_NAME))
    ...
    hooks.remove()   # exact: every hook and attribute in reverse order, the shared step tracker released

Besides hooks, `register` may set attributes of the model's objects (`set_attribute`: a processor's attention
backend) and listen to the step tracker (`on_context`: a decision made once per transformer call); `remove`
undoes those too. A feature keeps its `HookSet` in its state; its uninstall calls `remove`.
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
        self.entries: list = []  # undo functions, in the order of the changes
        self.tracker: StepTracker | None = None
        self.register = None  # the function `install` called (`attach_hooks` calls it again)

    def add(self, module: torch.nn.Module, hook: VidaccelHook, name: str) -> None:
        if not isinstance(hook, VidaccelHook):  # a developer error: copies would share the hook
            raise TypeError(f"{type(hook).__name__} must subclass vidaccel.core.nocopy.VidaccelHook.")
        hook.owner = self.user
        created = register_hook(module, hook, name)
        self.entries.append(lambda: unregister_hooks(module, [name], created))

    def set_attribute(self, obj, name: str, value) -> None:
        """``obj.<name> = value``, undone exactly by `remove`: the previous instance value back, or the instance
        attribute deleted when there was none (a class default shows through again)."""
        missing = object()
        previous = obj.__dict__.get(name, missing)
        setattr(obj, name, value)
        self.entries.append(lambda: delattr(obj, name) if previous is missing else setattr(obj, name, previous))

    def on_remove(self, fn) -> None:
        """Call ``fn()`` at `remove`, in reverse order with the other changes."""
        self.entries.append(fn)

    def on_context(self, listener) -> None:
        """Call ``listener(model, args, kwargs, context)`` eagerly at each transformer call, after the step context
        is published (one listener per feature)."""
        self.tracker.listeners[self.user] = listener

    def install(self, register) -> StepTracker:
        self.register = register
        try:
            self.tracker = attach_step_tracker(self.model, self.adapter, self.user)
            register(self)
        except BaseException:
            self.remove()
            raise
        invalidate_hook_caches(self.model)
        return self.tracker

    def detach_hooks(self) -> None:
        """Undo the hooks and attributes only (the tracker share stays): `attach_hooks` adds them again on top of
        whatever was added meanwhile. diffusers' registry unlinks a hook cleanly only from the top of a module's
        chain, so a feature that must stay outermost steps aside this way while others install or remove."""
        while self.entries:
            self.entries.pop()()

    def attach_hooks(self) -> None:
        """Register the same hooks again (after `detach_hooks`); on failure remove everything, as `install`."""
        try:
            self.register(self)
        except BaseException:
            self.remove()
            raise
        invalidate_hook_caches(self.model)

    def remove(self) -> None:
        self.detach_hooks()
        detach_step_tracker(self.model, self.user)
