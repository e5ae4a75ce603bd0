"""The quality lab's benchmark: every row of ``benchmarks/configs/lab_sweep.yaml`` on the lab model, through
the product's own ``vidaccel compare`` (same prompts and seeds per row, PSNR/SSIM against the dense run of
the same seed at the row's size, the pixel checks, flicker, time per clip and step, attention FLOPs), then
the issue's verdict per speed level: vidaccel's best PSNR against the best of diffusers' caches among the
rows at least that fast (`speed_levels`).

    python scripts/bench_quality.py                      # one GPU: profile once, then the sweep (resumable)
    python scripts/bench_quality.py --resume             # continue an interrupted sweep in the same folder
    python scripts/bench_quality.py --verdict-only       # recompute levels.md from results.json

Writes ``benchmarks/results/quality_lab/sweep/`` (``--out``): compare's report.html, results.json, results.md and
its speed-vs-PSNR plot, and ``levels.json`` / ``levels.md``. Prompts: the held-out captions
(``lab_data.HELD_OUT``, never rendered for training).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import lab_data

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "benchmarks" / "configs" / "lab_sweep.yaml"
PROFILE = REPO / "benchmarks" / "configs" / "lab_wan_256.json"  # the block profile the reuse rows read
LEVELS = (1.5, 2.0, 3.0)


def family(config: dict) -> str:
    """``diffusers`` (one of diffusers' caches), ``baseline`` or ``vidaccel`` for a results.json configuration."""
    if config.get("baseline") or config.get("name") == "baseline":
        return "baseline"
    return "diffusers" if config.get("diffusers_cache") else "vidaccel"


def speed_levels(data: dict, levels=LEVELS) -> list[dict]:
    """Per speed level: the best-PSNR configuration of each family among the rows at the model's size whose
    paired speed-up is at least the level (rows at other sizes have another baseline: not comparable)."""
    kinds = {c["name"]: family(c) for c in data["configurations"]}
    rows = [r for r in data["per_configuration"] if not r["baseline"] and r.get("reference", "baseline") == "baseline"
            and r.get("speedup") is not None and r.get("psnr") is not None]
    out = []
    for level in levels:
        best = {}
        for fam in ("vidaccel", "diffusers"):
            fast = [r for r in rows if kinds.get(r["config"]) == fam and r["speedup"] >= level]
            top = max(fast, key=lambda r: r["psnr"], default=None)
            best[fam] = None if top is None else {"config": top["config"], "speedup": top["speedup"],
                                                  "psnr": top["psnr"], "ssim": top.get("ssim")}
        v, d = best["vidaccel"], best["diffusers"]
        verdict = ("no row this fast" if v is None and d is None else "vidaccel only" if d is None
                   else "no vidaccel row this fast" if v is None
                   else "vidaccel >= diffusers" if v["psnr"] >= d["psnr"]
                   else f"vidaccel {d['psnr'] - v['psnr']:.2f} dB short")
        out.append({"level": level, **best, "verdict": verdict})
    return out


def write_levels(folder: Path) -> list[dict]:
    data = json.loads((folder / "results.json").read_text())
    levels = speed_levels(data)
    (folder / "levels.json").write_text(json.dumps(levels, indent=1))
    cell = lambda b: "-" if b is None else f"{b['config']} ({b['speedup']:.2f}x, {b['psnr']:.2f} dB)"  # noqa: E731
    lines = ["| speed-up >= | vidaccel's best PSNR | diffusers' best PSNR | verdict |", "| --- | --- | --- | --- |"]
    lines += [f"| {x['level']}x | {cell(x['vidaccel'])} | {cell(x['diffusers'])} | {x['verdict']} |" for x in levels]
    (folder / "levels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return levels


def run(cmd: list[str]):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO / "assets" / "lab-wan"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "quality_lab" / "sweep"))
    ap.add_argument("--seeds", type=int, default=4, help="seeds 0 .. N-1 for every prompt")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", default="auto", help="compare --repeats (auto: up to 3 interleaved rounds)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--verdict-only", action="store_true", help="only recompute levels.* from results.json")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not args.verdict_only:
        size = ["--height", "256", "--width", "256", "--frames", "33", "--steps", str(args.steps)]
        if not PROFILE.exists():
            run([sys.executable, "-m", "vidaccel.cli", "profile", lab_data.HELD_OUT[0], "--model", args.model, *size,
                 "--out", str(PROFILE)])
        out.mkdir(parents=True, exist_ok=True)
        prompts = out / "prompts.txt"
        prompts.write_text("\n".join(lab_data.HELD_OUT) + "\n")
        run([sys.executable, "-m", "vidaccel.cli", "compare", "--prompts-file", str(prompts), "--model", args.model,
             *size,
             "--seed", *map(str, range(args.seeds)), "--check", "lab", "--repeats", args.repeats,
             "--accel", str(SWEEP), "--out", str(out), *(["--resume"] if args.resume else [])])
    write_levels(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
