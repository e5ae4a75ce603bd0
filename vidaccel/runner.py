"""What the CLI commands share: load a pipeline, build acceleration configs, generate with timing.

- `resolve_model` / `load_pipeline`: a local folder saved with ``save_pretrained`` or a Hub id, on
  ``device`` in ``dtype``, optionally with diffusers' CPU offload; the shipped tiny model when no
  model is given. Unsupported pipelines, missing paths and failed loads raise with the fix.
- `parse_accel`: a preset name or a YAML/JSON config file -> `NamedConfig` objects; file errors
  name the key.
- `generate`: one clip with per-step progress, wall time, time per step and peak memory;
  out-of-memory becomes `OutOfMemory` with the options that reduce memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
OFFLOAD = ("none", "model", "sequential")
BASELINE = "baseline"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class OutOfMemory(RuntimeError):
    """Generation ran out of memory; the message lists what to reduce."""


# ----------------------------------------------------------------------------------------- model


def resolve_model(model: str | None) -> tuple[str, bool]:
    """``(location, is_local)`` for ``--model``; None -> the shipped tiny model when installed."""
    if model is None:
        from .tiny import tiny_model_path

        try:
            return str(tiny_model_path()), True
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"no --model given and the shipped tiny model is not available ({exc}). Pass "
                "--model PATH (a folder saved with save_pretrained) or a Hub id such as "
                "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
            ) from None
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ValueError(
                f"--model {model!r} is not a diffusers pipeline folder (no model_index.json): pass the folder "
                f"written by pipe.save_pretrained(...) or a Hub id"
            )
        return str(path), True
    if _HUB_ID.match(model) and not model.startswith((".", "~")):
        return model, False
    raise FileNotFoundError(f"--model {model!r} does not exist: pass an existing pipeline folder or a Hub id "
                            f"(owner/name)")


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a torch device: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} was asked for but CUDA is not available: use --device cpu")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} is unknown: use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_pipeline(model: str | None, device: str = "auto", dtype: str = "auto", offload: str = "none"):
    """Load a supported diffusers video pipeline; returns ``(pipe, info)``.

    Args:
        model: folder or Hub id; None = the shipped tiny model (`vidaccel.tiny`).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``.
        dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU), ``float32``, ``float16``, ``bfloat16``.
        offload: ``none``; ``model`` = ``enable_model_cpu_offload`` (whole components move to the GPU
            when used); ``sequential`` = ``enable_sequential_cpu_offload`` (least memory, slowest).
    """
    from diffusers import DiffusionPipeline

    from .adapters import ADAPTERS

    if offload not in OFFLOAD:
        raise ValueError(f"--offload {offload!r} is unknown: use one of {', '.join(OFFLOAD)}")
    location, local = resolve_model(model)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if offload != "none" and dev.type != "cuda":
        raise ValueError(f"--offload {offload} moves weights between CPU and a GPU: it needs --device cuda")
    try:
        pipe = DiffusionPipeline.from_pretrained(location, dtype=torch_dtype, local_files_only=local)
    except Exception as exc:  # diffusers raises many types here; the cause stays chained for --debug
        where = "folder" if local else "Hub id (check the id, your network or HF_HUB_OFFLINE)"
        raise ValueError(f"could not load a diffusers pipeline from {where} {location!r}: {exc}") from exc
    transformer = getattr(pipe, "transformer", None)
    if transformer is None or type(transformer).__name__ not in ADAPTERS:
        found = type(transformer).__name__ if transformer is not None else "no transformer"
        raise ValueError(
            f"{location!r} is a {type(pipe).__name__} with {found}; vidaccel supports video pipelines whose "
            f"transformer is one of {', '.join(sorted(ADAPTERS))} (e.g. WanPipeline, HunyuanVideoPipeline, "
            f"CogVideoXPipeline, LTXPipeline)"
        )
    pipe.set_progress_bar_config(disable=True)  # our own bars report steps
    if offload == "model":
        pipe.enable_model_cpu_offload(device=dev)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=dev)
    else:
        pipe.to(dev)
    info = {"model": location, "pipeline": type(pipe).__name__, "transformer": type(transformer).__name__,
            "device": str(dev), "dtype": str(torch_dtype).removeprefix("torch."), "offload": offload,
            "tiny_model": model is None}
    return pipe, info


def default_settings(model: str | None) -> dict:
    """Generation defaults: the tiny model's training settings (no --model, or --model naming its
    folder), else None (= the pipeline's defaults)."""
    from . import tiny

    if model is not None:
        try:
            is_tiny = Path(model).expanduser().resolve() == tiny.tiny_model_path().resolve()
        except FileNotFoundError:
            is_tiny = False
        model = None if is_tiny else model
    if model is None:
        return dict(height=tiny.HEIGHT, width=tiny.WIDTH, num_frames=tiny.NUM_FRAMES, steps=tiny.NUM_STEPS,
                    guidance_scale=tiny.GUIDANCE_SCALE)
    return dict(height=None, width=None, num_frames=None, steps=None, guidance_scale=None)


# --------------------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class NamedConfig:
    """A labelled configuration: sparse attention (``config``) and/or vidaccel's caches.

    ``config`` None and no cache is the dense baseline. ``kv_cache`` holds `enable_kv_cache`
    keyword arguments, ``block_reuse`` a resolved `BlockReuseConfig` (None: not enabled).
    """

    name: str
    config: object | None
    source: str
    kv_cache: dict | None = None
    block_reuse: object | None = None
    profile_path: str | None = None  # where block_reuse's profile came from, for the report

    @property
    def is_baseline(self) -> bool:
        return self.config is None and self.kv_cache is None and self.block_reuse is None

    def describe(self) -> dict:
        out = {"name": self.name, "type": "dense" if self.config is None else type(self.config).__name__,
               "source": self.source}
        if self.config is not None:
            out.update(_fields(self.config))
        if self.kv_cache is not None:
            out["kv_cache"] = dict(self.kv_cache)
        if self.block_reuse is not None:
            out["block_reuse"] = {**_fields(self.block_reuse), "profile": self.profile_path}
        return out


def _fields(obj) -> dict:
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k != "profile"}


