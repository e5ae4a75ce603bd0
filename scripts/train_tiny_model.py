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
import csv
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROCESS_START = time.time()  # --call-time-limit counts from here
CALL_RESERVE_SECONDS = 40  # a last direction gap, checkpoint and export after the dit stage stops
MAX_SEQ_LEN = 512  # WanPipeline pads prompt embeddings to max_sequence_length (default 512)

FULL = dict(
    vae=dict(base_dim=32, z_dim=8, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[],
             temperal_downsample=[True, True], scale_factor_spatial=4, scale_factor_temporal=4),
    te=dict(d_model=256, d_kv=64, d_ff=768, num_layers=2, num_heads=4),
    dit=dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=64, text_dim=256,
             freq_dim=256, ffn_dim=1024, num_layers=8, cross_attn_norm=True,
             qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
    vae_steps=100000, vae_batch=32, vae_lr=5e-4, vae_seconds=270.0,
    text_parse_steps=400,
    dit_steps=100000, dit_batch=128, dit_lr=3e-4,
    time_budget=1500.0,  # seconds of training, all stages: the recipe fits 25 minutes on one H100
)
QUICK = dict(
    vae=dict(FULL["vae"], base_dim=8),
    te=dict(FULL["te"], d_model=32, d_kv=8, d_ff=64, num_layers=1),
    dit=dict(FULL["dit"], num_attention_heads=2, attention_head_dim=24, text_dim=32, freq_dim=32,
             ffn_dim=64, num_layers=1),
    vae_steps=8, vae_batch=2, vae_lr=5e-4, vae_seconds=float("inf"),
    text_parse_steps=3,
    dit_steps=8, dit_batch=2, dit_lr=3e-4,
    time_budget=float("inf"),
)


# ----------------------------------------------------------------------------------- builders
def build_tokenizer():
    """Word-level tokenizer over the caption grammar's vocabulary, T5 special-token ids."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(tiny_data.vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=MAX_SEQ_LEN, padding_side="right",
    )


def build_vae(cfg):
    from diffusers import AutoencoderKLWan

    z = cfg["z_dim"]
    return AutoencoderKLWan(**cfg, latents_mean=[0.0] * z, latents_std=[1.0] * z)


REL_BIAS_STD = 1.0  # T5's relative-position bias init (std ~0.06) leaves attention position-blind for long


def build_text_encoder(cfg, vocab_size):
    """A small UMT5 encoder. T5 has no absolute positions: only the relative-position bias tells "the
    colour before 'background'" from "the colour before 'circle'", and at T5's init scale a short run
    never learns it (attention stays a bag-of-words mean). A bias init of std ``REL_BIAS_STD`` makes
    the caption parse learnable in a few hundred steps."""
    from transformers import UMT5Config, UMT5EncoderModel

    conf = UMT5Config(
        vocab_size=vocab_size, feed_forward_proj="gated-gelu", dropout_rate=0.0,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False, **cfg,
    )
    te = UMT5EncoderModel(conf)
    with torch.no_grad():
        for block in te.encoder.block:
            block.layer[0].SelfAttention.relative_attention_bias.weight.normal_(0.0, REL_BIAS_STD)
    return te


def build_transformer(cfg, z_dim):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(in_channels=z_dim, out_channels=z_dim, **cfg)


def build_scheduler():
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
    )


# ------------------------------------------------------------------------------------ helpers
class Logger:
    """Append-only CSV of (step, seconds, loss, ...) that survives resumption."""

    def __init__(self, path: Path, fields: list[str], start_step: int):
        self.path, self.fields = path, fields
        rows = []
        if path.exists() and start_step > 0:
            with open(path) as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fields)
            w.writeheader()
            w.writerows(rows)

    def log(self, **row):
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)


def ema_update(ema: dict, model: torch.nn.Module, decay: float):
    with torch.no_grad():
        sd = model.state_dict()
        keys = [k for k, v in sd.items() if v.dtype == torch.float32]
        torch._foreach_lerp_([ema[k] for k in keys], [sd[k] for k in keys], 1 - decay)


def save_ckpt(path: Path, **state):
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def rng_state(gen: torch.Generator, dev_gen: torch.Generator):
    return {"data": gen.get_state(), "noise": dev_gen.get_state()}


def autocast(device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


# -------------------------------------------------------------------------------------- stages
def object_weights(video: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weights: 1 on the (flat) background, 1 + weight on objects.

    Objects cover a few percent of the pixels; unweighted, the VAE learns the backgrounds first and
    smears small objects away, which no diffusion model on its latents can undo.
    """
    bg = video.flatten(2).median(-1).values[..., None, None, None]  # background = the median colour
    obj = ((video - bg).abs().sum(1, keepdim=True) > 0.1).float()
    return 1 + weight * obj


