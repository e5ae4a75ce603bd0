#!/usr/bin/env python3
"""Step-cache benchmark: vidaccel K/V cache and profiled block reuse side by side with diffusers'
FirstBlockCache, MagCache, TaylorSeer and Pyramid Attention Broadcast: end-to-end denoising time
(all steps, CFG) and output difference vs the uncached run (PSNR/SSIM).

Modes:
  (default, GPU) the Wan2.1-1.3B transformer architecture (diffusers class, published config,
      random bf16 weights), 480p, 81 frames, 50 steps, CFG 5.0, driven by WanPipeline's own denoising
      loop (UniPC flow scheduler, ``cache_context("cond"/"uncond", step_index=...)``) on random text
      embeddings; output = final latents. Random weights make PSNR/SSIM a consistency check only
      (how far each cache drifts from the uncached run), not a quality result.
  --tiny  (CPU) the shipped tiny *trained* Wan pipeline (`vidaccel.tiny.load_tiny`, assets/tiny-wan):
      decoded videos, PSNR/SSIM vs the uncached videos - the quality comparison.
  --smoke (CPU) toy sizes: checks the script end to end in about a minute.

vidaccel variants profile the model first (`vidaccel.profile`, fewer steps by default:
--profile-steps) and reuse that profile's background blocks. --stack-720p adds 720p runs: dense,
radial attention, and radial + profiled reuse (Otsu tau, and the --reuse-budget block budget; profile from
the 480p run; the grid change is logged).

    python scripts/bench_caches.py --out benchmarks/results       # ~15 min on an H100 (estimate)
    # or split under a 10-minute limit: the first call stores the baseline and the profile
    python scripts/bench_caches.py \
        --methods baseline,vidaccel_kv_cache,vidaccel_reuse_profiled,vidaccel_reuse_adaptive \
        --reference /tmp/ref480.pt --tag bench_caches_a
    python scripts/bench_caches.py --methods diffusers_fbc,diffusers_magcache,diffusers_taylorseer,diffusers_pab \
        --reference /tmp/ref480.pt --profile benchmarks/results/bench_caches_a_profile.json --tag bench_caches_b
    python scripts/bench_caches.py --tiny --out benchmarks/results
    python scripts/bench_caches.py --smoke --out /tmp/bench_caches
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import benchlib
from benchlib import RESOLUTIONS, WAN_1_3B

FLOW_SHIFT = {"480p": 3.0, "720p": 5.0}  # Wan2.1's recommended flow shift per resolution
PROMPTS = ["a red fox running through fresh snow, morning light", "a busy city street at night in the rain"]

METHODS = ("baseline", "vidaccel_kv_cache", "vidaccel_reuse_profiled", "vidaccel_reuse_budget", "vidaccel_reuse_adaptive",
           "vidaccel_reuse_all_blocks", "diffusers_fbc", "diffusers_magcache", "diffusers_taylorseer",
           "diffusers_pab")


class LatentWanLoop:
    """WanPipeline's denoising loop on fixed text embeddings, latents in and out (no text encoder, no VAE).

    Callable like a pipeline (``loop(prompt=..., generator=..., num_inference_steps=...)``) so that
    `vidaccel.profile` can drive it; every prompt maps to the same random embeddings.
    """

    def __init__(self, transformer, latent_shape, text, negative_text, flow_shift, guidance_scale=5.0):
        from diffusers import UniPCMultistepScheduler

        self.transformer, self.latent_shape = transformer, latent_shape
        self.text, self.negative_text, self.guidance_scale = text, negative_text, guidance_scale
        self.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                 num_train_timesteps=1000, flow_shift=flow_shift)
        self.current_timestep = None

    @property
    def _execution_device(self):
        return self.text.device

    @torch.inference_mode()
    def __call__(self, prompt=None, generator=None, num_inference_steps=50, guidance_scale=None, output_type=None,
                 **_):
        model, device = self.transformer, self.text.device
        g = guidance_scale if guidance_scale is not None else self.guidance_scale
        latents = torch.randn(self.latent_shape, generator=generator or torch.Generator().manual_seed(0))
        latents = latents.to(device, torch.float32)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for i, t in enumerate(self.scheduler.timesteps):
            self.current_timestep = t
            x = latents.to(self.text.dtype)
            timestep = t.expand(x.shape[0])
            ctx = dict(step_index=i, sigma=float(self.scheduler.sigmas[i]), num_inference_steps=num_inference_steps)
            with model.cache_context("cond", **ctx):
                cond = model(hidden_states=x, timestep=timestep, encoder_hidden_states=self.text, return_dict=False)[0]
            with model.cache_context("uncond", **ctx):
                uncond = model(hidden_states=x, timestep=timestep, encoder_hidden_states=self.negative_text,
                               return_dict=False)[0]
            noise = uncond + g * (cond - uncond)
            latents = self.scheduler.step(noise, t, latents, return_dict=False)[0]
        self.current_timestep = None
        model._reset_stateful_cache()  # as WanPipeline's maybe_free_model_hooks
        return SimpleNamespace(frames=latents)


# ----------------------------------------------------------------------------------------- methods


def _calibrate_magcache(run_once, transformer, steps):
    """MagCache's calibration run (no skipping); diffusers prints the ratios, so read them from stdout."""
    from diffusers.hooks import MagCacheConfig

    transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=steps))
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            run_once()
    finally:
        transformer.disable_cache()
    lines = buffer.getvalue().splitlines()
    i = next(k for k, line in enumerate(lines) if "Calibration Complete" in line)
    return json.loads(lines[i + 1])  # the first context's (cond) ratios


