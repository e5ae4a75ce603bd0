"""Parts of the lab-model training: the latent pool's reuse rule and the VAE sweep script end to end (CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from tiny_training.stages import LatentPool  # noqa: E402


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
