"""Worker for tests/test_context_parallel.py, run under torchrun (2 processes, gloo on CPU).

Compares, on every rank, the context-parallel (Ulysses) output of a tiny Wan transformer with
sparse attention on against the single-process output, and writes the max difference to a file.
"""

import json
import sys

import torch
import torch.distributed as dist

import vidaccel
from vidaccel.distributed import enable_context_parallel, init_distributed
from tiny_models import family_inputs, wan_transformer


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
    result = {"rank": rank, "world": world, "max_abs_diff": float((parallel - single).abs().max()),
              "sparse_calls": calls, "ref_scale": float(single.abs().max())}
    with open(f"{out_path}.{rank}", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
