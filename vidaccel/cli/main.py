"""The `vidaccel` command line: one parser, subcommands from `vidaccel.cli.commands`.

Errors a user can fix (bad paths, presets, configs, out of memory) print one clear line and exit
with status 2; ``--debug`` (before or after the subcommand) shows the traceback instead. Ctrl-C
exits with 130 (`compare` keeps its finished runs).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .commands import COMMANDS


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``vidaccel generate: error: argument --steps: expected ...`` (status 2),
    without the usage block; subcommand parsers inherit it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vidaccel",
        description="Faster, higher-resolution video diffusion transformers in diffusers.",
        epilog="Examples:\n  vidaccel demo\n  vidaccel generate \"a red circle moving right on a blue background\"\n"
               "  vidaccel compare \"a red circle moving right\" --accel radial --out report/\n"
               "  vidaccel bench attention --grid 5 8 8\n  vidaccel <command> --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"vidaccel.cli.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"vidaccel.cli.commands.{name}":
                raise
            continue  # subcommand not part of this build
        module.add_parser(sub)
        # also accept --debug after the subcommand; SUPPRESS keeps the top-level value otherwise
        sub.choices[name].add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                       help="show full tracebacks on errors")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed): a status, not an exception
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = argv  # for commands that relaunch themselves (generate --gpus N)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("vidaccel: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, RuntimeError, MemoryError, OSError) as exc:
        if args.debug:
            raise
        print(f"vidaccel: error: {exc}", file=sys.stderr)
        return 2