def setup_method(name, pipe, transformers, args, profile, steps, run_once):
    """Enable `name` on the pipeline; returns (description, teardown)."""
    import vidaccel
    from diffusers.hooks import (FirstBlockCacheConfig, MagCacheConfig, PyramidAttentionBroadcastConfig,
                                 TaylorSeerCacheConfig)

    def diffusers_cache(make):
        for t in transformers:
            t.enable_cache(make())
        return lambda: [t.disable_cache() for t in transformers]

    if name == "baseline":
        return "uncached", lambda: None
    if name == "vidaccel_kv_cache":
        vidaccel.enable_kv_cache(pipe)
        return "enable_kv_cache (exact)", lambda: vidaccel.disable_caches(pipe)
    if name.startswith("vidaccel_reuse"):
        vidaccel.enable_kv_cache(pipe)
        if name == "vidaccel_reuse_profiled":
            vidaccel.enable_block_reuse(pipe, "profiled", profile=profile)
        elif name == "vidaccel_reuse_budget":  # the same profile, tau set by a block budget instead of Otsu
            budget = profile.reclassified(f"background:{args.reuse_budget}")
            vidaccel.enable_block_reuse(pipe, "profiled", profile=budget)
        elif name == "vidaccel_reuse_adaptive":
            vidaccel.enable_block_reuse(pipe, "adaptive", profile=profile)
        else:  # every block: whole-step reuse on the ProfilingDiT schedule, the upper bound of block reuse
            n = len(transformers[0].blocks)
            vidaccel.enable_block_reuse(pipe, vidaccel.BlockReuseConfig(background_blocks=tuple(range(n))))
        info = vidaccel.cache_summary(pipe)[0]["block_reuse"]
        desc = (f"K/V cache + block reuse ({'adaptive' if info['adaptive'] else 'warm-up 6, interval 6'}), "
                f"{info['reused_blocks']}/{info['blocks']} blocks reused, runs {info['runs']}")
        return desc, lambda: vidaccel.disable_caches(pipe)
    if name == "diffusers_fbc":
        return (f"FirstBlockCacheConfig(threshold={args.fbc_threshold})",
                diffusers_cache(lambda: FirstBlockCacheConfig(threshold=args.fbc_threshold)))
    if name == "diffusers_magcache":
        ratios = _calibrate_magcache(run_once, transformers[0], steps)
        return ("MagCacheConfig(threshold=0.06, max_skip_steps=3, retention_ratio=0.2), ratios calibrated on "
                "this model", diffusers_cache(lambda: MagCacheConfig(
                    threshold=0.06, max_skip_steps=3, retention_ratio=0.2, num_inference_steps=steps,
                    mag_ratios=ratios)))
    if name == "diffusers_taylorseer":
        # lite mode: diffusers' default patterns (`^blocks.*attn`, fullmatch) match no Wan module (attn1/attn2)
        return ("TaylorSeerCacheConfig(cache_interval=6, disable_cache_before_step=6, max_order=1, "
                "use_lite_mode=True)", diffusers_cache(lambda: TaylorSeerCacheConfig(
                    cache_interval=6, disable_cache_before_step=6, max_order=1, use_lite_mode=True,
                    taylor_factors_dtype=transformers[0].dtype)))
    if name == "diffusers_pab":
        return ("PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2, "
                "spatial_attention_timestep_skip_range=(100, 800))",
                diffusers_cache(lambda: PyramidAttentionBroadcastConfig(
                    spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(100, 800),
                    current_timestep_callback=lambda: _current_timestep(pipe))))
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def _current_timestep(pipe):
    t = getattr(pipe, "current_timestep", None)
    return 0 if t is None else t


