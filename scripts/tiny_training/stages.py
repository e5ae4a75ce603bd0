"""The training stages, each resumable from its checkpoint in the work folder: `train_vae` (reconstruction,
then latent statistics), `train_text_parse` (captions only) and `train_dit` (text encoder and transformer
jointly, rectified flow)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .builders import CaptionParseHead, build_text_encoder, build_tokenizer, build_transformer, build_vae, encode_text
from .common import Logger, SpanTimer, autocast, ema_update, rng_state, save_ckpt, shift_sigma
from .config import CALL_RESERVE_SECONDS, PROCESS_START
from .evaluation import direction_gap, swap_sensitivity


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
        s = torch.load(ck, map_location="cpu", weights_only=True)
        vae.load_state_dict(s["model"])
        opt.load_state_dict(s["opt"])
        gen.set_state(s["rng"]["data"])
        dev_gen.set_state(s["rng"]["noise"])
        step, elapsed = s["step"], s["elapsed"]
        print(f"[vae] resumed at step {step}")
    total = C["vae_steps"] if not refine_seconds else 10**9
    log = Logger(work / "loss_vae.csv", ["step", "seconds", "loss", "l1", "mse", "kl"], step)
    data = args.data
    specs = [data.ClipSpec(*s) for s in C["vae_specs"]]  # cycled step by step, batch scaled to equal pixels
    pixels = min(s.frames * s.height * s.width for s in specs)
    t0 = time.time() - elapsed
    while step < total:
        lr = C["vae_lr"] * min(1.0, (step + 1 - warm0) / (C.get("vae_warmup", 200) if not warm0 else 50))
        for g in opt.param_groups:
            g["lr"] = lr
        spec = specs[step % len(specs)]
        batch = max(1, C["vae_batch"] * pixels // (spec.frames * spec.height * spec.width))
        video, w = data.vae_batch(batch, gen, spec, device, args.obj_weight)
        with autocast(device):
            post = vae.encode(video).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=dev_gen, device=device)
            rec = vae.decode(z).sample
        rec = rec.float()
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
            video, _ = data.sample_batch(C["vae_batch"], stat_gen, specs[0], device)
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


def train_text_parse(args, C, device, work: Path):
    """Captions only: teach the text encoder the caption parse (``CaptionParseHead``) before the dit
    stage, starting from the dit checkpoint's text encoder; writes it back there (weights and EMA)."""
    done = work / "text_parse_done.json"
    if done.exists():
        return
    data = args.data
    tok = build_tokenizer(data)
    te = build_text_encoder(C["te"], len(tok)).to(device)
    ck, light = work / "ckpt_dit.pt", work / "ckpt_dit_light.pt"
    src = ck if ck.exists() else light
    state = torch.load(src, map_location="cpu", weights_only=True) if src.exists() else None
    fresh = args.te_fresh or state is None  # from scratch there is no encoder to start from
    if not fresh:
        te.load_state_dict({k: v.float() for k, v in state["ema"]["te"].items()})
    before = swap_sensitivity(te, tok, device)
    head = CaptionParseHead(C["te"]["d_model"], data.META_FIELDS).to(device)
    params = list(te.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed + 4)
    t0 = time.time()
    for step in range(1, args.text_parse_steps + 1):
        for g in opt.param_groups:
            g["lr"] = 1e-3 * min(1.0, step / 100) * 0.5 * (1 + math.cos(math.pi * step / args.text_parse_steps))
        caps, meta = data.captions_batch(128, gen)
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
        caps, meta = data.captions_batch(1024, torch.Generator().manual_seed(args.seed + 99))
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


