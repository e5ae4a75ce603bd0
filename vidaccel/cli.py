"""The `vidaccel` command line: one parser, subcommands from `vidaccel.commands`.

Errors a user can fix (bad paths, presets, configs, out of memory) print one clear line and exit
with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidaccel",
        description="Faster, higher-resolution video diffusion transformers in diffusers.",
        epilog="Examples:\n  vidaccel demo\n  vidaccel <command> --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"vidaccel.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"vidaccel.commands.{name}":
                raise
            continue  # subcommand not part of this build
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError, OSError) as exc:
        if args.debug:
            raise
        print(f"vidaccel: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
