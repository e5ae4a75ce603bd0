"""The pipeline folder both ways: `export` writes the trained one (fp16 transformer, loss curves,
``training_log.json``), `init_from_pipeline` starts a fine-tuning run from one, `resume_from_export` continues
an unfinished run from its exported folder (when the machine holding the checkpoints is gone); `plot_losses`
draws the curves."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import torch

from benchlib import versions

from .builders import build_scheduler, build_text_encoder, build_tokenizer, build_transformer


def init_from_pipeline(src: Path, work: Path):
    """Fine-tuning start: take a trained pipeline folder's VAE, and its text encoder and transformer as
    the dit stage's starting weights (a light checkpoint at step 0). No-op once a checkpoint exists."""
    if _has_checkpoint(work):
        return
    _seed_work_folder(src, work, json.loads((src / "training_log.json").read_text()), csvs=("loss_vae.csv",))
    _save_light_checkpoint(src, work, step=0, elapsed=0.0, init_from=str(src))
    print(f"[init] VAE, text encoder and transformer from {src}")


def resume_from_export(src: Path, work: Path):
    """Rebuild the work folder of an unfinished run from its exported pipeline folder ``src`` (weights,
    ``training_log.json``, loss CSVs): the VAE, the stage records, and a light checkpoint at the exported
    step holding the EMA weights (the optimizer and RNG states restart; the parse head is re-initialised).
    No-op once a checkpoint exists."""
    if _has_checkpoint(work):
        return
    log = json.loads((src / "training_log.json").read_text())
    if log["dit"].get("finished"):
        raise SystemExit(f"{src} is a finished run: use --init-from to fine-tune it")
    _seed_work_folder(src, work, log, csvs=("loss_vae.csv", "loss_dit.csv", "direction_gap.csv"))
    if "text_parse" in log:
        (work / "text_parse_done.json").write_text(json.dumps(log["text_parse"], indent=1))
    _save_light_checkpoint(src, work, step=log["dit"]["steps"], elapsed=log["dit"]["seconds"], resumed_from=str(src))
    print(f"[resume] work folder rebuilt from {src} at dit step {log['dit']['steps']} ({log['dit']['seconds']} s)")


def _has_checkpoint(work: Path) -> bool:
    return (work / "ckpt_dit.pt").exists() or (work / "ckpt_dit_light.pt").exists()


def _seed_work_folder(src: Path, work: Path, log: dict, csvs: tuple[str, ...]):
    """The exported VAE, its stage record and the named loss logs, copied into the work folder."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "vae", work / "vae", dirs_exist_ok=True)
    (work / "vae_done.json").write_text(json.dumps(log["vae"], indent=1))
    for name in csvs:
        if (src / name).exists():
            shutil.copy(src / name, work / name)


def _save_light_checkpoint(src: Path, work: Path, step: int, elapsed: float, **record):
    """The exported text encoder and transformer as the dit stage's light checkpoint (EMA weights only)."""
    from diffusers import WanTransformer3DModel
    from transformers import UMT5EncoderModel

    te = UMT5EncoderModel.from_pretrained(src / "text_encoder", torch_dtype=torch.float32)
    tr = WanTransformer3DModel.from_pretrained(src / "transformer", torch_dtype=torch.float32)
    # the transformer was stored in fp16: keep it so (exact, half the size of a checkpoint that travels)
    torch.save({"ema": {"te": {k: v.float().clone() for k, v in te.state_dict().items()},
                        "tr": {k: v.half() for k, v in tr.state_dict().items()}},
                "step": step, "elapsed": elapsed, **record}, work / "ckpt_dit_light.pt")


