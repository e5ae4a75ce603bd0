#!/usr/bin/env python3
"""Kernel-config sweep for tuning (not a deliverable benchmark): times vidaccel's kernel on the
production path (TMA K/V on Hopper, precomputed partial masks) under every autotune config of
`kernels/block_sparse_fwd.py`, next to cuDNN dense, the autotuned choice and, on Hopper, the
Gluon kernel (`kernels/block_sparse_fwd_hopper.py`; `--no-sweep` times only those, paired; plans whose
K/V it reads as 3D boxes also time it on gathered K/V, `gluon_gather`). Every forced
config's output is compared with the first config's (max abs difference) as a smoke check; the
GPU tests are the correctness check. Medians of triton.testing.do_bench; timings drift by up to
7-10 % over a long sweep (benchmarks/NOTES_kernels.md v5), so compare neighbouring rows.

    python scripts/bench_kernel_variants.py --res 720p --heads 12 --patterns freeswim:128,radial:64
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

import benchlib
from benchlib import GRIDS, paired_ms
from vidaccel import RadialPattern, WindowPattern, build_plan

PATTERNS = {"dense_plan": None, "freeswim": WindowPattern((21, 30, 52)), "win9x15x15": WindowPattern((9, 15, 15)),
            "radial": RadialPattern(0.2)}


def config_label(cfg) -> str:
    kw = cfg.kwargs
    return f"w{cfg.num_warps}-s{cfg.num_stages}" + ("-masktma" if kw["MASK_TMA"] else "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", default="720p")
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--patterns", default="dense_plan:128,freeswim:128,win9x15x15:64,radial:64",
                    help="comma-separated pattern:tile_size pairs")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-sweep", action="store_true", help="only the autotuned Triton kernel and the Gluon kernel")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of the Triton/Gluon pair")
    args = ap.parse_args()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from vidaccel.kernels import block_sparse_fwd as bsf
    from vidaccel.kernels import ops, plan_tables
    from vidaccel.kernels.options import OPTIONS

    kern = bsf.block_sparse_attn_fwd_kernel
    all_configs = list(kern.configs)
    grid = GRIDS[args.res]
    n = grid[0] * grid[1] * grid[2]
    dev = torch.device("cuda")
    q, k, v = [torch.randn(1, args.heads, n, 128, device=dev, dtype=torch.bfloat16) for _ in range(3)]
    flops = 4.0 * args.heads * n * n * 128

    def bench(fn):
        fn()
        return benchlib.bench_median_ms(fn, warmup=25, rep=100)

    def force(configs):
        kern.configs = configs
        kern.cache = {}

    def run(plan, hopper, box_kv=None):
        OPTIONS.hopper_kernel = hopper
        OPTIONS.hopper_box_kv = box_kv
        return ops.block_sparse_attention(q, k, v, plan)

    rows = []
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        cudnn = bench(lambda: F.scaled_dot_product_attention(q, k, v))
    rows.append({"impl": "cudnn_dense", "ms": round(cudnn, 3), "tflops": round(flops / cudnn / 1e9, 1)})
    print(json.dumps(rows[-1]), flush=True)
    for item in args.patterns.split(","):
        pname, ts = item.split(":")
        pat = PATTERNS[pname] or WindowPattern(grid)
        plan = build_plan(pat, grid, tile_size=int(ts), device=dev).to(dev)
        tables = plan_tables.kernel_tables(plan)
        block = tables["block"]
        padded = float((plan.block_class > 0).sum()) * block**2 / n**2
        candidates = bsf._prune(all_configs, {}, BLOCK_N=block, USE_TMA=True, MASK_TABLE=True)
        first = None
        for cfg in ([] if args.no_sweep else candidates) + [None]:
            force(all_configs if cfg is None else [cfg])
            label = "autotuned" if cfg is None else config_label(cfg)
            try:
                out = run(plan, False)
                ms = bench(lambda: run(plan, False))
            except Exception as exc:  # noqa: BLE001 - a config that does not fit is a result too
                failed = f"{type(exc).__name__}: {str(exc)[:200]}"
                print(json.dumps({"pattern": pname, "config": label, "failed": failed}), flush=True)
                continue
            if first is None:
                first = out
            r = {"pattern": pname, "tile": list(plan.tile), "block": block, "config": label, "ms": round(ms, 3),
                 "density": round(plan.density, 4), "padded_block_density": round(padded, 4),
                 "padded_tflops": round(padded * flops / ms / 1e9, 1),
                 "x_density_limit": round(plan.density * cudnn / ms, 3), "x_cudnn": round(cudnn / ms, 2),
                 "max_abs_diff_vs_first": round(float((out.float() - first.float()).abs().max()), 5)}
            if cfg is None:
                r["picked"] = config_label(kern.best_config)
            rows.append(r)
            print(json.dumps(r), flush=True)
        if torch.cuda.get_device_capability()[0] == 9:  # Gluon kernel vs autotuned Triton, paired
            # box K/V plans also time the Gluon kernel on gathered K/V (the same kernel before box reads)
            boxed = plan_tables.box_tile(plan, tables) is not None
            variants = {"gluon": None, **({"gluon_gather": False} if boxed else {})}
            try:
                outs = {name: run(plan, None, box) for name, box in variants.items()}
                paired = paired_ms({"triton": lambda: run(plan, False),
                                    **{name: lambda b=box: run(plan, None, b) for name, box in variants.items()}},
                                   args.rounds)
            except Exception as exc:  # noqa: BLE001
                failed = benchlib.error_text(exc, 2000)
                print(json.dumps({"pattern": pname, "config": "gluon", "failed": failed}))
                continue
            tri = paired["triton"]
            for name, box in variants.items():
                ms = paired[name]
                r = {"pattern": pname, "tile": list(plan.tile), "block": block, "config": name,
                     "box_kv": boxed and box is None, "ms": round(ms, 3),
                     "triton_paired_ms": round(tri, 3), "x_triton": round(tri / ms, 3),
                     "padded_tflops": round(padded * flops / ms / 1e9, 1),
                     "x_density_limit": round(plan.density * cudnn / ms, 3), "x_cudnn": round(cudnn / ms, 2),
                     "max_abs_diff_vs_first": round(float((outs[name].float() - first.float()).abs().max()), 5)}
                if name == "gluon" and boxed:
                    r["x_gluon_gather"] = round(paired["gluon_gather"] / ms, 3)
                rows.append(r)
                print(json.dumps(r), flush=True)
    force(all_configs)
    OPTIONS.hopper_kernel = OPTIONS.hopper_box_kv = None
    if args.out:
        benchlib.write_json(args.out, {**benchlib.versions("gpu", "torch", "triton"), "res": args.res,
                                       "heads": args.heads, "rows": rows})


if __name__ == "__main__":
    main()