# ----------------------------------------------------------------------------------------- metrics


def quality(reference, output) -> dict:
    """PSNR/SSIM of `output` vs `reference`: videos (T, H, W, 3) uint8, or latents (B, C, T, H, W) as float videos."""
    from vidaccel.metrics import psnr, ssim

    ref, out = np.asarray(reference), np.asarray(output)
    if ref.dtype == np.uint8 and ref.ndim == 5:  # several videos: average per-video metrics
        per = [quality(a, b) for a, b in zip(ref, out)]
        return {"psnr_db": round(float(np.mean([q["psnr_db"] for q in per])), 3),
                "ssim": round(float(np.mean([q["ssim"] for q in per])), 5),
                "max_abs_diff": max(q["max_abs_diff"] for q in per),
                "bit_identical": all(q["bit_identical"] for q in per)}
    if ref.dtype != np.uint8:  # latents: channels last, range of the reference
        ref = ref[0].transpose(1, 2, 3, 0).astype(np.float64)
        out = out[0].transpose(1, 2, 3, 0).astype(np.float64)
        data_range = float(ref.max() - ref.min())
    else:
        data_range = None
    same = np.array_equal(ref, out)
    return {"psnr_db": float("inf") if same else round(psnr(ref, out, data_range=data_range), 3),
            "ssim": 1.0 if same else round(ssim(ref, out, data_range=data_range), 5),
            "max_abs_diff": float(np.abs(ref.astype(np.float64) - out.astype(np.float64)).max()),
            "bit_identical": bool(same)}


