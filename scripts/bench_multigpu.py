#!/usr/bin/env python3
"""Multi-GPU benchmark: one Wan2.1-1.3B transformer step (diffusers class, published config, random
bf16 weights) at 720p, 81 frames, with radial attention, on 1 GPU and on N GPUs through diffusers'
Ulysses context parallelism - in one torchrun job, side by side, with an output comparison.

    torchrun --nproc_per_node 2 scripts/bench_multigpu.py --out benchmarks/results

Rank 0 first times the step alone (1 GPU, other ranks wait), then all ranks enable context
parallelism and time the same step. Medians of repeated runs, timed with CUDA events after a
barrier. The sparse step is timed (``dense_steps=0``); radial keeps Wan's one dense layer.
`--smoke` runs a 2-layer toy model (CPU/gloo allowed) to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.distributed as dist

import benchlib
from benchlib import WAN_1_3B


def _time_step(model, inputs, reps, device, sync_group=True):
    def run():
        with torch.no_grad():
            return model(**inputs)[0]

    run()  # warm-up: plans, compilation, autotuning
    run()
    barrier = dist.barrier if sync_group and dist.is_initialized() else None
    out, times = benchlib.wall_times(run, reps, device, before=barrier)
    return statistics.median(times), times, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()

    from diffusers import WanTransformer3DModel

    import vidaccel
    from vidaccel.distributed import enable_context_parallel, init_distributed

    if args.smoke and not torch.cuda.is_available():
        torch.accelerator.device_count = lambda: 1  # diffusers assumes an accelerator per rank
    rank, world = init_distributed()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = dict(WAN_1_3B)
    frames, height, width = 21, 90, 160  # 720p, 81 frames -> latent grid; tokens 21x45x80
    if args.smoke:
        config.update(num_layers=2, num_attention_heads=2, attention_head_dim=16, ffn_dim=64, text_dim=32, freq_dim=32)
        frames, height, width = 3, 8, 12
    torch.manual_seed(0)  # identical weights and inputs on every rank
    model = WanTransformer3DModel(**config).to(device=device, dtype=dtype).eval()
    g = torch.Generator().manual_seed(1)
    inputs = dict(
        hidden_states=torch.randn(1, config["in_channels"], frames, height, width, generator=g).to(device, dtype),
        encoder_hidden_states=torch.randn(1, 512, config["text_dim"], generator=g).to(device, dtype),
        timestep=torch.tensor([500.0], device=device), return_dict=False,
    )
    radial = vidaccel.RadialAttentionConfig(dense_steps=0, **({"block_size": 4} if args.smoke else {}))
    vidaccel.accelerate(model, radial)

    single_s = None
    if rank == 0:
        single_s, single_all, single_out = _time_step(model, inputs, args.reps, device, sync_group=False)
        single_out = single_out.float().cpu()
    if dist.is_initialized():
        dist.barrier()
    if world > 1:
        enable_context_parallel(model, ulysses_degree=world)
    multi_s, multi_all, multi_out = _time_step(model, inputs, args.reps, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None

    if rank == 0:
        diff = (multi_out.float().cpu() - single_out).abs()
        rel = float(diff.max() / single_out.abs().max())
        info = vidaccel.summary(model, print_summary=False)["transformers"][0]
        env = benchlib.versions("gpu", "torch", "diffusers", "triton")
        gpu = env.pop("gpu") or "cpu"
        if device.type != "cuda":
            env["triton"] = None  # recorded for CUDA runs only
        record = {
            "benchmark": "multigpu_wan1.3b_720p_radial_step",
            "date": benchlib.utc_now(),
            "gpu": gpu,
            "gpus": world,
            "versions": env,
            "grid": info["grid"]["grid"] if info["grid"] else None,
            "radial_density": info["grid"]["density"] if info["grid"] else None,
            "reps": args.reps,
            "single_gpu_step_s_median": single_s, "single_gpu_step_s_all": single_all,
            "multi_gpu_step_s_median": multi_s, "multi_gpu_step_s_all": multi_all,
            "speedup": single_s / multi_s,
            "output_max_rel_diff": rel,
            "peak_memory_gib_rank0": peak,
            "smoke": args.smoke,
        }
        print(json.dumps(record, indent=1))
        if not args.smoke:
            v = record["versions"]
            lines = ["# Multi-GPU: Wan2.1-1.3B architecture, 720p x 81 frames, one radial step", "",
                     f"{record['date']}, {record['gpu']} x{world}, torch {v['torch']}, diffusers {v['diffusers']}, "
                     f"triton {v['triton']}; median of {args.reps}.", "",
                     *benchlib.md_table_header("GPUs", "step (s)", "speedup", "max rel. diff vs 1 GPU", sep=" --- "),
                     f"| 1 | {single_s:.3f} | 1.00 | - |",
                     f"| {world} | {multi_s:.3f} | {single_s / multi_s:.2f} | {rel:.2e} |", "",
                     f"Target: {world} GPUs >= 1.8x faster than 1 GPU, outputs matching."]
            benchlib.write_results(args.out, f"multigpu_{world}gpu", record, lines)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
