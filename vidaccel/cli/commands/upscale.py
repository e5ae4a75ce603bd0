"""`vidaccel upscale`: prompt -> high-resolution MP4, or an input MP4 -> upscaled MP4, with FreeSwim."""

from __future__ import annotations

import time

from ._options import add_model_options, finite_float, formatter, positive_int

TINY_RANDOM = "tiny-random"  # --model value: tiny random-weight Wan pipeline, no download (tries the command)

EXAMPLES = """examples:
  vidaccel upscale "a fox in the snow" --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --height 1088 --width 1920 \\
      --out fox_1080p.mp4                          # 480x832 base generation, refined at 1088x1920
  vidaccel upscale --input clip.mp4 "a fox in the snow" --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers \\
      --height 1088 --width 1920 --offload-cache   # upscale an existing clip; cache in pinned CPU memory
  vidaccel upscale "a fox in the snow" --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --height 1088 --width 1920 \\
      --full-attention radial                      # radial full branch: cheaper guide steps, approximate
  vidaccel upscale --input clip.mp4 --model tiny-random --base-size 32 32 --height 64 --width 64

Sizes must be multiples of 16 (Wan: VAE 8 x patch 2) and at least the base size; more than 4x the
base area works but its quality is untested."""


def _defaults(model: str | None) -> dict:
    if model == TINY_RANDOM:
        return dict(base=(32, 32), frames=9, steps=8)
    if model is None:
        from ... import tiny

        return dict(base=(tiny.HEIGHT, tiny.WIDTH), frames=tiny.NUM_FRAMES, steps=tiny.NUM_STEPS)
    return dict(base=(480, 832), frames=81, steps=50)


def _load(args):
    from .. import loading

    if args.model != TINY_RANDOM:
        loading.quiet_libraries()
        pipe, info = loading.load_pipeline(args.model, args.device, args.dtype, args.offload)
        return pipe, info["model"], info["device"]
    from ...tiny.demo import tiny_random_wan_pipeline

    device = loading.resolve_device(args.device)
    return tiny_random_wan_pipeline().to(device), TINY_RANDOM, str(device)


def run(args) -> int:
    import torch

    from ...freeswim import FreeSwimConfig
    from ...pipelines import FreeSwimPipeline
    from ...core.validate import output_file, save_or_keep
    from ...pipelines.video_io import read_video
    from ...report.video import write_mp4

    out = output_file(args.output, "--output", suffix=".mp4")  # before the (slow) model load
    defaults = _defaults(args.model)
    base = tuple(args.base_size) if args.base_size else defaults["base"]
    height = args.height if args.height is not None else 2 * base[0]  # sizes are >= 1 (checked by the parser)
    width = args.width if args.width is not None else 2 * base[1]
    config = FreeSwimConfig(base_size=base, cache_steps=args.cache_steps, override=not args.no_override,
                            entropy_scaling=not args.no_entropy_scaling, offload_cache=args.offload_cache,
                            full_attention=args.full_attention)
    video, fps = (read_video(args.input) if args.input else (None, None))  # fail on a bad path before loading
    pipe, name, device = _load(args)
    fs = FreeSwimPipeline(pipe, config)
    print(f"model {name} on {device}: FreeSwim {base[0]}x{base[1]} -> {height}x{width}, "
          f"{'input ' + str(args.input) if video is not None else 'base generation'}")
    start = time.perf_counter()
    try:
        frames = fs(args.prompt or "", video=video, height=height, width=width,
                    num_frames=args.frames if args.frames is not None else defaults["frames"],
                    num_inference_steps=args.steps if args.steps is not None else defaults["steps"],
                    base_num_inference_steps=args.base_steps, strength=args.strength, guidance_scale=args.guidance,
                    negative_prompt=args.negative_prompt, flow_shift=args.flow_shift,
                    generator=torch.Generator().manual_seed(args.seed), output_type="np").frames[0]
        wall = time.perf_counter() - start
        save_or_keep(lambda p: write_mp4(p, frames, fps=args.fps if args.fps is not None else fps or 16), out)
        print(f"wrote {out} ({frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]}, {wall:.2f} s)")
        fs.summary()
    finally:
        fs.remove()
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "upscale", help="FreeSwim: prompt or input MP4 -> high-resolution MP4", formatter_class=formatter,
        description="Generate at the model's base resolution (or take --input), upsample, re-noise to --strength "
                    "and denoise at the target size with FreeSwim's window/full dual path and cross-attention cache.",
        epilog=EXAMPLES,
    )
    p.add_argument("prompt", nargs="?", default="", help="text prompt (may be empty with --input)")
    p.add_argument("--input", metavar="VIDEO", help="video file to upscale instead of generating the base clip")
    p.add_argument("--output", "--out", default="upscaled.mp4", help="output .mp4 (default: upscaled.mp4)")
    g = p.add_argument_group("sizes and schedule")
    g.add_argument("--height", type=positive_int, help="target height in pixels (default: 2x the base height)")
    g.add_argument("--width", type=positive_int, help="target width in pixels (default: 2x the base width)")
    g.add_argument("--base-size", type=positive_int, nargs=2, metavar=("H", "W"),
                   help="base (training) resolution: stage-1 size and window source (default: 480 832; the tiny "
                        "model's size with the tiny models)")
    g.add_argument("--frames", type=positive_int, help="frames of the base generation (default: 81; tiny: its own)")
    g.add_argument("--steps", type=positive_int, help="schedule length; stage 3 runs int(steps*strength) (default: 50)")
    g.add_argument("--base-steps", type=positive_int, help="stage-1 steps (default: --steps)")
    g.add_argument("--strength", type=finite_float, default=0.7, help="re-noise level in (0, 1] (default: 0.7)")
    g.add_argument("--flow-shift", type=finite_float,
                   help="stage-3 schedule shift (default: the scheduler's; ref. 9.0)")
    g.add_argument("--guidance", type=finite_float, default=5.0, help="classifier-free guidance scale (default: 5.0)")
    g.add_argument("--negative-prompt", help="negative prompt")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--fps", type=positive_int, help="output frame rate (default: the input's, else 16)")
    f = p.add_argument_group("FreeSwim")
    f.add_argument("--cache-steps", type=positive_int, default=2, help="full branch every N steps (default: 2)")
    f.add_argument("--offload-cache", action="store_true", help="cache in pinned CPU memory (CUDA)")
    f.add_argument("--no-override", action="store_true", help="window attention only, no full branch")
    f.add_argument("--no-entropy-scaling", action="store_true", help="plain 1/sqrt(d) attention scale")
    f.add_argument("--full-attention", choices=("dense", "radial"), default="dense",
                   help="full branch self-attention: dense (FreeSwim as defined) or radial (O(n log n), an "
                        "approximation: whole frame + neighbours + frame 0, farther frames in narrowing bands; "
                        "dense in the first 12 steps and block 0) (default: dense)")
    add_model_options(p)
    p.set_defaults(func=run)
