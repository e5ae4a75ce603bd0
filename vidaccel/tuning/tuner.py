"""`vidaccel.tune`: measure each candidate pattern's recall per layer and head, choose under a budget.

The pipeline runs a few prompts unchanged (latents only). In every self-attention call of a measured
step, `query_rows` video query rows (drawn once per grid, the same for every layer) are scored densely
inside the module's own SDPA call, one head at a time, and each candidate's kept softmax mass is summed
(`recall.kept_mass`). Each candidate's cost is the share of dense attention work its plan visits at the
grid (`Plan.block_density`: the blocks the kernel runs, partial ones included). The choice per unit (a
head of a layer, or a whole layer) follows `choose`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import torch

from ..core.adapters import ModelAdapter
from ..core.features import PROFILER
from ..core.hookset import HookSet
from ..core.measure_runs import (file_stamp, generate_installed, measured_transformers, measurement_call, prompt_list,
                                 run_record)
from ..core.models import config_hash
from ..core.sdpa_swap import ObserveSDPAHook
from ..core.validate import integer, number, output_file, save_or_keep
from ..sparse import candidates as cand
from ..sparse.plan import build_plan
from ..sparse.tuned import LayerTuning, ModelTuning, SparsityProfile
from ..version import __version__
from . import choose
from .recall import candidate_masks, kept_mass

TUNE_HOOK = "vidaccel_tune"
_USER = "tune"


@dataclass
class _Record:
    """What `tune` collects on one transformer."""

    attribute: str
    model: torch.nn.Module
    adapter: ModelAdapter
    layer_names: list
    specs: list | None
    query_rows: int
    steps: set | None
    dense_steps: int
    hooks: HookSet | None = None
    tracker: object = None
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    grid: tuple | None = None
    rows: torch.Tensor | None = None  # video query rows, raster order
    masks: dict = field(default_factory=dict)  # device -> (C, rows, N)
    mass: dict = field(default_factory=dict)  # layer -> float64 (C, heads)
    samples: dict = field(default_factory=dict)  # layer -> rows scored (per head)
    measured_steps: set = field(default_factory=set)
    heads: int | None = None

    def wants(self, step: int) -> bool:
        return step >= self.dense_steps and (self.steps is None or step in self.steps)

    def rows_for(self, grid) -> torch.Tensor:
        if self.grid is None:
            self.grid = tuple(grid)
            n = math.prod(grid)
            self.rows = torch.randperm(n, generator=self.generator)[: self.query_rows].sort().values
            if self.specs is None:  # the default candidates depend on the grid, known at the first call
                self.specs = cand.default_candidates(self.grid)
        elif tuple(grid) != self.grid:
            raise ValueError(f"vidaccel.tune saw token grid {tuple(grid)} after {self.grid}: tune one resolution "
                             f"at a time (the same height, width and num_frames for every prompt).")
        return self.rows

    def masks_for(self, device) -> torch.Tensor:
        if device not in self.masks:
            self.masks[device] = candidate_masks([cand.pattern(s) for s in self.specs], self.grid, self.rows, device)
        return self.masks[device]


class _RecallHook(ObserveSDPAHook):
    """Self-attention module: candidates' kept softmax mass per head, inside its own SDPA call."""

    def __init__(self, record: _Record, index: int):
        super().__init__()
        self.record, self.index = record, index

    def before_call(self, module) -> None:
        parallel = getattr(getattr(module, "processor", None), "_parallel_config", None)
        if parallel is not None and parallel.context_parallel_config is not None:
            raise RuntimeError("vidaccel.tune measures whole sequences on one process: run it without context "
                               "parallelism (the profile it writes then works with it).")

    def where(self) -> str:
        return f"{self.record.layer_names[self.index]}'s self-attention"

    def observe(self, query, key, value=None, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
        rec, context = self.record, self.record.tracker.current
        if context is None or not rec.wants(context.step):
            return
        rows = rec.rows_for(context.grid)
        n = math.prod(context.grid)
        text = query.shape[-2] - n
        offset = text if rec.adapter.text_position == "prefix" else 0
        video = slice(offset, offset + n)
        mass = kept_mass(query, key, rows + offset, video, rec.masks_for(query.device), attn_mask=attn_mask,
                         scale=scale)
        rec.heads = query.shape[1]
        rec.mass[self.index] = rec.mass.get(self.index, 0) + mass
        rec.samples[self.index] = rec.samples.get(self.index, 0) + query.shape[0] * len(rows)
        rec.measured_steps.add(context.step)


def _install(rec: _Record) -> None:
    def register(hooks: HookSet) -> None:
        for i, (_, attn) in enumerate(rec.adapter.block_attention_modules(rec.model)):
            hooks.add(attn, _RecallHook(rec, i), TUNE_HOOK)

    rec.hooks = HookSet(rec.model, rec.adapter, _USER)
    rec.tracker = rec.hooks.install(register)


def candidate_costs(specs: list, grid, tile_size="auto") -> list[dict]:
    """``[{"name", "spec", "cost", "density"}]``: the share of dense work each plan visits, and its exact density."""
    out = []
    for spec in specs:
        p = cand.pattern(spec)
        if p is None:
            cost = density = 1.0
        else:
            cost, density = build_plan(p, tuple(grid), tile_size=tile_size).block_density(), p.density(tuple(grid))
        out.append({"name": cand.name(spec), "spec": spec, "cost": float(cost), "density": float(density)})
    return out


@torch.no_grad()
def tune(pipe, prompts, *, recall: float | None = None, speedup: float | None = None, candidates=None,
         granularity: str = "head", dense_steps: int = 0, steps=None, query_rows: int = 64,
         height: int | None = None, width: int | None = None, num_frames: int | None = None,
         num_inference_steps: int = 50, guidance_scale: float | None = None, seed: int = 0, path=None,
         **pipe_kwargs) -> SparsityProfile:
    """Measure per-layer (and per-head) attention recall of candidate patterns and choose under a budget.

    Args:
        pipe: a diffusers video pipeline of a supported family (``transformer``, and ``transformer_2``).
        prompts: one prompt or a few, generated once each with seed ``seed + i`` (latents only).
        recall: the budget as a recall target: per unit the cheapest candidate keeping at least this share
            of dense softmax mass (default 0.95 when neither budget is given).
        speedup: the budget as an attention speed-up: the choice of most recall whose mean cost is at most
            ``1 / speedup`` of dense attention (cost = the plan's visited blocks). Give one of the two.
        candidates: specs to measure (see `vidaccel.sparse.candidates`); default `default_candidates(grid)`
            at the grid of the first call, dense always added.
        granularity: ``"head"`` (default: every head of every layer chooses) or ``"layer"``.
        dense_steps: the warm-up the tuned config will run dense: steps before it are not measured, and
            the profile records it.
        steps: the step indices to measure (default: every step from ``dense_steps`` on).
        query_rows: video query rows scored per call (the same rows for every layer and step).
        height, width, num_frames, num_inference_steps, guidance_scale: the pipeline call (None keeps its
            default). Tune at the settings you will generate with; other grids scale the windows.
        path: also write the profile JSON there.
        pipe_kwargs: more pipeline arguments.

    Returns the `SparsityProfile`; the pipeline is left exactly as it was.
    """
    prompts = prompt_list(prompts)
    if recall is not None and speedup is not None:
        raise ValueError("Give one budget: recall=<target, e.g. 0.95> or speedup=<attention speed-up, e.g. 3>.")
    if recall is None and speedup is None:
        recall = 0.95
    budget = ({"recall": number("recall", recall, minimum=0.0, maximum=1.0)} if recall is not None
              else {"speedup": number("speedup", speedup, minimum=1.0)})
    if granularity not in ("head", "layer"):
        raise ValueError(f"granularity must be 'head' or 'layer', not {granularity!r}.")
    integer("dense_steps", dense_steps, minimum=0)
    integer("query_rows", query_rows, minimum=1)
    step_set = None if steps is None else {integer("steps", s, minimum=0) for s in steps}
    specs = None if candidates is None else [cand.check_spec(s, f"candidates[{i}]") for i, s in enumerate(candidates)]
    if specs is not None and {"kind": "dense"} not in specs:
        specs = [*specs, {"kind": "dense"}]
    if path is not None:
        output_file(path, "path")
    records = [_Record(attribute, model, adapter, names, specs, query_rows, step_set, dense_steps)
               for attribute, model, adapter, names in measured_transformers(pipe, PROFILER)]
    call = measurement_call(num_inference_steps, pipe_kwargs, height=height, width=width, num_frames=num_frames,
                            guidance_scale=guidance_scale)
    generate_installed(records, _install, pipe, prompts, call, seed)
    return _build(records, budget, granularity, dense_steps, call, prompts, seed, path)


def _build(records, budget, granularity, dense_steps, call, prompts, seed, path) -> SparsityProfile:
    models, costs_at = [], {}  # (grid, specs) -> candidate costs: Wan2.2's two transformers share them
    for rec in records:
        if not rec.mass:
            raise RuntimeError(f"vidaccel.tune measured no step on pipe.{rec.attribute}: steps "
                               f"{sorted(rec.steps) if rec.steps else 'all'} from dense_steps={dense_steps} on did not "
                               f"occur in {call['num_inference_steps']} steps. Measure steps that run.")
        at = (tuple(rec.grid), json.dumps(rec.specs))
        costs = costs_at[at] = costs_at.get(at) or candidate_costs(rec.specs, rec.grid)
        names = [c["name"] for c in costs]
        cost = torch.tensor([c["cost"] for c in costs], dtype=torch.float64)
        dense = names.index("dense")
        layers = sorted(rec.mass)
        if len(layers) != len(rec.layer_names):
            missing = [rec.layer_names[i] for i in range(len(rec.layer_names)) if i not in rec.mass]
            raise RuntimeError(f"vidaccel.tune saw no self-attention call in {missing} of pipe.{rec.attribute}.")
        per_head = torch.stack([rec.mass[i] / rec.samples[i] for i in layers])  # (L, C, heads)
        per_head[:, dense] = 1.0  # exact by definition (the sum of a softmax row)
        units = per_head.mean(2) if granularity == "layer" else per_head.permute(0, 2, 1).reshape(-1, len(names))
        pick = (choose.by_recall(units, cost, budget["recall"], dense) if "recall" in budget
                else choose.by_speedup(units, cost, budget["speedup"]))
        heads = rec.heads
        choice = [[pick[li]] * heads for li in range(len(layers))] if granularity == "layer" else \
            [pick[li * heads:(li + 1) * heads] for li in range(len(layers))]
        layer_rows, chosen_recall, chosen_cost = [], [], []
        for li, index in enumerate(layers):
            layer_rows.append(LayerTuning(index, rec.layer_names[index], [names[c] for c in choice[li]],
                                          {name: [round(float(v), 6) for v in per_head[li, ci]]
                                           for ci, name in enumerate(names)}))
            chosen_recall += [float(per_head[li, c, h]) for h, c in enumerate(choice[li])]
            chosen_cost += [float(cost[c]) for c in choice[li]]
        models.append(ModelTuning(rec.attribute, type(rec.model).__name__, config_hash(rec.model),
                                  len(rec.layer_names), heads, list(rec.grid),
                                  sum(chosen_recall) / len(chosen_recall), sum(chosen_cost) / len(chosen_cost),
                                  layer_rows))
    run = {**run_record(call, prompts, seed), "query_rows": records[0].query_rows,
           "measured_steps": sorted(set().union(*(r.measured_steps for r in records)))}
    profile = SparsityProfile(run=run, budget=budget, granularity=granularity, dense_steps=dense_steps,
                              candidates=next(iter(costs_at.values())), models=models, **file_stamp(__version__))
    if path is not None:
        save_or_keep(profile.save, path)
    return profile
