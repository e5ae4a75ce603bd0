"""vidaccel as an attention backend of diffusers' dispatcher (``diffusers.models.attention_dispatch``).

Most diffusers video processors compute q, k, v and call ``dispatch_attention_fn(..., backend=
self._attention_backend)``. `register` adds a ``vidaccel`` member to ``AttentionBackendName`` and its function to
``_AttentionBackendRegistry`` (idempotent, context-parallel capable), and `BackendRoutes` sets that backend on
the given self-attention processors only (as ``set_attention_backend`` does per processor, without its
process-wide default), restoring each processor's own value exactly on removal.

What a routed call does is an `AttentionRoute`: a frozen object that a feature chooses in eager code once per
transformer call (a step-tracker listener, `vidaccel.core.context`) and publishes in `CHANNEL`, together with the
backend of each processor: ``vidaccel`` for a layer that runs the route, the processor's previous backend for a
dense one. Under ``torch.compile`` the processors and the backend function are traced into the graph; the route is
a constant guarded by identity and the processors' backends by value, unchanged from layer to layer and step to
step (they change when a warm-up ends or the grid changes). Nothing is hooked on the attention modules, so
``compile_repeated_blocks`` compiles a block once for all layers.

The route runs as one custom op, ``torch.ops.vidaccel.routed_attention(q, k, v, mask, route key, scale)``, opaque to
the compiler: what it does in Python (kernel tables built on first use, the CPU reference's cached masks, the
kernel's own custom op) runs at call time exactly as in eager mode, so no data-dependent code is traced and nothing
in it breaks a graph. (With autograd recording, the route is called directly, so that gradients flow.)

Why a channel and not the processor's ``attention_mask`` argument: some processors prepare the mask before the
dispatch (LTX-Video's ``attn.prepare_attention_mask``), so only q, k, v and the real mask reach the dispatcher
unchanged; a per-call channel works for every processor that dispatches, as one transformer call has one grid and
so one route. It is read only by processors whose backend vidaccel set for the call (single-threaded, like
diffusers' own hook state).
"""

from __future__ import annotations

import functools
import itertools
import weakref
from typing import Optional

import torch
from diffusers.models import attention_dispatch as _dispatch

BACKEND = "vidaccel"


class AttentionRoute:
    """What the vidaccel backend does with a self-attention call. Subclasses are frozen dataclasses.

    `attend` gets SDPA's layout, ``(batch, heads, tokens, head_dim)``, on the whole sequence (under Ulysses context
    parallelism: the whole sequence and this rank's heads) and returns the same, a new tensor. `register_route`
    gives a route its ``key`` before the backend may run it.
    """

    key: int  # set by `register_route`

    def attend(self, query, key, value, attn_mask, scale):
        raise NotImplementedError


class _Channel:
    """The route of the transformer call running now (set by its listener, eagerly, before the call)."""

    route: AttentionRoute | None = None


CHANNEL = _Channel()


def _as_4d_mask(attn_mask, query, key):
    """(B, S_k) key masks as (B, 1, 1, S_k), the same normalisation as diffusers' native backend."""
    if attn_mask is not None and attn_mask.ndim == 2 and attn_mask.shape == (query.shape[0], key.shape[1]):
        return attn_mask[:, None, None, :]
    return attn_mask


_ROUTES: "weakref.WeakValueDictionary[int, AttentionRoute]" = weakref.WeakValueDictionary()
_KEYS = itertools.count()


def register_route(route: AttentionRoute) -> AttentionRoute:
    """Give `route` its ``key`` (an int the compiled graph carries as a constant) and make `routed_attention` find
    it while it lives (its owner, a feature's state, keeps it alive)."""
    key = next(_KEYS)
    object.__setattr__(route, "key", key)  # routes are frozen dataclasses
    _ROUTES[key] = route
    return route


@torch.library.custom_op("vidaccel::routed_attention", mutates_args=())
def routed_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Optional[torch.Tensor],
                     route: int, scale: Optional[float]) -> torch.Tensor:
    """``_ROUTES[route].attend`` in SDPA's layout, as one op (see the module docstring); the output has the strides
    of ``empty_like(query)``, as the fake implementation says."""
    out = _ROUTES[route].attend(query, key, value, attn_mask, scale)
    expected = torch.empty_like(query, device="meta").stride()
    return out if out.stride() == expected else torch.empty_like(query).copy_(out)


@routed_attention.register_fake
def _(query, key, value, attn_mask, route, scale):
    return torch.empty_like(query)


def _attend_bshd(route, query, key, value, attn_mask, scale):
    """The dispatcher's layout (B, S, heads, D) in and out; routes work in SDPA's."""
    attn_mask = _as_4d_mask(attn_mask, query, key)
    q, k, v = (x.permute(0, 2, 1, 3) for x in (query, key, value))
    if torch.is_grad_enabled() and q.requires_grad:  # the op has no backward: let autograd see the route's code
        out = route.attend(q, k, v, attn_mask, scale)
    else:
        out = torch.ops.vidaccel.routed_attention(q, k, v, attn_mask, route.key, scale)
    return out.permute(0, 2, 1, 3)


