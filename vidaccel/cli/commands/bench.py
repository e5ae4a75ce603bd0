"""`vidaccel bench`: time attention or whole-pipeline configurations on this machine's device.

Small and honest: medians of a few repeats after a warm-up, the device and versions printed with
them, nothing extrapolated. The full GPU attention study (cuDNN, flash, FlexAttention, tile
sizes) is `scripts/bench_attention.py`; end to end on real models, `scripts/bench_e2e.py`.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from ._options import (add_accel_option, add_generation_options, add_model_options, family_name, formatter,
                       positive_int, print_table)

TINY_RANDOM = "tiny-random"  # --model value: a tiny random-weight pipeline of --family, built offline

EXAMPLES = """examples:
  vidaccel bench attention                                   # every preset at a small grid, CPU or GPU
  vidaccel bench attention --grid 21 45 80 --heads 12 --head-dim 128 --dtype bfloat16 --out bench.json
  vidaccel bench attention --family hunyuan --accel radial   # HunyuanVideo's radial defaults
  vidaccel bench pipeline "a red circle moving right" --accel radial --repeats 3     # tiny model
  vidaccel bench pipeline "a cat" --model tiny-random --family mochi --repeats 1     # tiny random MochiPipeline
  vidaccel bench pipeline "a fox" --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --frames 81 --accel my.yaml"""


def _median_s(fn, repeats: int, device) -> list[float]:
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up: first-call costs (kernel compilation, caches) are not timed
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def radial_family(name: str) -> str:
    """The radial-defaults family (`RadialAttentionConfig.resolved`) of a --family value: its adapter's."""
    from ...core.adapters import ADAPTERS

    defaults = {a.radial_defaults for a in ADAPTERS.values() if name in (a.class_name, a.family)}
    if len(defaults) != 1:  # a family label whose classes disagree would be ambiguous: name the class instead
        raise ValueError(f"--family {name}: its classes take different radial defaults ({', '.join(sorted(defaults))}); "
                         f"pass one transformer class")
    return defaults.pop()


def _bench_attention(args, configs, device) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from .. import loading
    from ...sparse.attention import sparse_attention
    from ...sparse.plan import build_plan

    dtype = loading.resolve_dtype(args.dtype, device)
    grid = tuple(args.grid)
    n = grid[0] * grid[1] * grid[2]
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(1, args.heads, n, args.head_dim, generator=g).to(device, dtype) for _ in range(3))
    with torch.inference_mode():
        dense = _median_s(lambda: F.scaled_dot_product_attention(q, k, v), args.repeats, device)
        rows = [{"config": "dense SDPA", "median_ms": statistics.median(dense) * 1e3, "density": 1.0,
                 "block_density": 1.0, "speedup": 1.0}]
        for named in configs:
            if named.config is None:
                print(f"{named.name}: no sparse attention in this configuration (caches only): not an attention row")
                continue
            config = named.config.resolved(radial_family(args.family))
            start = time.perf_counter()
            plan = build_plan(config.build_pattern(), grid, tile_size=config.tile_size, device=device)
            plan_s = time.perf_counter() - start
            times = _median_s(lambda: sparse_attention(q, k, v, plan, backend=config.backend), args.repeats, device)
            med = statistics.median(times)
            rows.append({"config": named.name, "median_ms": med * 1e3, "density": plan.density,
                         "block_density": plan.block_density(), "speedup": statistics.median(dense) / med,
                         "plan_build_ms": plan_s * 1e3})
    return rows


def _tiny_random(args, device_arg):
    """`--model tiny-random`: the tiny random-weight pipeline of --family (`vidaccel.tiny.families`), its default
    sizes, and `wrap(runner)`: the runner called with that pipeline's prompt embeddings and conditioning."""
    from ...tiny.families import tiny_pipeline
    from .. import loading

    if args.offload != "none" or args.dtype not in ("auto", "float32"):
        raise ValueError("--model tiny-random runs in float32 without offloading: drop --offload and --dtype")
    spec = tiny_pipeline(args.family)
    if spec.requires:
        raise ValueError(f"--model tiny-random cannot build {spec.pipeline} for --family {args.family}: {spec.note}. "
                         f"Benchmark another family, or a real pipeline with --model")
    device = loading.resolve_device(device_arg)
    pipe = spec.build(0).to(device)
    info = {"model": TINY_RANDOM, "pipeline": spec.pipeline, "transformer": spec.transformer, "device": str(device),
            "dtype": "float32", "offload": "none", "tiny_model": False, "family": args.family}
    height, width, frames = spec.size
    defaults = dict(height=height, width=width, num_frames=frames, steps=2, guidance_scale=5.0)
    return pipe, info, defaults, spec.prompted


