"""Number formatting shared by the Markdown and HTML views (None -> 'n/a', never a made-up value), and
the JSON encoding of non-finite numbers; the leaf of the report package (imports none of it)."""

from __future__ import annotations

import math

NA = "n/a"


def json_safe(value):
    """`value` with non-finite floats as the strings ``"inf"`` / ``"-inf"`` (None for NaN): JSON has no infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else None)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def as_float(value) -> float | None:
    """A JSON number back to float (``"inf"`` -> inf, None stays None)."""
    if value is None:
        return None
    return float(value)


def seconds(v) -> str:
    v = as_float(v)
    return NA if v is None else (f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s")


def ratio(v) -> str:
    v = as_float(v)
    return NA if v is None else f"{v:.2f}x"


def db(v) -> str:
    v = as_float(v)
    return NA if v is None else ("inf (identical)" if v == float("inf") else f"{v:.2f} dB")


def plain(v, digits: int = 4) -> str:
    v = as_float(v)
    return NA if v is None else f"{v:.{digits}f}"


def signed(v, digits: int = 2) -> str:
    v = as_float(v)
    return NA if v is None else f"{v:+.{digits}f}"


def percent(v) -> str:
    v = as_float(v)
    return NA if v is None else f"{v:.1%}"


def memory(nbytes, kind) -> str:
    if nbytes is None or kind in (None, "n/a"):
        return NA
    label = {"cuda_max_allocated": "", "cpu_peak_rss_delta": " RSS+"}.get(kind, "")
    return f"{nbytes / 2 ** 20:.1f} MiB{label}"


def summary_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-configuration table (shared by both views)."""
    header = ["configuration", "runs", "wall time", "time/step", "speedup", "step speedup", "peak memory",
              "token density", "PSNR", "SSIM", "flicker Δ", "temporal err.", "LPIPS"]
    rows = []
    for r in data.get("per_configuration", []):
        base = r["config"] == "baseline"
        rows.append([
            r["config"], str(r["runs"]), seconds(r["wall_s"]), seconds(r["step_s"]),
            "1.00x" if base else ratio(r["speedup"]),
            "1.00x" if base else ratio(r["step_speedup"]),
            memory(r["peak_memory_bytes"], r["peak_memory_kind"]),
            "dense" if base else percent(r["token_density"]),
            "reference" if base else db(r.get("psnr")),
            "reference" if base else plain(r.get("ssim")),
            "reference" if base else signed(r.get("flicker_delta")),
            "reference" if base else plain(r.get("temporal_error"), 2),
            "reference" if base else (plain(r.get("lpips")) if r.get("lpips") is not None else "unavailable"),
        ])
    return header, rows


def memory_note(data: dict) -> str:
    kinds = {r.get("peak_memory_kind") for r in data.get("per_configuration", [])}
    if "cpu_peak_rss_delta" in kinds:
        return ("Peak memory on CPU (RSS+): the process's peak resident memory above its level at the start of the run, "
                "from the kernel's high-water mark (VmHWM; not comparable with GPU figures).")
    if "cuda_max_allocated" in kinds:
        return "Peak memory: torch.cuda.max_memory_allocated during the run (tensors only, not the CUDA context)."
    return ""
