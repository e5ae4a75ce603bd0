"""Worker for tests/test_context_parallel.py, run under torchrun (2 processes, gloo on CPU).

Compares, on every rank, the context-parallel (Ulysses) output of a tiny Wan transformer with
sparse attention on against the single-process output, and writes the max difference to a file.
"""

import json
import os
import sys

import torch
import torch.distributed as dist

import vidaccel
from vidaccel.distributed import enable_context_parallel, init_distributed
from tiny_models import family_inputs, wan_transformer


def _steps(model, inputs):
    """Three denoising calls at falling timesteps (cond and uncond share each step)."""
    outs = []
    with torch.no_grad():
        for t in (900.0, 800.0, 700.0):
            with model.cache_context("cond"):
                outs.append(model(**{**inputs, "timestep": torch.full((2,), t)})[0])
    return torch.stack(outs)


def main(out_path: str) -> None:
    if not torch.cuda.is_available():
        # diffusers places each rank on device `rank % accelerator count`; on a CPU-only machine
        # there is none, so pretend one CPU "device" (test scaffolding, not library behaviour)
        torch.accelerator.device_count = lambda: 1
    rank, world = init_distributed()
    model = wan_transformer(layers=2)
    inputs = family_inputs("wan", grid=(3, 4, 6), batch=2)
    config = vidaccel.RadialAttentionConfig(decay_factor=0.5, block_size=4, dense_steps=0, dense_layers=0)
    with torch.no_grad():
        vidaccel.accelerate(model, config)
        single = model(**inputs)[0]
        enable_context_parallel(model, ulysses_degree=world)
        parallel = model(**inputs)[0]
        calls = vidaccel.summary(model, print_summary=False)["transformers"][0]["sparse_calls"]
    # caches on the same kind of model: single process first, then under context parallelism
    caches_model = wan_transformer(layers=3)
    reuse = vidaccel.BlockReuseConfig(background_blocks=[1, 2], warmup_steps=1, interval=2)
    vidaccel.enable_kv_cache(caches_model)
    vidaccel.enable_block_reuse(caches_model, reuse)
    caches_single = _steps(caches_model, inputs)
    enable_context_parallel(caches_model, ulysses_degree=world)
    caches_parallel = _steps(caches_model, inputs)
    result = {"rank": rank, "world": world, "max_abs_diff": float((parallel - single).abs().max()),
              "sparse_calls": calls, "ref_scale": float(single.abs().max()),
              "caches_max_abs_diff": float((caches_parallel - caches_single).abs().max()),
              "caches_ref_scale": float(caches_single.abs().max()),
              "reused_block_calls": vidaccel.cache_summary(caches_model)[0]["block_reuse"]["reused_block_calls"]}
    with open(f"{out_path}.{rank}", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()
    # Skip interpreter finalization: a Gloo worker thread may still be freeing a finished
    # all-gather (its tensors hold Python references) and needs the GIL, which finalization
    # refuses by killing the thread -> std::terminate, SIGABRT in ~1 run of 10 (torch 2.13 CPU;
    # seen in a core dump: ~AsyncAllgatherCoalescedWork -> decref_pyobject -> take_gil).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
