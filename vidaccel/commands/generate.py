"""`vidaccel generate`: text to MP4 with an optional acceleration preset or config file."""

from __future__ import annotations

from pathlib import Path

from ._options import add_accel_option, add_generation_options, add_model_options, check_positive, formatter

EXAMPLES = """examples:
  vidaccel generate "a red circle moving right on a blue background"          # tiny model, dense
  vidaccel generate "a fox in the snow" --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers \\
      --height 480 --width 832 --frames 81 --steps 50 --accel radial --out fox.mp4
  vidaccel generate --prompts-file prompts.txt --seed 0 1 --accel my_radial.yaml --out clips/out.mp4
  vidaccel generate "..." --model ./my-wan --offload model --dtype bfloat16

A config file (YAML or JSON) holds one configuration: {type: radial, dense_steps: 2, block_size: 32}.
Several prompts/seeds write OUT_<prompt>_s<seed>.mp4 next to --out."""


def _outputs(out: Path, n_prompts: int, seeds: list[int]) -> list[tuple[int, int, Path]]:
    if n_prompts == 1 and len(seeds) == 1:
        return [(0, seeds[0], out)]
    return [(i, s, out.with_name(f"{out.stem}_{i:02d}_s{s}{out.suffix}")) for i in range(n_prompts) for s in seeds]


def run(args) -> int:
    from .. import runner
    from ..report.video import write_mp4

    check_positive(args)
    prompts = runner.read_prompts(args.prompts, args.prompts_file)
    configs = runner.accel_configs([args.accel] if args.accel else [])
    if len(configs) > 1:
        raise ValueError(f"--accel {args.accel}: generate takes one configuration, the file has {len(configs)} "
                         f"(use `vidaccel compare` for several)")
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out {args.out!r} must end in .mp4")
    runner.quiet_libraries()
    pipe, info = runner.load_pipeline(args.model, args.device, args.dtype, args.offload)
    defaults = runner.default_settings(args.model)
    settings = dict(height=args.height or defaults["height"], width=args.width or defaults["width"],
                    num_frames=args.frames or defaults["num_frames"], steps=args.steps or defaults["steps"],
                    guidance_scale=args.guidance if args.guidance is not None else defaults["guidance_scale"],
                    negative_prompt=args.negative_prompt)
    accel = configs[0] if configs else runner.NamedConfig(runner.BASELINE, None, "dense")
    print(f"model {info['model']} ({info['pipeline']}) on {info['device']} {info['dtype']}, "
          f"acceleration: {'none (dense)' if accel.is_baseline else accel.name}")
    runner.apply_config(pipe, accel)
    try:
        jobs = _outputs(out, len(prompts), args.seeds)
        for n, (i, seed, path) in enumerate(jobs):
            result = runner.generate(pipe, prompts[i], seed, offload=args.offload, progress=args.progress,
                                     desc=f"video {n + 1}/{len(jobs)}", **settings)
            write_mp4(path, result.frames, fps=args.fps)
            t, h, w, _ = result.frames.shape
            step = f", {result.step_s:.3f} s/step" if result.step_s else ""
            print(f"wrote {path} ({t} frames {w}x{h}, seed {seed}, {result.wall_s:.2f} s{step})")
        if not accel.is_baseline:
            import vidaccel

            print(vidaccel.summary(pipe, print_summary=False))
    finally:
        runner.remove_config(pipe, accel)
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
    p.set_defaults(func=run)
