"""What the benchmark scripts share: the environment a result was measured in (also recorded by the
tiny-model trainer), timing, the shapes and the Wan2.1-1.3B architecture they run, and writing a result as
``<tag>.json`` + ``<tag>.md``.

Scripts import it as ``import benchlib``: Python puts a script's own folder first on ``sys.path`` when it
runs ``python scripts/<name>.py`` (and under ``torchrun``). vidaccel itself comes from ``pip install -e .``
or, on the GPU machine, ``PYTHONPATH`` (scripts/gpu_check.sh sets it to the repository root).
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import time

import torch

# ------------------------------------------------------------------------------------------ constants
# token grids (latent frames, height, width) of 81-frame videos: VAE 4x temporal, 8x spatial, patch 2x2
GRIDS = {"480p": (21, 30, 52), "720p": (21, 45, 80), "1088p": (21, 68, 120)}
RESOLUTIONS = {"480p": (480, 832), "720p": (720, 1280)}  # pixel (height, width)
# Wan2.1-1.3B transformer: the published config of `WanTransformer3DModel` (random weights here)
WAN_1_3B = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)


def wan_transformer(config: dict, device, dtype):
    """A `WanTransformer3DModel` of `config` with random weights, made on `device`, in eval mode, no grads."""
    from diffusers import WanTransformer3DModel

    with torch.device(device):
        model = WanTransformer3DModel(**config)
    return model.to(dtype).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------- environment
def _module_version(name):
    try:
        return __import__(name).__version__
    except Exception:  # noqa: BLE001 - report what is missing
        return None


def _cudnn():
    try:
        return torch.backends.cudnn.version()
    except Exception:  # noqa: BLE001
        return None


_FACTS = {
    "torch": lambda: torch.__version__,
    "python": platform.python_version,
    "triton": lambda: _module_version("triton"),
    "diffusers": lambda: _module_version("diffusers"),
    "gpu": lambda: torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    "cuda": lambda: torch.version.cuda,
    "cudnn": _cudnn,
}
MD_LABELS = {"torch": "torch", "python": "Python", "triton": "triton", "diffusers": "diffusers", "gpu": "GPU",
             "cuda": "CUDA", "cudnn": "cuDNN"}


def versions(*keys: str) -> dict:
    """The software and GPU a result was measured with: ``torch``, ``python``, ``triton``, ``diffusers``
    (None when not importable), ``gpu`` (device name, None without CUDA), ``cuda`` and ``cudnn``; only
    `keys`, in that order, when given."""
    return {k: _FACTS[k]() for k in keys or _FACTS}


def utc_now() -> str:
    """The date of a result: UTC, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def md_stamp(meta: dict, *keys: str) -> str:
    """``<date> - torch X, triton Y, ...``: the first words of a results file's description line."""
    return f"{meta['date']} - " + ", ".join(f"{MD_LABELS[k]} {meta[k]}" for k in keys)


# -------------------------------------------------------------------------------------------- timing
def sync(device="cuda"):
    """Wait for the GPU when `device` is a CUDA device (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bench_median_ms(fn, warmup, rep) -> float:
    """Median ms of `triton.testing.do_bench` (`warmup` and `rep` in ms)."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def warm_estimate_ms(fn, device="cuda") -> float:
    """Run `fn` once to warm up (compile, autotune), then once timed: a rough ms estimate."""
    fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - t0) * 1e3


def median_ms(fn, quick=False) -> float:
    """`bench_median_ms` with repetitions scaled to a warm estimate of `fn`'s time."""
    est = warm_estimate_ms(fn)
    # long calls: fewer repetitions (do_bench repeats at least once after its estimate)
    rep = 30 if quick else max(60, min(300, 8 * est))
    return bench_median_ms(fn, warmup=max(5, min(50, est)), rep=rep)


def paired_ms(fns: dict, rounds: int, quick=False) -> dict:
    """Median ms of each callable over `rounds` alternating rounds (the order rotates every round), so a
    GPU whose clocks drift under sustained load affects every callable alike."""
    est = {name: warm_estimate_ms(fn) for name, fn in fns.items()}
    names = list(fns)
    samples = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            rep = 20 if quick else max(40, 3 * est[name])
            samples[name].append(bench_median_ms(fns[name], warmup=5, rep=rep))
    return {name: sorted(v)[len(v) // 2] for name, v in samples.items()}


def wall_times(fn, repeats: int, device, before=None):
    """Call `fn` `repeats` times, each timed by the wall clock between device synchronizations (after
    `before()`, e.g. a barrier, when given); returns (the last output, seconds per call)."""
    out, times = None, []
    for _ in range(repeats):
        if before is not None:
            before()
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return out, times


def release_memory(device="cuda"):
    """Free what the last run left: garbage collection, and the CUDA caching allocator's free blocks."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def error_text(exc: BaseException, limit: int = 500) -> str:
    """``<ExceptionType>: <message>`` cut to `limit` characters: a failed row's ``error``."""
    return f"{type(exc).__name__}: {exc}"[:limit]


# ------------------------------------------------------------------------------------------- results
def write_json(path, obj):
    """`obj` as indented JSON at `path` (its folder made when missing)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1)


def write_results(out_dir, tag: str, results: dict, lines: list[str]):
    """A result as ``<out_dir>/<tag>.json`` (`results`) and ``<out_dir>/<tag>.md`` (`lines`)."""
    write_json(os.path.join(out_dir, f"{tag}.json"), results)
    with open(os.path.join(out_dir, f"{tag}.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def md_table_header(*columns: str, sep: str = "---") -> list[str]:
    """The two header lines of a Markdown table."""
    return ["| " + " | ".join(columns) + " |", "|" + "|".join(sep for _ in columns) + "|"]


def add_sweep_arguments(ap, *, what: str, variants: str, out: str, best: str):
    """The options every lab sweep script shares: ``--seconds`` of `what` per variant, ``--variants``,
    ``--device``, ``--quick``, ``--out`` and ``--best-args JSON`` (print what a finished sweep favours)."""
    ap.add_argument("--seconds", type=float, default=60.0, help=f"{what} time per variant")
    ap.add_argument("--variants", default=variants)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="toy sizes (the recipe's --quick)")
    ap.add_argument("--out", default=out)
    ap.add_argument("--best-args", metavar="JSON", help=f"print {best}")


def write_sweep(out, meta: dict, rows: list[dict], title: str, lines: list[str]):
    """A sweep so far: ``<out>.json`` ({meta, rows}) and ``<out>.md`` (`title` with the GPU and torch, then
    `lines`); written after every variant, so a call cut at its limit keeps what finished."""
    from pathlib import Path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    head = [f"# {title} ({meta['date']}, {meta['gpu'] or 'cpu'}, torch {meta['torch']})", ""]
    out.with_suffix(".md").write_text("\n".join(head + lines) + "\n")
