"""The `vidaccel` command line. Subcommands register themselves in `build_parser`."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(config=args.accel, height=args.height, width=args.width, num_frames=args.frames, steps=args.steps,
             seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidaccel",
        description="Faster, higher-resolution video diffusion transformers in diffusers.",
        epilog="Example: vidaccel demo --accel window",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="tiny random-weight Wan pipeline on CPU, dense vs accelerated",
                          description="Run a tiny random-weight Wan pipeline on CPU with and without "
                                      "acceleration; print timings and the max output difference.",
                          epilog="Example: vidaccel demo --accel radial --steps 4")
    demo.add_argument("--accel", default="radial", choices=["radial", "window"], help="preset (default radial)")
    demo.add_argument("--height", type=int, default=128)
    demo.add_argument("--width", type=int, default=128)
    demo.add_argument("--frames", type=int, default=17)
    demo.add_argument("--steps", type=int, default=4)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError) as exc:
        if args.debug:
            raise
        print(f"vidaccel: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
