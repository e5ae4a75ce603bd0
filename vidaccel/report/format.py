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


def time_spread(r: dict) -> str:
    """Median time per clip with its min-max over every timed round: ``1.23 s (1.10-1.40 s)``."""
    med, lo, hi = (as_float(r.get(k)) for k in ("wall_s", "wall_s_min", "wall_s_max"))
    if med is None or lo is None or hi is None or r.get("timed", 1) < 2:
        return seconds(med)
    if lo >= 1:  # one unit for the three: "1.23 s (1.10-1.40 s)"
        return f"{med:.2f} s ({lo:.2f}-{hi:.2f} s)"
    return f"{seconds(med)} ({seconds(lo)} - {seconds(hi)})"


def speedup_cell(r: dict) -> str:
    """Median paired speed-up with the min-max of the paired ratios, and the verdict when it is not
    "faster"/"slower": ``1.05x (0.91-1.20x) not significant``, ``3.67x, not tested (1 pair)``."""
    med, lo, hi = (as_float(r.get(k)) for k in ("speedup", "speedup_min", "speedup_max"))
    if med is None:
        return NA
    verdict = r.get("speedup_verdict")
    if verdict == "not tested" or lo is None or hi is None:
        return f"{med:.2f}x, not tested (1 pair)" if verdict == "not tested" else f"{med:.2f}x"
    text = f"{med:.2f}x ({lo:.2f}-{hi:.2f}x)"
    return f"{text} not significant" if verdict == "not significant" else text


def flicker_cell(r: dict) -> str:
    """Flicker against the baseline: the difference in 0-255 units and the ratio, ``+0.42 (1.05x)``."""
    delta, ratio_ = as_float(r.get("flicker_delta")), as_float(r.get("flicker_ratio"))
    if delta is None:
        return NA
    return f"{delta:+.2f}" + (f" ({ratio_:.2f}x)" if ratio_ is not None else "")


def check_cell(r: dict) -> str:
    """Pixel-check passes over clips, ``3/4``; n/a without the check."""
    return NA if r.get("check_total") is None else f"{r['check_passed']}/{r['check_total']}"


def size_cell(r: dict) -> str:
    size = r.get("size") or []
    return f"{size[0]}x{size[1]}" if len(size) == 2 and None not in size else NA  # height x width, as baseline-HxW


def summary_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-configuration table (shared by both views and the CLI)."""
    header = ["configuration", "size (HxW)", "runs", "time per clip (min-max)", "time/step", "clip ÷ steps",
              "speedup (min-max of paired rounds)", "step speedup", "peak memory", "token density", "attention FLOPs",
              "PSNR", "SSIM", "flicker Δ (x dense)", "temporal err.", "LPIPS", "check", "extra objects"]
    rows = []
    for r in data.get("per_configuration", []):
        base = r.get("baseline", r["config"] == "baseline")
        timed = r.get("timed", r["runs"])
        rows.append([
            r["config"], size_cell(r),
            f"{r['runs']} ({timed} timed)" if timed != r["runs"] else str(r["runs"]), time_spread(r),
            seconds(r["step_s"]), seconds(r.get("clip_step_s")),
            "1.00x" if base else speedup_cell(r),
            "1.00x" if base else ratio(r["step_speedup"]),
            memory(r["peak_memory_bytes"], r["peak_memory_kind"]),
            "dense" if base else percent(r["token_density"]),
            percent(r.get("attention_flop_fraction")),
            "reference" if base else db(r.get("psnr")),
            "reference" if base else plain(r.get("ssim")),
            "reference" if base else flicker_cell(r),
            "reference" if base else plain(r.get("temporal_error"), 2),
            "reference" if base else (plain(r.get("lpips")) if r.get("lpips") is not None else "unavailable"),
            check_cell(r), plain(r.get("extra_objects"), 2),
        ])
    return header, rows


def references_note(data: dict) -> str:
    """Which baseline the rows at other sizes are compared with (empty when every row has the run's size)."""
    others = sorted({(r["reference"], size_cell(r)) for r in data.get("per_configuration", [])
                     if r.get("reference") not in (None, "baseline")})
    if not others:
        return ""
    return ("Rows at another size are compared with the dense run at that size (direct generation), which is "
            "their baseline for speed-up, quality and attention FLOPs: "
            + "; ".join(f"{size}: {ref}" for ref, size in others) + ".")


COLUMNS_NOTE = ("time/step: mean interval between consecutive step ends; clip ÷ steps: time per clip over the "
                "denoising steps it ran (both stages of an upscale row). attention FLOPs: attended query-key pairs "
                "of every self-attention computation that ran (sparse patterns at their token density, skipped "
                "computations not counted) over the baseline run's of the same prompt and seed. flicker Δ: mean "
                "frame-to-frame change minus the baseline's (0-255 units), in brackets their ratio. check: clips "
                "passing the lab pixel check (vidaccel.tiny.check.check_scene: colours, counts, motion, background) "
                "over clips; extra objects: the mean surplus of object regions over the caption's count (duplicated "
                "objects).")


def rounds_line(data: dict) -> str:
    """How many timed rounds ran and how that number was chosen (empty for a record without rounds)."""
    planned, repeats = data.get("rounds_planned"), data["settings"].get("repeats")
    if planned is None:
        return "Timed rounds: to be chosen after the first round (--repeats auto)." if "rounds_planned" in data else ""
    how = "chosen by --repeats auto" if repeats == "auto" else "--repeats"
    return f"Timed rounds: {planned} ({how}), after {data['settings'].get('warmup', 0)} untimed warm-up(s) per configuration."


TIMING_NOTE = ("Times: median per clip over every timed round, with the min-max. The configurations ran interleaved "
               "(baseline, then each configuration, round after round), each round installing the configuration "
               "anew. Speedup: one ratio per pair of runs with the same round, prompt and seed; the median and, in "
               "brackets, the smallest and largest ratio. \"not significant\": that range includes 1.00x, so this "
               "machine's run-to-run noise covers the difference; \"not tested\": a single pair, no range "
               "(use --repeats 3).")


def memory_note(data: dict) -> str:
    kinds = {r.get("peak_memory_kind") for r in data.get("per_configuration", [])}
    if "cpu_peak_rss_delta" in kinds:
        return ("Peak memory on CPU (RSS+): the process's peak resident memory above its level at the start of the run, "
                "from the kernel's high-water mark (VmHWM; not comparable with GPU figures).")
    if "cuda_max_allocated" in kinds:
        return "Peak memory: torch.cuda.max_memory_allocated during the run (tensors only, not the CUDA context)."
    return ""


def timing_note(data: dict) -> str:
    """What the time and speed-up columns mean for this record (older records ran configuration by configuration)."""
    if "rounds_planned" not in data:
        return ("Times: median per clip. Speedup: each run against the baseline run with the same prompt and seed "
                "(median over pairs); recorded configuration by configuration, before interleaved rounds.")
    return (rounds_line(data) + " " + TIMING_NOTE).strip()

