"""Which VAE settings learn fastest for the lab model? Each variant runs the lab recipe's VAE stage
(`tiny_training.stages.train_vae`, the code the model is trained with) for the same number of seconds from
the same seed, then encodes and decodes the same held-out 33x256x256 clips (`lab_data`, a fixed seed):

- ``l1``: mean absolute error in [-1, 1] units over all pixels; ``l1_objects``: over object pixels only
  (coverage > 0.5), where a weak VAE fails first; ``l1_late_over_early``: L1 of frames 17-32 over frames 1-16
  (> 1: the reconstruction drifts over the clip); ``steps``: optimizer steps done in the time.

    python scripts/lab_vae_sweep.py --seconds 60                      # on one GPU, ~4 min for 3 variants
    python scripts/lab_vae_sweep.py --seconds 5 --quick --device cpu  # smoke test

Writes ``benchmarks/results/quality_lab/vae_sweep.json`` (and ``.md``) with versions and the date.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

import lab_data
from benchlib import add_sweep_arguments, utc_now, versions, write_sweep
from tiny_training.config import LAB, quick
from tiny_training.common import autocast
from tiny_training.stages import train_vae

REPO = Path(__file__).resolve().parents[1]
# name -> recipe overrides (vae: keys of the AutoencoderKLWan config). The sweep of 2026-12-02 ran with the
# recipe of commit 709c16b as "recipe": that is "plain_lr5e-4_warm200" here.
VARIANTS = {
    "plain_lr5e-4_warm200": {"vae_lr": 5e-4, "vae_warmup": 200, "vae": {"is_residual": False}},
    "plain_lr1e-3_warm30": {"vae_lr": 1e-3, "vae_warmup": 30, "vae": {"is_residual": False}},
    "residual_lr1e-3_warm30": {"vae_lr": 1e-3, "vae_warmup": 30, "vae": {"is_residual": True}},  # the recipe now
    "residual_lr2e-3_warm30": {"vae_lr": 2e-3, "vae_warmup": 30, "vae": {"is_residual": True}},
    # batch size at equal time: the VAE's chunked encode / frame-by-frame decode loops launch many small kernels,
    # so a larger batch may cost little per step
    "residual_lr1e-3_b16": {"vae_lr": 1e-3, "vae_warmup": 30, "vae_batch": 16, "vae": {"is_residual": True}},
    "residual_lr1e-3_b32": {"vae_lr": 1e-3, "vae_warmup": 30, "vae_batch": 32, "vae": {"is_residual": True}},
    "residual_lr2e-3_b32": {"vae_lr": 2e-3, "vae_warmup": 30, "vae_batch": 32, "vae": {"is_residual": True}},
}


def held_out(vae, device, spec, n: int, seed: int = 1234) -> dict:
    g = torch.Generator().manual_seed(seed)
    video, alpha = lab_data.render([lab_data.sample_scene(g) for _ in range(n)], g, spec, device, return_alpha=True)
    errs, obj = [], []
    with torch.no_grad(), autocast(device):
        for i in range(n):  # one clip at a time: the encode/decode loops are memory-heavy at 256 px
            rec = vae.decode(vae.encode(video[i:i + 1]).latent_dist.mode()).sample.float().clamp(-1, 1)
            errs.append((rec - video[i:i + 1]).abs().mean(1)[0])  # (T, H, W)
            obj.append(alpha[i, 0] > 0.5)
    err, obj = torch.stack(errs), torch.stack(obj)
    T = err.shape[1]
    per_frame = err.mean((0, 2, 3))
    return {"l1": round(err.mean().item(), 4), "l1_objects": round(err[obj].mean().item(), 4),
            "l1_late_over_early": round((per_frame[T // 2 + 1:].mean() / per_frame[1:T // 2 + 1].mean()).item(), 3)}


def _variant(base: dict, over: dict) -> dict:
    """``base`` with a variant's overrides (``vae``: merged into the VAE config)."""
    return json.loads(json.dumps(dict(base, **{k: v for k, v in over.items() if k != "vae"},
                                      vae=dict(base["vae"], **over.get("vae", {})))))