def plot_losses(work: Path, path: Path):
    """Loss curves as PNG with PIL only (no matplotlib dependency)."""
    from PIL import Image, ImageDraw

    panels = []
    for name, key in (("loss_vae.csv", "l1"), ("loss_dit.csv", "loss")):
        p = work / name
        if p.exists():
            with open(p) as f:
                rows = list(csv.DictReader(f))
            if rows:
                panels.append((name[:-4] + f" ({key}, log scale)",
                               [int(r["step"]) for r in rows], [float(r[key]) for r in rows]))
    W, H, pad = 480, 300, 40
    img = Image.new("RGB", (W * max(1, len(panels)), H), "white")
    d = ImageDraw.Draw(img)
    for i, (title, xs, ys) in enumerate(panels):
        ox = i * W
        ly = [math.log10(max(y, 1e-8)) for y in ys]
        lo, hi = min(ly), max(ly)
        hi = hi if hi > lo else lo + 1
        xm = max(xs) or 1
        pts = [(ox + pad + (W - 2 * pad) * x / xm, H - pad - (H - 2 * pad) * (y - lo) / (hi - lo))
               for x, y in zip(xs, ly)]
        d.rectangle([ox + pad, pad, ox + W - pad, H - pad], outline="black")
        if len(pts) > 1:
            d.line(pts, fill=(200, 30, 30), width=2)
        d.text((ox + pad, 10), title, fill="black")
        d.text((ox + pad, H - pad + 5), "step 0", fill="black")
        d.text((ox + W - pad - 60, H - pad + 5), f"step {xm}", fill="black")
        d.text((ox + 2, pad), f"{10 ** hi:.3g}", fill="black")
        d.text((ox + 2, H - pad - 10), f"{10 ** lo:.3g}", fill="black")
    img.save(path)


def export(args, C, device, work: Path, out: Path):
    from diffusers import AutoencoderKLWan, WanPipeline

    vae = AutoencoderKLWan.from_pretrained(work / "vae")
    tok = build_tokenizer(args.data)
    te = build_text_encoder(C["te"], len(tok))
    tr = build_transformer(C["dit"], vae.config.z_dim)
    ck = work / "ckpt_dit.pt"
    s = torch.load(ck if ck.exists() else work / "ckpt_dit_light.pt", map_location="cpu", weights_only=True)
    te.load_state_dict({k: v.float() for k, v in s["ema"]["te"].items()})
    tr.load_state_dict({k: v.float() for k, v in s["ema"]["tr"].items()})
    vae = vae.to(getattr(torch, C["vae_dtype"]))  # the lab VAE travels in fp16 to keep the folder <= 60 MB
    pipe = WanPipeline(tokenizer=tok, text_encoder=te, vae=vae, transformer=tr.to(torch.float16),
                       scheduler=build_scheduler())
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    # transformers 5 records its TokenizersBackend class; PreTrainedTokenizerFast loads on 4.x and 5.x
    for f, key in (("model_index.json", "tokenizer"), ("tokenizer/tokenizer_config.json", "tokenizer_class")):
        d = json.loads((out / f).read_text())
        d[key] = ["transformers", "PreTrainedTokenizerFast"] if key == "tokenizer" else "PreTrainedTokenizerFast"
        (out / f).write_text(json.dumps(d, indent=2) + "\n")
    for name in ("loss_vae.csv", "loss_dit.csv", "direction_gap.csv"):
        if (work / name).exists():
            (out / name).write_text((work / name).read_text())
    plot_losses(work, out / "loss_curve.png")
    vae_info = json.loads((work / "vae_done.json").read_text())
    dit_info = json.loads((work / "dit_done.json").read_text()) if (work / "dit_done.json").exists() else {}
    last = list(csv.DictReader(open(work / "loss_dit.csv")))[-20:]
    env = versions("gpu", "torch")
    summary = {
        "seed": args.seed, "quick": args.quick, "device": str(device),
        "gpu": env["gpu"] if device.type == "cuda" else None,
        "torch": env["torch"],
        "vae": {k: vae_info[k] for k in ("steps", "seconds", "final_loss", "final_l1")},
        "dit": dict(dit_info, final_loss_mean_last_logs=sum(float(r["loss"]) for r in last) / max(1, len(last))),
        "params": {"vae": sum(p.numel() for p in vae.parameters()),
                   "text_encoder": sum(p.numel() for p in te.parameters()),
                   "transformer": sum(p.numel() for p in tr.parameters())},
        "recipe": args.recipe,
        "config": {k: C[k] for k in ("vae_specs", "vae_steps", "vae_batch", "vae_lr", "dit_phases", "dit_steps",
                                     "dit_lr", "latent_reuse", "time_budget")},
    }
    if (work / "text_parse_done.json").exists():
        summary["text_parse"] = json.loads((work / "text_parse_done.json").read_text())
    (out / "training_log.json").write_text(json.dumps(summary, indent=1))
    print("[export]", json.dumps(summary))
