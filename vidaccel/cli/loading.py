"""Load a pipeline for the CLI: model location, device, dtype, offloading, generation defaults.

`resolve_model` / `load_pipeline`: a local folder saved with ``save_pretrained`` or a Hub id, on
``device`` in ``dtype``, optionally with diffusers' CPU offload; the shipped tiny model when no
model is given. Unsupported pipelines, missing paths and failed loads raise with the fix.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
OFFLOAD = ("none", "model", "sequential")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class OutOfMemory(RuntimeError):
    """Generation ran out of memory; the message lists what to reduce."""


def resolve_model(model: str | None) -> tuple[str, bool]:
    """``(location, is_local)`` for ``--model``; None -> the shipped tiny model when installed."""
    if model is None:
        from ..tiny import tiny_model_path

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

    from ..core.adapters import ADAPTERS

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
    from .. import tiny

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


def quiet_libraries():
    """Silence diffusers/transformers info logs and loading bars (our own output says what runs)."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