def train_vae(args, C, device, work: Path, refine_seconds: float = 0.0):
    """Train the VAE (or, with ``refine_seconds``, continue the saved one for that long)."""
    from diffusers import AutoencoderKLWan

    vae = build_vae(C["vae"]).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=C["vae_lr"], betas=(0.9, 0.99), weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + (7 if refine_seconds else 0))
    dev_gen = torch.Generator(device).manual_seed(args.seed + 1)
    step, elapsed = 0, 0.0
    ck = work / "ckpt_vae.pt"
    time_limit, warm0 = args.vae_time_limit, 0
    if refine_seconds:
        vae = AutoencoderKLWan.from_pretrained(work / "vae").to(device).train()
        opt = torch.optim.AdamW(vae.parameters(), lr=C["vae_lr"], betas=(0.9, 0.99), weight_decay=0.0)
        prev = json.loads((work / "vae_done.json").read_text())
        step = warm0 = prev["steps"]
        elapsed = prev["seconds"]
        time_limit = elapsed + refine_seconds
        print(f"[vae] refining from step {step} for {refine_seconds} s")
    elif ck.exists():
        s = torch.load(ck, map_location="cpu", weights_only=False)
        vae.load_state_dict(s["model"])
        opt.load_state_dict(s["opt"])
        gen.set_state(s["rng"]["data"])
        dev_gen.set_state(s["rng"]["noise"])
        step, elapsed = s["step"], s["elapsed"]
        print(f"[vae] resumed at step {step}")
    total = C["vae_steps"] if not refine_seconds else 10**9
    log = Logger(work / "loss_vae.csv", ["step", "seconds", "loss", "l1", "mse", "kl"], step)
    spec = tiny_data.ClipSpec()
    t0 = time.time() - elapsed
    while step < total:
        lr = C["vae_lr"] * min(1.0, (step + 1 - warm0) / (200 if not warm0 else 50))
        for g in opt.param_groups:
            g["lr"] = lr
        video, _ = tiny_data.sample_batch(C["vae_batch"], gen, spec, device)
        with autocast(device):
            post = vae.encode(video).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=dev_gen, device=device)
            rec = vae.decode(z).sample
        rec = rec.float()
        w = object_weights(video, args.obj_weight)
        l1 = (w * (rec - video).abs()).sum() / (3 * w.sum())
        mse = (w * (rec - video) ** 2).sum() / (3 * w.sum())
        kl = 0.5 * (post.mean.float() ** 2 + post.var.float() - 1 - post.logvar.float()).mean()
        loss = l1 + mse + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % args.log_every == 0 or step == total:
            log.log(step=step, seconds=round(time.time() - t0, 2), loss=f"{loss.item():.5f}",
                    l1=f"{l1.item():.5f}", mse=f"{mse.item():.5f}", kl=f"{kl.item():.4f}")
            print(f"[vae] step {step}/{total} loss {loss.item():.4f} l1 {l1.item():.4f} kl {kl.item():.3f} "
                  f"{time.time() - t0:.0f}s", flush=True)
        out_of_time = time.time() - t0 > time_limit
        if (step % args.ckpt_every == 0 or step == total or out_of_time) and not refine_seconds:
            save_ckpt(ck, model=vae.state_dict(), opt=opt.state_dict(), step=step,
                      elapsed=time.time() - t0, rng=rng_state(gen, dev_gen))
        if out_of_time:
            print(f"[vae] time limit hit at step {step}; finishing the VAE stage early")
            break
    # latent statistics for normalisation, measured on fresh clips with the posterior mode
    vae.eval()
    zs = []
    stat_gen = torch.Generator().manual_seed(args.seed + 100)
    with torch.no_grad(), autocast(device):
        for _ in range(max(1, 256 // C["vae_batch"]) if not args.quick else 1):
            video, _ = tiny_data.sample_batch(C["vae_batch"], stat_gen, spec, device)
            zs.append(vae.encode(video).latent_dist.mode().float())
    z = torch.cat(zs).transpose(0, 1).flatten(1)
    mean, std = z.mean(1).tolist(), z.std(1).clamp_min(1e-3).tolist()
    vae.register_to_config(latents_mean=[round(m, 5) for m in mean], latents_std=[round(s, 5) for s in std])
    vae.save_pretrained(work / "vae")
    info = {"steps": step, "seconds": round(time.time() - t0, 1), "final_loss": loss.item(),
            "final_l1": l1.item(), "latents_mean": mean, "latents_std": std}
    (work / "vae_done.json").write_text(json.dumps(info, indent=1))
    print(f"[vae] done: {info['steps']} steps, {info['seconds']} s")
    return step >= total


def encode_text(te, tok, captions, device, return_tokens=False):
    """Embeddings exactly as WanPipeline builds them: valid tokens, then zeros to 512.

    With ``return_tokens`` also the unpadded ``(hidden, mask)`` for the caption-parse loss.
    """
    enc = tok(captions, padding="longest", truncation=True, max_length=MAX_SEQ_LEN,
              add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    ids, mask = enc.input_ids.to(device), enc.attention_mask.to(device)
    h = te(ids, mask).last_hidden_state * mask[..., None].to(torch.float32)
    ctx = F.pad(h, (0, 0, 0, MAX_SEQ_LEN - h.shape[1]))
    return (ctx, h, mask) if return_tokens else ctx


class CaptionParseHead(torch.nn.Module):
    """Auxiliary probes: every valid token of a caption predicts the caption's parse (first object's
    colour, shape and motion, and the background colour or "none").

    Wan's cross-attention is order-blind, so "a red circle on a blue background" and "a blue circle
    on a red background" differ for the transformer only through context the text encoder mixes into
    each token. A T5 trained jointly on the diffusion loss alone learned almost none (see
    `build_text_encoder`); this loss makes each token carry its role. Thrown away at export.
    """

    SIZES = {"color": len(tiny_data.COLORS), "shape": len(tiny_data.SHAPES),
             "motion": len(tiny_data.MOTIONS), "bg": len(tiny_data.COLORS) + 1}

    def __init__(self, d_model: int):
        super().__init__()
        self.heads = torch.nn.ModuleDict({k: torch.nn.Linear(d_model, n) for k, n in self.SIZES.items()})

    def forward(self, hidden, mask, meta, keep=None):
        """Mean cross-entropy over valid tokens of kept captions, and per-field token accuracy."""
        valid = mask.bool()
        if keep is not None:
            valid = valid & keep.to(valid.device)[:, None]
        rows = valid.nonzero()[:, 0]
        h = hidden[valid].float()
        loss, acc = 0.0, {}
        for k, head in self.heads.items():
            logits = head(h)
            target = meta[k].to(h.device)[rows]
            loss = loss + F.cross_entropy(logits, target)
            acc[k] = (logits.argmax(-1) == target).float().mean().item()
        return loss / len(self.heads), acc


def train_dit(args, C, device, work: Path):
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(work / "vae").to(device).eval().requires_grad_(False)
    z_dim = vae.config.z_dim
    lat_mean = torch.tensor(vae.config.latents_mean, device=device).view(1, z_dim, 1, 1, 1)
    lat_std = torch.tensor(vae.config.latents_std, device=device).view(1, z_dim, 1, 1, 1)
    tok = build_tokenizer()
    torch.manual_seed(args.seed)
    te = build_text_encoder(C["te"], len(tok)).to(device)
    tr = build_transformer(C["dit"], z_dim).to(device)
    parse_head = CaptionParseHead(C["te"]["d_model"]).to(device) if args.text_parse_weight > 0 else None
    params = list(te.parameters()) + list(tr.parameters()) + (list(parse_head.parameters()) if parse_head else [])
    opt = torch.optim.AdamW(params, lr=C["dit_lr"], betas=(0.9, 0.99), weight_decay=0.01)
    ema = {"te": {k: v.detach().float().clone() for k, v in te.state_dict().items()},
           "tr": {k: v.detach().float().clone() for k, v in tr.state_dict().items()}}
    gen = torch.Generator().manual_seed(args.seed + 2)
    dev_gen = torch.Generator(device).manual_seed(args.seed + 3)
    step, elapsed = 0, 0.0
    ck, light = work / "ckpt_dit.pt", work / "ckpt_dit_light.pt"
    if ck.exists() or light.exists():  # the light one (EMA weights only, bf16) travels between machines
        s = torch.load(ck if ck.exists() else light, map_location="cpu", weights_only=False)
        ema = {m: {k: v.to(device).float() for k, v in d.items()} for m, d in s["ema"].items()}
        te.load_state_dict(s.get("te", s["ema"]["te"]))
        tr.load_state_dict(s.get("tr", s["ema"]["tr"]))
        if parse_head is not None and "parse_head" in s:
            parse_head.load_state_dict(s["parse_head"])
        # light checkpoints (weights only), or a parse head switched on or off, restart the optimizer
        if "opt" in s and len(s["opt"]["param_groups"][0]["params"]) == len(params):
            opt.load_state_dict(s["opt"])
        if "rng" in s:
            gen.set_state(s["rng"]["data"])
            dev_gen.set_state(s["rng"]["noise"])
        step, elapsed = s["step"], s["elapsed"]
        print(f"[dit] resumed at step {step}")
    elif (work / "text_parse.pt").exists():  # from scratch after the captions-only text stage
        s = torch.load(work / "text_parse.pt", map_location="cpu", weights_only=False)
        te.load_state_dict(s["te"])
        ema["te"] = {k: v.to(device).float().clone() for k, v in s["te"].items()}
        if parse_head is not None:
            parse_head.load_state_dict(s["parse_head"])
        print("[dit] text encoder from the text stage")
    total = C["dit_steps"]
    time_limit = min(args.dit_time_limit, args.time_budget - seconds_before_dit(work))
    print(f"[dit] time limit {time_limit:.0f} s of stage time (budget {args.time_budget} s)", flush=True)
    if step > 0 and (step >= total or elapsed >= time_limit):
        print(f"[dit] already finished at step {step} ({elapsed:.0f} s)")
        return True
    log = Logger(work / "loss_dit.csv", ["step", "seconds", "loss", "lr", "parse_loss"], step)
    gap_log = Logger(work / "direction_gap.csv", ["step", "mean", "sigma_0.85", "sigma_0.7", "sigma_0.5"], step)
    gap_args = (te, tok, tr, vae, device)
    gap_start = gap_last = direction_gap(*gap_args)
    if step == 0:  # a resumed run already logged its start
        gap_log.log(step=step, **gap_start)
    print(f"[dit] direction gap at step {step}: {gap_start}")
    p_objects = tuple(float(x) for x in args.dit_objects.split(","))
    p_motions = None
    if args.dit_straight is not None:  # share of straight moves; the rest split evenly
        k = len(STRAIGHT)
        rest = (1 - args.dit_straight) / (len(tiny_data.MOTIONS) - k)
        p_motions = [args.dit_straight / k if m in STRAIGHT else rest for m in tiny_data.MOTIONS]
    spec = tiny_data.ClipSpec()
    B = C["dit_batch"]
    t0 = time.time() - elapsed
    run_loss, run_parse, n_loss = 0.0, 0.0, 0
    while step < total:
        lr = C["dit_lr"] * min(1.0, (step + 1) / 300)
        for g in opt.param_groups:
            g["lr"] = lr
        video, caps, meta = tiny_data.sample_batch(B, gen, spec, device, return_meta=True, p_objects=p_objects,
                                                   p_motions=p_motions)
        drop = torch.rand(B, generator=gen) < 0.1
        caps = ["" if d else c for c, d in zip(caps, drop.tolist())]
        with torch.no_grad(), autocast(device):
            x0 = (vae.encode(video).latent_dist.mode().float() - lat_mean) / lat_std
        noise = torch.randn(x0.shape, generator=dev_gen, device=device)
        # timesteps: half uniform, half logit-normal, so both the ends and the middle are trained
        u = torch.rand(B, generator=dev_gen, device=device)
        ln = torch.sigmoid(torch.randn(B, generator=dev_gen, device=device))
        sig = torch.where(torch.arange(B, device=device) % 2 == 0, u, ln).clamp(1e-4, 1.0)
        s = sig.view(B, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        target = noise - x0
        with autocast(device):
            ctx, hidden, mask = encode_text(te, tok, caps, device, return_tokens=True)
            pred = tr(hidden_states=xt, timestep=sig * 1000, encoder_hidden_states=ctx, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), target)
        parse = parse_head(hidden, mask, meta, keep=~drop)[0] if parse_head is not None else torch.zeros(())
        opt.zero_grad(set_to_none=True)
        (loss + args.text_parse_weight * parse).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        ema_update(ema["te"], te, decay)
        ema_update(ema["tr"], tr, decay)
        run_loss, run_parse, n_loss = run_loss + loss.item(), run_parse + parse.item(), n_loss + 1
        if step % args.log_every == 0 or step == total:
            log.log(step=step, seconds=round(time.time() - t0, 2), loss=f"{run_loss / n_loss:.5f}", lr=f"{lr:.2e}",
                    parse_loss=f"{run_parse / n_loss:.5f}")
            print(f"[dit] step {step}/{total} loss {run_loss / n_loss:.4f} parse {run_parse / n_loss:.4f} "
                  f"{time.time() - t0:.0f}s", flush=True)
            run_loss, run_parse, n_loss = 0.0, 0.0, 0
        out_of_time = (time.time() - t0 > time_limit
                       or time.time() - PROCESS_START > args.call_time_limit - CALL_RESERVE_SECONDS)
        if step % args.ckpt_every == 0 or step == total or out_of_time:
            gap_last = direction_gap(*gap_args)
            gap_log.log(step=step, **gap_last)
            print(f"[dit] direction gap at step {step}: {gap_last}", flush=True)
            save_ckpt(ck, te=te.state_dict(), tr=tr.state_dict(), ema=ema, opt=opt.state_dict(), step=step,
                      elapsed=time.time() - t0, rng=rng_state(gen, dev_gen),
                      **({"parse_head": parse_head.state_dict()} if parse_head is not None else {}))
        if out_of_time:
            print(f"[dit] time limit hit at step {step}; stopping early (rerun resumes)")
            break
    torch.save({"ema": {m: {k: v.to(torch.bfloat16) for k, v in d.items()} for m, d in ema.items()},
                "step": step, "elapsed": time.time() - t0, "rng": rng_state(gen, dev_gen),
                **({"parse_head": parse_head.state_dict()} if parse_head is not None else {})}, light)
    finished = step >= total or time.time() - t0 > time_limit
    info = {"steps": step, "seconds": round(time.time() - t0, 1), "finished": finished,
            "p_objects": p_objects, "p_motions": p_motions,
            "direction_gap_call_start": gap_start, "direction_gap_end": gap_last}
    (work / "dit_done.json").write_text(json.dumps(info, indent=1))
    return finished


def seconds_before_dit(work: Path) -> float:
    """Training seconds the vae and text stages spent (their ``*_done.json`` records)."""
    return sum(json.loads((work / f).read_text())["seconds"] for f in ("vae_done.json", "text_parse_done.json")
               if (work / f).exists())


def init_from_pipeline(src: Path, work: Path):
    """Fine-tuning start: take a trained pipeline folder's VAE, and its text encoder and transformer as
    the dit stage's starting weights (a light checkpoint at step 0). No-op once a checkpoint exists."""
    from diffusers import WanTransformer3DModel
    from transformers import UMT5EncoderModel

    if (work / "ckpt_dit.pt").exists() or (work / "ckpt_dit_light.pt").exists():
        return
    shutil.copytree(src / "vae", work / "vae", dirs_exist_ok=True)
    log = json.loads((src / "training_log.json").read_text())
    (work / "vae_done.json").write_text(json.dumps(log["vae"], indent=1))
    if (src / "loss_vae.csv").exists():
        shutil.copy(src / "loss_vae.csv", work / "loss_vae.csv")
    te = UMT5EncoderModel.from_pretrained(src / "text_encoder", torch_dtype=torch.float32)
    tr = WanTransformer3DModel.from_pretrained(src / "transformer", torch_dtype=torch.float32)
    sd = {"te": te.state_dict(), "tr": tr.state_dict()}
    # the transformer was stored in fp16: keep it so (exact, half the size of a checkpoint that travels)
    torch.save({"ema": {"te": {k: v.float().clone() for k, v in sd["te"].items()},
                        "tr": {k: v.half() for k, v in sd["tr"].items()}},
                "step": 0, "elapsed": 0.0, "init_from": str(src)}, work / "ckpt_dit_light.pt")
    print(f"[init] VAE, text encoder and transformer from {src}")


@torch.no_grad()
def swap_sensitivity(te, tok, device) -> dict:
    """How much context the encoder mixes in: swap the object and background colour words of a caption
    and compare outputs at the *other* tokens (context only) with those at the swapped tokens."""
    colors = tiny_data.COLORS
    pairs = [(a, b) for a in colors for b in colors if a != b]
    caps = [f"a {a} circle moving right on a {b} background" for a, b in pairs]
    swapped = [f"a {b} circle moving right on a {a} background" for a, b in pairs]
    _, h1, mask = encode_text(te, tok, caps, device, return_tokens=True)
    _, h2, _ = encode_text(te, tok, swapped, device, return_tokens=True)
    diff = (h1 - h2).float().norm(dim=-1)[:, : mask.shape[1]]
    colour_pos = [1, 7]  # "a <c1> circle moving right on a <c2> background </s>"
    other = [i for i in range(int(mask[0].sum())) if i not in colour_pos]
    return {"context_change": diff[:, other].mean().item(), "swapped_token_change": diff[:, colour_pos].mean().item(),
            "token_norm": h1[:, other].float().norm(dim=-1).mean().item()}


STRAIGHT = ("moving left", "moving right", "moving up", "moving down")
_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


@torch.no_grad()
def direction_gap(te, tok, tr, vae, device, n: int = 64, sigmas=(0.85, 0.7, 0.5)) -> dict:
    """Does the transformer use the direction words? Flow-matching loss on held-out one-object clips
    moving left/right/up/down with the true caption vs the same caption with the direction flipped
    ("right" <-> "left", "up" <-> "down"), same noise; gap = (flipped - true) / true per noise level.

    ~0 means the direction words are ignored (the motion is left to the noise); colour and shape
    words make the empty prompt's loss far higher, so this isolates direction. Fixed seed: the
    numbers of two checkpoints compare directly.
    """
    straight = [tiny_data.MOTIONS.index(m) for m in STRAIGHT]
    p_motions = [1.0 if i in straight else 0.0 for i in range(len(tiny_data.MOTIONS))]
    video, caps = tiny_data.sample_batch(n, torch.Generator().manual_seed(12345), device=device,
                                         p_objects=(1.0, 0.0, 0.0), p_motions=p_motions)
    flipped = [" ".join(_OPPOSITE.get(w, w) if i and c.split()[i - 1] == "moving" else w
                        for i, w in enumerate(c.split())) for c in caps]
    was_training = (te.training, tr.training)
    te.eval(), tr.eval()
    z = vae.config.z_dim
    lat_mean = torch.tensor(vae.config.latents_mean, device=device).view(1, z, 1, 1, 1)
    lat_std = torch.tensor(vae.config.latents_std, device=device).view(1, z, 1, 1, 1)
    with autocast(device):
        x0 = (vae.encode(video).latent_dist.mode().float() - lat_mean) / lat_std
        ctx_true, ctx_flip = encode_text(te, tok, caps, device), encode_text(te, tok, flipped, device)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(54321)).to(device)
    gaps = {}
    for sig in sigmas:
        xt, target = (1 - sig) * x0 + sig * noise, noise - x0
        t = torch.full((n,), sig * 1000.0, device=device)
        loss = {}
        for name, ctx in (("true", ctx_true), ("flipped", ctx_flip)):
            with autocast(device):
                pred = tr(hidden_states=xt, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
            loss[name] = F.mse_loss(pred.float(), target).item()
        gaps[f"sigma_{sig}"] = round((loss["flipped"] - loss["true"]) / loss["true"], 5)
    te.train(was_training[0]), tr.train(was_training[1])
    return {"mean": round(sum(gaps.values()) / len(gaps), 5), **gaps}


def train_text_parse(args, C, device, work: Path):
    """Captions only: teach the text encoder the caption parse (``CaptionParseHead``) before the dit
    stage, starting from the dit checkpoint's text encoder; writes it back there (weights and EMA)."""
    done = work / "text_parse_done.json"
    if done.exists():
        return
    tok = build_tokenizer()
    te = build_text_encoder(C["te"], len(tok)).to(device)
    ck, light = work / "ckpt_dit.pt", work / "ckpt_dit_light.pt"
    src = ck if ck.exists() else light
    state = torch.load(src, map_location="cpu", weights_only=False) if src.exists() else None
    fresh = args.te_fresh or state is None  # from scratch there is no encoder to start from
    if not fresh:
        te.load_state_dict({k: v.float() for k, v in state["ema"]["te"].items()})
    before = swap_sensitivity(te, tok, device)
    head = CaptionParseHead(C["te"]["d_model"]).to(device)
    params = list(te.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed + 4)
    spec = tiny_data.ClipSpec(frames=1, height=16, width=16)  # captions are what matter; render little
    t0 = time.time()
    for step in range(1, args.text_parse_steps + 1):
        for g in opt.param_groups:
            g["lr"] = 1e-3 * min(1.0, step / 100) * 0.5 * (1 + math.cos(math.pi * step / args.text_parse_steps))
        _, caps, meta = tiny_data.sample_batch(128, gen, spec, "cpu", return_meta=True)
        _, hidden, mask = encode_text(te, tok, caps, device, return_tokens=True)
        loss, acc = head(hidden, mask, meta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == args.text_parse_steps:
            print(f"[text] step {step} parse loss {loss.item():.4f} acc "
                  + " ".join(f"{k} {v:.3f}" for k, v in acc.items()) + f" {time.time() - t0:.0f}s", flush=True)
    te.eval()
    with torch.no_grad():
        _, caps, meta = tiny_data.sample_batch(1024, torch.Generator().manual_seed(args.seed + 99), spec, "cpu",
                                               return_meta=True)
        _, hidden, mask = encode_text(te, tok, caps, device, return_tokens=True)
        held_loss, held_acc = head(hidden, mask, meta)
    after = swap_sensitivity(te, tok, device)
    sd = {k: v.detach().float().cpu() for k, v in te.state_dict().items()}
    if state is None:  # a run from scratch: the dit stage starts from this encoder
        save_ckpt(work / "text_parse.pt", te=sd, parse_head=head.state_dict())
    else:  # fine-tuning: replace the checkpoint's encoder
        state["ema"]["te"] = sd
        if "te" in state:
            state["te"] = sd
        state["parse_head"] = head.state_dict()
        save_ckpt(src, **state)
    info = {"steps": args.text_parse_steps, "seconds": round(time.time() - t0, 1), "fresh": fresh,
            "held_out_loss": round(held_loss.item(), 4), "held_out_token_accuracy": held_acc,
            "swap_sensitivity_before": before, "swap_sensitivity_after": after}
    done.write_text(json.dumps(info, indent=1))
    print("[text]", json.dumps(info))


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
    tok = build_tokenizer()
    te = build_text_encoder(C["te"], len(tok))
    tr = build_transformer(C["dit"], vae.config.z_dim)
    ck = work / "ckpt_dit.pt"
    s = torch.load(ck if ck.exists() else work / "ckpt_dit_light.pt", map_location="cpu", weights_only=False)
    te.load_state_dict({k: v.float() for k, v in s["ema"]["te"].items()})
    tr.load_state_dict({k: v.float() for k, v in s["ema"]["tr"].items()})
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
    summary = {
        "seed": args.seed, "quick": args.quick, "device": str(device),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "torch": torch.__version__,
        "vae": {k: vae_info[k] for k in ("steps", "seconds", "final_loss", "final_l1")},
        "dit": dict(dit_info, final_loss_mean_last_logs=sum(float(r["loss"]) for r in last) / max(1, len(last))),
        "params": {"vae": sum(p.numel() for p in vae.parameters()),
                   "text_encoder": sum(p.numel() for p in te.parameters()),
                   "transformer": sum(p.numel() for p in tr.parameters())},
        "config": {k: C[k] for k in ("vae_steps", "vae_batch", "vae_lr", "dit_steps", "dit_batch", "dit_lr")},
    }
    if (work / "text_parse_done.json").exists():
        summary["text_parse"] = json.loads((work / "text_parse_done.json").read_text())
    (out / "training_log.json").write_text(json.dumps(summary, indent=1))
    print("[export]", json.dumps(summary))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "assets" / "tiny-wan"))
    ap.add_argument("--work", default=str(REPO / "outputs" / "tiny-wan-train"), help="checkpoints and logs")
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
    ap.add_argument("--vae-batch", type=int)
    ap.add_argument("--obj-weight", type=float, default=10.0, help="extra VAE loss weight on object pixels")
    ap.add_argument("--refine-vae", type=float, default=0.0,
                    help="seconds: continue the saved VAE (object-weighted), re-measure latent stats, then the "
                         "dit stage resumes on the new latents")
    ap.add_argument("--init-from", default=None, metavar="DIR",
                    help="fine-tune: start from this trained pipeline folder (its VAE, text encoder, transformer)")
    ap.add_argument("--text-parse-steps", type=int, default=None,
                    help="captions-only caption-parse training of the text encoder before the dit stage "
                         "(default: 400 from scratch, 0 with --init-from)")
    ap.add_argument("--te-fresh", action="store_true",
                    help="--text-parse-steps starts from a new text encoder instead of the checkpoint's (an encoder "
                         "trained with T5's bias init stays position-blind)")
    ap.add_argument("--text-parse-weight", type=float, default=0.1,
                    help="weight of the caption-parse loss on the text encoder during the dit stage")
    ap.add_argument("--dit-objects", default="0.8,0.15,0.05", metavar="P1,P2,P3",
                    help="dit stage: probabilities of clips with 1, 2, 3 objects")
    ap.add_argument("--dit-straight", type=float, default=0.7, metavar="P",
                    help="dit stage: share of objects moving left/right/up/down, the rest split evenly over "
                         "bouncing/growing/shrinking (uniform over the 7 motions is 4/7)")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--ckpt-every", type=int, default=1000)
    args = ap.parse_args(argv)
    C = json.loads(json.dumps(QUICK if args.quick else FULL))
    for k in ("vae_steps", "vae_batch", "dit_steps", "dit_batch"):
        if getattr(args, k) is not None:
            C[k] = getattr(args, k)
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


if __name__ == "__main__":
    sys.exit(main())
