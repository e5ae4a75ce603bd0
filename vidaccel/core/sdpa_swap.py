"""Scoped replacement of ``F.scaled_dot_product_attention`` inside one module call.

Every vidaccel feature that changes or observes self-attention (sparse attention, FreeSwim's
branches, the profiler's attention sampling) runs the module's own diffusers processor unchanged
inside a `TorchFunctionMode` that routes its SDPA call to a function of ours. No processor code is
copied and nothing process-global is patched; the mode is active only during that call, and the
replacement's own SDPA calls are not intercepted again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


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
