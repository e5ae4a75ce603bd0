"""Scoped replacement of ``F.scaled_dot_product_attention`` inside one module call.

Features that must see every SDPA call of a module (FreeSwim's branches, the profiler's attention sampling), and
sparse attention where a processor calls SDPA directly (`vidaccel.core.routing`), run the module's own diffusers
processor unchanged inside a `TorchFunctionMode` that routes its SDPA call to a function of ours. No processor code is
copied and nothing process-global is patched; the mode is active only during that call, and the
replacement's own SDPA calls are not intercepted again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .attention_backend import check_plain
from .nocopy import VidaccelHook

SWAP_HOOK = "vidaccel_sdpa_swap"


class SDPASwap(TorchFunctionMode):
    """Route ``F.scaled_dot_product_attention(...)`` to ``fn(...)`` (same arguments); count the calls."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.calls = fn, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        self.calls += 1
        return self.fn(*args, **kwargs)


@torch.compiler.disable
def call_with_sdpa(fn, forward, args, kwargs, where: str):
    """``forward(*args, **kwargs)`` with its SDPA call routed to `fn`.

    Raises RuntimeError naming the fix when `forward` never called SDPA (a non-native diffusers
    attention backend such as flash or sage), since `fn` then silently did nothing.

    Under `torch.compile` this call runs eagerly (a graph break around the attention module):
    dynamo in torch 2.11-2.13 fails on a function mode entered inside a compiled region, and the
    rest of the model still compiles.
    """
    swap = SDPASwap(fn)
    with swap:
        output = forward(*args, **kwargs)
    if swap.calls == 0:
        raise RuntimeError(
            f"{where} did not call PyTorch SDPA, so vidaccel could not route its attention. vidaccel needs "
            f"diffusers' native attention backend: call `transformer.reset_attention_backend()` or unset "
            f"DIFFUSERS_ATTN_BACKEND, then run again."
        )
    return output


class ObserveSDPAHook(VidaccelHook):
    """``new_forward`` on a self-attention module: its processor runs unchanged, and each SDPA call is first shown
    to `observe` (SDPA's arguments) - the template of the measuring tools (the profiler, `vidaccel.tune`)."""

    def new_forward(self, module, *args, **kwargs):
        self.before_call(module)
        return call_with_sdpa(self._observe_then_attend, self.fn_ref.original_forward, args, kwargs, self.where())

    def before_call(self, module) -> None:
        """A check on the module before its call (default: none)."""

    def where(self) -> str:
        raise NotImplementedError

    def observe(self, query, key, value=None, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
        raise NotImplementedError

    def _observe_then_attend(self, *args, **kwargs):
        self.observe(*args, **kwargs)
        return F.scaled_dot_product_attention(*args, **kwargs)


def sdpa_for(route):
    """A stand-in for ``F.scaled_dot_product_attention`` that runs `route.attend` (an `AttentionRoute`)."""

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        check_plain(dropout_p, is_causal, enable_gqa)
        return route.attend(query, key, value, attn_mask, scale)

    return sdpa


class SwapRouteHook(VidaccelHook):
    """``new_forward`` on a self-attention module of the SDPA-swap path: the module's processor with its SDPA call
    routed to `route` (an `AttentionRoute`, set before each transformer call); None (dense) runs it unchanged."""

    def __init__(self, name: str):
        super().__init__()
        self.name, self.route = name, None

    def new_forward(self, module, *args, **kwargs):
        original = self.fn_ref.original_forward
        if self.route is None:
            return original(*args, **kwargs)
        return call_with_sdpa(sdpa_for(self.route), original, args, kwargs, self.name)


class SwapRoutes:
    """The SDPA-swap counterpart of `BackendRoutes`: a `SwapRouteHook` on each module, switched per call."""

    def __init__(self, hooks, named_modules):
        self.hooks = [SwapRouteHook(name) for name, _ in named_modules]
        for (_, module), hook in zip(named_modules, self.hooks):
            hooks.add(module, hook, SWAP_HOOK)

    def set_routes(self, routes) -> None:
        """Eager, before a transformer call: one entry per module, its route or None (dense)."""
        for hook, route in zip(self.hooks, routes):
            hook.route = route

    def check(self) -> None:
        """Nothing to check: `call_with_sdpa` raises when a processor stops calling SDPA."""
