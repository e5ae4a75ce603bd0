"""Block profiler: run a pipeline on a few prompts and measure, per block and step, what block reuse needs.

Recorded per transformer, block, denoising step (and CFG branch, averaged in the result):

* **residual change**: relative L1 change of the block's residual ``out - in`` from the previous
  step, ``mean|r_s - r_{s-1}| / mean|r_{s-1}|`` (how stale a reused delta gets);
* **received attention** ``a_j = mean_i A_ij`` of the block's self-attention, estimated from
  `query_rows` sampled video query rows (one head at a time; an ``n x N`` slice, never ``N x N``),
  taken inside the module's own SDPA call by a scoped `TorchFunctionMode` (no processor code is
  copied); its normalised entropy is recorded;
* **foreground ratio** ``R`` (ProfilingDiT): of the top-``|fg|`` received-attention tokens of each
  frame, the fraction inside the foreground (`foreground.foreground_ratio`), with the foreground
  estimated from the model's own late-step predictions (`foreground.foreground_mask`).

Blocks with mean ``R >= tau`` are foreground blocks, the rest background (`profile_io`).
Profiling runs the model exactly as it is (outputs unchanged); sparse attention and approximate
caches must be off so that the statistics describe the dense model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from ..core.adapters import ModelAdapter
from ..core.blocks import BlockIO
from ..core.context import StepTracker
from ..core.features import PROFILER
from ..core.hookset import HookSet
from ..core.measure_runs import (file_stamp, generate_installed, measured_transformers, measurement_call, prompt_list,
                                 run_record)
from ..core.models import config_hash
from ..core.nocopy import VidaccelHook
from ..core.sampled_attention import attention_rows
from ..core.sdpa_swap import ObserveSDPAHook
from ..core.validate import output_file, save_or_keep
from ..version import __version__
from .foreground import foreground_mask, foreground_ratio, prediction_tokens
from .profile_io import BlockStats, ModelProfile, Profile, choose_tau, classify

logger = logging.getLogger(__name__)

PROFILE_HOOK = "vidaccel_profiler"
_USER = "profiler"


@torch.no_grad()
def received_attention(query, key, rows: torch.Tensor, *, attn_mask=None, scale=None) -> torch.Tensor:
    """Mean attention each key receives from the query rows `rows`, averaged over heads: ``(B, S_k)``.

    Layout ``(B, heads, S, D)``; computes one head at a time, so memory is ``B x len(rows) x S_k``.
    """
    heads = query.shape[1]
    total = sum(attention_rows(query, key, rows, h, attn_mask=attn_mask, scale=scale).mean(1) for h in range(heads))
    return total / heads


def normalized_entropy(received: torch.Tensor) -> float:
    """Entropy of the received-attention distribution, divided by log N (1 = uniform), mean over clips."""
    p = received.float() / received.float().sum(-1, keepdim=True).clamp_min(1e-30)
    h = -(p * p.clamp_min(1e-30).log()).sum(-1) / math.log(max(p.shape[-1], 2))
    return float(h.mean())


@dataclass
class _Record:
    """What the profiler collects on one transformer."""

    attribute: str
    model: torch.nn.Module
    adapter: ModelAdapter
    block_names: list
    query_rows: int
    fg_start: int
    fg_method: str
    tracker: StepTracker | None = None
    hooks: HookSet | None = None
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    # per generation
    residual_prev: dict = field(default_factory=dict)  # (block, branch) -> (step, residual)
    received: dict = field(default_factory=dict)  # (block, step, branch) -> (B, N) on CPU
    pred_sum: torch.Tensor | None = None
    pred_count: int = 0
    grid: tuple | None = None
    # over all generations: (block, step) -> [values]
    residual_change: dict = field(default_factory=dict)
    R: dict = field(default_factory=dict)
    entropy: dict = field(default_factory=dict)
    steps: int = 0

    def add(self, table: dict, key, value: float) -> None:
        table.setdefault(key, []).append(value)

    def finish_generation(self, fg: torch.Tensor, grid) -> None:
        """R for every attention map recorded in this generation, given its foreground mask."""
        for (block, step, _), a in self.received.items():
            self.add(self.R, (block, step), foreground_ratio(a, fg, grid))
            self.add(self.entropy, (block, step), normalized_entropy(a))
        self.residual_prev.clear()
        self.received.clear()
        self.pred_sum, self.pred_count = None, 0


def _generation_foreground(records: list) -> tuple[torch.Tensor, tuple]:
    """One foreground mask per generation from the later-step predictions of every transformer (Wan2.2 has two)."""
    done = [r for r in records if r.pred_sum is not None]
    if not done:
        raise RuntimeError(
            f"The profiler saw no prediction after step {records[0].fg_start}; run more inference steps "
            f"(the foreground is estimated from the later half of the steps)."
        )
    mean = sum(r.pred_sum for r in done) / sum(r.pred_count for r in done)
    fg = foreground_mask(mean, done[0].grid, done[0].fg_method).cpu()
    return fg, done[0].grid


class _ResidualHook(VidaccelHook):
    """Block: relative L1 change of the residual from the previous step of the same CFG branch."""

    def __init__(self, record: _Record, index: int, io: BlockIO):
        super().__init__()
        self.record, self.index, self.io = record, index, io

    def new_forward(self, module, *args, **kwargs):
        output = self.fn_ref.original_forward(*args, **kwargs)
        rec, context = self.record, self.record.tracker.current
        residual = (self.io.outputs(output)[0] - self.io.inputs(args, kwargs)[0]).detach()
        key = (self.index, context.branch)
        prev = rec.residual_prev.get(key)
        if prev is not None and prev[0] == context.step - 1 and prev[1].shape == residual.shape:
            ref = prev[1].float()
            change = (residual.float() - ref).abs().mean() / ref.abs().mean().clamp_min(1e-12)
            rec.add(rec.residual_change, (self.index, context.step), float(change))
        rec.residual_prev[key] = (context.step, residual)
        rec.steps, rec.grid = max(rec.steps, context.step + 1), context.grid
        return output


class _AttentionHook(ObserveSDPAHook):
    """Self-attention module: received attention from sampled query rows, inside its own SDPA call."""

    def __init__(self, record: _Record, index: int):
        super().__init__()
        self.record, self.index = record, index

    def where(self) -> str:
        return f"{self.record.block_names[self.index]}'s self-attention"

    def observe(self, query, key, value=None, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
        rec, context = self.record, self.record.tracker.current
        slot = (self.index, context.step, context.branch)
        if slot in rec.received:
            return  # one self-attention call per block and step
        n = math.prod(context.grid)
        text_len = query.shape[-2] - n
        prefix = text_len if rec.adapter.text_position == "prefix" else 0
        rows = torch.randperm(n, generator=rec.generator)[: rec.query_rows] + prefix
        a = received_attention(query, key, rows, attn_mask=attn_mask, scale=scale)
        keys_text = key.shape[-2] - n
        a = a[:, keys_text:] if rec.adapter.text_position == "prefix" else a[:, :n]
        rec.received[slot] = a.to("cpu", torch.float16)


class _PredictionHook(VidaccelHook):
    """Transformer: accumulate the (non-uncond) prediction of the later steps for the foreground estimate."""

    def __init__(self, record: _Record):
        super().__init__()
        self.record = record

    def post_forward(self, module, output):
        rec, context = self.record, self.record.tracker.current
        if context is not None and context.branch != "uncond" and context.step >= rec.fg_start:
            prediction = output if isinstance(output, torch.Tensor) else output[0]  # Kandinsky 5 returns a tensor
            tokens = prediction_tokens(prediction.detach(), rec.adapter.prediction_layout, context.grid)
            rec.grid = context.grid
            if rec.pred_sum is not None and rec.pred_sum.shape != tokens.shape:
                raise RuntimeError(
                    "The prediction shape changed within one generation; profile one resolution at a time.")
            rec.pred_sum = tokens if rec.pred_sum is None else rec.pred_sum + tokens
            rec.pred_count += 1
        return output


def _install(rec: _Record) -> None:
    model = rec.model

    def register(hooks: HookSet) -> None:
        hooks.add(model, _PredictionHook(rec), PROFILE_HOOK)
        for i, (name, attn) in enumerate(rec.adapter.block_attention_modules(model)):
            block = model.get_submodule(name)
            hooks.add(block, _ResidualHook(rec, i, BlockIO(block, rec.adapter.block_io)), PROFILE_HOOK)
            hooks.add(attn, _AttentionHook(rec, i), PROFILE_HOOK)

    rec.hooks = HookSet(model, rec.adapter, _USER)
    rec.tracker = rec.hooks.install(register)


def _per_step(table: dict, block: int, steps: int) -> list[float]:
    out = []
    for s in range(steps):
        values = [v for v in table.get((block, s), []) if not math.isnan(v)]
        out.append(sum(values) / len(values) if values else float("nan"))
    return out


def _nanmean(values) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


@torch.no_grad()
def profile(pipe, prompts, *, height: int | None = None, width: int | None = None, num_frames: int | None = None,
            num_inference_steps: int = 50, guidance_scale: float | None = None, seed: int = 0,
            query_rows: int = 256, foreground: str = "pca", tau="otsu", path=None, **pipe_kwargs) -> Profile:
    """Profile a diffusers video pipeline's transformer blocks for `vidaccel.enable_block_reuse`.

    Args:
        pipe: a pipeline with ``transformer`` (and ``transformer_2``) of a supported family.
        prompts: one prompt or a few (ProfilingDiT used one or two); each is generated once with
            seed ``seed + i``, latents only (no VAE decode).
        height, width, num_frames, num_inference_steps, guidance_scale: passed to the pipeline
            (None keeps the pipeline's default). Profile at the settings you will generate with.
        query_rows: sampled video query rows per self-attention call for received attention.
        foreground: ``"pca"`` or ``"motion"`` (see `vidaccel.caches.foreground`).
        tau: a number, ``"otsu"`` (default: the two-class split of the blocks' mean R), ``"median"``, or
            ``"background:F"``: the fraction F of blocks with the lowest R become background (a speed budget).
        path: also write the profile JSON there.
        pipe_kwargs: more pipeline arguments (e.g. ``negative_prompt``).

    Returns the `Profile`; the pipeline is left exactly as it was.
    """
    prompts = prompt_list(prompts)
    if query_rows < 1:
        raise ValueError(f"query_rows must be >= 1, got {query_rows}.")
    if foreground not in ("pca", "motion"):
        raise ValueError(f"foreground must be 'pca' or 'motion', not {foreground!r}.")
    choose_tau([0.0], tau)  # validate before running anything
    if path is not None:
        output_file(path, "path")
    records = [_Record(attribute, model, adapter, names, query_rows, num_inference_steps // 2, foreground)
               for attribute, model, adapter, names in measured_transformers(pipe, PROFILER)]
    call = measurement_call(num_inference_steps, pipe_kwargs, height=height, width=width, num_frames=num_frames,
                            guidance_scale=guidance_scale)
    fg_fractions = []

    def finish(_):
        fg, grid = _generation_foreground(records)
        fg_fractions.append(float(fg.float().mean()))
        for rec in records:
            rec.finish_generation(fg, grid)

    generate_installed(records, _install, pipe, prompts, call, seed, finish)
    return _build(records, prompts, call, seed, tau, path, fg_fractions)


def _build(records, prompts, call, seed, tau, path, fg_fractions) -> Profile:
    models, all_R = [], []
    steps = max(rec.steps for rec in records)  # per-step lists span the pipeline's steps (Wan2.2 splits them)
    for rec in records:
        blocks = []
        for i, name in enumerate(rec.block_names):
            r_steps = _per_step(rec.R, i, steps)
            blocks.append(BlockStats(i, name, "foreground", _nanmean(r_steps), r_steps,
                                     _per_step(rec.residual_change, i, steps), _per_step(rec.entropy, i, steps)))
        all_R += [b.R for b in blocks]
        models.append(ModelProfile(rec.attribute, type(rec.model).__name__, config_hash(rec.model),
                                   len(rec.block_names), list(rec.grid) if rec.grid else None, blocks))
    tau_info = choose_tau(all_R, tau)
    for m in models:
        for b in m.blocks:
            b.kind = classify(b.R, tau_info["value"])
    run = {**run_record(call, prompts, seed), "query_rows": records[0].query_rows}
    fg = {"method": records[0].fg_method, "from_step": records[0].fg_start,
          "fraction": _nanmean(fg_fractions),
          "detail": "per-token score from the mean prediction of the later half of the steps (cond branch), "
                    "3x3 spatial smoothing, Otsu threshold; see vidaccel.caches.foreground"}
    profile = Profile(run=run, foreground=fg, tau=tau_info, models=models, **file_stamp(__version__))
    if path is not None:
        save_or_keep(profile.save, path)
    return profile
