#!/usr/bin/env python3
"""Kernel-variant sweep for tuning (not a deliverable benchmark): times vidaccel's kernel at one
shape under each path (K/V by pointers or TMA; partial masks from the table or the in-kernel rule)
and tile size, next to cuDNN dense and a whole-grid (all-full-blocks) plan, and prints which
autotune config won. Medians of triton.testing.do_bench.

    python scripts/bench_kernel_variants.py --res 720p --heads 12
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from vidaccel import RadialPattern, WindowPattern, build_plan  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", default="720p")
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--tile-sizes", default="128,64")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import triton.testing
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from vidaccel.kernels import ops
    from vidaccel.kernels.block_sparse_fwd import block_sparse_attn_fwd_kernel as kern

    grid = {"480p": (21, 30, 52), "720p": (21, 45, 80), "1088p": (21, 68, 120)}[args.res]
    n = grid[0] * grid[1] * grid[2]
    dev = torch.device("cuda")
    q, k, v = [torch.randn(1, args.heads, n, 128, device=dev, dtype=torch.bfloat16) for _ in range(3)]
    flops = 4.0 * args.heads * n * n * 128

    def bench(fn):
        fn()
        return float(triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="median"))

    rows = []
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        cudnn = bench(lambda: F.scaled_dot_product_attention(q, k, v))
    rows.append({"impl": "cudnn_dense", "ms": cudnn, "tflops": flops / cudnn / 1e9})
    print(json.dumps(rows[-1]), flush=True)
    patterns = {"dense_plan": WindowPattern(grid), "freeswim": WindowPattern((21, 30, 52)),
                "win9x15x15": WindowPattern((9, 15, 15)), "radial": RadialPattern(0.2)}
    for pname, pat in patterns.items():
        for ts in [int(x) for x in args.tile_sizes.split(",")]:
            plan = build_plan(pat, grid, tile_size=ts, device=dev).to(dev)
            padded = float((plan.block_class > 0).sum()) * (ops.kernel_tables(plan)["block"] ** 2) / n**2
            for tma in (True, False):
                for table in (True, False):
                    if pname == "dense_plan" and not table:
                        continue
                    ops.USE_TMA = tma
                    ops.MASK_TABLE_MAX_BYTES = 2**40 if table else 0
                    try:
                        ms = bench(lambda: ops.block_sparse_attention(q, k, v, plan))
                    except Exception as exc:  # noqa: BLE001
                        print(pname, ts, tma, table, "failed", type(exc).__name__, str(exc)[:300], flush=True)
                        continue
                    r = {"pattern": pname, "tile": list(plan.tile), "tile_size": ts, "tma": tma, "mask_table": table,
                         "ms": round(ms, 3), "density": round(plan.density, 4), "padded_block_density": round(padded, 4),
                         "useful_tflops": round(plan.density * flops / ms / 1e9, 1),
                         "padded_tflops": round(padded * flops / ms / 1e9, 1),
                         "x_density_limit": round(plan.density * cudnn / ms, 3),
                         "full": int(plan.full_count.sum()), "partial": int(plan.partial_count.sum()),
                         "best_config": str(kern.best_config)}
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    ops.USE_TMA = None
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump({"gpu": torch.cuda.get_device_name(), "res": args.res, "heads": args.heads, "rows": rows}, fh,
                      indent=1)


if __name__ == "__main__":
    main()
