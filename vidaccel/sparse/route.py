"""Sparse attention's per-call decision and the route it hands to the attention path.

Once per transformer call, in eager code (a listener of the step tracker, `vidaccel.core.context`), `decide` reads
the step context, applies the dense warm-up (`runs_dense`, with a fractional ``dense_steps`` resolved from the
schedule), looks the plan up in the model's `PlanCache`, counts the calls, and sets each self-attention module's
route: None (dense) or the model's `SparseRoute` for that plan. The route is frozen and shared by every layer and
step that runs the same plan, so under ``torch.compile`` the traced blocks see one constant object, not per-layer
or per-step numbers: no recompilation per layer or per step (`vidaccel.core.attention_backend`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.attention_backend import AttentionRoute
from .attention import attention_path, sparse_attention
from .plan import Plan


class PathRecord:
    """Which path (`attention_path`) a route's calls took, and how many calls the listener sent to it.

    `path` and `reason` are written by `SparseRoute.attend` on every call (under ``torch.compile`` as an attribute
    store after the graph, which reads nothing back, so it adds no guard)."""

    def __init__(self):
        self.path: str | None = None
        self.reason: str | None = None
        self.calls = 0


@dataclass(frozen=True, eq=False)
class SparseRoute(AttentionRoute):
    """Sparse self-attention under `plan` for one model: what the backend (or the SDPA swap) runs."""

    plan: Plan
    text_position: str  # the adapter's: "none", "prefix", "suffix"
    backend: str  # the config's kernel choice: "auto", "triton", "reference"
    model_name: str  # for messages
    record: PathRecord

    def attend(self, query, key, value, attn_mask, scale):
        """SDPA's layout and contract; the sequence is the plan's grid plus the model's non-grid tokens."""
        n = self.plan.num_tokens
        text_len = query.shape[-2] - n
        if text_len < 0 or (text_len > 0 and self.text_position == "none") or key.shape[-2] != query.shape[-2]:
            raise ValueError(
                f"Self-attention in {self.model_name} has {query.shape[-2]} queries and {key.shape[-2]} keys, but "
                f"the token grid {self.plan.grid} has {n} tokens. The sequence does not match the latent shape; if "
                f"you changed the model's patching, call vidaccel.remove() and accelerate again.")
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            raise ValueError("vidaccel sparse attention supports boolean attention masks only (True = attend).")
        path, reason = attention_path(query, attn_mask, self.plan, self.backend)
        self.record.path, self.record.reason = path, reason
        return sparse_attention(
            query, key, value, self.plan, text_len=text_len,
            text_position=self.text_position if text_len else "none", attn_mask=attn_mask, scale=scale,
            backend=self.backend)


@dataclass(frozen=True, eq=False)
class HeadGroupRoute(AttentionRoute):
    """One layer of a tuned profile: each group of heads runs its own route (None: dense SDPA); outputs go back
    in head order. Heads that share a pattern share one call."""

    groups: tuple  # ((heads tuple, the heads as an index tensor on the route's device, SparseRoute or None), ...)
    num_heads: int
    layer_name: str

    def attend(self, query, key, value, attn_mask, scale):
        if query.shape[1] != self.num_heads:
            raise ValueError(
                f"{self.layer_name} has {query.shape[1]} heads in this call, the sparsity profile chose patterns for "
                f"{self.num_heads} (context parallelism splits heads): tune with granularity='layer' to run it there.")
        out = torch.empty_like(query)
        for _, index, route in self.groups:
            q, k, v = (x.index_select(1, index) for x in (query, key, value))
            mask = attn_mask
            if mask is not None and mask.ndim == 4 and mask.shape[1] > 1:
                mask = mask.index_select(1, index)
            if route is None:
                o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
            else:
                o = route.attend(q, k, v, mask, scale)
            out.index_copy_(1, index, o)
        return out


def call_device(args, kwargs) -> torch.device:
    """Where this transformer call computes: the device of its first tensor argument (the latents)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
    raise ValueError("The transformer was called without a tensor argument; pass the latents (hidden_states).")


def check_context_parallel(cp, model_name: str) -> None:
    """Raise for a diffusers `ContextParallelConfig` that sparse attention cannot run under (ring attention)."""
    if cp is not None and (cp.ring_degree or 1) > 1:
        raise ValueError(
            f"{model_name} uses ring attention (ring_degree={cp.ring_degree}); vidaccel sparse attention needs "
            f"the whole sequence per rank. Use Ulysses instead: ContextParallelConfig(ulysses_degree=N)."
        )


def decide(state, model, args, kwargs, context) -> None:
    """The per-call decision (a step-tracker listener): set every module's route and count the calls."""
    state.routed.check()
    parallel = getattr(model, "_parallel_config", None)
    check_context_parallel(getattr(parallel, "context_parallel_config", None), type(model).__name__)
    if context.step == 0:
        state.check_warmup(context)
    layers = len(state.layer_names)
    dense = [state.is_dense(layer, context) for layer in range(layers)]
    if state.pattern is None:  # a tuned profile: a route per layer (None where every head chose dense)
        routes = [None if is_dense else state.tuned_route(layer, context.grid, call_device(args, kwargs),
                                                          type(model).__name__)
                  for layer, is_dense in enumerate(dense)]
        dense = [route is None for route in routes]
        for route in routes:
            for _, _, group in (route.groups if route is not None else ()):
                if group is not None:
                    group.record.calls += 1
    else:
        route = None
        if not all(dense):
            plan = state.plan_cache.get(state.pattern, context.grid, call_device(args, kwargs),
                                        tile_size=state.config.tile_size)
            route = state.route_for(plan, type(model).__name__)
            route.record.calls += dense.count(False)
        routes = [None if is_dense else route for is_dense in dense]
    for layer, is_dense in enumerate(dense):
        calls = state.dense_calls if is_dense else state.sparse_calls
        calls[layer] = calls.get(layer, 0) + 1
    for layer in (0, state.config.dense_layers or 0):  # the first layer dense by layer, the first dense by step
        if layer < layers and dense[layer]:
            state.log_dense_once(layer)
    state.routed.set_routes(routes)


def path_counts(routes) -> tuple[dict, str | None]:
    """({path: sparse calls}, the last reason the kernel did not run) over a model's routes."""
    counts, reason = {}, None
    for route in routes:
        record = route.record
        if record.calls and record.path is not None:
            counts[record.path] = counts.get(record.path, 0) + record.calls
            reason = record.reason or reason
    return counts, reason


__all__ = ["SparseRoute", "HeadGroupRoute", "PathRecord", "decide", "path_counts", "check_context_parallel", "call_device"]
