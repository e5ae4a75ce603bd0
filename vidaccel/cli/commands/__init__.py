"""One module per `vidaccel` subcommand. Each exposes ``add_parser(subparsers)`` that registers its
parser and sets ``func(args) -> int`` as the default."""

COMMANDS = ("generate", "upscale", "compare", "profile", "tune", "bench", "demo")
