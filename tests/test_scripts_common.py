"""scripts/benchlib.py, what the benchmark scripts share (CPU, fast): paired timing alternates its calls and
returns a median for every function, the environment has the keys the stored results files carry, the
shared constants are the ones the scripts used, and the results writer writes the JSON + Markdown pair.
Timings are never compared: only call order and bookkeeping are checked."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(SCRIPTS))  # as `python scripts/<name>.py` sees it

import benchlib  # noqa: E402


def test_paired_ms_rotates_the_order_and_returns_medians(monkeypatch):
    calls, warmed = [], []
    samples = {"a": iter([5.0, 1.0, 3.0, 9.0]), "b": iter([2.0, 8.0, 4.0, 6.0]), "c": iter([7.0, 7.0, 1.0, 2.0])}

    def fake_bench(fn, warmup, rep):
        name = fn()
        calls.append(name)
        return next(samples[name])

    def fake_estimate(fn, device="cuda"):
        warmed.append(fn())
        return 1.0

    monkeypatch.setattr(benchlib, "bench_median_ms", fake_bench)
    monkeypatch.setattr(benchlib, "warm_estimate_ms", fake_estimate)
    fns = {name: (lambda name=name: name) for name in "abc"}
    out = benchlib.paired_ms(fns, rounds=4)
    assert warmed == ["a", "b", "c"]  # every function warmed up before the first timed round
    assert calls == list("abc" "bca" "cab" "abc")  # each round starts one function later
    # the upper median of each function's rounds
    assert out == {"a": 5.0, "b": 6.0, "c": 7.0}


def test_median_ms_times_after_a_warm_estimate(monkeypatch):
    seen = {}
    monkeypatch.setattr(benchlib, "warm_estimate_ms", lambda fn, device="cuda": 2.0)
    monkeypatch.setattr(benchlib, "bench_median_ms", lambda fn, warmup, rep: seen.update(warmup=warmup, rep=rep) or 1.5)
    assert benchlib.median_ms(lambda: None) == 1.5 and seen == {"warmup": 5, "rep": 60}
    assert benchlib.median_ms(lambda: None, quick=True) == 1.5 and seen["rep"] == 30


def test_wall_times_and_warm_estimate_on_cpu():
    events = []

    def fn():
        events.append("call")
        return len(events)

    out, times = benchlib.wall_times(fn, 3, torch.device("cpu"), before=lambda: events.append("before"))
    assert events == ["before", "call"] * 3 and out == 6
    assert len(times) == 3 and all(t >= 0 for t in times)
    events.clear()
    assert benchlib.warm_estimate_ms(fn, device="cpu") >= 0 and events == ["call", "call"]  # warm-up, timed


def test_versions_have_the_keys_of_the_stored_results():
    env = benchlib.versions()
    assert list(env) == ["torch", "python", "triton", "diffusers", "gpu", "cuda", "cudnn"]
    assert env["torch"] == torch.__version__ and env["cuda"] == torch.version.cuda
    if not torch.cuda.is_available():
        assert env["gpu"] is None
    assert list(benchlib.versions("gpu", "torch", "triton")) == ["gpu", "torch", "triton"]
    # each results file begins (or, quality_freeswim_tiny, continues after its date) with these keys
    for name in ("bench_attention", "bench_e2e", "bench_freeswim", "bench_caches_tiny", "quality_freeswim_tiny"):
        path = RESULTS / f"{name}.json"
        if path.exists():
            meta = list(json.loads(path.read_text())["meta"])
            start = meta.index("torch")
            assert meta[start:start + len(env)] == list(env), name
            assert "date" in meta, name
    variants = sorted(RESULTS.glob("kernel_variants_*.json"))
    if variants:
        assert list(json.loads(variants[-1].read_text()))[:3] == list(benchlib.versions("gpu", "torch", "triton"))
    multigpu = RESULTS / "multigpu_2gpu.json"
    if multigpu.exists():
        assert list(json.loads(multigpu.read_text())["versions"]) == ["torch", "diffusers", "triton"]
    assert benchlib.utc_now()[:2] == "20" and benchlib.utc_now().endswith("+00:00")


def test_shared_constants_are_the_scripts_values():
    assert benchlib.GRIDS == {"480p": (21, 30, 52), "720p": (21, 45, 80), "1088p": (21, 68, 120)}
    assert benchlib.RESOLUTIONS == {"480p": (480, 832), "720p": (720, 1280)}
    for res, (h, w) in benchlib.RESOLUTIONS.items():  # 81 frames -> 21 latent frames, 16 px per token
        assert benchlib.GRIDS[res] == (21, h // 16, w // 16)
    assert benchlib.WAN_1_3B == dict(
        patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
    )


def test_wan_1_3b_has_the_parameters_the_results_report():
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):  # no memory, no initialization
        model = diffusers.WanTransformer3DModel(**benchlib.WAN_1_3B)
    n = sum(p.numel() for p in model.parameters())
    for name in ("bench_e2e", "bench_freeswim"):
        path = RESULTS / f"{name}.json"
        if path.exists():
            assert json.loads(path.read_text())["meta"]["params"] == n, name
    assert 1.4e9 < n < 1.45e9


def test_write_results_writes_the_json_and_markdown_pair(tmp_path):
    results = {"meta": {"date": "2026-01-01T00:00:00+00:00", "torch": "2.x", "diffusers": "0.42"}, "rows": [{"a": 1}]}
    lines = ["# Title", "", benchlib.md_stamp(results["meta"], "torch", "diffusers") + ".", "",
             *benchlib.md_table_header("res", "ms"), "| 480p | 1.0 |"]
    benchlib.write_results(tmp_path / "new", "tag", results, lines)
    assert json.loads((tmp_path / "new" / "tag.json").read_text()) == results
    assert (tmp_path / "new" / "tag.md").read_text() == (
        "# Title\n\n2026-01-01T00:00:00+00:00 - torch 2.x, diffusers 0.42.\n\n"
        "| res | ms |\n|---|---|\n| 480p | 1.0 |\n")
    assert benchlib.md_table_header("a", "b", sep=" --- ")[1] == "| --- | --- |"
    assert benchlib.error_text(ValueError("x" * 600)) == "ValueError: " + "x" * 488


def test_scripts_import_benchlib_not_each_other():
    """The scripts share code through benchlib (and the trainer's package), not by importing each other's
    modules, and they set no sys.path: their own folder is on it when run as `python scripts/<name>.py`."""
    scripts = {p.stem for p in SCRIPTS.glob("*.py")}
    allowed = {"benchlib", "tiny_data", "lab_data"}  # the shared library and the two data sets
    for path in [*SCRIPTS.glob("*.py"), *SCRIPTS.glob("tiny_training/*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                names = []
            assert not (set(names) & scripts) - allowed, (path.name, names)
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
                pytest.fail(f"{path.name} touches sys.path")
