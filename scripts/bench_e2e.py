#!/usr/bin/env python3
"""End-to-end step benchmark: the Wan2.1-1.3B transformer (diffusers class, published config,
random bf16 weights), one denoising step (one transformer forward) at 480p and 720p, 81 frames:
dense vs window vs radial through `vidaccel.accelerate`, with peak GPU memory.

Times are medians of `triton.testing.do_bench` (a few repetitions: one step takes seconds).
Sparse variants are timed on sparse steps (``dense_steps=0``); radial keeps the Wan default of
one dense layer (docs/methods.md section 3), so its step includes that dense block.

    python scripts/bench_e2e.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import benchlib
from benchlib import WAN_1_3B


def variants():
    from vidaccel.sparse.config import RadialAttentionConfig, WindowAttentionConfig

    return {
        "dense": None,
        "window_freeswim_21x30x52": WindowAttentionConfig(kernel=(21, 30, 52), dense_steps=0, backend="auto"),
        "window_9x15x15": WindowAttentionConfig(kernel=(9, 15, 15), dense_steps=0, backend="auto"),
        "radial_wan": RadialAttentionConfig(dense_steps=0, backend="auto"),
        # fixed tile sizes beside the default tile_size="auto", to show what the choice is worth
        "window_9x15x15_t64": WindowAttentionConfig(kernel=(9, 15, 15), dense_steps=0, backend="auto", tile_size=64),
        "radial_wan_t128": RadialAttentionConfig(dense_steps=0, backend="auto", tile_size=128),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--res", default="480p,720p")
    ap.add_argument("--variants", default="dense,window_freeswim_21x30x52,window_9x15x15,radial_wan,radial_wan_t128")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per median")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="bench_e2e")
    ap.add_argument("--smoke", action="store_true", help="2 layers, tiny video, CPU allowed: checks the script only")
    args = ap.parse_args()

    import vidaccel

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    t0 = time.perf_counter()
    config_dict = dict(WAN_1_3B)
    # pixel sizes -> latents (VAE 4x temporal, 8x spatial; 81 frames -> 21 latent frames)
    resolutions = dict(benchlib.RESOLUTIONS)
    if args.smoke:
        config_dict.update(num_layers=2, num_attention_heads=2, ffn_dim=256)
        resolutions.update({"480p": (64, 96), "720p": (96, 128)})
    model = benchlib.wan_transformer(config_dict, dev, torch.bfloat16)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Wan2.1-1.3B architecture: {n_params / 1e9:.3f} B parameters, built in {build_s:.1f} s", flush=True)

    all_variants = variants()
    results = {"meta": {**benchlib.versions(), "date": benchlib.utc_now(),
                        "model": "WanTransformer3DModel (Wan2.1-1.3B config, random bf16 weights)",
                        "params": n_params, "frames": 81, "batch": 1, "text_tokens": 512,
                        "timer": f"triton.testing.do_bench median (~{args.reps} repetitions)"}, "rows": []}
    for res in args.res.split(","):
        h, w = resolutions[res]
        frames = 5 if args.smoke else 21
        latents = torch.randn(1, 16, frames, h // 8, w // 8, device=dev, dtype=torch.bfloat16)
        text = torch.randn(1, 512, 4096, device=dev, dtype=torch.bfloat16)
        timestep = torch.tensor([500.0], device=dev)
        grid = (frames, h // 16, w // 16)
        dense_ms = None
        for name in args.variants.split(","):
            config = all_variants[name]
            if config is not None and dev.type == "cpu":
                config = type(config)(**{**config.__dict__, "backend": "auto"})
            if config is not None:
                vidaccel.accelerate(model, config)

            def step():
                with torch.inference_mode():
                    return model(hidden_states=latents, timestep=timestep, encoder_hidden_states=text,
                                 return_dict=False)[0]

            try:
                out = step()  # warm-up: plans, Triton autotuning, cuDNN plans
                benchlib.sync(dev)
                ok = bool(torch.isfinite(out).all())
                del out
                cuda = dev.type == "cuda"
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                _, (est_s,) = benchlib.wall_times(step, 1, dev)
                est_ms = est_s * 1e3
                peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
                ms = benchlib.bench_median_ms(step, warmup=1, rep=args.reps * est_ms) if cuda else est_ms
                row = {"res": res, "grid": grid, "variant": name, "ms": round(ms, 1), "peak_mem_gib": round(peak, 2),
                       "finite_output": ok}
                if config is not None:
                    # the plan the hooks built (on the GPU) - not `summary`, which rebuilds on the CPU
                    state = model._vidaccel_sparse_attention
                    plan = next(iter(state.plan_cache._plans.values()))
                    row.update(config=repr(state.config), density=round(plan.density, 4),
                               block_density=round(plan.block_density(), 4), tile=list(plan.tile),
                               sparse_calls=sum(state.sparse_calls.values()),
                               dense_calls=sum(state.dense_calls.values()))
                if name == "dense":
                    dense_ms = ms
                elif dense_ms:
                    row["speedup_vs_dense"] = round(dense_ms / ms, 3)
            except Exception as exc:  # noqa: BLE001 - record and continue with the next variant
                row = {"res": res, "grid": grid, "variant": name, "error": benchlib.error_text(exc)}
            finally:
                if config is not None:
                    vidaccel.remove(model)
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
            benchlib.release_memory(dev)
        del latents, text

    meta = results["meta"]
    lines = [f"# End-to-end step benchmark ({meta['gpu']})", "",
             f"{benchlib.md_stamp(meta, 'torch', 'triton', 'diffusers')}. "
             f"{meta['model']}, {n_params / 1e9:.2f} B params, 81 frames, batch 1, 512 text tokens, one transformer "
             f"forward per step; {meta['timer']}.", "",
             *benchlib.md_table_header("res", "grid", "variant", "ms / step", "x dense", "peak GiB", "density",
                                       "block density", "tile", "sparse/dense calls")]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['res']} | {tuple(r['grid'])} | {r['variant']} | error: {r['error'][:80]} | | | | | | |")
            continue
        lines.append(
            f"| {r['res']} | {tuple(r['grid'])} | {r['variant']} | {r['ms']:.1f} | {r.get('speedup_vs_dense', '-')} | "
            f"{r['peak_mem_gib']} | {r.get('density', 1.0)} | {r.get('block_density', '-')} | {r.get('tile', '-')} | "
            f"{r.get('sparse_calls', '-')}/{r.get('dense_calls', '-')} |"
        )
    benchlib.write_results(args.out, args.tag, results, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
