#!/usr/bin/env python3
"""End-to-end step benchmark: the Wan2.1-1.3B transformer (diffusers class, published config,
random bf16 weights), one denoising step (one transformer forward) at 480p and 720p, 81 frames:
dense vs window vs radial through `vidaccel.accelerate`, with peak GPU memory, eager and under
``torch.compile`` modes side by side (``--compile``).

Times are medians of `triton.testing.do_bench` (a few repetitions: one step takes seconds).
Sparse variants are timed on sparse steps (``dense_steps=0``); radial keeps the Wan default of
one dense layer (docs/methods.md section 3), so its step includes that dense block.

Compiled rows record dynamo's graph count and graph breaks after the warm-up calls (two timesteps)
and how many graphs the timed calls added (``recompiles_while_timed``: 0 means no recompilation
per step). ``--pipeline-steps N`` adds each row's N-step pipeline time with the variant's dense
warm-up (radial: Wan's 12 dense steps; window: none) and CFG's two transformer calls per step,
derived from the measured steps: ``passes x (warm-up x dense step + (N - warm-up) x sparse step)``,
the dense step being the dense variant's in the same compile mode.

On the GPU each res also times one self-attention call alone, dense (SDPA's default choice, what diffusers'
native backend calls) and each sparse variant's kernel on the plan its hooks built, and every sparse row gets
``additive_ms``: the dense step of its compile mode minus its dense attention plus the variant's own (sparse
layers x kernel + dense layers x SDPA), and ``routing_overhead`` = ms / additive_ms - 1 (what vidaccel's routing
costs beyond its kernels; the issue-21 budget is 3 %).

    python scripts/bench_e2e.py --out benchmarks/results --compile none,default,max-autotune-no-cudagraphs,reduce-overhead
    python scripts/bench_e2e.py --smoke --res 480p --compile none,default   # CPU: checks the script only
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import benchlib
from benchlib import WAN_1_3B


def variants():
    """name -> (the config timed on sparse steps, the dense warm-up of a real run for ``--pipeline-steps``)."""
    from vidaccel.sparse.config import RADIAL_DEFAULTS, RadialAttentionConfig, WindowAttentionConfig

    radial_warmup = RADIAL_DEFAULTS["wan"]["dense_steps"]
    return {
        "dense": (None, 0),
        "window_freeswim_21x30x52": (WindowAttentionConfig(kernel=(21, 30, 52), dense_steps=0, backend="auto"), 0),
        "window_9x15x15": (WindowAttentionConfig(kernel=(9, 15, 15), dense_steps=0, backend="auto"), 0),
        "radial_wan": (RadialAttentionConfig(dense_steps=0, backend="auto"), radial_warmup),
        # fixed tile sizes beside the default tile_size="auto", to show what the choice is worth
        "window_9x15x15_t64": (WindowAttentionConfig(kernel=(9, 15, 15), dense_steps=0, backend="auto",
                                                     tile_size=64), 0),
        "radial_wan_t128": (RadialAttentionConfig(dense_steps=0, backend="auto", tile_size=128), radial_warmup),
    }


COMPILE_MODES = ("none", "default", "max-autotune-no-cudagraphs", "reduce-overhead")


def compile_modes(text: str) -> list[str]:
    """``--compile`` as a list, checked against `COMPILE_MODES` (argparse reports a bad name)."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in COMPILE_MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"--compile takes a comma-separated list of {', '.join(COMPILE_MODES)}; "
                                         f"got {text!r}")
    return modes


def compiled_step(model, mode: str, backend: str):
    """`model` itself for ``none``, else ``torch.compile(model, mode=...)`` (fresh dynamo state, so each row's
    graph counts are its own)."""
    if mode == "none":
        return model
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    return torch.compile(model, mode=None if mode == "default" else mode, backend=backend)


def dynamo_counts() -> dict:
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            # each reason's first two lines: vidaccel's step-context pre-hook is one by design (the eager decisions
            # before the graph, compiler-disabled), not a break inside the blocks
            "break_reasons": sorted({" ".join(line.strip() for line in reason.strip().splitlines()[:2])[:240]
                                     for reason in counters["graph_break"]})}


def additive_step_ms(dense_step_ms, dense_attention_ms, sparse_attention_ms, sparse_layers: int) -> float:
    """The sparse step if routing cost nothing: the dense step with `sparse_layers` dense attention calls swapped
    for the sparse kernel's (the other layers keep theirs)."""
    return dense_step_ms - sparse_layers * (dense_attention_ms - sparse_attention_ms)