def _cp_forward_op(route, ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False, return_lse=False, _save_ctx=True, _parallel_config=None):
    """diffusers' templated context-parallel attention calls this with the whole sequence and local heads."""
    if return_lse:
        raise ValueError("vidaccel attention does not return the log-sum-exp: ring attention is not supported "
                         "(use Ulysses: ContextParallelConfig(ulysses_degree=N)).")
    return _attend_bshd(route, query, key, value, attn_mask, scale)


def _cp_backward_op(ctx, grad_out, *args, **kwargs):
    raise RuntimeError("vidaccel sparse attention under context parallelism is inference-only: run the backward "
                       "pass without context parallelism, or call vidaccel.remove(pipe) first.")


def check_plain(dropout_p, is_causal, enable_gqa) -> None:
    """The calls a route can replace: non-causal, dropout-free, without GQA."""
    if dropout_p or is_causal or enable_gqa:
        raise ValueError("vidaccel sparse attention supports non-causal, dropout-free attention without GQA.")


def vidaccel_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False, _parallel_config=None):
    """The function registered for ``AttentionBackendName("vidaccel")``: the route in `CHANNEL` decides."""
    route = CHANNEL.route
    if route is None:  # not set by a vidaccel listener (a processor called outside its transformer): run natively
        return _dispatch.dispatch_attention_fn(
            query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
            enable_gqa=enable_gqa, backend=_dispatch.AttentionBackendName.NATIVE, parallel_config=_parallel_config)
    check_plain(dropout_p, is_causal, enable_gqa)
    if _parallel_config is None:
        return _attend_bshd(route, query, key, value, attn_mask, scale)
    return _dispatch._templated_context_parallel_attention(
        query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, False,
        forward_op=functools.partial(_cp_forward_op, route), backward_op=_cp_backward_op,
        _parallel_config=_parallel_config)


def register():
    """Add the ``vidaccel`` member and backend to diffusers' dispatcher once; later calls return the member.

    The member is added the way diffusers' enum lookups see it (``AttentionBackendName("vidaccel")``,
    ``__members__``); the function is registered context-parallel capable without constraint checks (it checks
    its inputs itself).
    """
    names, registry = _dispatch.AttentionBackendName, _dispatch._AttentionBackendRegistry
    member = names._value2member_map_.get(BACKEND)
    if member is None:
        member = str.__new__(names, BACKEND)
        member._name_, member._value_ = BACKEND.upper(), BACKEND
        names._member_map_[member._name_] = member
        names._member_names_.append(member._name_)
        names._value2member_map_[BACKEND] = member
        type.__setattr__(names, member._name_, member)
    if registry._backends.get(member) is not vidaccel_attention:
        registry.register(member, constraints=[], supports_context_parallel=True)(vidaccel_attention)
    return member


def dispatcher_processor(processor) -> bool:
    """True when `processor` dispatches through a per-processor backend (``_attention_backend``)."""
    return processor is not None and hasattr(type(processor), "_attention_backend")


class BackendRoutes:
    """The processors of one transformer's routed self-attention modules, switched per call.

    `set_routes` makes a layer with a route dispatch to ``vidaccel`` and a layer without one (dense) to the
    backend its processor had before; `check` notices a processor or backend changed behind vidaccel's back.
    """

    def __init__(self, hooks, named_modules):
        self.member = register()
        self.names = [name for name, _ in named_modules]
        self.modules = [module for _, module in named_modules]
        self.processors = [module.processor for module in self.modules]
        self.previous = [getattr(p, "_attention_backend", None) for p in self.processors]
        for processor, previous in zip(self.processors, self.previous):
            hooks.set_attribute(processor, "_attention_backend", previous)  # recorded for an exact restore
        hooks.on_remove(self._release)  # runs before the attributes are restored

    def set_routes(self, routes) -> None:
        """Eager, before a transformer call: one entry per module, the call's route or None (dense)."""
        for processor, previous, route in zip(self.processors, self.previous, routes):
            processor._attention_backend = previous if route is None else self.member
        CHANNEL.route = next((r for r in routes if r is not None), None)

    def check(self) -> None:
        """Raise RuntimeError naming the fix when a module has another processor, or its processor another backend,
        than vidaccel set (``set_attn_processor``, ``set_attention_backend``, ``reset_attention_backend`` after
        installing): vidaccel would be bypassed without a word."""
        for name, module, processor, previous in zip(self.names, self.modules, self.processors, self.previous):
            if module.processor is not processor:
                changed = "processor"
            elif processor._attention_backend not in (previous, self.member):
                now = processor._attention_backend
                changed = f"attention backend (now {getattr(now, 'value', now)!r})"
            else:
                continue
            raise RuntimeError(
                f"The {changed} of {name} was changed after vidaccel was installed, so vidaccel can no longer route "
                f"its attention. Call vidaccel.remove(pipe), change the processor or backend, then accelerate "
                f"again (dense layers then use the backend you set).")

    @staticmethod
    def _release() -> None:
        """At removal: forget the last call's route (it holds a plan's tensors); every call sets its own anyway."""
        CHANNEL.route = None


__all__ = ["AttentionRoute", "BackendRoutes", "CHANNEL", "BACKEND", "register", "register_route", "routed_attention",
           "dispatcher_processor", "check_plain", "vidaccel_attention"]