def train_dit(args, C, device, work: Path):
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(work / "vae").to(device).eval().requires_grad_(False)
    z_dim = vae.config.z_dim
    lat_mean = torch.tensor(vae.config.latents_mean, device=device).view(1, z_dim, 1, 1, 1)
    lat_std = torch.tensor(vae.config.latents_std, device=device).view(1, z_dim, 1, 1, 1)
    data = args.data
    tok = build_tokenizer(data)
    torch.manual_seed(args.seed)
    te = build_text_encoder(C["te"], len(tok)).to(device)
    tr = build_transformer(C["dit"], z_dim).to(device)
    parse_head = (CaptionParseHead(C["te"]["d_model"], data.META_FIELDS).to(device) if args.text_parse_weight > 0
                  else None)
    params = list(te.parameters()) + list(tr.parameters()) + (list(parse_head.parameters()) if parse_head else [])
    opt = torch.optim.AdamW(params, lr=C["dit_lr"], betas=(0.9, 0.99), weight_decay=0.01)
    ema = {"te": {k: v.detach().float().clone() for k, v in te.state_dict().items()},
           "tr": {k: v.detach().float().clone() for k, v in tr.state_dict().items()}}
    gen = torch.Generator().manual_seed(args.seed + 2)
    dev_gen = torch.Generator(device).manual_seed(args.seed + 3)
    step, elapsed = 0, 0.0
    ck, light = work / "ckpt_dit.pt", work / "ckpt_dit_light.pt"
    if ck.exists() or light.exists():  # the light one (EMA weights only, bf16) travels between machines
        s = torch.load(ck if ck.exists() else light, map_location="cpu", weights_only=True)
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
        s = torch.load(work / "text_parse.pt", map_location="cpu", weights_only=True)
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
    log = Logger(work / "loss_dit.csv", ["step", "seconds", "loss", "lr", "parse_loss", "frames", "height", "width",
                                         "data_share"], step)
    pool = LatentPool(C["latent_reuse"])
    gap_log = Logger(work / "direction_gap.csv", ["step", "mean", "sigma_0.85", "sigma_0.7", "sigma_0.5"], step)
    compiled = bool(C.get("dit_compile")) and device.type == "cuda" and not args.eager
    if compiled:  # regional: one compiled block serves all 8; one graph per clip size (phase)
        tr.compile_repeated_blocks(fullgraph=True, dynamic=False)
        print("[dit] transformer blocks compiled (torch.compile, regional)")
    gap_args = (te, tok, tr, vae, device)
    gap_kw = dict(data=data, n=64 if not args.quick else 4, spec=data.ClipSpec(*C["dit_phases"][0]["spec"]))

    def gap():  # eager: the probe's batch would compile graphs of its own
        with torch.compiler.set_stance("force_eager"):
            return direction_gap(*gap_args, **gap_kw)

    gap_start = gap_last = gap()
    if step == 0:  # a resumed run already logged its start
        gap_log.log(step=step, **gap_start)
    print(f"[dit] direction gap at step {step}: {gap_start}")
    phases = C["dit_phases"]
    mixes = [scene_mix(args, C, phase, data) for phase in phases]  # (p_objects, p_motions) per phase
    t0 = time.time() - elapsed
    # losses summed on the device and read once per log line: a .item() per step would stall the CPU
    # (which launches the next step's kernels) on every step
    zero = torch.zeros((), device=device)
    run_loss, run_parse, n_loss = zero, zero, 0
    data_timer, t_log = SpanTimer(device), time.time()  # rendering and encoding clips, per log interval
    while step < total:
        lr = C["dit_lr"] * min(1.0, (step + 1) / 300)
        for g in opt.param_groups:
            g["lr"] = lr
        # the phase (clip size, batch) by the share of the stage's time spent; encoded clips go to a pool
        # that serves `latent_reuse` steps per clip on average (fresh noise, timesteps and caption drop)
        spent = (time.time() - t0) / time_limit if math.isfinite(time_limit) else step / total
        i_phase = next((i for i, p in enumerate(phases) if spent < p["until"]), len(phases) - 1)
        phase, (p_objects, p_motions) = phases[i_phase], mixes[i_phase]
        B = phase["batch"]
        data_timer.start()
        if pool.wants_batch(step, phase["spec"]):
            video, caps_new, meta_new = data.sample_batch(B, gen, data.ClipSpec(*phase["spec"]), device,
                                                          return_meta=True, p_objects=p_objects, p_motions=p_motions)
            with torch.no_grad(), autocast(device):
                x0_new = (vae.encode(video).latent_dist.mode().float() - lat_mean) / lat_std
            del video
            pool.add(x0_new, caps_new, meta_new, phase["spec"])
        x0, caps_all, meta = pool.draw(B, gen)
        data_timer.stop()
        drop = torch.rand(B, generator=gen) < 0.1
        caps = ["" if d else c for c, d in zip(caps_all, drop.tolist())]
        noise = torch.randn(x0.shape, generator=dev_gen, device=device)
        # timesteps: half uniform, half logit-normal, so both the ends and the middle are trained
        u = torch.rand(B, generator=dev_gen, device=device)
        ln = torch.sigmoid(torch.randn(B, generator=dev_gen, device=device))
        sig = torch.where(torch.arange(B, device=device) % 2 == 0, u, ln).clamp(1e-4, 1.0)
        # towards high noise, as the sampler's flow shift does: the layout (and the caption's effect) is decided there
        sig = shift_sigma(sig, phase.get("shift", 1.0))
        s = sig.view(B, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        target = noise - x0

        def forward_backward():
            with autocast(device):
                ctx, hidden, mask = encode_text(te, tok, caps, device, return_tokens=True)
                pred = tr(hidden_states=xt, timestep=sig * 1000, encoder_hidden_states=ctx, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), target)
            parse = parse_head(hidden, mask, meta, keep=~drop)[0] if parse_head is not None else zero
            (loss + args.text_parse_weight * parse).backward()
            return loss, parse

        opt.zero_grad(set_to_none=True)
        try:
            loss, parse = forward_backward()
        except Exception as e:  # a compiler failure costs the speed-up, not the run
            if not compiled:
                raise
            print(f"[dit] compiled step failed ({type(e).__name__}: {str(e)[:300]}); continuing eager", flush=True)
            for block in tr.blocks:
                block._compiled_call_impl = None
            compiled = False
            opt.zero_grad(set_to_none=True)
            loss, parse = forward_backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        ema_update(ema["te"], te, decay)
        ema_update(ema["tr"], tr, decay)
        run_loss, run_parse, n_loss = run_loss + loss.detach(), run_parse + parse.detach(), n_loss + 1
        if step % args.log_every == 0 or step == total:
            data_share = data_timer.pop_seconds() / max(time.time() - t_log, 1e-9)
            mean_loss, mean_parse = run_loss.item() / n_loss, run_parse.item() / n_loss
            log.log(step=step, seconds=round(time.time() - t0, 2), loss=f"{mean_loss:.5f}", lr=f"{lr:.2e}",
                    parse_loss=f"{mean_parse:.5f}", frames=pool.spec[0], height=pool.spec[1],
                    width=pool.spec[2], data_share=f"{data_share:.3f}")
            print(f"[dit] step {step}/{total} loss {mean_loss:.4f} parse {mean_parse:.4f} "
                  f"{pool.spec} x{B} data {data_share:.0%} {time.time() - t0:.0f}s", flush=True)
            run_loss, run_parse, n_loss = zero, zero, 0
            t_log = time.time()
        out_of_time = (time.time() - t0 > time_limit
                       or time.time() - PROCESS_START > args.call_time_limit - CALL_RESERVE_SECONDS)
        if step % args.ckpt_every == 0 or step == total or out_of_time:
            gap_last = gap()
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
            "scene_mix_per_phase": [{"p_objects": o, "p_motions": m} for o, m in mixes],
            "direction_gap_call_start": gap_start, "direction_gap_end": gap_last}
    (work / "dit_done.json").write_text(json.dumps(info, indent=1))
    return finished


