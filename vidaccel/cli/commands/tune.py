"""`vidaccel tune`: measure every candidate pattern's recall per layer and head, write the sparsity profile."""

from __future__ import annotations

from ._options import add_generation_options, add_model_options, formatter, positive_int

EXAMPLES = """examples:
  vidaccel tune "a red circle moving right on a blue background" --out sparsity.json      # shipped tiny model
  vidaccel tune "a fox in the snow" --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --height 720 --width 1280 \\
      --frames 81 --steps 50 --speedup 3 --dense-steps 12 --out wan13b_720p_sparsity.json

then, in Python:
  vidaccel.accelerate(pipe, vidaccel.TunedAttentionConfig(profile="wan13b_720p_sparsity.json"))

Tune at the resolution and step count you generate with (windows scale to other grids); one or two prompts
and a few measured steps (--measure-steps) suffice."""


def run(args) -> int:
    from .. import generation
    from ...core.validate import output_file
    from ...tuning import tune

    output_file(args.out, "--out")  # before the model load
    if args.recall is not None and args.speedup is not None:
        raise ValueError("Give one budget: --recall R or --speedup S.")
    pipe, prompts, settings = generation.load_for_measurement(args, "tuning")
    steps = None if args.measure_steps is None else [int(s) for s in args.measure_steps.split(",")]
    result = tune(pipe, prompts, recall=args.recall, speedup=args.speedup, granularity=args.granularity,
                  dense_steps=args.dense_steps, steps=steps, query_rows=args.query_rows, path=args.out, **settings)
    costs = {c["name"]: c["cost"] for c in result.candidates}
    budget = ", ".join(f"{k} {v:g}" for k, v in result.budget.items())
    print(f"budget: {budget}; {len(result.candidates)} candidates at grid {result.models[0].grid}")
    for m in result.models:
        print(f"pipe.{m.attribute}: mean recall {m.recall:.4f}, attention cost {m.cost:.3f} of dense "
              f"(about {1 / max(m.cost, 1e-9):.2f}x attention)")
        for layer in m.layers:
            groups = m.head_groups(layer.index)
            text = ", ".join(f"{name} x{len(heads)}" for name, heads in groups.items())
            print(f"  {layer.name}: {text}")
    print(f"candidate costs: " + ", ".join(f"{n} {c:.3f}" for n, c in costs.items()))
    print(f"wrote {args.out}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "tune", help="measure attention recall per layer/head and choose sparse patterns; writes a sparsity profile",
        description="Run the pipeline on a few prompts; in each self-attention call score sampled query rows "
                    "densely and measure, per layer and head, the softmax mass each candidate pattern keeps "
                    "(windows, tile-aligned windows, radial, dense) and its cost (the kernel's visited blocks). "
                    "Choose per head (or layer) under a recall or attention speed-up budget and write the "
                    "sparsity profile for TunedAttentionConfig.",
        epilog=EXAMPLES, formatter_class=formatter,
    )
    add_model_options(p)
    add_generation_options(p, seeds=False)
    g = p.add_argument_group("tuning")
    g.add_argument("--out", required=True, metavar="JSON", help="where to write the sparsity profile")
    g.add_argument("--seed", type=int, default=0, help="seed of the first prompt; prompt i uses seed+i (default: 0)")
    g.add_argument("--recall", type=float, default=None,
                   help="budget: per unit the cheapest pattern keeping this share of softmax mass (default 0.95)")
    g.add_argument("--speedup", type=float, default=None,
                   help="budget instead: the most recall at this attention speed-up over dense (e.g. 3)")
    g.add_argument("--granularity", choices=["head", "layer"], default="head",
                   help="choose per head of each layer (default) or one pattern per layer")
    g.add_argument("--dense-steps", type=int, default=0,
                   help="warm-up steps the tuned run keeps dense: not measured, recorded (default: 0)")
    g.add_argument("--measure-steps", default=None, metavar="S1,S2,...",
                   help="denoising steps to measure (default: every step after the warm-up)")
    g.add_argument("--query-rows", type=positive_int, default=64,
                   help="sampled query rows per attention call (default: 64)")
    p.set_defaults(func=run)
