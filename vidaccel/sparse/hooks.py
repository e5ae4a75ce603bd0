"""What `accelerate` installs on a transformer, and its state.

* the attention path chosen by `vidaccel.core.routing`: the vidaccel attention backend in diffusers' dispatcher
  (each self-attention processor's backend switched per call, nothing hooked on the module) or, where a processor
  calls SDPA itself, the SDPA swap (a `SwapRouteHook` on each self-attention module);
* a listener of the transformer's shared step tracker (`vidaccel.core.context`) that decides, once per call and
  eagerly, which layers run dense and with which plan (`vidaccel.sparse.route.decide`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import torch

from ..core.adapters import ModelAdapter
from ..core.attention_backend import register_route
from ..core.context import StepContext, StepTracker, warmup_steps
from ..core.hookset import HookSet
from ..core.nocopy import NotCopyable
from ..core.routing import AttentionPath, install_path
from .config import runs_dense
from .plan import Plan, PlanCache
from . import candidates
from .route import HeadGroupRoute, PathRecord, SparseRoute, check_context_parallel, decide, path_counts

logger = logging.getLogger(__name__)

_USER = "sparse_attention"


@dataclass
class SparseAttentionState(NotCopyable):
    """Everything one `accelerate` call installs on a transformer: config, pattern, plans, routes, counters."""

    owner = _USER

    config: object
    pattern: object
    adapter: ModelAdapter
    plan_cache: PlanCache = field(default_factory=PlanCache)
    tracker: StepTracker | None = None
    layer_names: list = field(default_factory=list)
    hooks: HookSet | None = None
    attention_path: AttentionPath | None = None  # backend or SDPA swap (`vidaccel.core.routing`), and why
    routed: object = None  # its BackendRoutes or SwapRoutes: the routes set per call
    routes: dict = field(default_factory=dict)  # id(plan) -> SparseRoute (each holds its plan, so ids stay unique)
    sparse_calls: dict = field(default_factory=dict)
    dense_calls: dict = field(default_factory=dict)
    logged_dense: set = field(default_factory=set)
    last_warmup: tuple | None = None  # (dense steps, steps) of the last run whose schedule was known
    attribute: str = "transformer"  # the pipeline attribute (a tuned profile has one entry per transformer)
    tuned_patterns: dict = field(default_factory=dict)  # candidate spec (JSON) -> its one Pattern object
    tuned_routes: dict = field(default_factory=dict)  # (layer, grid, device) -> HeadGroupRoute or None

    def is_dense(self, layer: int, context: StepContext) -> bool:
        return runs_dense(self.config, layer, context.step, context.num_steps)

    def check_warmup(self, context: StepContext) -> None:
        """At a run's first step: record the warm-up against the schedule, and warn (once per schedule) when it
        covers every step, so nothing would run sparse."""
        if context.num_steps is None:
            return
        dense = warmup_steps(self.config.dense_steps, context.num_steps)
        self.last_warmup = (dense, context.num_steps)
        if dense >= context.num_steps and ("whole", context.num_steps) not in self.logged_dense:
            self.logged_dense.add(("whole", context.num_steps))
            logger.warning(
                "vidaccel: the dense warm-up (dense_steps=%s) covers all %d steps of this run, so every step runs "
                "dense attention and nothing is accelerated. Give the warm-up as a fraction of the schedule "
                "(e.g. dense_steps=0.25) or as fewer steps.", self.config.dense_steps, context.num_steps)

    def route_for(self, plan: Plan, model_name: str) -> SparseRoute:
        """The one route object of `plan` (so compiled code sees the same constant at every layer and step);
        routes of plans the cache has dropped are dropped with them."""
        route = self.routes.get(id(plan))
        if route is None:
            if len(self.routes) >= self.plan_cache.max_entries:
                self.routes = {k: r for k, r in self.routes.items() if self.plan_cache.holds(r.plan)}
            route = self.routes[id(plan)] = SparseRoute(plan, self.adapter.text_position, self.config.backend,
                                                        model_name, PathRecord())
            register_route(route)
        return route

    def tuned_route(self, layer: int, grid, device, model_name: str):
        """Layer `layer`'s `HeadGroupRoute` at `grid` under the tuned profile (None when every head is dense);
        built once per layer, grid and device, sharing each pattern's plan and route across layers."""
        key = (layer, tuple(grid), str(device))
        if key not in self.tuned_routes:
            measured = tuple(self.config.profile.model(self.attribute).grid)
            if layer == 0 and tuple(grid) != measured:
                logger.info("vidaccel: the sparsity profile was measured at grid %s; at %s its windows scale with "
                            "the grid (radial keeps its rule). Run vidaccel.tune at this size to measure it.",
                            measured, tuple(grid))
            groups, heads_total = [], 0
            for spec, heads in self.config.layer_groups(self.attribute, layer, grid):
                heads_total += len(heads)
                text = json.dumps(spec, sort_keys=True)
                if text not in self.tuned_patterns:
                    self.tuned_patterns[text] = candidates.pattern(spec)
                pattern = self.tuned_patterns[text]
                route = None if pattern is None else self.route_for(
                    self.plan_cache.get(pattern, grid, device, tile_size=self.config.tile_size), model_name)
                groups.append((tuple(heads), torch.tensor(heads, device=device), route))
            self.tuned_routes[key] = None if all(r is None for _, _, r in groups) else register_route(
                HeadGroupRoute(tuple(groups), heads_total, self.layer_names[layer]))
        return self.tuned_routes[key]

    def log_dense_once(self, layer: int) -> None:
        key = "layer" if layer < (self.config.dense_layers or 0) else "step"
        if key not in self.logged_dense:
            self.logged_dense.add(key)
            logger.info(
                "vidaccel: dense attention by configuration (%s warm-up: dense_layers=%s, dense_steps=%s)",
                key, self.config.dense_layers, self.config.dense_steps,
            )

    @property
    def paths(self) -> dict:
        """Sparse calls per attention path ("kernel", "reference", "dense" for a plan that attends every pair)
        and, under "reference_reason", why the kernel did not run."""
        counts, reason = path_counts(self.routes.values())
        return {**counts, "reference_reason": reason} if reason else counts

    @property
    def last_grid(self):
        return self.tracker.last_grid if self.tracker is not None else None


def install(model: torch.nn.Module, state: SparseAttentionState) -> None:
    """Route `model`'s self-attention and listen to its step tracker; on any failure, undo and re-raise."""
    def register(hooks: HookSet) -> None:
        named = state.adapter.self_attention(model)
        state.layer_names.extend(name for name, _ in named)
        if state.pattern is None:  # tuned: the profile must describe this model
            state.config.profile.model(state.attribute).check(model, len(named))
        feature = _USER if state.pattern is not None else "tuned_attention"
        state.attention_path, state.routed = install_path(hooks, model, state.adapter, named, feature)
        hooks.on_context(lambda module, args, kwargs, context: decide(state, module, args, kwargs, context))

    state.hooks = HookSet(model, state.adapter, _USER)
    state.tracker = state.hooks.install(register)


def uninstall(model: torch.nn.Module, state: SparseAttentionState) -> None:
    """Remove what `install` added, restoring modules and processors exactly."""
    state.hooks.remove()


__all__ = ["SparseAttentionState", "install", "uninstall", "check_context_parallel"]
