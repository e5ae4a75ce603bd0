"""`vidaccel demo`: tiny random-weight Wan pipeline on CPU, dense vs accelerated."""

from ._options import positive_int


def run(args) -> int:
    from ...tiny.demo import run_demo

    run_demo(config=args.accel, height=args.height, width=args.width, num_frames=args.frames, steps=args.steps,
             seed=args.seed)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="tiny random-weight Wan pipeline on CPU, dense vs accelerated",
        description="Run a tiny random-weight Wan pipeline on CPU with and without acceleration; print "
                    "the summary, timings, the max output difference and whether remove() is exact.",
        epilog="Example: vidaccel demo --accel window --steps 4",
    )
    p.add_argument("--accel", default="radial", choices=["radial", "window"], help="preset (default: radial)")
    p.add_argument("--height", type=positive_int, default=128, help="pixels (default: 128)")
    p.add_argument("--width", type=positive_int, default=128, help="pixels (default: 128)")
    p.add_argument("--frames", type=positive_int, default=17, help="frames (default: 17)")
    p.add_argument("--steps", type=positive_int, default=4, help="denoising steps (default: 4)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