def best_args(path: str) -> str:
    """The trainer's ``--vae-batch``/``--vae-lr`` of the sweep row with the lowest L1 + object L1 (rows that
    failed are skipped): lets the next call train with the winner without a person in between."""
    rows = [r for r in json.loads(Path(path).read_text())["rows"] if "error" not in r]
    best = min(rows, key=lambda r: r["l1"] + r["l1_objects"])
    C = _variant(LAB, best["overrides"])
    return f"--vae-batch {C['vae_batch']} --vae-lr {C['vae_lr']}"


def _stage_args(seconds: float) -> SimpleNamespace:
    """What `train_vae` reads from the trainer's command line: ``seconds`` of training, no checkpoints, one
    batch of latent statistics (``quick``: the sweep scores reconstructions, not the statistics)."""
    return SimpleNamespace(vae_time_limit=seconds, data=lab_data, obj_weight=10.0, log_every=50, ckpt_every=10**9,
                           quick=True, seed=0)


def main(argv=None):
    from diffusers import AutoencoderKLWan

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_sweep_arguments(ap, what="VAE training", variants=",".join(list(VARIANTS)[:3]),
                        out=str(REPO / "benchmarks" / "results" / "quality_lab" / "vae_sweep"),
                        best="the trainer arguments of a finished sweep's best row")
    ap.add_argument("--held-out", type=int, default=6, help="held-out clips")
    ap.add_argument("--warmup-seconds", type=float, default=20.0, help="untimed VAE training before the first variant")
    args = ap.parse_args(argv)
    if args.best_args:
        print(best_args(args.best_args))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    base = quick(LAB) if args.quick else LAB
    spec = lab_data.ClipSpec(9, 64, 64) if args.quick else lab_data.ClipSpec(33, 256, 256)
    rows = []
    configs = {name: _variant(base, VARIANTS[name]) for name in args.variants.split(",")}
    if device.type == "cuda" and args.warmup_seconds > 0:
        # cuDNN autotunes every convolution shape on first use (~13 s here): pay it before any timed variant,
        # once per batch size (the shapes); the sweep of 2026-12-02 did not, so its first row lost that time
        for batch in sorted({C["vae_batch"] for C in configs.values()}):
            with tempfile.TemporaryDirectory() as tmp:
                train_vae(_stage_args(args.warmup_seconds), dict(base, vae_batch=batch), device, Path(tmp))
    for name, C in configs.items():
        over = VARIANTS[name]
        t0 = time.time()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                train_vae(_stage_args(args.seconds), C, device, Path(tmp))
                vae = AutoencoderKLWan.from_pretrained(Path(tmp) / "vae").to(device).eval()
                done = json.loads((Path(tmp) / "vae_done.json").read_text())
            row = {"variant": name, "overrides": over, "steps": done["steps"], "train_seconds": done["seconds"],
                   **held_out(vae, device, spec, args.held_out), "wall_seconds": round(time.time() - t0, 1)}
        except torch.OutOfMemoryError as e:  # a batch too large for the GPU is a result, not the end of the sweep
            row = {"variant": name, "overrides": over, "error": f"out of memory: {str(e).splitlines()[0]}"}
            vae = None
            torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(rows, args, spec)  # after every variant: a call cut at its limit keeps what finished
    return 0


def write(rows: list[dict], args, spec):
    """The sweep so far: ``<out>.json`` and a markdown table ``<out>.md``."""
    meta = {"date": utc_now(), **versions(), "seconds_per_variant": args.seconds, "held_out_clips": args.held_out,
            "held_out_size": [spec.frames, spec.height, spec.width], "quick": args.quick}
    lines = [f"{args.seconds:.0f} s of the VAE stage per variant, seed 0; held-out: {args.held_out} clips "
             f"{spec.frames}x{spec.height}x{spec.width}.", "",
             "| variant | steps | L1 | L1 objects | late / early |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['variant']} | {r['steps']} | {r['l1']} | {r['l1_objects']} | {r['l1_late_over_early']} |"
              if "error" not in r else f"| {r['variant']} | {r['error'][:80]} | | | |" for r in rows]
    write_sweep(args.out, meta, rows, "Lab VAE sweep", lines)

if __name__ == "__main__":
    raise SystemExit(main())
