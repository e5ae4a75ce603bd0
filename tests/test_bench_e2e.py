"""scripts/bench_e2e.py on the CPU (--smoke: a 2-layer model of the Wan2.1-1.3B class, a tiny video): compile
modes side by side, dynamo's counts per row, and the pipeline time with the dense warm-up. Timings are never
compared; the bookkeeping is."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))  # as `python scripts/<name>.py` sees it

import bench_e2e  # noqa: E402


def test_compile_modes_are_checked():
    assert bench_e2e.compile_modes("none,reduce-overhead") == ["none", "reduce-overhead"]
    with pytest.raises(Exception, match="--compile takes a comma-separated list of none, default"):
        bench_e2e.compile_modes("none,fast")
    with pytest.raises(SystemExit):
        bench_e2e.main(["--compile", "turbo"])


def test_pipeline_time_includes_the_dense_warm_up():
    assert bench_e2e.pipeline_ms(50, 12, 10.0, 4.0, 2) == (2 * (12 * 10.0 + 38 * 4.0), 12)
    # 30 layers, 29 sparse: 29 dense attention calls (60 ms) become kernel calls (18 ms)
    assert bench_e2e.additive_step_ms(2250.0, 60.0, 18.0, 29) == 2250.0 - 29 * 42.0
    assert bench_e2e.pipeline_ms(4, 12, 10.0, 4.0, 2) == (2 * 4 * 10.0, 4)  # a warm-up longer than the run
    assert bench_e2e.pipeline_ms(4, 0.25, 10.0, 4.0, 1) == (10.0 + 3 * 4.0, 1)  # a fraction of the schedule


def test_smoke_run_records_modes_graphs_and_pipeline_time(tmp_path):
    bench_e2e.main(["--smoke", "--res", "480p", "--variants", "dense,radial_wan", "--compile", "none,default",
                    "--compile-backend", "eager", "--pipeline-steps", "20", "--reps", "1", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "bench_e2e.json").read_text())
    assert data["meta"]["compile_modes"] == ["none", "default"] and data["meta"]["pipeline_steps"] == 20
    rows = {(r["variant"], r["compile"]): r for r in data["rows"]}
    assert set(rows) == {("dense", "none"), ("dense", "default"), ("radial_wan", "none"), ("radial_wan", "default")}
    assert all("error" not in r and r["finite_output"] for r in rows.values()), rows
    for variant in ("dense", "radial_wan"):  # one graph, only the step tracker's break, no recompile per step
        compiled = rows[(variant, "default")]
        assert (compiled["graphs"], compiled["recompiles_while_timed"]) == (1, 0)
        assert compiled["graph_breaks"] == (1 if variant == "radial_wan" else 0)
        assert "graphs" not in rows[(variant, "none")]
    radial = rows[("radial_wan", "default")]
    assert radial["attention_path"] == "backend" and radial["pipeline_dense_steps"] == 12  # Wan's radial warm-up
    dense_ms = rows[("dense", "default")]["ms"]
    assert radial["pipeline_ms"] == pytest.approx(2 * (12 * dense_ms + 8 * radial["ms"]), abs=0.11)
    assert "| radial_wan | default |" in (tmp_path / "bench_e2e.md").read_text()