class FlopCount(TorchFunctionMode):
    """Counts the FLOPs of ``F.linear`` and ``F.scaled_dot_product_attention`` (the transformer's work):
    a machine-independent cost, for CPU runs whose wall clock is noise on a shared machine."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.linear:
            x = args[0] if args else kwargs["input"]
            self.flops += 2 * out.numel() * x.shape[-1]
        elif func is F.scaled_dot_product_attention:
            q = args[0] if args else kwargs["query"]
            k = args[1] if len(args) > 1 else kwargs["key"]
            self.flops += 4 * q.shape[:-1].numel() * k.shape[-2] * q.shape[-1]
        return out


def timed(fn, device, repeats, count_flops=False):
    """Output, wall-clock times and (CPU runs) the FLOPs of the last run."""
    counters = []

    def run():
        if not count_flops:
            return fn()
        counters.append(FlopCount())
        with counters[-1]:
            return fn()

    out, times = benchlib.wall_times(run, repeats, device)
    return out, times, (counters[-1].flops if counters else None)


# ----------------------------------------------------------------------------------------- runs


def build_latent_setup(args, res, device, model=None):
    dtype = torch.float32 if args.smoke else torch.bfloat16
    config = dict(WAN_1_3B)
    if args.smoke:
        config.update(num_layers=6, num_attention_heads=2, attention_head_dim=16, ffn_dim=64, text_dim=32, freq_dim=32)
    if model is None:
        torch.manual_seed(0)
        model = benchlib.wan_transformer(config, device, dtype)
    h, w = (64, 96) if args.smoke else RESOLUTIONS[res]
    frames = 9 if args.smoke else 81
    latent_shape = (1, 16, (frames - 1) // 4 + 1, h // 8, w // 8)
    g = torch.Generator().manual_seed(1)
    text_len, text_dim = (16 if args.smoke else 512), config["text_dim"]
    text = torch.randn(1, text_len, text_dim, generator=g).to(device, dtype)
    negative = torch.randn(1, text_len, text_dim, generator=g).to(device, dtype)
    loop = LatentWanLoop(model, latent_shape, text, negative, FLOW_SHIFT[res])
    return loop, model, {"height": h, "width": w, "frames": frames, "latents": list(latent_shape),
                         "grid": [latent_shape[2], h // 16, w // 16], "dtype": str(dtype).removeprefix("torch.")}


def run_methods(pipe, transformers, generate, methods, args, profile, steps, device, res, extra_meta):
    rows, reference, base_s, base_flops = [], None, None, None
    if args.reference and os.path.exists(args.reference):  # a baseline stored by an earlier invocation
        saved = torch.load(args.reference, weights_only=True)  # tensors and plain values only, no arbitrary objects
        reference, base_s, base_flops = saved["output"].numpy(), saved["seconds"], saved.get("flops")
        print(f"reference: {args.reference} ({base_s:.3f} s uncached)", flush=True)
        methods = [m for m in methods if m != "baseline"]
    for name in methods:
        try:
            desc, teardown = setup_method(name, pipe, transformers, args, profile, steps, generate)
            try:
                out, times, flops = timed(generate, device, args.repeats, count_flops=args.flops)
                summary = _reuse_counts(pipe) if name.startswith("vidaccel") else {}
            finally:
                teardown()
            seconds = statistics.median(times)
            row = {"res": res, "method": name, "settings": desc, "seconds": round(seconds, 3),
                   "runs_s": [round(t, 3) for t in times], **extra_meta, **summary}
            if flops is not None:
                row["gflops"] = round(flops / 1e9, 3)
            if name == "baseline":
                reference, base_s, base_flops = out, seconds, flops
                if args.reference:
                    torch.save({"output": torch.from_numpy(np.ascontiguousarray(out)), "seconds": seconds,
                                "flops": flops}, args.reference)
            elif reference is not None:
                row.update(speedup=round(base_s / seconds, 3), **quality(reference, out))
                if flops and base_flops:
                    row["flop_reduction"] = round(base_flops / flops, 3)
        except Exception as exc:  # noqa: BLE001 - record and continue with the next method
            row = {"res": res, "method": name, "error": benchlib.error_text(exc)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        benchlib.release_memory(device)
    return rows


def _reuse_counts(pipe) -> dict:
    import vidaccel

    entries = vidaccel.cache_summary(pipe)
    if not entries:
        return {}
    e = entries[0]
    out = {}
    if "block_reuse" in e:
        r = e["block_reuse"]
        out.update(transformer_calls_computed=r["computed_steps"], transformer_calls_reused=r["reused_steps"],
                   reused_blocks=r["reused_blocks"], drift_recomputes=r["drift_recomputes"])
    if "kv_cache" in e:
        out.update(kv_hits=e["kv_cache"]["hits"], kv_computed=e["kv_cache"]["misses"])
    return out


def latent_benchmark(args, device, methods):
    import vidaccel

    steps = args.steps or (8 if args.smoke else 50)
    loop, model, meta = build_latent_setup(args, "480p", device)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B params, {meta}", flush=True)

    def generate():
        return loop(num_inference_steps=steps, generator=torch.Generator().manual_seed(0)).frames.float().cpu().numpy()

    loop(num_inference_steps=2)  # warm-up: kernels, cuDNN plans
    profile_steps = args.profile_steps or steps
    t0 = time.perf_counter()
    if args.profile:  # made by an earlier invocation (checked against this model when enabled)
        profile = vidaccel.Profile.load(args.profile)
    else:
        profile = vidaccel.profile(loop, PROMPTS[:1], num_inference_steps=profile_steps, query_rows=args.query_rows,
                                   path=os.path.join(args.out, f"{args.tag}_profile.json"))
    profile_s = time.perf_counter() - t0
    m = profile.models[0]
    print(f"profile: {len(m.background_blocks)}/{m.num_blocks} background blocks {m.background_blocks}, "
          f"tau {profile.tau['value']:.3f} ({profile.tau['method']}), {profile_s:.1f} s", flush=True)
    extra = {"grid": meta["grid"], "steps": steps}
    rows = run_methods(loop, [model], generate, methods, args, profile, steps, device, "480p", extra)
    if args.stack_720p:
        rows += stacked_720p(args, device, model, profile, steps)
    return rows, {**meta, "steps": steps, "profile_steps": profile_steps, "profile_seconds": round(profile_s, 1),
                  "background_blocks": m.background_blocks, "tau": profile.tau}


def stacked_720p(args, device, model, profile, steps):
    import vidaccel

    loop, _, meta = build_latent_setup(args, "720p", device, model=model)

    def generate():
        return loop(num_inference_steps=steps, generator=torch.Generator().manual_seed(0)).frames.float().cpu().numpy()

    rows, reference, base_s = [], None, None
    methods = [m for m in args.methods_720p.split(",") if m]
    if args.reference_720p and os.path.exists(args.reference_720p):  # dense run stored by an earlier invocation
        saved = torch.load(args.reference_720p, weights_only=True)
        reference, base_s = saved["output"].numpy(), saved["seconds"]
        methods = [m for m in methods if m != "dense"]
        print(f"720p reference: {args.reference_720p} ({base_s:.3f} s dense)", flush=True)
    if any(m != "dense" for m in methods):  # compile the kernel for this grid outside the timings
        vidaccel.accelerate(loop.transformer, vidaccel.RadialAttentionConfig(dense_steps=0))
        loop(num_inference_steps=1)
        vidaccel.remove(loop.transformer)
    for name in methods:
        try:
            if name != "dense":
                vidaccel.accelerate(loop.transformer, "radial")
            if name in ("radial_reuse_profiled", "radial_reuse_budget"):
                vidaccel.enable_kv_cache(loop.transformer)
                vidaccel.enable_block_reuse(loop.transformer, "profiled", profile=profile if name.endswith(
                    "profiled") else profile.reclassified(f"background:{args.reuse_budget}"))
            try:
                out, times, _ = timed(generate, device, args.repeats)
            finally:
                vidaccel.disable_caches(loop.transformer)
                vidaccel.remove(loop.transformer)
            seconds = statistics.median(times)
            row = {"res": "720p", "method": name, "seconds": round(seconds, 3), "runs_s": [round(t, 3) for t in times],
                   "grid": meta["grid"], "steps": steps}
            if name == "dense":
                reference, base_s = out, seconds
                if args.reference_720p:
                    torch.save({"output": torch.from_numpy(np.ascontiguousarray(out)), "seconds": seconds},
                               args.reference_720p)
            elif reference is not None:
                row.update(speedup=round(base_s / seconds, 3), **quality(reference, out))
        except Exception as exc:  # noqa: BLE001
            row = {"res": "720p", "method": name, "error": benchlib.error_text(exc)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def tiny_benchmark(args, methods):
    import vidaccel
    from vidaccel import tiny

    pipe = tiny.load_tiny()  # raises with the fix when assets/tiny-wan is missing
    steps = args.steps or tiny.NUM_STEPS
    prompts = ["a red circle moving right on a blue background", "a green square moving up on a yellow background"]

    def generate():
        return np.stack([tiny.generate_tiny(p, seed=0, pipe=pipe, num_inference_steps=steps) for p in prompts])

    tiny.generate_tiny(prompts[0], pipe=pipe, num_inference_steps=1)  # warm-up
    profile = vidaccel.profile(pipe, prompts, height=tiny.HEIGHT, width=tiny.WIDTH, num_frames=tiny.NUM_FRAMES,
                               num_inference_steps=steps, guidance_scale=tiny.GUIDANCE_SCALE,
                               max_sequence_length=tiny.MAX_SEQUENCE_LENGTH,
                               path=os.path.join(args.out, f"{args.tag}_profile.json"))
    m = profile.models[0]
    print(f"profile: {len(m.background_blocks)}/{m.num_blocks} background blocks {m.background_blocks}, "
          f"tau {profile.tau['value']:.3f}, foreground {profile.foreground['fraction']:.1%}", flush=True)
    rows = run_methods(pipe, [pipe.transformer], generate, methods, args, profile, steps, torch.device("cpu"),
                       "tiny 64x64x17", {"steps": steps})
    return rows, {"model": "shipped tiny trained Wan (assets/tiny-wan)", "steps": steps, "prompts": prompts,
                  "background_blocks": m.background_blocks, "tau": profile.tau,
                  "foreground_fraction": profile.foreground["fraction"]}


def write(args, rows, meta):
    results = {"meta": {**benchlib.versions(), **meta, "date": benchlib.utc_now(),
                        "timer": f"wall clock of the whole denoising loop, median of {args.repeats}"},
               "rows": rows}
    m = results["meta"]
    lines = [f"# Step caches ({m.get('gpu') or 'CPU'}): {args.tag}", "",
             f"{benchlib.md_stamp(m, 'torch', 'diffusers')}. {m.get('model', '')} "
             f"{m.get('steps')} steps, CFG 5.0; {m['timer']}. Reference: the uncached run.", "",
             f"Profile: background blocks {m.get('background_blocks')}, tau {m.get('tau', {}).get('value')} "
             f"({m.get('tau', {}).get('method')}).", "",
             *([] if m.get("gpu") else [
                 "CPU run: times and speedups are not a speed measurement (a shared machine, other jobs ran "
                 "concurrently); quality is the PSNR/SSIM columns, cost the FLOP count with --flops.", ""]),
             *benchlib.md_table_header("res", "method", "s", "x uncached", "x fewer FLOPs", "PSNR dB", "SSIM",
                                       "max abs diff", "settings")]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['res']} | {r['method']} | error: {r['error'][:100]} | | | | | | |")
            continue
        lines.append(f"| {r['res']} | {r['method']} | {r['seconds']} | {r.get('speedup', '-')} | "
                     f"{r.get('flop_reduction', '-')} | "
                     f"{r.get('psnr_db', '-')} | {r.get('ssim', '-')} | {r.get('max_abs_diff', '-')} | "
                     f"{r.get('settings', '')} |")
    benchlib.write_results(args.out, args.tag, results, lines)
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default=None, help="file name stem (default: bench_caches[_tiny|_smoke])")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: 50; tiny 25; smoke 8)")
    ap.add_argument("--profile-steps", type=int, default=None, help="steps of the profiling run (default: --steps)")
    ap.add_argument("--query-rows", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per method (median)")
    ap.add_argument("--reference", default=None, metavar="PT",
                    help="uncached output + time: loaded when the file exists (baseline skipped), else written by "
                         "the baseline run - to split the methods over several invocations")
    ap.add_argument("--profile", default=None, metavar="JSON", help="use this profile instead of profiling")
    ap.add_argument("--flops", action="store_true",
                    help="count F.linear + SDPA FLOPs per method (machine-independent cost; slows small CPU runs a lot)")
    ap.add_argument("--fbc-threshold", type=float, default=0.05)
    ap.add_argument("--reuse-budget", type=float, default=0.7,
                    help="vidaccel_reuse_budget: fraction of blocks (lowest R first) reused (profile tau 'background:F')")
    ap.add_argument("--stack-720p", action="store_true", help="also 720p: dense, radial, radial + profiled reuse")
    ap.add_argument("--methods-720p", default="dense,radial,radial_reuse_profiled,radial_reuse_budget")
    ap.add_argument("--reference-720p", default=None, metavar="PT",
                    help="dense 720p output + time: loaded when the file exists, else written by the dense run")
    ap.add_argument("--tiny", action="store_true", help="CPU quality comparison on the shipped tiny trained model")
    ap.add_argument("--smoke", action="store_true", help="toy sizes on CPU: checks the script only")
    args = ap.parse_args()
    args.tag = args.tag or "bench_caches" + ("_tiny" if args.tiny else "_smoke" if args.smoke else "")
    os.makedirs(args.out, exist_ok=True)
    methods = [m for m in args.methods.split(",") if m]
    if args.tiny:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        rows, meta = tiny_benchmark(args, methods)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
        if device.type != "cuda" and not args.smoke:
            raise SystemExit("the full benchmark needs a CUDA GPU; use --smoke (toy sizes) or --tiny on CPU")
        rows, meta = latent_benchmark(args, device, methods)
        meta["model"] = ("WanTransformer3DModel, Wan2.1-1.3B config, random bf16 weights, 480p 81 frames"
                         if not args.smoke else "toy Wan transformer (6 layers), random fp32 weights, 64x96 9 frames")
    write(args, rows, meta)


if __name__ == "__main__":
    main()
