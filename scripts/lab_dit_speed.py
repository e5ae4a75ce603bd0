"""How fast does the lab recipe's dit stage run, eager vs ``torch.compile`` (regional: the transformer blocks)?

Each variant runs the trainer's own dit stage (`tiny_training.stages.train_dit`: data, latent pool, text
encoder, transformer, optimizer, EMA) for ``--seconds`` from the same seed, on a randomly initialised lab VAE,
through both of the recipe's clip sizes (half the time each). From the stage's loss log: steady steps per second
per clip size (log lines after the first of each size) and the seconds lost to compiling (the first interval of
each size beyond its steady pace).

    python scripts/lab_dit_speed.py --seconds 60                       # one GPU, ~3 min for both variants
    python scripts/lab_dit_speed.py --seconds 6 --quick --device cpu   # smoke test
    python scripts/lab_dit_speed.py --best-args speed.json             # the trainer flag the numbers favour

Writes ``benchmarks/results/quality_lab/dit_speed.json`` (and ``.md``) with versions and the date.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

import lab_data
from benchlib import add_sweep_arguments, utc_now, versions, write_sweep
from tiny_training.builders import build_vae
from tiny_training.config import LAB, quick
from tiny_training.stages import train_dit

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"eager": {"dit_compile": False}, "compiled": {"dit_compile": True}}


def _stage_args(seconds: float, quick_sizes: bool) -> SimpleNamespace:
    """What `train_dit` reads from the trainer's command line: ``seconds`` of dit stage, nothing else timed."""
    return SimpleNamespace(seed=0, dit_time_limit=seconds, time_budget=float("inf"), call_time_limit=float("inf"),
                           text_parse_weight=0.1, quick=quick_sizes, dit_objects=None, dit_straight=None, ema=0.999,
                           log_every=10, ckpt_every=10**9, eager=False, data=lab_data)


def pace(log_csv: Path) -> list[dict]:
    """Per clip size: steady steps/s (log lines after the size's first) and the first interval's excess seconds."""
    rows = list(csv.DictReader(open(log_csv)))
    out, prev = [], (0, 0.0)
    by_size: dict[tuple, list] = {}
    for r in rows:
        step, sec = int(r["step"]), float(r["seconds"])
        by_size.setdefault((int(r["frames"]), int(r["height"]), int(r["width"])), []).append((prev, (step, sec)))
        prev = (step, sec)
    for size, intervals in by_size.items():
        steady = intervals[1:]
        if not steady:
            continue
        steps = sum(b[0] - a[0] for a, b in steady)
        seconds = sum(b[1] - a[1] for a, b in steady)
        (a, b) = intervals[0]
        first_excess = (b[1] - a[1]) - (b[0] - a[0]) * seconds / steps
        out.append({"size": list(size), "steps_per_second": round(steps / seconds, 2),
                    "first_interval_excess_seconds": round(first_excess, 1), "steps": b[0] - a[0] + steps})
    return out


def best_args(path: str, dit_seconds: float = 700.0) -> str:
    """``--eager`` when compiling does not pay for itself over ``dit_seconds`` of the stage, else nothing:
    expected steps = mean steady pace x (seconds - compile excess), sizes weighted equally."""
    rows = {r["variant"]: r for r in json.loads(Path(path).read_text())["rows"] if "error" not in r}
    if "compiled" not in rows or "eager" not in rows:
        return "--eager"

    def expected(r):
        rate = sum(p["steps_per_second"] for p in r["pace"]) / len(r["pace"])
        return rate * (dit_seconds - sum(max(0.0, p["first_interval_excess_seconds"]) for p in r["pace"]))

    return "" if expected(rows["compiled"]) > expected(rows["eager"]) else "--eager"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_sweep_arguments(ap, what="dit stage (half per clip size)", variants="eager,compiled",
                        out=str(REPO / "benchmarks" / "results" / "quality_lab" / "dit_speed"),
                        best="the trainer flag a finished run favours")
    args = ap.parse_args(argv)
    if args.best_args:
        print(best_args(args.best_args))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
    base = quick(LAB) if args.quick else LAB
    rows = []
    for name in args.variants.split(","):
        C = json.loads(json.dumps(dict(base, **VARIANTS[name])))
        if args.quick:  # the quick recipe compiles nothing on the CPU; keep its steps unbounded for the timing
            C["dit_steps"] = 10**9
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            build_vae(C["vae"]).save_pretrained(work / "vae")  # random weights: the speed does not depend on them
            try:
                train_dit(_stage_args(args.seconds, args.quick), C, device, work)
                row = {"variant": name, "pace": pace(work / "loss_dit.csv")}
            except torch.OutOfMemoryError as e:
                row = {"variant": name, "error": f"out of memory: {str(e).splitlines()[0]}"}
        torch._dynamo.reset()
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(rows, args, base)
    return 0


def write(rows: list[dict], args, recipe: dict):
    meta = {"date": utc_now(), **versions(), "seconds_per_variant": args.seconds, "quick": args.quick,
            "phases": recipe["dit_phases"]}
    lines = [f"{args.seconds:.0f} s of the dit stage per variant, half per clip size; steady pace from the loss log.",
             "", "| variant | clip size | steps/s | first interval's extra seconds |", "| --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['error'][:80]} | | |")
        for p in r.get("pace", []):
            lines.append(f"| {r['variant']} | {'x'.join(map(str, p['size']))} | {p['steps_per_second']} | "
                         f"{p['first_interval_excess_seconds']} |")
    write_sweep(args.out, meta, rows, "Lab dit stage speed", lines)

if __name__ == "__main__":
    raise SystemExit(main())
