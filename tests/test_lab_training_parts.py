"""Parts of the lab-model training: the latent pool's reuse rule, the per-phase scene mix and the VAE sweep
script end to end (CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from tiny_training.stages import LatentPool, scene_mix  # noqa: E402


def _batch(tag: int, n: int = 4):
    x0 = torch.full((n, 1), float(tag)) + torch.arange(n)[:, None] / 10
    return x0, [f"{tag}-{i}" for i in range(n)], {"color": torch.full((n,), tag)}


def test_latent_pool_keeps_the_last_batches_and_draws_without_replacement():
    pool, gen = LatentPool(reuse=3), torch.Generator().manual_seed(0)
    wants = []
    for step in range(7):
        wants.append(pool.wants_batch(step, [9, 8, 8]))
        if wants[-1]:
            pool.add(*_batch(step), [9, 8, 8])
        x0, caps, meta = pool.draw(4, gen)
        assert len(set(caps)) == 4  # no clip twice in one batch
        for v, c, m in zip(x0[:, 0].tolist(), caps, meta["color"].tolist()):  # rows stay aligned
            assert c == f"{int(v)}-{round(v % 1 * 10)}" and m == int(v)
    assert wants == [True, False, False, True, False, False, True]
    assert {int(c.split("-")[0]) for c in pool.caps[0] + pool.caps[1] + pool.caps[2]} == {0, 3, 6}
    assert pool.wants_batch(7, [9, 16, 16])  # the next phase's size empties the pool
    pool.add(*_batch(9), [9, 16, 16])
    assert len(pool.x0) == 1 and pool.spec == [9, 16, 16]


def test_reuse_one_returns_the_fresh_batch_in_order():
    pool = LatentPool(reuse=1)
    for step in range(3):
        assert pool.wants_batch(step, [5, 8, 8])
        pool.add(*_batch(step), [5, 8, 8])
        x0, caps, _ = pool.draw(4, torch.Generator())
        assert caps == [f"{step}-{i}" for i in range(4)]


def test_scene_mix_per_phase_command_line_first_then_phase_then_recipe():
    import types

    import lab_data
    from tiny_training.config import LAB

    no_args = types.SimpleNamespace(dit_objects=None, dit_straight=None)
    (obj0, mot0), (obj1, mot1) = (scene_mix(no_args, LAB, p, lab_data) for p in LAB["dit_phases"])
    assert obj0 == tuple(LAB["dit_phases"][0]["objects"]) and obj1 == tuple(LAB["dit_objects"])
    for mot, straight in ((mot0, LAB["dit_phases"][0]["straight"]), (mot1, LAB["dit_straight"])):
        assert abs(sum(mot) - 1) < 1e-9
        assert abs(sum(p for m, p in zip(lab_data.MOTIONS, mot) if m in lab_data.STRAIGHT) - straight) < 1e-9
    forced = types.SimpleNamespace(dit_objects=["1", "0", "0"], dit_straight=1.0)
    obj, mot = scene_mix(forced, LAB, LAB["dit_phases"][0], lab_data)
    assert obj == (1.0, 0.0, 0.0)
    assert all(p == 0 for m, p in zip(lab_data.MOTIONS, mot) if m not in lab_data.STRAIGHT)


def test_vae_sweep_script_writes_measured_rows(tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "lab_vae_sweep.py"), "--quick", "--device", "cpu",
                           "--seconds", "1", "--held-out", "1",
                           "--variants", "plain_lr1e-3_warm30,residual_lr1e-3_warm30",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.with_suffix(".json").read_text())
    assert [r["variant"] for r in data["rows"]] == ["plain_lr1e-3_warm30", "residual_lr1e-3_warm30"]
    for r in data["rows"]:
        assert r["steps"] >= 1 and 0 < r["l1"] < 2 and 0 < r["l1_objects"] < 2 and r["l1_late_over_early"] > 0
    assert data["meta"]["date"] and data["meta"]["torch"]
    assert "| residual_lr1e-3_warm30 |" in out.with_suffix(".md").read_text()


def test_shift_sigma_moves_levels_towards_one_and_keeps_the_ends():
    from tiny_training.common import shift_sigma

    s = torch.linspace(0, 1, 11)
    assert torch.equal(shift_sigma(s, 1.0), s)
    shifted = shift_sigma(s, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and abs(shifted[5].item() - 0.75) < 1e-6
    assert (shifted[1:-1] > s[1:-1]).all() and (shifted.diff() > 0).all()


def test_span_timer_sums_spans_and_resets():
    import time

    from tiny_training.common import SpanTimer

    t = SpanTimer(torch.device("cpu"))
    for _ in range(2):
        t.start()
        time.sleep(0.01)
        t.stop()
    time.sleep(0.02)  # outside any span: not counted
    first = t.pop_seconds()
    assert 0.02 <= first < 0.035, first
    assert t.pop_seconds() == 0.0


def test_vae_sweep_best_args_take_the_lowest_error_row_and_skip_failures(tmp_path):
    import lab_vae_sweep

    path = tmp_path / "s.json"
    path.write_text(json.dumps({"rows": [
        {"variant": "a", "overrides": lab_vae_sweep.VARIANTS["residual_lr1e-3_warm30"], "l1": 0.2, "l1_objects": 0.4},
        {"variant": "b", "overrides": lab_vae_sweep.VARIANTS["residual_lr2e-3_b32"], "l1": 0.15, "l1_objects": 0.3},
        {"variant": "c", "overrides": lab_vae_sweep.VARIANTS["residual_lr1e-3_b16"], "error": "out of memory"}]}))
    assert lab_vae_sweep.best_args(str(path)) == "--vae-batch 32 --vae-lr 0.002"


def test_dit_speed_pace_and_the_compile_choice(tmp_path):
    import lab_dit_speed

    log = tmp_path / "loss_dit.csv"
    lines = ["step,seconds,loss,lr,parse_loss,frames,height,width,data_share"]
    # 128 px: first interval 10 steps in 31 s (30 s of compiling), then 10 steps/s; 256 px: 1 s extra, then 5/s
    for step, sec, h in [(10, 31, 128), (20, 32, 128), (30, 33, 128), (40, 36, 256), (50, 38, 256), (60, 40, 256)]:
        lines.append(f"{step},{sec},0.1,1e-4,0.1,33,{h},{h},0.1")
    log.write_text("\n".join(lines) + "\n")
    pace = lab_dit_speed.pace(log)
    assert [p["size"] for p in pace] == [[33, 128, 128], [33, 256, 256]]
    assert pace[0]["steps_per_second"] == 10.0 and pace[0]["first_interval_excess_seconds"] == 30.0
    assert pace[1]["steps_per_second"] == 5.0 and pace[1]["first_interval_excess_seconds"] == 1.0
    eager = {"variant": "eager", "pace": [dict(p, steps_per_second=p["steps_per_second"] / 2,
                                               first_interval_excess_seconds=0.0) for p in pace]}
    path = tmp_path / "speed.json"
    path.write_text(json.dumps({"rows": [eager, {"variant": "compiled", "pace": pace}]}))
    assert lab_dit_speed.best_args(str(path), dit_seconds=700) == ""  # 2x pace for 31 s of compiling
    assert lab_dit_speed.best_args(str(path), dit_seconds=60) == "--eager"  # too short to pay for it
    path.write_text(json.dumps({"rows": [eager, {"variant": "compiled", "error": "out of memory"}]}))
    assert lab_dit_speed.best_args(str(path)) == "--eager"
