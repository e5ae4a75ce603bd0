"""Find, load and run the shipped models: the tiny model (``assets/tiny-wan``, the CPU main job) and the
quality-lab model (``assets/lab-wan``, on which approximations' quality is measured); see `vidaccel.tiny`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

ENV_VAR = "VIDACCEL_TINY_MODEL"
LAB_ENV_VAR = "VIDACCEL_LAB_MODEL"
# Base resolution the tiny model was trained at; generation defaults.
HEIGHT, WIDTH, NUM_FRAMES = 64, 64, 17
NUM_STEPS = 25
GUIDANCE_SCALE = 5.0
MAX_SEQUENCE_LENGTH = 512  # keep WanPipeline's default: the models were trained with 512-long embeddings
# The lab model's native size (token grid 9 x 16 x 16); it also trained at half this size.
LAB_HEIGHT, LAB_WIDTH, LAB_NUM_FRAMES = 256, 256, 33


def _find(folder: str, env_var: str, recipe: str) -> Path:
    env = os.environ.get(env_var)
    if env:
        p = Path(env).expanduser()
        if not (p / "model_index.json").is_file():
            raise FileNotFoundError(f"{env_var}={env!r} has no model_index.json; point it at a {folder} folder")
        return p
    package = Path(__file__).resolve().parents[1]  # vidaccel/
    candidates = [package.parent / "assets" / folder, package / "assets" / folder]
    for p in candidates:
        if (p / "model_index.json").is_file():
            return p
    raise FileNotFoundError(
        f"{folder} not found in {[str(c) for c in candidates]}; install vidaccel from a clone "
        f"(`pip install -e .`), set {env_var} to the folder, or rebuild it with "
        f"`python scripts/train_tiny_model.py --recipe {recipe}`"
    )


def tiny_model_path() -> Path:
    """Directory of the tiny pipeline (``$VIDACCEL_TINY_MODEL``, else ``assets/tiny-wan``); raises with
    the fix when it cannot be found."""
    return _find("tiny-wan", ENV_VAR, "tiny")


def lab_model_path() -> Path:
    """Directory of the quality-lab pipeline (``$VIDACCEL_LAB_MODEL``, else ``assets/lab-wan``)."""
    return _find("lab-wan", LAB_ENV_VAR, "lab")


def load_tiny(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, path: str | Path | None = None):
    """Load the tiny ``diffusers.WanPipeline`` (no network) on ``device`` in ``dtype``.

    The transformer is stored in fp16 to keep the folder small; ``dtype`` (fp32 by default, which
    CPUs need) is what every component is loaded as.
    """
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(str(path or tiny_model_path()), dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_lab(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, path: str | Path | None = None):
    """Load the quality-lab ``diffusers.WanPipeline`` (no network); generate at `LAB_HEIGHT` x `LAB_WIDTH`
    x `LAB_NUM_FRAMES` (its native size) or twice that with FreeSwim."""
    return load_tiny(device, dtype, path or lab_model_path())


@torch.no_grad()
def generate_tiny(
    prompt: str | list[str],
    seed: int | list[int] = 0,
    *,
    pipe=None,
    num_inference_steps: int = NUM_STEPS,
    guidance_scale: float = GUIDANCE_SCALE,
    height: int = HEIGHT,
    width: int = WIDTH,
    num_frames: int = NUM_FRAMES,
    **kwargs,
) -> np.ndarray:
    """Generate clip(s) with the tiny model; returns uint8 frames ``(T, H, W, 3)``.

    With a list of prompts or seeds (even of length 1) the clips are generated as one batch and the
    result is ``(B, T, H, W, 3)``; a single seed with several prompts seeds every clip alike.
    """
    pipe = pipe or load_tiny()
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    seeds = [seed] if isinstance(seed, int) else list(seed)
    batched = not isinstance(prompt, str) or not isinstance(seed, int)  # a list in -> a batch out, even of one
    n = max(len(prompts), len(seeds))
    if len(prompts) == 1:
        prompts = prompts * n
    if len(seeds) == 1:
        seeds = seeds * n
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)=} and {len(seeds)=} must match (or one of them be 1)")
    gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    out = pipe(
        prompt=prompts, height=height, width=width, num_frames=num_frames,
        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
        generator=gens, output_type="np", max_sequence_length=MAX_SEQUENCE_LENGTH, **kwargs,
    ).frames
    frames = (np.clip(np.asarray(out), 0, 1) * 255).round().astype(np.uint8)  # (B, T, H, W, 3)
    return frames if batched else frames[0]
