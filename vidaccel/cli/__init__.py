"""The ``vidaccel`` command line (console script ``vidaccel = vidaccel.cli:main``).

- `main`: the parser and error handling (one line and exit status 2 for errors a user can fix).
- `commands/`: one module per subcommand (generate, upscale, compare, profile, bench, demo).
- `loading`, `config_files`, `generation`: what the commands share - load a pipeline, read ``--accel``
  presets and config files, generate a clip with timings and peak memory.
"""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
