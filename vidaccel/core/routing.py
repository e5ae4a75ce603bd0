"""Which path a feature's self-attention takes on a transformer: the one place that decides.

* ``"backend"``: the vidaccel attention backend in diffusers' dispatcher (`vidaccel.core.attention_backend`). The
  processor runs unchanged and calls ``dispatch_attention_fn``; ``torch.compile`` traces the whole call (no graph
  break), and diffusers' context parallelism hands it the whole sequence (Ulysses).
* ``"sdpa_swap"``: the module's processor runs inside a scoped replacement of its SDPA call
  (`vidaccel.core.sdpa_swap`). Needed where a processor calls ``F.scaled_dot_product_attention`` itself
  (CogVideoX, Mochi, Cosmos, Allegro, EasyAnimate) and where a feature must observe or replace every SDPA call of
  a module (the profiler's attention sampling, FreeSwim's two branches). Under ``torch.compile`` each such module
  runs eagerly (a graph break around it).

`vidaccel.summary` reports the path per transformer.
"""

from __future__ import annotations

from dataclasses import dataclass

from .attention_backend import BackendRoutes, dispatcher_processor
from .sdpa_swap import SwapRoutes

BACKEND, SDPA_SWAP = "backend", "sdpa_swap"

# features that must see every SDPA call of a module, not just the dispatched one
_OBSERVERS = {
    "profiler": "the profiler samples attention probabilities from each SDPA call",
    "freeswim": "FreeSwim runs each self-attention twice (window and full branch) with a cache between them",
}


@dataclass(frozen=True)
class AttentionPath:
    """The path chosen for one feature on one transformer, and why."""

    name: str  # BACKEND or SDPA_SWAP
    reason: str


# features whose route differs from layer to layer (the backend's per-call channel holds one route per call)
_PER_LAYER = {
    "tuned_attention": "a tuned sparsity profile runs its own head groups in each layer",
}


def choose_path(model, adapter, named_modules, feature: str) -> AttentionPath:
    """The path of `feature`'s self-attention on `model`, given its self-attention modules `named_modules`.

    The backend is chosen when the adapter says its processors dispatch (`ModelAdapter.attention_dispatch`), and
    every module's processor really does (a ``_attention_backend`` per processor) and belongs to that module alone
    (a processor shared with another module, as after ``set_attn_processor(one_instance)``, would carry the backend
    into cross-attention too).
    """
    if feature in _OBSERVERS or feature in _PER_LAYER:
        return AttentionPath(SDPA_SWAP, _OBSERVERS.get(feature) or _PER_LAYER[feature])
    if not adapter.attention_dispatch:
        return AttentionPath(SDPA_SWAP, f"{adapter.class_name}'s attention processors call PyTorch SDPA directly")
    routed = {id(module) for _, module in named_modules}
    owners: dict = {}
    for module in model.modules():
        processor = getattr(module, "processor", None)
        if processor is not None:
            owners.setdefault(id(processor), []).append(module)
    for name, module in named_modules:
        processor = getattr(module, "processor", None)
        if not dispatcher_processor(processor):
            return AttentionPath(SDPA_SWAP, f"the processor of {name} ({type(processor).__name__}) calls PyTorch SDPA "
                                    f"directly, not diffusers' attention dispatcher")
        if any(id(owner) not in routed for owner in owners[id(processor)]):
            return AttentionPath(SDPA_SWAP, f"the processor of {name} is shared with another attention module")
    return AttentionPath(BACKEND, "the processors dispatch through diffusers' attention backends")


def install_path(hooks, model, adapter, named_modules, feature: str):
    """Choose the path (`choose_path`) and install it on `named_modules` through `hooks` (a `HookSet`, which undoes
    it exactly). Returns ``(path, routes)``: the `AttentionPath` and its `BackendRoutes` or `SwapRoutes`
    (``set_routes`` before each call, every module dense until then; ``check``)."""
    path = choose_path(model, adapter, named_modules, feature)
    routes = (BackendRoutes if path.name == BACKEND else SwapRoutes)(hooks, named_modules)
    return path, routes


__all__ = ["AttentionPath", "choose_path", "install_path", "BACKEND", "SDPA_SWAP"]
