#!/usr/bin/env python3
"""Side-by-side attention benchmark: dense SDPA (cuDNN, flash), FlexAttention (raster and tiled
order, same mask) and vidaccel's block-sparse Triton kernel, on the same inputs in one run.

Shapes: Wan-1.3B (12 heads) and Wan-14B (40 heads), head dim 128, bf16, batch 1, 81 frames at
480p (21x30x52), 720p (21x45x80) and 1088x1920 (21x68x120). Patterns: FreeSwim window
(21,30,52), small window (9,15,15), radial (Wan defaults: decay 0.2, sink).

Each time is the median of `triton.testing.do_bench`. vidaccel's times and the cuDNN time they are
compared with are *paired*: timed in alternating rounds (`--rounds`, medians over rounds), so a
GPU whose clocks drift under sustained load affects both sides alike. Reported per row: ms, useful
TFLOP/s (token density x dense FLOPs / time), the ratio to the density limit (density x cuDNN
dense time / time) and speedups vs cuDNN dense and vs FlexAttention. vidaccel's time includes its K/V gathers
into tiled order where it makes them (none for raster-chunk tiles, nor for power-of-two box tiles on Hopper,
whose kernel reads 3D boxes of the inputs); FlexAttention in tiled order gets pre-permuted inputs (its
permutation is free).

    python scripts/bench_attention.py --out benchmarks/results            # everything
    python scripts/bench_attention.py --models wan1.3b --res 720p --quick  # one shape
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

import benchlib
from benchlib import GRIDS, median_ms, paired_ms
from vidaccel import RadialPattern, TileWindowAttentionConfig, WindowPattern, build_plan
from vidaccel.sparse.attention import dense_flops

MODELS = {"wan1.3b": 12, "wan14b": 40}
PATTERNS = {
    "freeswim_window_21x30x52": lambda: WindowPattern((21, 30, 52)),
    "window_9x15x15": lambda: WindowPattern((9, 15, 15)),
    "window_5x13x17": lambda: WindowPattern((5, 13, 17)),
    "radial_wan": lambda: RadialPattern(0.2, sink=True),
    # tile-aligned windows of about the same sizes (kernel rounded to odd multiples of the auto tile)
    "tile_window_9x15x15": lambda: TileWindowAttentionConfig(kernel=(9, 15, 15)).build_pattern(),
    "tile_window_21x30x52": lambda: TileWindowAttentionConfig(kernel=(21, 30, 52)).build_pattern(),
    "tile_window_5x13x17": lambda: TileWindowAttentionConfig(kernel=(5, 13, 17)).build_pattern(),
}


def sdpa(backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]

    def run(q, k, v):
        with sdpa_kernel([b]):
            return F.scaled_dot_product_attention(q, k, v)

    return run


# ---------------------------------------------------------------------------------------------
# FlexAttention with the same mask (mask_mod reads the pattern's KernelRule tables)
# ---------------------------------------------------------------------------------------------
def flex_block_mask(plan, tiled: bool, device):
    from torch.nn.attention.flex_attention import create_block_mask

    from vidaccel.kernels.plan_tables import kernel_tables

    T, H, W = plan.grid
    HW = H * W
    tab = kernel_tables(plan.to(device))
    wtab, lo, hi = tab["wtab"], tab["lo"].view(-1, 2), tab["hi"].view(-1, 2)
    perm = plan.to(device).perm
    dil_h, dil_w = tab["dilation"]
    window = tab["has_window"]

    def mask_mod(b, h, q_idx, kv_idx):
        if tiled:
            q_idx, kv_idx = perm[q_idx], perm[kv_idx]
        tq, sq = q_idx // HW, q_idx % HW
        tk, sk = kv_idx // HW, kv_idx % HW
        ok = (sq - sk).abs() <= wtab[tq * T + tk]
        if window:
            hk, wk = sk // W, sk % W
            lh, lw = lo[q_idx, 0], lo[q_idx, 1]
            ok = ok & (hk >= lh) & (hk < hi[q_idx, 0]) & (wk >= lw) & (wk < hi[q_idx, 1])
            if dil_h > 1:
                ok = ok & ((hk - lh) % dil_h == 0)
            if dil_w > 1:
                ok = ok & ((wk - lw) % dil_w == 0)
        return ok

    n = plan.num_tokens
    return create_block_mask(mask_mod, None, None, n, n, device=device, _compile=True)


_FLEX = None


def flex_fn():
    global _FLEX
    if _FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention

        # one compiled kernel per (heads, length, mask) shape: the default recompile limit of 8 is
        # reached inside one run, after which Flex silently runs unfused (and OOMs at 1088p)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 128)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 128)
        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


def row(name, ms, density, flops_dense, cudnn_ms, flex_raster_ms=None):
    r = {"impl": name, "ms": round(ms, 4), "useful_tflops": round(density * flops_dense / ms / 1e9, 1)}
    if cudnn_ms:
        r["speedup_vs_cudnn"] = round(cudnn_ms / ms, 3)
        r["ratio_to_density_limit"] = round(density * cudnn_ms / ms, 3)
    if flex_raster_ms:
        r["speedup_vs_flex_raster"] = round(flex_raster_ms / ms, 3)
    return r


def write_report(args, results, md_rows):
    """<tag>.json and <tag>.md so far; returns the Markdown lines."""
    meta = results["meta"]
    lines = [f"# Attention benchmark ({meta['gpu']})", "",
             f"{benchlib.md_stamp(meta, 'torch', 'triton', 'diffusers', 'cuda', 'cudnn')}. bf16, batch 1, head dim "
             "128; medians of triton.testing.do_bench. vidaccel includes its K/V gathers (where it makes them); Flex "
             "tiled gets pre-permuted inputs. "
             f"cuDNN ms: timed paired with vidaccel ({args.rounds} alternating rounds); its ratios use it.", "",
             *benchlib.md_table_header(
                 "res", "model", "pattern", "density", "cuDNN ms", "flash ms", "Flex raster ms", "Flex tiled ms",
                 f"vidaccel ms ({' / '.join('t' + t for t in args.tile_sizes.split(','))})", "tile", "block dens.",
                 "useful TFLOP/s", "x density limit", "x cuDNN", "x Flex raster")]

    def f2(x):
        return "-" if x is None else f"{x:.2f}"

    for res, model, pname, density, cudnn, flash, fr, ft, impl_ms, best in md_rows:
        vt = " / ".join(f2(impl_ms.get(f"vidaccel_t{t}")) for t in args.tile_sizes.split(","))
        lines.append(
            f"| {res} | {model} | {pname} | {density:.3f} | {f2(cudnn)} | {f2(flash)} | {f2(fr)} | {f2(ft)} | {vt} | "
            f"{best.get('tile')} | {best.get('block_density')} | {best['useful_tflops']} | "
            f"{best.get('ratio_to_density_limit', '-')} | {best.get('speedup_vs_cudnn', '-')} | "
            f"{best.get('speedup_vs_flex_raster', '-')} |"
        )
    benchlib.write_results(args.out, args.tag, results, lines)
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--res", default="720p,480p,1088p")
    ap.add_argument("--patterns", default=",".join(PATTERNS))
    ap.add_argument("--tile-sizes", default="128,64,auto", help="vidaccel plans to time (tokens per tile, or auto)")
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--flex-max-heads-1088p", type=int, default=12, help="skip Flex at 1088p above this")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds of the paired cuDNN/vidaccel timing")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="bench_attention")
    args = ap.parse_args()
    tile_sizes = [x if x == "auto" else int(x) for x in args.tile_sizes.split(",")]

    from vidaccel.kernels import block_sparse_attention

    dev = torch.device("cuda")
    torch.manual_seed(0)
    results = {"meta": {**benchlib.versions(), "date": benchlib.utc_now(),
                        "dtype": "bfloat16", "head_dim": 128, "batch": 1, "timer": "triton.testing.do_bench median"},
               "rows": []}
    md_rows = []
    plans, block_masks = {}, {}
    for res in args.res.split(","):
        grid = GRIDS[res]
        n = grid[0] * grid[1] * grid[2]
        for model in args.models.split(","):
            heads = MODELS[model]
            q, k, v = [torch.randn(1, heads, n, 128, device=dev, dtype=torch.bfloat16) for _ in range(3)]
            fl = dense_flops(1, heads, n, 128)
            dense = {}
            for backend in ("cudnn", "flash"):
                try:
                    dense[backend] = median_ms(lambda: sdpa(backend)(q, k, v), args.quick)
                except Exception as exc:  # noqa: BLE001
                    print(f"[{res} {model}] SDPA {backend} failed: {exc}", flush=True)
            cudnn = dense.get("cudnn")
            for backend, ms in dense.items():
                r = {"res": res, "grid": grid, "model": model, "heads": heads, "pattern": "dense", "density": 1.0,
                     **row(f"sdpa_{backend}", ms, 1.0, fl, cudnn)}
                results["rows"].append(r)
                print(json.dumps(r), flush=True)
            for pname in args.patterns.split(","):
                pattern = PATTERNS[pname]()
                entry = {"res": res, "grid": grid, "model": model, "heads": heads, "pattern": pname}
                impl_ms, fns = {}, {"cudnn": lambda: sdpa("cudnn")(q, k, v)}
                for ts in tile_sizes:
                    key = (pname, res, ts)
                    if key not in plans:
                        t0 = time.perf_counter()
                        plans[key] = build_plan(pattern, grid, tile_size=ts, device=dev).to(dev)
                        torch.cuda.synchronize()
                        plans[key]._build_s = time.perf_counter() - t0
                    plan = plans[key]
                    fns[f"vidaccel_t{ts}"] = lambda plan=plan: block_sparse_attention(q, k, v, plan)
                    extra = {"tile": list(plan.tile), "block_density": round(plan.block_density(), 4),
                             "plan_build_s": round(plan._build_s, 2),
                             "partial_blocks": int(plan.partial_count.sum()), "full_blocks": int(plan.full_count.sum())}
                    impl_ms[f"vidaccel_t{ts}_extra"] = extra
                paired = paired_ms(fns, args.rounds, args.quick)
                cudnn_paired = paired.pop("cudnn")
                impl_ms.update(paired)
                density = plans[(pname, res, tile_sizes[0])].density
                flex = {}
                skip_flex = args.no_flex or (res == "1088p" and heads > args.flex_max_heads_1088p)
                if not skip_flex:
                    plan = plans[(pname, res, tile_sizes[0])]
                    for order in ("raster", "tiled"):
                        try:
                            bkey = (pname, res, order)
                            if bkey not in block_masks:
                                block_masks.clear()
                                benchlib.release_memory()
                                block_masks[bkey] = flex_block_mask(plan, order == "tiled", dev)
                            bm = block_masks[bkey]
                            if order == "tiled":
                                perm = plan.to(dev).perm
                                qq, kk, vv = q[:, :, perm], k[:, :, perm], v[:, :, perm]
                            else:
                                qq, kk, vv = q, k, v
                            f = flex_fn()
                            flex[order] = median_ms(lambda: f(qq, kk, vv, block_mask=bm), args.quick)
                            sparsity = bm.sparsity() / 100.0
                            flex[order + "_block_density"] = round(1 - sparsity, 4)
                            del qq, kk, vv
                        except Exception as exc:  # noqa: BLE001
                            print(f"[{res} {model} {pname}] flex {order} failed: {type(exc).__name__}: {exc}"[:400], flush=True)
                flex_raster = flex.get("raster")
                for order in ("raster", "tiled"):
                    if order in flex:
                        r = {**entry, "density": round(density, 4), **row(f"flex_{order}", flex[order], density, fl, cudnn),
                             "block_density": flex.get(order + "_block_density")}
                        results["rows"].append(r)
                        print(json.dumps(r), flush=True)
                best = None
                for ts in tile_sizes:
                    name = f"vidaccel_t{ts}"
                    r = {**entry, "density": round(density, 4),
                         **row(name, impl_ms[name], density, fl, cudnn_paired, flex_raster),
                         "cudnn_paired_ms": round(cudnn_paired, 4), **impl_ms[name + "_extra"]}
                    if "tiled" in flex:
                        r["speedup_vs_flex_tiled"] = round(flex["tiled"] / impl_ms[name], 3)
                    results["rows"].append(r)
                    print(json.dumps(r), flush=True)
                    # the summary columns: the default tile_size="auto" when timed (what users get), else the best
                    if best is None or ts == "auto" or (best["tile_size"] != "auto" and r["ms"] < best["ms"]):
                        best = dict(r, tile_size=ts)
                md_rows.append((res, model, pname, density, cudnn_paired, dense.get("flash"), flex.get("raster"),
                                flex.get("tiled"), impl_ms, best))
                write_report(args, results, md_rows)  # incremental: a timeout keeps what finished
            del q, k, v
            benchlib.release_memory()
    print("\n".join(write_report(args, results, md_rows)))


if __name__ == "__main__":
    main()