def _presets() -> dict:
    from .config import PRESETS

    return PRESETS


def _preset_list() -> str:
    return ", ".join(sorted(_presets()))


def parse_accel(spec: str) -> list[NamedConfig]:
    """``--accel`` value: a preset name, or a ``.yaml``/``.yml``/``.json`` file (one config or ``configs:``)."""
    presets = _presets()
    if spec in presets:
        return [NamedConfig(spec, presets[spec](), f"preset {spec}")]
    if spec.lower().endswith((".yaml", ".yml", ".json")) or os.path.sep in spec:
        return load_config_file(spec)
    raise ValueError(f"unknown preset {spec!r}: available presets are {_preset_list()}; or pass a .yaml/.json "
                     f"config file")


def load_config_file(path) -> list[NamedConfig]:
    """Read a YAML/JSON file holding one configuration mapping or ``configs: [mapping, ...]``.

    A mapping has ``type`` (a preset name: its config class), optional ``name`` and the config
    class's fields, e.g. ``{type: radial, decay_factor: 0.2, dense_steps: 2}`` or
    ``{type: window, kernel: [3, 5, 5]}``. Errors say which key is wrong and what is allowed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise ValueError(f"config file {path}: cannot parse it ({exc})") from exc
    if isinstance(data, dict) and "configs" in data:
        extra = sorted(set(data) - {"configs"})
        if extra:
            raise ValueError(f"config file {path}: unknown top-level key {extra[0]!r} next to 'configs'")
        entries = data["configs"]
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"config file {path}: key 'configs' must be a non-empty list of mappings")
        where = [f"configs[{i}]" for i in range(len(entries))]
    else:
        entries, where = [data], ["top level"]
    out = []
    for i, (entry, loc) in enumerate(zip(entries, where)):
        default = path.stem if len(entries) == 1 else f"{path.stem}-{i}"
        out.append(_config_from_mapping(entry, f"config file {path} ({loc})", default, path.parent))
    return out


def _config_from_mapping(entry, where: str, default_name: str, base_dir: Path) -> NamedConfig:
    presets = _presets()
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping like {{type: radial, dense_steps: 2}}, got {entry!r}")
    entry = dict(entry)
    kind = entry.pop("type", None)
    name = str(entry.pop("name", default_name))
    kv = _kv_cache_options(entry.pop("kv_cache", None), where)
    reuse, profile_path = _block_reuse_options(entry.pop("block_reuse", None), where, base_dir)
    if kind is None:
        if entry or (kv is None and reuse is None):
            raise ValueError(f"{where}: missing key 'type' (sparse attention: one of {_preset_list()}); a file "
                             f"with only kv_cache/block_reuse needs no type")
        return NamedConfig(name, None, where, kv, reuse, profile_path)
    if kind not in presets:
        raise ValueError(f"{where}: key 'type' is {kind!r}; available: {_preset_list()}")
    cls = presets[kind]
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in entry.items():
        if key not in fields:
            raise ValueError(f"{where}: unknown key {key!r} for type {kind}; valid keys: name, type, kv_cache, "
                             f"block_reuse, {', '.join(sorted(fields))}")
        kwargs[key] = tuple(value) if isinstance(value, list) else value
        try:  # one key at a time, so the message names the key that is wrong
            cls(**{key: kwargs[key]})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: key {key!r} = {value!r} is invalid: {exc}") from None
    try:
        config = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: keys {', '.join(map(repr, kwargs))} do not fit together: {exc}") from None
    return NamedConfig(name, config, where, kv, reuse, profile_path)


def _kv_cache_options(value, where: str) -> dict | None:
    """``kv_cache: true`` or ``{max_prompts: N}`` -> `enable_kv_cache` kwargs; false/absent -> None."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, dict) and set(value) <= {"max_prompts"}:
        if not isinstance(value.get("max_prompts", 1), int) or value.get("max_prompts", 1) < 1:
            raise ValueError(f"{where}: key 'kv_cache.max_prompts' must be an int >= 1, got {value['max_prompts']!r}")
        return dict(value)
    raise ValueError(f"{where}: key 'kv_cache' must be true, false or {{max_prompts: N}}, got {value!r}")


