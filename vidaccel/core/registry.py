"""Exact hook bookkeeping: add and remove diffusers hooks, install and remove a feature's state.

A module whose hook registry vidaccel created gets back exactly its original attributes when the
last vidaccel hook leaves (`unregister_hooks`); `install_states` is all or nothing over the
transformers of a pipeline.
"""

from __future__ import annotations

import contextlib

import torch
from diffusers.hooks import HookRegistry, ModelHook


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


def invalidate_hook_caches(model: torch.nn.Module) -> None:
    """diffusers caches each registry's child registries; hooks added or removed below invalidate it."""
    if hasattr(model, "_diffusers_hook"):
        model._diffusers_hook.invalidate_child_registries_cache()


def install_states(pairs, attr: str, install, uninstall) -> None:
    """``install(model, state)`` for each ``(model, state)`` and keep the state at ``model.<attr>``.

    All or nothing: on any failure the installs already done are undone (`remove_state`) and the
    error re-raised, so a pipeline with two transformers is never left half-changed. The hooks of a feature
    that must stay outermost (`Feature.outermost`) stay on top whatever the order of the ``enable_*`` calls.
    """
    done = []
    try:
        for model, state in pairs:
            with beneath_outermost(model, attr):
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
    with beneath_outermost(model, attr):
        uninstall(model, state)
    return True


@contextlib.contextmanager
def beneath_outermost(model: torch.nn.Module, attr: str):
    """Run an install or uninstall of the feature at `attr` with the hooks of the outermost features (FreeSwim)
    taken off and put back on top afterwards: diffusers' registry only unlinks a hook cleanly from the top of
    a module's chain, and FreeSwim's block hook must wrap what runs inside each of its branches."""
    from .features import FEATURES

    outer = [model.__dict__[f.state_attr] for f in FEATURES
             if f.outermost and f.state_attr != attr and model.__dict__.get(f.state_attr) is not None]
    for state in outer:
        state.hooks.detach_hooks()
    try:
        yield
    finally:
        for state in reversed(outer):
            state.hooks.attach_hooks()