def scene_mix(args, C, phase: dict, data):
    """``(p_objects, p_motions)`` of one dit phase: the command line's ``--dit-objects``/``--dit-straight``,
    else the phase's ``objects``/``straight``, else the recipe's ``dit_objects``/``dit_straight``. The
    straight moves (left/right/up/down) share ``straight`` evenly; the other motions split the rest."""
    p_objects = tuple(float(x) for x in (args.dit_objects or phase.get("objects") or C["dit_objects"]))
    straight = next(v for v in (args.dit_straight, phase.get("straight"), C["dit_straight"]) if v is not None)
    k = len(data.STRAIGHT)
    rest = (1 - straight) / (len(data.MOTIONS) - k)
    return p_objects, [straight / k if m in data.STRAIGHT else rest for m in data.MOTIONS]


class LatentPool:
    """Encoded training clips, each used ``reuse`` times on average: every ``reuse`` steps a fresh batch
    replaces the oldest one of the ``reuse`` batches held, and each step draws its batch at random from
    all of them (so a clip's uses are spread over ``reuse**2`` steps, not consecutive). A new clip size
    (the next phase) empties the pool. Rendering and encoding cost about a training step per batch."""

    def __init__(self, reuse: int):
        self.reuse, self.spec = max(1, int(reuse)), None
        self.x0, self.caps, self.meta = [], [], []

    def wants_batch(self, step: int, spec) -> bool:
        return spec != self.spec or not self.x0 or step % self.reuse == 0

    def add(self, x0: torch.Tensor, caps: list[str], meta: dict, spec):
        if spec != self.spec:
            self.x0, self.caps, self.meta, self.spec = [], [], [], spec
        keep = self.reuse - 1  # batches kept besides the new one
        self.x0, self.caps, self.meta = ((v[-keep:] if keep else []) + [new]
                                         for v, new in ((self.x0, x0), (self.caps, caps), (self.meta, meta)))
        # joined once per added batch, not per draw
        self._x0 = torch.cat(self.x0)
        self._caps = [c for batch in self.caps for c in batch]
        self._meta = {k: torch.cat([m[k] for m in self.meta]) for k in self.meta[0]}

    def draw(self, n: int, gen: torch.Generator):
        """``(x0 (n, ...), captions, meta)`` drawn without replacement from the pool."""
        if self.reuse == 1:  # the batch just encoded, in order
            return self.x0[0], self.caps[0], self.meta[0]
        idx = torch.randperm(self._x0.shape[0], generator=gen)[:n]
        return (self._x0[idx.to(self._x0.device)], [self._caps[i] for i in idx.tolist()],
                {k: v[idx] for k, v in self._meta.items()})


def seconds_before_dit(work: Path) -> float:
    """Training seconds the vae and text stages spent (their ``*_done.json`` records)."""
    return sum(json.loads((work / f).read_text())["seconds"] for f in ("vae_done.json", "text_parse_done.json")
               if (work / f).exists())
