"""Options shared by the commands that load a model and generate (one definition, same help text)."""

from __future__ import annotations

import argparse
import math

# The preset names for --help, without importing vidaccel.sparse (and with it torch) to build the parser;
# tests/test_cli_defects.py checks that they equal vidaccel.PRESETS.
PRESET_NAMES = ("radial", "tile_window", "window")


def _number(kind, text: str, what: str, ok) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (the error names the flag: 'argument --steps: expected ...')."""
    return _number(int, text, "a positive integer (>= 1)", lambda v: v >= 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(int, text, "a non-negative integer (>= 0)", lambda v: v >= 0)


def finite_float(text: str) -> float:
    """argparse type: a finite number (not nan or inf)."""
    return _number(float, text, "a finite number", math.isfinite)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(float, text, "a finite number > 0", lambda v: math.isfinite(v) and v > 0)


def family_names() -> tuple[list[str], list[str]]:
    """(family labels, transformer classes) of `vidaccel.supported_models()` (imports torch: call it lazily)."""
    import vidaccel

    rows = vidaccel.supported_models()
    return sorted({r["family"] for r in rows}), [r["class"] for r in rows]


def family_name(text: str) -> str:
    """argparse type for --family: a family label or a transformer class of `vidaccel.supported_models()`.

    The names come from the adapters, not a list kept here; they are read only when --family is given, so
    that --help imports neither torch nor diffusers."""
    families, classes = family_names()
    if text not in families and text not in classes:
        raise argparse.ArgumentTypeError(f"unknown family {text!r}: use a family ({', '.join(families)}) or a "
                                         f"transformer class ({', '.join(classes)}) of vidaccel.supported_models()")
    return text


def formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def add_model_options(p) -> None:
    g = p.add_argument_group("model and device")
    g.add_argument("--model", metavar="PATH_OR_ID",
                   help="diffusers pipeline folder (save_pretrained) or Hub id, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers "
                        "(default: the shipped tiny model assets/tiny-wan, when installed)")
    g.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N (default: auto)")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="weights and compute dtype (default: auto = bfloat16 on CUDA, float32 on CPU)")
    g.add_argument("--offload", default="none", choices=["none", "model", "sequential"],
                   help="diffusers CPU offload: model = enable_model_cpu_offload, sequential = "
                        "enable_sequential_cpu_offload (least memory, slowest) (default: none)")


def add_generation_options(p, seeds: bool = True) -> None:
    g = p.add_argument_group("generation (defaults: the tiny model's settings, else the pipeline's)")
    # default=[]: argparse would otherwise list PROMPT as required in a "missing arguments" error
    g.add_argument("prompts", nargs="*", default=[], metavar="PROMPT", help="text prompt(s)")
    g.add_argument("--prompts-file", metavar="FILE", help="more prompts, one per line ('#' starts a comment)")
    g.add_argument("--height", type=positive_int, help="pixels")
    g.add_argument("--width", type=positive_int, help="pixels")
    g.add_argument("--frames", type=positive_int, help="number of frames")
    g.add_argument("--steps", type=positive_int, help="denoising steps")
    g.add_argument("--guidance", type=finite_float, help="classifier-free guidance scale")
    g.add_argument("--negative-prompt", help="negative prompt")
    if seeds:
        g.add_argument("--seed", dest="seeds", type=int, nargs="+", default=[0], metavar="SEED",
                       help="seed(s); every prompt runs with every seed (default: 0)")
    g.add_argument("--fps", type=positive_int, default=8, help="frame rate of the written MP4 (default: 8)")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="hide progress bars (shown on a terminal by default)")


def add_accel_option(p, repeatable: bool, what: str) -> None:
    """``--accel PRESET_OR_FILE`` (repeatable in compare and bench); the preset list is PRESET_NAMES."""
    p.add_argument("--accel", action="append" if repeatable else "store", metavar="PRESET_OR_FILE",
                   help=f"{what}: a preset ({', '.join(sorted(PRESET_NAMES))}) or a .yaml/.json config file (sparse "
                        f"attention and/or kv_cache, block_reuse, diffusers_cache; compare also upscale, size; see "
                        f"README)")


def print_table(rows: list[list[str]]) -> None:
    """Left-aligned text columns; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
