"""`vidaccel generate`: text to MP4 with an optional acceleration preset or config file."""

from __future__ import annotations

from pathlib import Path

from ._options import (add_accel_option, add_generation_options, add_model_options, formatter,
                       positive_int)

EXAMPLES = """examples:
  vidaccel generate "a red circle moving right on a blue background"          # tiny model, dense
  vidaccel generate "a fox in the snow" --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers \\
      --height 480 --width 832 --frames 81 --steps 50 --accel radial --out fox.mp4
  vidaccel generate --prompts-file prompts.txt --seed 0 1 --accel my_radial.yaml --out clips/out.mp4
  vidaccel generate "..." --model ./my-wan --offload model --dtype bfloat16
  vidaccel generate "a fox" --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --accel radial --gpus 2   # one video, 2 GPUs
  vidaccel generate --prompts-file prompts.txt --model ... --gpus 4           # prompts spread over 4 GPUs

A config file (YAML or JSON) holds one configuration: {type: radial, dense_steps: 2, block_size: 32}.
Several prompts/seeds write OUT_<prompt>_s<seed>.mp4 next to --out.

--gpus N launches N processes through torchrun: one video is split across the GPUs with diffusers'
Ulysses context parallelism (Wan, LTX-Video); several videos are shared out, one GPU each."""


def _outputs(out: Path, n_prompts: int, seeds: list[int]) -> list[tuple[int, int, Path]]:
    if n_prompts == 1 and len(seeds) == 1:
        return [(0, seeds[0], out)]
    return [(i, s, out.with_name(f"{out.stem}_{i:02d}_s{s}{out.suffix}")) for i in range(n_prompts) for s in seeds]


def _launch(args) -> int:
    """Re-run this command under torchrun with one process per GPU."""
    import subprocess
    import sys

    if args.gpus < 1:
        raise ValueError(f"--gpus must be at least 1, got {args.gpus}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.gpus),
           "-m", "vidaccel.cli", *args.argv]
    return subprocess.call(cmd)


def run(args) -> int:
    import os

    if args.gpus > 1 and "RANK" not in os.environ:
        return _launch(args)
    return _run(args)


def _run(args) -> int:
    from .. import config_files, generation, loading
    from ...core.validate import output_file, save_or_keep
    from ...distributed import enable_context_parallel, init_distributed, shard
    from ...report.video import write_mp4

    rank, world = init_distributed()
    prompts = generation.read_prompts(args.prompts, args.prompts_file)
    configs = config_files.accel_configs([args.accel] if args.accel else [])
    if len(configs) > 1:
        raise ValueError(f"--accel {args.accel}: generate takes one configuration, the file has {len(configs)} "
                         f"(use `vidaccel compare` for several)")
    config_files.compare_only(configs, "generate")
    out = output_file(args.out, "--out", suffix=".mp4")  # before the (slow) model load
    for _, _, path in _outputs(out, len(prompts), args.seeds):
        output_file(path, "--out", suffix=".mp4")
    existing = [p for _, _, p in _outputs(out, len(prompts), args.seeds) if p.exists()]
    if existing and not args.force:  # before the (slow) model load; same wording as compare's folder check
        more = f" (and {len(existing) - 1} more output(s))" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]} already exists{more}: pass --force to overwrite it, or a different --out")
    loading.quiet_libraries()
    pipe, info = loading.load_pipeline(args.model, args.device, args.dtype, args.offload)
    defaults = loading.default_settings(args.model)
    settings = dict(height=args.height or defaults["height"], width=args.width or defaults["width"],
                    num_frames=args.frames or defaults["num_frames"], steps=args.steps or defaults["steps"],
                    guidance_scale=args.guidance if args.guidance is not None else defaults["guidance_scale"],
                    negative_prompt=args.negative_prompt)
    accel = configs[0] if configs else config_files.NamedConfig(config_files.BASELINE, None, "dense")
    print(f"model {info['model']} ({info['pipeline']}) on {info['device']} {info['dtype']}, "
          f"acceleration: {'none (dense)' if accel.is_baseline else accel.name}")
    steps = settings["steps"] or generation.pipeline_default(pipe, "num_inference_steps")
    accel = config_files.calibrated(  # MagCache's calibrate: true, on the first prompt and seed
        pipe, accel, steps, lambda runner: generation.generate(pipe, prompts[0], args.seeds[0], offload=args.offload,
                                                               progress=False, runner=runner, **settings))
    with config_files.applied(pipe, accel, steps=steps) as runner:
        jobs = _outputs(out, len(prompts), args.seeds)
        context_parallel = world > 1 and len(jobs) == 1
        if context_parallel:  # one video: every rank works on it, rank 0 writes it
            enable_context_parallel(pipe, ulysses_degree=world)
        elif world > 1:  # several videos: data parallel
            jobs = shard(jobs, rank, world)
        for n, (i, seed, path) in enumerate(jobs):
            result = generation.generate(pipe, prompts[i], seed, offload=args.offload,
                                         progress=args.progress if rank == 0 else False,
                                         desc=f"video {n + 1}/{len(jobs)}", runner=runner, **settings)
            if context_parallel and rank != 0:
                continue
            save_or_keep(lambda p: write_mp4(p, result.frames, fps=args.fps), path)
            t, h, w, _ = result.frames.shape
            step = f", {result.step_s:.3f} s/step" if result.step_s else ""
            print(f"wrote {path} ({t} frames {w}x{h}, seed {seed}, {result.wall_s:.2f} s{step})")
        if not accel.is_baseline:
            import vidaccel

            print(vidaccel.summary(pipe, print_summary=False))
            if accel.diffusers_cache is not None:
                print(accel.diffusers_cache.summary_line())
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="generate video(s) to MP4, optionally accelerated", formatter_class=formatter,
        description="Generate videos from text prompts with a diffusers video pipeline, optionally with a vidaccel "
                    "preset or config file, and write H.264 MP4 files.",
        epilog=EXAMPLES,
    )
    add_generation_options(p)
    add_model_options(p)
    add_accel_option(p, repeatable=False, what="acceleration (default: none, dense)")
    p.add_argument("--out", default="vidaccel.mp4", help="output MP4 path (default: vidaccel.mp4)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--gpus", type=positive_int, default=1,
                   help="GPUs (processes via torchrun): one video uses context parallelism, several videos are "
                        "spread one per GPU (default: 1)")
    p.set_defaults(func=run)
