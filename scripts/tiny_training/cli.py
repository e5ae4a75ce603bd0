"""Train the shipped tiny text-to-video model (``assets/tiny-wan``) from scratch.

The model is a real diffusers ``WanPipeline``: ``AutoencoderKLWan`` (4x spatial, 4x temporal
compression), a word-level tokenizer saved in the ``transformers`` format, a small
``UMT5EncoderModel`` and a ``WanTransformer3DModel``, sampled with Wan's flow-matching
``UniPCMultistepScheduler``. Data are procedural clips of coloured shapes (``tiny_data.py``).

Stages (``--stage all`` runs them in order):

1. ``vae``: reconstruction (L1 + MSE + small KL) on 17x64x64 clips, then per-channel latent
   mean/std measured on fresh clips and stored in the VAE config (``latents_mean/std``), as Wan does.
2. ``text`` (from scratch: 400 steps): a new text encoder learns the caption parse from captions alone
   (``CaptionParseHead``), so its tokens carry their role before the transformer sees them.
3. ``dit``: text encoder and transformer trained jointly with rectified flow as in Wan:
   ``x_t = (1 - s) x_0 + s eps``, target ``eps - x_0``, timestep ``1000 s``; 10 % empty captions so
   classifier-free guidance works; EMA weights are exported.
4. ``export``: assemble the pipeline folder (transformer in fp16), loss curves (CSV + PNG) and
   ``training_log.json``. The hand-written model card ``README.md`` there is left alone.

``--time-budget`` (default 1500 s) bounds the training time of all stages together: the dit stage gets
what the VAE (270 s) and text stages left. Each stage checkpoints to ``--work`` every ``--ckpt-every``
steps and when its time limit is hit; rerunning the same command resumes from there (model, EMA,
optimizer, step and RNG states; ``--call-time-limit`` splits a run over time-limited calls).
Seeds are fixed (``--seed``); results are reproducible in quality, not bit-for-bit across devices.

    python scripts/train_tiny_model.py                       # the shipped recipe: 25 min on one H100
    python scripts/train_tiny_model.py --quick --out /tmp/tw # CPU smoke test, toy sizes, ~1 min
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import torch

from .config import RECIPES, quick
from .export import export, init_from_pipeline, resume_from_export
from .stages import train_dit, train_text_parse, train_vae

REPO = Path(__file__).resolve().parents[2]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="tiny",
                    help="tiny: assets/tiny-wan (17x64x64); lab: assets/lab-wan, the quality-lab model (33x256x256)")
    ap.add_argument("--out", default=None, help="pipeline folder (default: assets/<recipe>-wan)")
    ap.add_argument("--work", default=None, help="checkpoints and logs (default: outputs/<recipe>-wan-train)")
    ap.add_argument("--stage", choices=["all", "vae", "text", "dit", "export"], default="all")
    ap.add_argument("--quick", action="store_true", help="toy sizes and a few steps (CPU smoke test)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vae-steps", type=int)
    ap.add_argument("--dit-steps", type=int)
    ap.add_argument("--dit-batch", type=int)
    ap.add_argument("--vae-time-limit", type=float, default=None,
                    help="seconds of VAE training, then latent statistics and the next stage (default: 270 s)")
    ap.add_argument("--dit-time-limit", type=float, default=float("inf"),
                    help="seconds of the whole dit stage, counted over resumed calls (a resumed call gets the limit "
                         "minus the seconds already spent), then checkpoint+stop")
    ap.add_argument("--call-time-limit", type=float, default=float("inf"),
                    help="seconds for this invocation (for machines lent in slices): the dit stage checkpoints and "
                         "stops in time for the export; rerunning the same command resumes")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds for the whole training from scratch (vae + text + dit): the dit stage gets what the "
                         "earlier stages left (default: 1500 = 25 min; ignored with --init-from)")
    ap.add_argument("--vae-batch", type=int, help="clips per VAE step at the smallest VAE size (default: the recipe's)")
    ap.add_argument("--vae-lr", type=float, help="VAE peak learning rate (default: the recipe's)")
    ap.add_argument("--obj-weight", type=float, default=10.0, help="extra VAE loss weight on object pixels")
    ap.add_argument("--refine-vae", type=float, default=0.0,
                    help="seconds: continue the saved VAE (object-weighted), re-measure latent stats, then the "
                         "dit stage resumes on the new latents")
    ap.add_argument("--init-from", default=None, metavar="DIR",
                    help="fine-tune: start from this trained pipeline folder (its VAE, text encoder, transformer)")
    ap.add_argument("--resume-export", default=None, metavar="DIR",
                    help="continue an unfinished run from its exported folder (the work folder was lost): EMA "
                         "weights at the exported step, fresh optimizer")
    ap.add_argument("--text-parse-steps", type=int, default=None,
                    help="captions-only caption-parse training of the text encoder before the dit stage "
                         "(default: 400 from scratch, 0 with --init-from)")
    ap.add_argument("--te-fresh", action="store_true",
                    help="--text-parse-steps starts from a new text encoder instead of the checkpoint's (an encoder "
                         "trained with T5's bias init stays position-blind)")
    ap.add_argument("--text-parse-weight", type=float, default=0.1,
                    help="weight of the caption-parse loss on the text encoder during the dit stage")
    ap.add_argument("--dit-objects", default=None, metavar="P1,P2,P3",
                    help="dit stage: probabilities of clips with 1, 2, 3 objects (default: the recipe's)")
    ap.add_argument("--dit-straight", type=float, default=None, metavar="P",
                    help="dit stage: share of objects moving left/right/up/down, the rest split evenly over the "
                         "other motions (default: the recipe's; tiny 0.7 where uniform over its 7 motions is 4/7)")
    ap.add_argument("--eager", action="store_true",
                    help="dit stage: no torch.compile even where the recipe asks for it (dit_compile)")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--ckpt-every", type=int, default=1000)
    args = ap.parse_args(argv)
    recipe = RECIPES[args.recipe]
    C = json.loads(json.dumps(quick(recipe) if args.quick else recipe))
    args.out = args.out or str(REPO / "assets" / f"{args.recipe}-wan")
    args.work = args.work or str(REPO / "outputs" / f"{args.recipe}-wan-train")
    args.data = importlib.import_module(C["data"])
    if args.dit_objects:
        args.dit_objects = args.dit_objects.split(",")
    for k in ("vae_steps", "vae_batch", "vae_lr", "dit_steps"):
        if getattr(args, k) is not None:
            C[k] = getattr(args, k)
    if args.dit_batch is not None:
        C["dit_phases"] = [dict(p, batch=args.dit_batch) for p in C["dit_phases"]]
    if args.vae_time_limit is None:
        args.vae_time_limit = C["vae_seconds"]
    if args.text_parse_steps is None:
        args.text_parse_steps = 0 if args.init_from else C["text_parse_steps"]
    if args.time_budget is None:
        args.time_budget = float("inf") if args.init_from else C["time_budget"]
    if args.quick:
        args.log_every = 2
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(C, indent=1))
    torch.manual_seed(args.seed)
    if args.init_from:  # before the vae stage: its VAE is the one to keep
        init_from_pipeline(Path(args.init_from), work)
    if args.resume_export:
        resume_from_export(Path(args.resume_export), work)
    if args.stage in ("all", "vae") and not (work / "vae" / "config.json").exists():
        train_vae(args, C, device, work)  # a VAE time limit ends the stage early (no resume)
    elif args.stage in ("all", "vae") and args.refine_vae > 0:
        train_vae(args, C, device, work, refine_seconds=args.refine_vae)
    if args.stage in ("all", "text", "dit") and args.text_parse_steps > 0:
        train_text_parse(args, C, device, work)
    if args.stage in ("all", "dit"):
        train_dit(args, C, device, work)
    if args.stage in ("all", "export") and any((work / f).exists() for f in ("ckpt_dit.pt", "ckpt_dit_light.pt")):
        export(args, C, device, work, out)
    return 0
