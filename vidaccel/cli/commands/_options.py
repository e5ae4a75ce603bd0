"""Options shared by the commands that load a model and generate (one definition, same help text)."""

from __future__ import annotations

import argparse


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
    g.add_argument("prompts", nargs="*", metavar="PROMPT", help="text prompt(s)")
    g.add_argument("--prompts-file", metavar="FILE", help="more prompts, one per line ('#' starts a comment)")
    g.add_argument("--height", type=int, help="pixels")
    g.add_argument("--width", type=int, help="pixels")
    g.add_argument("--frames", type=int, help="number of frames")
    g.add_argument("--steps", type=int, help="denoising steps")
    g.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    g.add_argument("--negative-prompt", help="negative prompt")
    if seeds:
        g.add_argument("--seed", dest="seeds", type=int, nargs="+", default=[0], metavar="SEED",
                       help="seed(s); every prompt runs with every seed (default: 0)")
    g.add_argument("--fps", type=int, default=8, help="frame rate of the written MP4 (default: 8)")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="hide progress bars (shown on a terminal by default)")


def check_positive(args) -> None:
    """Reject non-positive sizes before any model is loaded."""
    for name in ("height", "width", "frames", "steps", "fps", "repeats"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise ValueError(f"--{name} must be a positive integer, got {value}")


def add_accel_option(p, repeatable: bool, what: str) -> None:
    """``--accel PRESET_OR_FILE`` (repeatable in compare and bench); the preset list comes from vidaccel.PRESETS."""
    from ...sparse.config import PRESETS

    p.add_argument("--accel", action="append" if repeatable else "store", metavar="PRESET_OR_FILE",
                   help=f"{what}: a preset ({', '.join(sorted(PRESETS))}) or a .yaml/.json config file (sparse "
                        f"attention and/or kv_cache, block_reuse; see README)")


def print_table(rows: list[list[str]]) -> None:
    """Left-aligned text columns; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
