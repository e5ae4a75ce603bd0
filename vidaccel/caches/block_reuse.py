"""Profiled block feature reuse (ProfilingDiT, docs/methods.md section 4) as diffusers hooks.

Background blocks (from a `vidaccel.profile` profile, or given explicitly) are grouped into
*runs* of consecutive blocks. On a compute step every block runs and each run stores one delta
``out - in`` over the whole run (Delta-DiT style; joint-attention blocks store a delta for the
text stream too). On a reuse step foreground blocks run, and each background run returns
``in + delta`` without running; its later blocks pass their input through. Deltas are kept per
CFG branch (diffusers ``cache_context`` name via the shared step tracker), so conditional and
unconditional passes never mix, and are dropped at the end of every pipeline call. Under FreeSwim's dual
path they are kept per FreeSwim branch too (the tracker's ``path``): FreeSwim's block hooks wrap these and
run each branch through them.

Schedule: warm-up steps, then a compute step every ``interval`` steps (optionally decreasing,
`schedule.interval_at`). Adaptive mode measures, on every candidate reuse step, the drift of an
always-computed *probe* block's residual since the last compute step (relative L1) and computes
the step instead when it exceeds ``drift_threshold``; ``interval`` then bounds the gap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import torch

from ..core.adapters import ModelAdapter
from ..core.blocks import BlockIO
from ..core.context import StepContext, StepTracker
from ..core.hookset import HookSet
from ..core.nocopy import NotCopyable, VidaccelHook
from ..core.validate import flag, integer, number
from .profile_io import MAKE_ONE, Profile
from .schedule import scheduled_compute

logger = logging.getLogger(__name__)

REUSE_HOOK = "vidaccel_block_reuse"
FREESWIM_BRANCHES = frozenset({"window", "full"})  # the tracker's `path` inside FreeSwim's dual path
_USER = "block_reuse"


@dataclass(frozen=True)
class BlockReuseConfig:
    """Settings of `vidaccel.enable_block_reuse` (immutable, validated on construction).

    Args:
        profile: a `Profile` or the path of a profile JSON from `vidaccel profile`; its background
            blocks are reused. Required unless ``background_blocks`` is given.
        background_blocks: block indices to reuse, overriding the profile's classification.
        warmup_steps: the first steps always compute (default 6, as ProfilingDiT).
        interval: compute every `interval` steps after warm-up (default 6: 14 of 50 steps compute).
            ``1`` computes every step (output identical to no reuse). In adaptive mode the largest
            gap between compute steps (None: no bound).
        min_interval: with ``num_inference_steps``, the interval decreases linearly from
            ``interval`` to ``min_interval`` over the steps after warm-up (ProfilingDiT's formula).
        num_inference_steps: the pipeline's step count; needed for ``min_interval`` only.
        adaptive: recompute a scheduled reuse step when the probe block's residual drifted more than
            ``drift_threshold`` (relative L1) since the last compute step.
        probe_block: the always-computed block measured in adaptive mode (default 0); background
            blocks before and at it are computed.
        freeswim_branches: with FreeSwim's dual path running (`vidaccel.enable_freeswim`, enabled before or
            after), the branches whose background blocks are reused: ``"window"`` (every step's window
            branch) and ``"full"`` (the full branch on guide steps). Each branch keeps its own deltas and
            schedule per CFG pass; its steps count from the hi-res call's first step. Default both; calls
            outside the dual path reuse as without FreeSwim.
    """

    profile: object = None
    background_blocks: tuple | None = None
    warmup_steps: int = 6
    interval: int | None = 6
    min_interval: int | None = None
    num_inference_steps: int | None = None
    adaptive: bool = False
    drift_threshold: float = 0.1
    probe_block: int = 0
    freeswim_branches: tuple = ("window", "full")

    def __post_init__(self):
        if self.background_blocks is not None:
            blocks = self.background_blocks
            if isinstance(blocks, (str, bytes, dict)) or not hasattr(blocks, "__iter__"):
                raise ValueError(f"background_blocks must be a list of block indices, got {blocks!r}.")
            object.__setattr__(self, "background_blocks", tuple(
                integer(f"background_blocks[{i}]", b, minimum=0, hint=" (a block index)") for i, b in enumerate(blocks)))
        for name, minimum in (("warmup_steps", 0), ("interval", 1), ("min_interval", 1), ("num_inference_steps", 1),
                              ("probe_block", 0)):
            optional = name not in ("warmup_steps", "probe_block")
            object.__setattr__(self, name, integer(name, getattr(self, name), minimum=minimum, optional=optional))
        branches = self.freeswim_branches
        if isinstance(branches, str) or not hasattr(branches, "__iter__") or not set(branches) <= FREESWIM_BRANCHES:
            raise ValueError(f"freeswim_branches must be a tuple of {sorted(FREESWIM_BRANCHES)} (FreeSwim's branches "
                             f"whose blocks are reused), got {branches!r}; () reuses none of them.")
        object.__setattr__(self, "freeswim_branches", tuple(branches))
        flag("adaptive", self.adaptive)
        number("drift_threshold", self.drift_threshold)
        if self.interval is None and not self.adaptive:
            raise ValueError("interval=None (no bound) needs adaptive=True; set an interval such as 6.")
        if self.interval is not None and self.interval < 1:
            raise ValueError(f"interval must be >= 1, got {self.interval} (1 computes every step).")
        if self.min_interval is not None:
            if self.interval is None or not 1 <= self.min_interval <= self.interval:
                raise ValueError(
                    f"min_interval must be between 1 and interval ({self.interval}), got {self.min_interval}.")
            if self.num_inference_steps is None:
                raise ValueError(
                    "A decreasing interval (min_interval) needs num_inference_steps=<the pipeline's steps>.")
        if self.drift_threshold <= 0:
            raise ValueError(f"drift_threshold must be > 0, got {self.drift_threshold}.")


PRESETS = MappingProxyType({
    "profiled": BlockReuseConfig(),
    "adaptive": BlockReuseConfig(adaptive=True, interval=10, drift_threshold=0.1),
})


def resolve_config(config, profile=None) -> BlockReuseConfig:
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(
                f"Unknown block reuse preset {config!r}; choose one of {sorted(PRESETS)} or a BlockReuseConfig.")
        config = PRESETS[config]
    if not isinstance(config, BlockReuseConfig):
        raise TypeError(
            f"config must be a preset name {sorted(PRESETS)} or a BlockReuseConfig, not {type(config).__name__}.")
    if profile is not None:
        config = replace(config, profile=profile)
    if config.background_blocks is None and config.profile is None:
        raise ValueError(f"Profiled block reuse needs a profile of this model (or background_blocks=[...]). {MAKE_ONE}")
    if isinstance(config.profile, (str, bytes)) or hasattr(config.profile, "__fspath__"):
        config = replace(config, profile=Profile.load(config.profile))
    return config


def background_runs(background, names: list[str], first_allowed: int = 0, breaks=()) -> list[tuple[int, ...]]:
    """Consecutive background blocks as runs; a run never crosses block lists (e.g. double -> single blocks)
    nor a block in `breaks` (the model adds something after it, e.g. VACE's control hints)."""
    runs: list[list[int]] = []
    for i in sorted(set(background)):
        if i < first_allowed:
            continue
        prev = runs[-1][-1] if runs else None
        same_list = prev is not None and names[prev].rsplit(".", 1)[0] == names[i].rsplit(".", 1)[0]
        if prev == i - 1 and same_list and prev not in breaks:
            runs[-1].append(i)
        else:
            runs.append([i])
    return [tuple(r) for r in runs]


@dataclass
class _Branch:
    """Cache of one CFG branch."""

    deltas: dict = field(default_factory=dict)  # run -> (delta hidden, delta text or None)
    pending: dict = field(default_factory=dict)  # run -> run input on a compute call
    skipping: set = field(default_factory=set)  # runs that returned in + delta in this call
    context: StepContext | None = None  # the transformer call the decision below belongs to
    reuse: bool = False
    last_compute: int | None = None
    probe_ref: torch.Tensor | None = None


@dataclass
class BlockReuseState(NotCopyable):
    """Everything `enable_block_reuse` installs on one transformer."""

    owner = _USER

    config: BlockReuseConfig
    adapter: ModelAdapter
    runs: list
    block_names: list
    source: str = "background_blocks"
    profile_grid: tuple | None = None
    tracker: StepTracker | None = None
    branches: dict = field(default_factory=dict)
    hooks: HookSet | None = None
    # [computed, reused] transformer calls per FreeSwim branch (the tracker's ``path``; None outside the dual path)
    calls: dict = field(default_factory=dict)
    drift_recomputes: int = 0
    reused_block_calls: int = 0
    logged_grid: bool = False

    def reset(self) -> None:
        self.branches.clear()

    @property
    def reused_blocks(self) -> list[int]:
        return [i for run in self.runs for i in run]

    @property
    def computed_steps(self) -> int:
        return sum(n[0] for n in self.calls.values())

    @property
    def reused_steps(self) -> int:
        return sum(n[1] for n in self.calls.values())

    @property
    def path_calls(self) -> dict:
        """FreeSwim branch -> [computed, reused] transformer calls (empty without FreeSwim's dual path)."""
        return {path: n for path, n in self.calls.items() if path is not None}

    def call_context(self) -> StepContext | None:
        """The step context when this block call takes part in reuse: a tracked call without gradients, outside
        FreeSwim's branches or in one that `BlockReuseConfig.freeswim_branches` names; else None."""
        path = self.tracker.path
        if torch.is_grad_enabled() or not (path is None or path in self.config.freeswim_branches):
            return None
        return self.tracker.current

    def decide(self, context: StepContext) -> _Branch:
        """The cache of this call's CFG branch (and FreeSwim branch, the tracker's ``path``) with the call's
        decision, made once per transformer call and branch."""
        path = self.tracker.path
        b = self.branches.setdefault((context.branch, path), _Branch())
        if b.context is context:
            return b
        b.context, b.skipping = context, set()
        c, step = self.config, context.step
        if c.adaptive:
            fresh = b.last_compute is None or step <= c.warmup_steps or step <= b.last_compute
            compute = fresh or (c.interval is not None and step - b.last_compute >= c.interval)
        else:
            compute = scheduled_compute(step, b.last_compute, c.warmup_steps, c.interval, c.min_interval,
                                        c.num_inference_steps)
        b.reuse = not compute
        if compute:
            b.last_compute = step
        self.calls.setdefault(path, [0, 0])[0 if compute else 1] += 1
        self._log_grid_once(context.grid)
        return b

    def recompute(self, b: _Branch) -> None:
        """Adaptive mode: the probe drifted, so this call computes after all."""
        b.reuse, b.last_compute = False, b.context.step
        self.drift_recomputes += 1
        n = self.calls[self.tracker.path]  # the probe runs inside the branch it decides for
        n[0], n[1] = n[0] + 1, n[1] - 1

    def _log_grid_once(self, grid) -> None:
        if self.profile_grid is not None and not self.logged_grid and tuple(grid) != tuple(self.profile_grid):
            self.logged_grid = True
            logger.info("vidaccel block reuse: the profile was measured at grid %s, this run has grid %s; "
                        "the block classification is reused as is (profile again at this size to re-measure).",
                        tuple(self.profile_grid), tuple(grid))


def _fits(delta: torch.Tensor | None, x: torch.Tensor | None) -> bool:
    if delta is None or x is None:
        return delta is None and x is None
    return delta.shape == x.shape and delta.device == x.device and delta.dtype == x.dtype


class RunHook(VidaccelHook):
    """``new_forward`` on each block of a background run."""

    _is_stateful = True  # diffusers resets it at the end of every pipeline call

    def __init__(self, state: BlockReuseState, run: int, first: bool, last: bool, io: BlockIO):
        super().__init__()
        self.state, self.run, self.first, self.last, self.io = state, run, first, last, io

    def new_forward(self, module, *args, **kwargs):
        original = self.fn_ref.original_forward
        context = self.state.call_context()
        if context is None:
            return original(*args, **kwargs)
        b = self.state.decide(context)
        hs, ehs = self.io.inputs(args, kwargs)
        if self.first:
            cached = b.deltas.get(self.run) if b.reuse else None
            if cached is not None and _fits(cached[0], hs) and _fits(cached[1], ehs):
                b.skipping.add(self.run)
                self.state.reused_block_calls += len(self.state.runs[self.run])
                return self.io.build(hs + cached[0], None if ehs is None else ehs + cached[1])
            b.pending[self.run] = (hs, ehs)
        elif self.run in b.skipping:
            return self.io.build(hs, ehs)  # the run's first block already added the delta over the whole run
        output = original(*args, **kwargs)
        if self.last and self.run in b.pending:
            in_hs, in_ehs = b.pending.pop(self.run)
            out_hs, out_ehs = self.io.outputs(output)
            b.deltas[self.run] = (out_hs - in_hs, None if in_ehs is None else out_ehs - in_ehs)
        return output

    def reset_state(self, module):
        self.state.reset()
        return module


class ProbeHook(VidaccelHook):
    """Adaptive mode: ``new_forward`` on the always-computed probe block; measures residual drift."""

    def __init__(self, state: BlockReuseState, io: BlockIO):
        super().__init__()
        self.state, self.io = state, io

    def new_forward(self, module, *args, **kwargs):
        output = self.fn_ref.original_forward(*args, **kwargs)
        context = self.state.call_context()
        if context is None:
            return output
        b = self.state.decide(context)
        residual = self.io.outputs(output)[0] - self.io.inputs(args, kwargs)[0]
        if b.reuse and (b.probe_ref is None or not _fits(b.probe_ref, residual)
                        or self._drift(residual, b.probe_ref) > self.state.config.drift_threshold):
            self.state.recompute(b)
        if not b.reuse:
            b.probe_ref = residual
        return output

    @staticmethod
    @torch.compiler.disable
    def _drift(residual: torch.Tensor, ref: torch.Tensor) -> float:
        ref = ref.float()
        return float((residual.float() - ref).abs().mean() / ref.abs().mean().clamp_min(1e-12))


def install(model: torch.nn.Module, state: BlockReuseState) -> None:
    """Register the run hooks (and the probe); on failure remove what was added and re-raise."""
    blocks = [m for _, m in state.adapter.blocks(model)]

    def register(hooks: HookSet) -> None:
        if state.config.adaptive:
            probe = blocks[state.config.probe_block]
            hooks.add(probe, ProbeHook(state, BlockIO(probe, state.adapter.block_io)), REUSE_HOOK)
        for r, run in enumerate(state.runs):
            for pos, i in enumerate(run):
                hook = RunHook(state, r, first=pos == 0, last=pos == len(run) - 1, io=BlockIO(blocks[i], state.adapter.block_io))
                hooks.add(blocks[i], hook, REUSE_HOOK)

    state.hooks = HookSet(model, state.adapter, _USER)
    state.tracker = state.hooks.install(register)


def uninstall(model: torch.nn.Module, state: BlockReuseState) -> None:
    """Remove exactly what `install` added and drop the cached deltas."""
    state.hooks.remove()
    state.reset()
