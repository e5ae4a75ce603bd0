"""Generate clips for the CLI: prompts in, frames out, with wall time, time per step and peak memory.

`generate`: one clip with per-step progress, through the pipeline or the callable a configuration
generates with (`config_files.applied`); out-of-memory becomes `OutOfMemory` with the options that
reduce memory. `read_prompts`: prompts from the command line and/or a file.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .loading import OutOfMemory


def read_prompts(prompts: list[str] | None, prompts_file: str | None) -> list[str]:
    """Prompts from the command line and/or a file (one per line; blank lines and '#' comments skipped)."""
    out = list(prompts or [])
    if prompts_file:
        path = Path(prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts-file {prompts_file!r} does not exist")
        out += [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not out:
        raise ValueError("no prompt given: pass one or more prompts, or --prompts-file FILE (one per line)")
    return out


@dataclass
class RunResult:
    frames: np.ndarray  # (T, H, W, 3) uint8
    wall_s: float
    step_s: float | None  # mean interval between step ends, steps 2..n (None with one step)
    peak_memory: dict
    steps_run: int = 0  # denoising steps that ended (every stage of an upscale entry)


class _PeakMemory:
    """CUDA: max allocated bytes during the run. CPU: peak resident set above the run's start, from the
    kernel's high-water mark (VmHWM, reset through /proc/self/clear_refs) - no sampling thread, which
    would slow a CPU run down; 'n/a' where /proc does not offer it."""

    def __init__(self, device: torch.device):
        self.device, self.result = device, {"kind": "n/a", "bytes": None}
        self._start = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")  # "5": reset the peak RSS to the current RSS
            self._start = self._status_kib("VmRSS")
        except OSError:
            self._start = None
        return self

    @staticmethod
    def _status_kib(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise OSError(f"{field} missing from /proc/self/status")

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.result = {"kind": "cuda_max_allocated", "bytes": int(torch.cuda.max_memory_allocated(self.device))}
        elif self._start is not None:
            peak = self._status_kib("VmHWM")
            self.result = {"kind": "cpu_peak_rss_delta", "bytes": max(0, peak - self._start) * 1024}
        return False


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def oom_message(device, height, width, num_frames, offload) -> str:
    size = f"{num_frames or 'default'} frames at {height or 'default'}x{width or 'default'}"
    hint = "a smaller --height/--width, fewer --frames"
    if offload == "none":
        hint += ", or --offload model (--offload sequential uses the least memory, slowest)"
    elif offload == "model":
        hint += ", or --offload sequential"
    return f"out of memory on {device} generating {size}: try {hint}"


def pipeline_default(pipe, name: str):
    """The default of ``pipe.__call__``'s argument `name` (None when it has none)."""
    p = inspect.signature(pipe.__call__).parameters.get(name)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def generate(pipe, prompt: str, seed: int, *, height=None, width=None, num_frames=None, steps=None,
             guidance_scale=None, negative_prompt=None, offload: str = "none", progress: bool | None = None,
             desc: str = "steps", runner=None) -> RunResult:
    """Generate one clip; timings cover the call (text encoding to decoded frames).

    ``None`` settings take the pipeline's defaults. The seed drives a CPU generator, so a seed
    gives the same initial noise on every device. ``progress`` None shows a per-step bar on a TTY.
    ``runner``: what to call instead of ``pipe`` with the same keywords (`config_files.applied`
    yields it: the FreeSwim wrapper for an upscale entry, whose steps of both stages are counted).
    """
    from tqdm.auto import tqdm

    device = pipe._execution_device
    kwargs = dict(prompt=prompt, output_type="np", generator=torch.Generator("cpu").manual_seed(seed))
    for key, value in (("height", height), ("width", width), ("num_frames", num_frames),
                       ("num_inference_steps", steps), ("guidance_scale", guidance_scale),
                       ("negative_prompt", negative_prompt)):
        if value is not None:
            kwargs[key] = value
    ends: list[float] = []
    bar = tqdm(total=steps, desc=desc, unit="step", leave=False, disable=None if progress is None else not progress)

    def on_step_end(_pipe, _i, _t, callback_kwargs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # step boundaries in wall time, not launch time
        ends.append(time.perf_counter())
        bar.update(1)
        return callback_kwargs

    try:
        with _PeakMemory(device) as mem, torch.inference_mode():
            start = time.perf_counter()
            frames = (runner or pipe)(**kwargs, callback_on_step_end=on_step_end).frames
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall = time.perf_counter() - start
    except BaseException as exc:
        if _is_oom(exc):
            if device.type == "cuda":
                torch.cuda.empty_cache()
            raise OutOfMemory(oom_message(device, height, width, num_frames, offload)) from exc
        raise
    finally:
        bar.close()
    from ..report.video import to_uint8

    step_s = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else None
    return RunResult(frames=to_uint8(frames), wall_s=wall, step_s=step_s, peak_memory=mem.result, steps_run=len(ends))


def load_for_measurement(args, action: str):
    """The pipeline and the call settings of `vidaccel profile` / `vidaccel tune` (the model's defaults where a
    flag is not given): ``(pipe, prompts, settings)``; prints what runs."""
    from . import loading

    prompts = read_prompts(args.prompts, args.prompts_file)
    loading.quiet_libraries()
    pipe, info = loading.load_pipeline(args.model, args.device, args.dtype, args.offload)
    defaults = loading.default_settings(args.model)
    settings = dict(height=args.height or defaults["height"], width=args.width or defaults["width"],
                    num_frames=args.frames or defaults["num_frames"],
                    num_inference_steps=args.steps or defaults["steps"] or 50,
                    guidance_scale=args.guidance if args.guidance is not None else defaults["guidance_scale"],
                    seed=args.seed)
    if args.negative_prompt:
        settings["negative_prompt"] = args.negative_prompt
    print(f"{action} {info['transformer']} ({info['model']}) on {info['device']} {info['dtype']} "
          f"with {len(prompts)} prompt(s)")
    return pipe, prompts, settings
