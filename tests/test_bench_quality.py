"""scripts/bench_quality.py's verdict per speed level: vidaccel's best PSNR among rows at least that fast
against the best of diffusers' caches, from a results.json of `vidaccel compare` (the fields it writes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench_quality  # noqa: E402


def _data(rows):
    confs = [{"name": "baseline", "type": "dense"}, {"name": "baseline-512x512", "baseline": True, "size": [512, 512]}]
    per = [{"config": "baseline", "baseline": True, "reference": "baseline", "speedup": 1.0, "psnr": None}]
    for name, fam, speedup, psnr, ref in rows:
        confs.append({"name": name, **({"diffusers_cache": {"kind": "first_block"}} if fam == "diffusers" else
                                       {"type": "RadialConfig"})})
        per.append({"config": name, "baseline": False, "reference": ref, "speedup": speedup, "psnr": psnr, "ssim": 0.9})
    return {"configurations": confs, "per_configuration": per}


def test_levels_pick_the_best_psnr_among_rows_at_least_that_fast(tmp_path):
    data = _data([("radial-a", "vidaccel", 1.6, 30.0, "baseline"), ("radial-b", "vidaccel", 2.2, 27.0, "baseline"),
                  ("window", "vidaccel", 3.4, 22.0, "baseline"), ("fbc", "diffusers", 1.7, 31.0, "baseline"),
                  ("mag", "diffusers", 2.1, 25.0, "baseline"),
                  ("freeswim", "vidaccel", 5.0, 40.0, "baseline-512x512")])  # another size: not comparable
    levels = {x["level"]: x for x in bench_quality.speed_levels(data)}
    assert levels[1.5]["vidaccel"]["config"] == "radial-a" and levels[1.5]["diffusers"]["config"] == "fbc"
    assert levels[1.5]["verdict"] == "vidaccel 1.00 dB short"
    assert levels[2.0]["vidaccel"]["config"] == "radial-b" and levels[2.0]["verdict"] == "vidaccel >= diffusers"
    assert levels[3.0]["vidaccel"]["config"] == "window" and levels[3.0]["verdict"] == "vidaccel only"
    (tmp_path / "results.json").write_text(json.dumps(data))
    bench_quality.write_levels(tmp_path)
    md = (tmp_path / "levels.md").read_text()
    assert "| 2.0x | radial-b (2.20x, 27.00 dB) | mag (2.10x, 25.00 dB) | vidaccel >= diffusers |" in md
    assert json.loads((tmp_path / "levels.json").read_text())[2]["verdict"] == "vidaccel only"