def _bench_pipeline(args, configs, device_arg) -> tuple[list[dict], dict]:
    from .. import config_files, generation, loading

    prompts = generation.read_prompts(args.prompts or ["a red circle moving right on a blue background"],
                                  args.prompts_file)
    loading.quiet_libraries()
    if args.model == TINY_RANDOM:
        pipe, info, d, wrap = _tiny_random(args, device_arg)
    else:
        pipe, info = loading.load_pipeline(args.model, device_arg, args.dtype, args.offload)
        d, wrap = loading.default_settings(args.model), (lambda runner: runner)
    gen = dict(height=args.height or d["height"], width=args.width or d["width"],
               num_frames=args.frames or d["num_frames"], steps=args.steps or d["steps"],
               guidance_scale=args.guidance if args.guidance is not None else d["guidance_scale"],
               negative_prompt=args.negative_prompt, offload=args.offload, progress=args.progress)
    rows = []
    steps = gen["steps"] or generation.pipeline_default(pipe, "num_inference_steps")
    for named in [config_files.NamedConfig(config_files.BASELINE, None, "dense"), *configs]:
        named = config_files.calibrated(pipe, named, steps, lambda runner: generation.generate(
            pipe, prompts[0], 0, desc=f"{named.name} calibration", runner=wrap(runner), **gen))
        with config_files.applied(pipe, named, steps=steps) as runner:
            results = [generation.generate(pipe, prompts[0], 0, desc=f"{named.name} {i}", runner=wrap(runner), **gen)
                       for i in range(args.repeats + 1)][1:]  # the first is the warm-up
        steps = [r.step_s for r in results if r.step_s]
        rows.append({"config": named.name, "median_s": statistics.median(r.wall_s for r in results),
                     "median_step_s": statistics.median(steps) if steps else None,
                     "peak_memory": results[-1].peak_memory})
    for row in rows:
        row["speedup"] = rows[0]["median_s"] / row["median_s"]
    return rows, info


def run(args) -> int:
    from .. import config_files, loading
    from ...report import environment

    from ...core.validate import output_file, save_or_keep

    out = output_file(args.out, "--out") if args.out else None  # before anything runs
    args.family = args.family or "wan"
    if args.model == TINY_RANDOM and args.mode != "pipeline":
        raise ValueError("--model tiny-random is for 'vidaccel bench pipeline'; attention mode builds no model")
    configs = config_files.accel_configs(args.accel or sorted(config_files._presets()))
    config_files.compare_only(configs, "bench")
    if args.mode == "attention":
        if len(args.grid) != 3 or min(args.grid) <= 0:
            raise ValueError(f"--grid takes three positive token counts T H W, got {args.grid}")
        device = loading.resolve_device(args.device)
        rows = _bench_attention(args, configs, device)
        setup = {"grid": list(args.grid), "heads": args.heads, "head_dim": args.head_dim,
                 "dtype": str(loading.resolve_dtype(args.dtype, device)).removeprefix("torch."),
                 "family": args.family, "repeats": args.repeats}
        header = f"attention, grid {tuple(args.grid)}, {args.heads} heads x {args.head_dim}, {setup['dtype']}"
        cols = [("config", "{}"), ("median_ms", "{:.3f} ms"), ("density", "{:.1%}"), ("block_density", "{:.1%}"),
                ("speedup", "{:.2f}x")]
    else:
        rows, info = _bench_pipeline(args, configs, args.device)
        device = loading.resolve_device(info["device"])
        setup = {**info, "repeats": args.repeats}
        header = f"pipeline {info['model']} ({info['pipeline']}), {info['dtype']}"
        cols = [("config", "{}"), ("median_s", "{:.3f} s"), ("median_step_s", "{:.4f} s/step"), ("speedup", "{:.2f}x")]
    env = environment(str(device))
    where = env.get("gpu") or env.get("cpu")
    print(f"vidaccel bench {header} on {device} ({where}); medians of {args.repeats} after 1 warm-up")
    print_table([[c for c, _ in cols]] + [[f.format(r[c]) if r.get(c) is not None else "n/a" for c, f in cols]
                                          for r in rows])
    if out is not None:
        text = json.dumps({"mode": args.mode, "setup": setup, "environment": env, "rows": rows}, indent=2) + "\n"
        save_or_keep(lambda p: _write_text(p, text), out)
        print(f"wrote {out}")
    return 0


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="time attention or pipeline configurations on this device", formatter_class=formatter,
        description="Time configurations on the current device: 'attention' runs sparse_attention against dense SDPA "
                    "on random inputs at a token grid; 'pipeline' times whole generations against the dense "
                    "pipeline. Medians of --repeats after one warm-up.",
        epilog=EXAMPLES,
    )
    p.add_argument("mode", choices=["attention", "pipeline"], help="what to time: attention or pipeline")
    add_accel_option(p, repeatable=True, what="a configuration to time, repeat for several (default: every preset)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed repeats per configuration (default: 5)")
    p.add_argument("--out", metavar="FILE.json", help="also write the rows, setup and environment as JSON")
    a = p.add_argument_group("attention mode")
    a.add_argument("--grid", type=positive_int, nargs="+", default=[5, 16, 16], metavar="N",
                   help="token grid T H W (default: 5 16 16; Wan 720p 81 frames is 21 45 80)")
    a.add_argument("--heads", type=positive_int, default=4, help="attention heads (default: 4)")
    a.add_argument("--head-dim", type=positive_int, default=64, help="head dimension (default: 64)")
    p.add_argument("--family", type=family_name, metavar="NAME",
                   help="a model family or transformer class of vidaccel.supported_models() (e.g. wan, hunyuan, "
                        "mochi, WanVACETransformer3DModel; a wrong name lists them): attention mode takes its radial "
                        "defaults, --model tiny-random builds its tiny pipeline (default: wan)")
    add_model_options(p)
    add_generation_options(p, seeds=False)
    p.set_defaults(func=run)