def pipeline_ms(steps: int, warmup, dense_ms, sparse_ms, passes: int):
    """An N-step pipeline's transformer time: the warm-up steps dense, the rest sparse, `passes` calls per step."""
    from vidaccel.core.context import warmup_steps

    dense_steps = min(steps, warmup_steps(warmup, steps))
    return passes * (dense_steps * dense_ms + (steps - dense_steps) * sparse_ms), dense_steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--res", default="480p,720p")
    ap.add_argument("--variants", default="dense,window_freeswim_21x30x52,window_9x15x15,radial_wan,radial_wan_t128")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per median")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="bench_e2e")
    ap.add_argument("--smoke", action="store_true", help="2 layers, tiny video, CPU allowed: checks the script only")
    ap.add_argument("--compile", type=compile_modes, default=["none"], metavar="MODES",
                    help=f"torch.compile modes measured side by side, comma-separated: {', '.join(COMPILE_MODES)} "
                         f"(none = eager; default = torch.compile's default mode)")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend (inductor; 'eager' checks dynamo's graphs quickly on a CPU)")
    ap.add_argument("--pipeline-steps", type=int, default=50, metavar="N",
                    help="also report an N-step pipeline's time with the dense warm-up (0: leave it out)")
    ap.add_argument("--cfg-passes", type=int, default=2, help="transformer calls per pipeline step (CFG: 2)")
    args = ap.parse_args(argv)

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
                        "timer": f"triton.testing.do_bench median (~{args.reps} repetitions)",
                        "compile_modes": args.compile, "compile_backend": args.compile_backend,
                        "pipeline_steps": args.pipeline_steps, "cfg_passes": args.cfg_passes,
                        "pipeline_ms": "cfg_passes x (warm-up steps x dense ms + other steps x variant ms), dense "
                                       "ms from the dense row of the same resolution and compile mode"},
               "rows": []}
    for res in args.res.split(","):
        h, w = resolutions[res]
        frames = 5 if args.smoke else 21
        latents = torch.randn(1, 16, frames, h // 8, w // 8, device=dev, dtype=torch.bfloat16)
        text = torch.randn(1, 512, 4096, device=dev, dtype=torch.bfloat16)
        grid = (frames, h // 16, w // 16)
        dense_ms = {}  # compile mode -> ms
        attention = {"dense": attention_ms(model, grid, dev)} if dev.type == "cuda" else {}
        # mode-major: a run cut at its time limit (max-autotune compiles for minutes) still holds every
        # variant of the modes before, dense and sparse side by side; the file is rewritten after each row
        for mode in args.compile:
            for name in args.variants.split(","):
                config, warmup = all_variants[name]
                row = measure(model, config, mode, args, dev, latents, text, attention, name, grid)
                row = {"res": res, "grid": grid, "variant": name, "compile": mode, **row}
                if "sparse_layers" in row and mode in dense_ms and name in attention:  # a variant is timed after "dense"
                    add = additive_step_ms(dense_ms[mode], attention["dense"], attention[name], row["sparse_layers"])
                    row.update(attention_dense_ms=round(attention["dense"], 2),
                               attention_sparse_ms=round(attention[name], 2), additive_ms=round(add, 1),
                               routing_overhead=round(row["ms"] / add - 1, 4))
                if "ms" in row:
                    if name == "dense":
                        dense_ms[mode] = row["ms"]
                    elif mode in dense_ms:
                        row["speedup_vs_dense"] = round(dense_ms[mode] / row["ms"], 3)
                    if args.pipeline_steps and mode in dense_ms:
                        total, warm = pipeline_ms(args.pipeline_steps, warmup, dense_ms[mode], row["ms"],
                                                  args.cfg_passes)
                        row.update(pipeline_ms=round(total, 1), pipeline_dense_steps=warm)
                if "pipeline_ms" in row and "none" in dense_ms and mode != "none":
                    eager_dense = pipeline_ms(args.pipeline_steps, 0, dense_ms["none"], dense_ms["none"],
                                              args.cfg_passes)[0]
                    row["pipeline_speedup_vs_eager_dense"] = round(eager_dense / row["pipeline_ms"], 3)
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
                benchlib.write_results(args.out, args.tag, results, report_lines(results, args, n_params))
                benchlib.release_memory(dev)
        del latents, text

    print("\n".join(report_lines(results, args, n_params)))


def report_lines(results: dict, args, n_params: int) -> list[str]:
    """The Markdown report of the rows so far."""
    meta = results["meta"]
    lines = [f"# End-to-end step benchmark ({meta['gpu']})", "",
             f"{benchlib.md_stamp(meta, 'torch', 'triton', 'diffusers')}. "
             f"{meta['model']}, {n_params / 1e9:.2f} B params, 81 frames, batch 1, 512 text tokens, one transformer "
             f"forward per step; {meta['timer']}. Pipeline: {args.pipeline_steps} steps x {args.cfg_passes} calls, "
             f"the variant's dense warm-up included ({meta['pipeline_ms']}).", "",
             *benchlib.md_table_header("res", "grid", "variant", "compile", "ms / step", "x dense", "pipeline s",
                                       "graphs / breaks / recompiles", "peak GiB", "density", "block density", "tile",
                                       "sparse/dense calls", "attention ms dense/sparse", "additive ms",
                                       "routing overhead")]
    for r in results["rows"]:
        head = f"| {r['res']} | {tuple(r['grid'])} | {r['variant']} | {r['compile']} |"
        if "error" in r:
            lines.append(f"{head} error: {r['error'][:80]} | | | | | | | | | | | |")
            continue
        graphs = (f"{r['graphs']} / {r['graph_breaks']} / {r['recompiles_while_timed']}" if "graphs" in r else "-")
        pipeline = f"{r['pipeline_ms'] / 1e3:.1f}" if "pipeline_ms" in r else "-"
        lines.append(
            f"{head} {r['ms']:.1f} | {r.get('speedup_vs_dense', '-')} | {pipeline} | {graphs} | {r['peak_mem_gib']} | "
            f"{r.get('density', 1.0)} | {r.get('block_density', '-')} | {r.get('tile', '-')} | "
            f"{r.get('sparse_calls', '-')}/{r.get('dense_calls', '-')} | "
            f"{r.get('attention_dense_ms', '-')}/{r.get('attention_sparse_ms', '-')} | {r.get('additive_ms', '-')} | "
            f"{r.get('routing_overhead', '-')} |")
    return lines


def attention_inputs(model, grid, dev):
    """Random ``(1, heads, T*H*W, head_dim)`` bf16 q, k, v of the model's self-attention at `grid`."""
    heads = model.config.num_attention_heads
    n = grid[0] * grid[1] * grid[2]
    return [torch.randn(1, heads, n, model.config.attention_head_dim, device=dev, dtype=torch.bfloat16)
            for _ in range(3)]


def attention_ms(model, grid, dev, plan=None) -> float:
    """One self-attention call at `grid` alone: dense SDPA (its default backend choice) or, given `plan`, the
    block-sparse kernel on raster-order inputs (the permutation included); `benchlib.median_ms`, as
    bench_attention times them."""
    q, k, v = attention_inputs(model, grid, dev)
    if plan is None:
        return benchlib.median_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    from vidaccel.kernels import block_sparse_attention

    return benchlib.median_ms(lambda: block_sparse_attention(q, k, v, plan))


def measure(model, config, mode: str, args, dev, latents, text, attention=None, name=None, grid=None) -> dict:
    """One row: accelerate with `config` (None: dense), compile in `mode`, warm up, time one step; always removes.
    With `attention` (a dict) on the GPU, the variant's kernel time per call at `grid` is added to it under `name`
    once."""
    import vidaccel

    if config is not None:
        vidaccel.accelerate(model, config)
    try:
        call = compiled_step(model, mode, args.compile_backend)

        def step(t=500.0):
            with torch.inference_mode():
                return call(hidden_states=latents, timestep=torch.tensor([t], device=dev), encoder_hidden_states=text,
                            return_dict=False)[0]

        for t in (500.0, 480.0):  # warm-up at two timesteps (compile, plans, autotuning): a second step recompiles?
            out = step(t)
        benchlib.sync(dev)
        row = {"finite_output": bool(torch.isfinite(out).all())}
        del out
        before = dynamo_counts() if mode != "none" else None
        cuda = dev.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        _, (est_s,) = benchlib.wall_times(step, 1, dev)
        est_ms = est_s * 1e3
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
        ms = benchlib.bench_median_ms(step, warmup=1, rep=args.reps * est_ms) if cuda else est_ms
        row.update(ms=round(ms, 1), peak_mem_gib=round(peak, 2))
        if before is not None:
            after = dynamo_counts()
            row.update(graphs=before["graphs"], graph_breaks=before["graph_breaks"],
                       break_reasons=before["break_reasons"], recompiles_while_timed=after["graphs"] - before["graphs"])
        if config is not None:
            # the plan the hooks built (on the GPU) - not `summary`, which rebuilds on the CPU
            state = model._vidaccel_sparse_attention
            plan = next(iter(state.plan_cache._plans.values()))
            row.update(config=repr(state.config), attention_path=state.attention_path.name,
                       density=round(plan.density, 4), block_density=round(plan.block_density(), 4),
                       tile=list(plan.tile), sparse_calls=sum(state.sparse_calls.values()),
                       dense_calls=sum(state.dense_calls.values()),
                       # dense_steps=0: a layer is dense on every step or on none
                       sparse_layers=len(state.sparse_calls), dense_layers=len(state.dense_calls))
            if attention is not None and "dense" in attention and name not in attention:
                try:  # a failure here must not cost the step row
                    attention[name] = attention_ms(model, grid, dev, plan)
                except Exception as exc:  # noqa: BLE001
                    print(f"[{name}] kernel timing failed: {benchlib.error_text(exc)}", flush=True)
        return row
    except Exception as exc:  # noqa: BLE001 - record and continue with the next row
        return {"error": benchlib.error_text(exc)}
    finally:
        if config is not None:
            vidaccel.remove(model)
        if mode != "none":
            torch._dynamo.reset()


if __name__ == "__main__":
    main()