def _block_reuse_options(value, where: str, base_dir: Path):
    """``block_reuse: {profile: FILE, preset: profiled|adaptive, <BlockReuseConfig fields>}``."""
    if value is None or value is False:
        return None, None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: key 'block_reuse' must be a mapping such as {{profile: tiny.json}}, got {value!r}")
    from dataclasses import replace

    from .caches.block_reuse import PRESETS as REUSE_PRESETS
    from .caches.block_reuse import BlockReuseConfig, resolve_config

    value = dict(value)
    preset = value.pop("preset", "profiled")
    if preset not in REUSE_PRESETS:
        raise ValueError(f"{where}: key 'block_reuse.preset' is {preset!r}; available: {', '.join(sorted(REUSE_PRESETS))}")
    fields = {f.name for f in dataclasses.fields(BlockReuseConfig)}
    for key in value:
        if key not in fields:
            raise ValueError(f"{where}: unknown key 'block_reuse.{key}'; valid keys: preset, {', '.join(sorted(fields))}")
    profile_path = None
    if value.get("profile") is not None:
        path = Path(value["profile"]).expanduser()
        path = path if path.is_absolute() or path.exists() else base_dir / path  # relative to the config file
        if not path.is_file():
            raise ValueError(f"{where}: key 'block_reuse.profile': {value['profile']!r} does not exist (make one with "
                             f"`vidaccel profile ... --out FILE`)")
        value["profile"] = profile_path = str(path)
    if isinstance(value.get("background_blocks"), list):
        value["background_blocks"] = tuple(value["background_blocks"])
    try:
        return resolve_config(replace(REUSE_PRESETS[preset], **value)), profile_path
    except (TypeError, ValueError, OSError) as exc:
        raise ValueError(f"{where}: key 'block_reuse' is invalid: {exc}") from None


def accel_configs(specs: list[str] | None) -> list[NamedConfig]:
    """All configurations from repeated ``--accel`` values, with unique names."""
    out = [c for spec in specs or [] for c in parse_accel(spec)]
    seen = {BASELINE}
    for c in out:
        if not re.fullmatch(r"[\w.-]+", c.name):
            raise ValueError(f"configuration name {c.name!r} ({c.source}): use letters, digits, '_', '-' or '.'")
        if c.name in seen:
            raise ValueError(f"configuration name {c.name!r} is used twice ({c.source}); give each a distinct "
                             f"'name' in its config file")
        seen.add(c.name)
    return out


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


# ------------------------------------------------------------------------------------ generation


@dataclass
class RunResult:
    frames: np.ndarray  # (T, H, W, 3) uint8
    wall_s: float
    step_s: float | None  # mean interval between step ends, steps 2..n (None with one step)
    peak_memory: dict


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


def generate(pipe, prompt: str, seed: int, *, height=None, width=None, num_frames=None, steps=None,
             guidance_scale=None, negative_prompt=None, offload: str = "none", progress: bool | None = None,
             desc: str = "steps") -> RunResult:
    """Generate one clip; timings cover the pipeline call (text encoding to decoded frames).

    ``None`` settings take the pipeline's defaults. The seed drives a CPU generator, so a seed
    gives the same initial noise on every device. ``progress`` None shows a per-step bar on a TTY.
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
            frames = pipe(**kwargs, callback_on_step_end=on_step_end).frames
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
    from .report.video import to_uint8

    step_s = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else None
    return RunResult(frames=to_uint8(frames), wall_s=wall, step_s=step_s, peak_memory=mem.result)


def apply_config(pipe, named: NamedConfig):
    """Enable everything `named` asks for (nothing for the baseline); on error, undo what was enabled."""
    import vidaccel

    try:
        if named.config is not None:
            vidaccel.accelerate(pipe, named.config)
        if named.kv_cache is not None:
            vidaccel.enable_kv_cache(pipe, **named.kv_cache)
        if named.block_reuse is not None:
            vidaccel.enable_block_reuse(pipe, named.block_reuse)
    except BaseException:
        remove_config(pipe, named)
        raise


def remove_config(pipe, named: NamedConfig) -> dict | None:
    """Undo `apply_config` exactly; returns the summary (density at the last grid, cache counters)
    taken just before removal, or None for the baseline."""
    if named.is_baseline:
        return None
    import vidaccel

    info = vidaccel.summary(pipe, print_summary=False)
    if named.kv_cache is not None or named.block_reuse is not None:
        vidaccel.disable_caches(pipe)
    if named.config is not None:
        vidaccel.remove(pipe)
    return info


def quiet_libraries():
    """Silence diffusers/transformers info logs and loading bars (our own output says what runs)."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
