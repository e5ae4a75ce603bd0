"""`vidaccel profile`: measure a model's blocks and write the profile JSON that block reuse needs."""

from __future__ import annotations

from ._options import add_generation_options, add_model_options, formatter, positive_int

EXAMPLES = """examples:
  vidaccel profile "a red circle moving right on a blue background" --out tiny.json     # shipped tiny model
  vidaccel profile "a fox in the snow" "a city street at night" --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers \\
      --height 480 --width 832 --frames 81 --steps 50 --out wan13b_480p.json

then, in Python:
  vidaccel.enable_block_reuse(pipe, "profiled", profile="wan13b_480p.json")

Profile at the resolution, frame count and step count you generate with; one or two prompts suffice."""


def run(args) -> int:
    from .. import generation
    from ...caches import profile
    from ...core.validate import output_file

    output_file(args.out, "--out")  # before the model load; vidaccel.profile checks it again
    if args.query_rows <= 0:
        raise ValueError(f"--query-rows must be a positive integer, got {args.query_rows}")
    tau = args.tau
    if tau not in ("otsu", "median") and not tau.startswith("background:"):
        try:
            tau = float(tau)
        except ValueError:
            raise ValueError(f"--tau {args.tau!r}: give a number, 'otsu', 'median' or 'background:F'") from None
    pipe, prompts, settings = generation.load_for_measurement(args, "profiling")
    result = profile(pipe, prompts, query_rows=args.query_rows, foreground=args.foreground, tau=tau, path=args.out,
                     **settings)
    t = result.tau
    print(f"foreground ({result.foreground['method']}): {result.foreground['fraction']:.1%} of tokens; "
          f"tau = {t['value']:.3f} ({t['method']})")
    for m in result.models:
        bg = m.background_blocks
        print(f"pipe.{m.attribute}: {len(bg)}/{m.num_blocks} background blocks {bg}")
        print("  R per block: " + " ".join("nan" if b.R != b.R else f"{b.R:.2f}" for b in m.blocks))
    print(f"wrote {args.out}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "profile", help="measure blocks (foreground/background) for block reuse; writes a profile JSON",
        description="Run the pipeline on a few prompts and record per block and step: residual change between "
                    "steps, received attention (sampled query rows) and the foreground ratio R; classify blocks "
                    "as foreground/background and write the profile JSON for vidaccel.enable_block_reuse.",
        epilog=EXAMPLES, formatter_class=formatter,
    )
    add_model_options(p)
    add_generation_options(p, seeds=False)
    g = p.add_argument_group("profiling")
    g.add_argument("--out", required=True, metavar="JSON", help="where to write the profile")
    g.add_argument("--seed", type=int, default=0, help="seed of the first prompt; prompt i uses seed+i (default: 0)")
    g.add_argument("--query-rows", type=positive_int, default=256,
                   help="sampled query rows per attention call (default: 256)")
    g.add_argument("--foreground", default="pca", choices=["pca", "motion"],
                   help="foreground estimate from the model's predictions (default: pca)")
    g.add_argument("--tau", default="otsu", help="R threshold: a number, otsu, median, or background:F to reuse the fraction F of blocks with "
                        "the lowest R (a speed budget; default: otsu)")
    p.set_defaults(func=run)
