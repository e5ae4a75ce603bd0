"""How measuring tools run a pipeline: the call's arguments and one seeded generation per prompt.

`vidaccel.profile` and `vidaccel.tune` both generate latents only (no VAE decode), seed prompt ``i`` with
``seed + i``, and record the run settings next to what they measured.
"""

from __future__ import annotations

import datetime

import torch

from .adapters import adapter_for
from .features import refuse_conflicts
from .models import named_transformers

RUN_KEYS = ("height", "width", "num_frames", "num_inference_steps", "guidance_scale")


def prompt_list(prompts) -> list[str]:
    """One prompt or a few, as a non-empty list (ValueError otherwise)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("Give at least one prompt to measure with.")
    return prompts


def measurement_call(num_inference_steps: int, pipe_kwargs: dict, **settings) -> dict:
    """The pipeline arguments: latents out, the settings given (None keeps the pipeline's default)."""
    call = dict(num_inference_steps=num_inference_steps, output_type="latent", **pipe_kwargs)
    call.update({k: v for k, v in settings.items() if v is not None})
    return call


def run_record(call: dict, prompts: list, seed: int) -> dict:
    """The run settings a measurement file records."""
    run = {k: call.get(k) for k in RUN_KEYS}
    run.update(prompts=prompts, seeds=[seed + i for i in range(len(prompts))])
    return run


def generate_each(pipe, prompts: list, call: dict, seed: int, after=None) -> None:
    """Run the pipeline once per prompt (seed ``seed + i``); `after(i)` after each."""
    for i, prompt in enumerate(prompts):
        pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed + i), **call)
        if after is not None:
            after(i)


def measured_transformers(pipe, feature) -> list[tuple]:
    """``(attribute, model, adapter, block names)`` per transformer of `pipe`, each checked against the feature
    table for `feature` before anything is installed."""
    out = []
    for attribute, model in named_transformers(pipe):
        adapter = adapter_for(model)
        refuse_conflicts(model, feature)
        out.append((attribute, model, adapter, [n for n, _ in adapter.blocks(model)]))
    return out


def generate_installed(records, install, pipe, prompts: list, call: dict, seed: int, after=None) -> None:
    """`install(record)` for every record, `generate_each`, then remove each installed record's ``hooks`` (also
    when anything fails), so the pipeline is left exactly as it was."""
    installed = []
    try:
        for rec in records:
            install(rec)
            installed.append(rec)
        generate_each(pipe, prompts, call, seed, after)
    finally:
        for rec in installed:
            rec.hooks.remove()


def file_stamp(vidaccel_version: str) -> dict:
    """``created`` (UTC, seconds) and ``versions`` (vidaccel, diffusers, torch): what a measurement file records."""
    import diffusers

    return {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": {"vidaccel": vidaccel_version, "diffusers": diffusers.__version__, "torch": torch.__version__}}
