#!/usr/bin/env python3
"""FreeSwim refinement-step benchmark: Wan2.1-1.3B architecture (diffusers class, published config,
random bf16 weights) at 1088x1920, 81 frames (token grid 21x68x120 = 171,360), on the schedule of
35 refinement steps (strength 0.7 of 50), classifier-free guidance (a conditional and an
unconditional transformer call per step). Three ways to run a step:

(a) ``dense``: direct inference at 1088x1920, dense SDPA self-attention, batch 1 per call.
(b) ``reference``: the reference method's cost model (docs/methods.md section 2): both CFG calls run
    batch 2 (window + full branch) through every linear layer on every step; self-attention =
    FlexAttention over a raster-order block mask of the inward window for the window branch on
    every call, plus dense SDPA for the full branch on conditional guide steps; cross-attention of
    the full branch computed on conditional guide steps and cached for all 30 layers on the GPU
    (``cache_steps`` 2).
(c) ``vidaccel``: `vidaccel.enable_freeswim` - the window branch through `sparse_attention` (the
    Triton kernel on CUDA), the full branch only on conditional guide steps (batch 1), cached
    cross-attention outputs reused in between; ``vidaccel_offload`` keeps them in pinned CPU memory.
    Variants beyond the default configuration: ``vidaccel_cache5`` (``cache_steps=5``, the paper's
    suggestion), ``vidaccel_radial_full`` and ``vidaccel_radial_full_cache5`` (``full_attention`` =
    radial with Wan's decay 0.2 and block 0 dense, no dense warm-up steps: an approximation of the
    full branch, timed for its cost - its quality is not measured here).

All three use the same window (k_h, k_w) = (30, 52) tokens over all frames (480x832 base) and
entropy-aware scaling. Each method runs ``--steps`` steps of the 35-step schedule after one
warm-up period (compilation, plans, autotuning); a step's cost does not depend on its timestep,
so a few periods give the steady-state numbers (``--steps 35`` runs the whole schedule).

Reported per method: time per step (median over periods of ``cache_steps`` steps of the mean
step time - the per-step cost alternates between guide and reuse steps), the median guide-step
and reuse-step times, a projection to 35 steps from those medians, and peak GPU memory
(``torch.cuda.max_memory_allocated``) over the timed steps.

    python scripts/bench_freeswim.py --out benchmarks/results              # H100: all methods (~8-10 min)
    python scripts/bench_freeswim.py --methods dense --out benchmarks/results             # or one method
    python scripts/bench_freeswim.py --methods reference --append --out benchmarks/results  # per command
    python scripts/bench_freeswim.py --smoke --out /tmp/fs                 # CPU logic check, toy sizes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import benchlib
from benchlib import WAN_1_3B
from vidaccel import FreeSwimConfig, RadialAttentionConfig

FULL = dict(height=1088, width=1920, frames=81, text_tokens=512, window=(30, 52), base=(480, 832))
SMOKE = dict(height=128, width=192, frames=17, text_tokens=8, window=(4, 6), base=(64, 96))
SMOKE_MODEL = dict(WAN_1_3B, num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
                   text_dim=16, freq_dim=16, ffn_dim=64, num_layers=2, rope_max_seq_len=64)
SCHEDULE_STEPS, STRENGTH = 50, 0.7
RADIAL_FULL = RadialAttentionConfig(dense_steps=0)  # Wan's decay 0.2 and dense block 0; every guide step sparse
# (c) variants: FreeSwimConfig fields beyond the window (cache_steps defaults to --cache-steps)
VIDACCEL_VARIANTS = {
    "vidaccel": {}, "vidaccel_offload": dict(offload_cache=True), "vidaccel_cache5": dict(cache_steps=5),
    "vidaccel_radial_full": dict(full_attention=RADIAL_FULL),
    "vidaccel_radial_full_cache5": dict(full_attention=RADIAL_FULL, cache_steps=5),
}
METHODS = ("dense", "reference", *VIDACCEL_VARIANTS)  # (a), (b), (c) and its variants


def variant_config(name, args, window) -> FreeSwimConfig:
    """The FreeSwimConfig of a vidaccel variant."""
    return FreeSwimConfig(window=window, **{"cache_steps": args.cache_steps, **VIDACCEL_VARIANTS[name]})


def refinement_timesteps(device) -> torch.Tensor:
    """The 35 timesteps of the refinement stage (strength 0.7 of a 50-step flow-matching schedule)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=9.0)  # the reference's stage-3 shift
    sched.set_timesteps(SCHEDULE_STEPS, device=device)
    start = SCHEDULE_STEPS - int(SCHEDULE_STEPS * STRENGTH)
    return sched.timesteps[start:]


def entropy_scale(grid, window, head_dim):
    n, n_train = math.prod(grid), grid[0] * window[0] * window[1]
    return math.sqrt(math.log(n) / math.log(n_train)) / math.sqrt(head_dim)


# --------------------------------------------------------------------------------- (b) reference cost model
class ReferenceCostModel:
    """Hooks that make a transformer do the reference implementation's work (not its code).

    Inputs are batch 2 (window branch, full branch). Per call the blocks' SDPA calls are swapped:
    self-attention = FlexAttention window on element 0 (+ dense on element 1 on conditional guide steps,
    else a copy); cross-attention = element 1 computed and cached on conditional guide steps, the cache
    on other conditional steps, element 0 on unconditional calls; both halves continue batch 2.
    """

    def __init__(self, model, grid, window, device, compile_flex: bool):
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        T, H, W = grid
        kh, kw = min(window[0], H), min(window[1], W)
        hw = H * W

        def inward(q, k, length, size):  # NATTEN inward window, as WindowPattern defines it
            start = (q - size // 2).clamp(0, length - size)
            return (k >= start) & (k < start + size)

        def mask_mod(b, h, q_idx, kv_idx):
            qh, qw = (q_idx % hw) // W, q_idx % W
            kh_, kw_ = (kv_idx % hw) // W, kv_idx % W
            return inward(qh, kh_, H, kh) & inward(qw, kw_, W, kw)

        n = math.prod(grid)
        # compiled, as the reference does: eager create_block_mask would materialize an N x N mask
        make = torch.compile(create_block_mask) if compile_flex else create_block_mask
        self.block_mask = make(mask_mod, None, None, n, n, device=device, BLOCK_SIZE=128)
        self.flex = torch.compile(flex_attention, dynamic=False) if compile_flex else flex_attention
        self.scale = entropy_scale(grid, window, model.config.attention_head_dim)
        self.cache: dict[int, torch.Tensor] = {}
        self.layer = 0
        self.cond = self.guide = False

    def _sdpa(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        if query.shape[-2] == key.shape[-2]:  # self-attention
            window = self.flex(query[0:1], key[0:1], value[0:1], block_mask=self.block_mask, scale=self.scale)
            if self.cond and self.guide:
                full = F.scaled_dot_product_attention(query[1:2], key[1:2], value[1:2], scale=self.scale)
            else:
                full = window
            return torch.cat([window, full])
        layer, self.layer = self.layer, self.layer + 1  # cross-attention: one per block, in order
        if self.cond and self.guide:
            out = F.scaled_dot_product_attention(query[1:2], key[1:2], value[1:2])
            self.cache[layer] = out
        elif self.cond:
            out = self.cache[layer]
        else:
            out = F.scaled_dot_product_attention(query[0:1], key[0:1], value[0:1])
        return torch.cat([out, out.clone()])

    def __call__(self, model, latents, timestep, text, cond, guide):
        self.layer, self.cond, self.guide = 0, cond, guide
        swap = _Swap(self._sdpa)
        with swap:
            return model(hidden_states=torch.cat([latents, latents]), timestep=timestep.expand(2),
                         encoder_hidden_states=torch.cat([text, text]), return_dict=False)[0][0:1]

    def cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.cache.values())


class _Swap(TorchFunctionMode):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return self.fn(*args, **kwargs)
        return func(*args, **kwargs)


# --------------------------------------------------------------------------------------------- runner
def run_method(name, model, latents, texts, timesteps, args, setup, grid, device):
    """Run `steps` CFG steps of `name` after one warm-up period; per-step seconds and peak memory."""
    import vidaccel

    cuda = device.type == "cuda"
    config = variant_config(name, args, setup["window"]) if name in VIDACCEL_VARIANTS else None
    period = 1 if name == "dense" else config.cache_steps if config else args.cache_steps
    steps = -(-args.steps // period) * period  # whole periods
    cond_text, uncond_text = texts
    ref = None
    if name == "reference":
        ref = ReferenceCostModel(model, grid, setup["window"], device, compile_flex=cuda)
    elif config is not None:
        vidaccel.enable_freeswim(model, config)

    def call(step, text, branch):
        t = timesteps[step % len(timesteps)].expand(1)
        with model.cache_context(branch, step_index=step):
            if name == "reference":
                return ref(model, latents, t, text, branch == "cond", step % period == 0)
            return model(hidden_states=latents, timestep=t, encoder_hidden_states=text, return_dict=False)[0]

    def step(i):
        cond = call(i, cond_text, "cond")
        uncond = call(i, uncond_text, "uncond")
        return uncond + 5.0 * (cond - uncond)  # guidance combine, as the pipeline does

    times, peak, cache_bytes = [], 0.0, 0
    try:
        with torch.inference_mode():
            for i in range(period):  # warm-up: compile, plans, autotuning
                step(i)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            for i in range(steps):
                t0 = time.perf_counter()
                out = step(i)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
                finite = bool(torch.isfinite(out).all())
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
            if name == "reference":
                cache_bytes = ref.cache_bytes()
            elif config is not None:
                from vidaccel.sparse.attention import _logged_fallbacks
                from vidaccel.freeswim import freeswim_report, freeswim_states

                rep = freeswim_report(model)[0]
                cache_bytes = rep["peak_cache_bytes"]
                state = freeswim_states(model)[0][1]
                plan = state.plan_cache.find(state.pattern(grid), grid)
                extra = dict(calls=rep["counts"], cache_steps=config.cache_steps, full_attention=rep["full_attention"],
                             window_density=round(plan.density, 4), window_block_density=round(plan.block_density(), 4),
                             tile=list(plan.tile),
                             # non-empty: sparse attention ran on the reference implementation, not the kernel
                             attention_fallbacks=sorted(_logged_fallbacks))
                full_plan = state.full_pattern and state.plan_cache.find(state.full_pattern, grid)
                if full_plan:
                    extra.update(full_density=round(full_plan.density, 4),
                                 full_block_density=round(full_plan.block_density(), 4), full_tile=list(full_plan.tile))
    finally:
        if config is not None:
            vidaccel.disable_freeswim(model)
    periods = [statistics.fmean(times[i:i + period]) for i in range(0, len(times) - period + 1, period)]
    guide = [t for i, t in enumerate(times) if i % period == 0]
    reuse = [t for i, t in enumerate(times) if i % period != 0]
    n = len(timesteps)
    n_guide = sum(1 for i in range(n) if i % period == 0)
    row = {
        "method": name, "steps_timed": len(times), "step_s": statistics.median(periods),
        "guide_step_s": statistics.median(guide), "reuse_step_s": statistics.median(reuse) if reuse else None,
        "projected_35_steps_s": statistics.median(guide) * n_guide + (statistics.median(reuse) if reuse else 0)
        * (n - n_guide), "step_times_s": [round(t, 4) for t in times], "peak_mem_gib": round(peak, 2),
        "cache_gib": round(cache_bytes / 2**30, 3), "finite_output": finite,
    }
    if config is not None:
        row.update(offload_cache=config.offload_cache, **extra)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--steps", type=int, default=4,
                    help="timed steps of the 35, rounded up to whole guide periods per method (default: 4)")
    ap.add_argument("--cache-steps", type=int, default=2)
    ap.add_argument("--append", action="store_true",
                    help="merge into an existing <tag>.json (rows of the same method are replaced): run the methods "
                         "as separate commands when one command may not take long enough for all")
    ap.add_argument("--sdpa", default="cudnn", choices=["cudnn", "default"],
                    help="dense SDPA backend priority for every method (default: cuDNN first, the fastest dense)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="bench_freeswim")
    ap.add_argument("--smoke", action="store_true", help="toy model and sizes on CPU: checks the script only")
    args = ap.parse_args()
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {','.join(METHODS)}")

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    setup = SMOKE if args.smoke else FULL
    torch.manual_seed(0)
    model = benchlib.wan_transformer(SMOKE_MODEL if args.smoke else WAN_1_3B, device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    lat_frames = (setup["frames"] - 1) // 4 + 1
    latents = torch.randn(1, model.config.in_channels, lat_frames, setup["height"] // 8, setup["width"] // 8,
                          device=device, dtype=dtype)
    texts = [torch.randn(1, setup["text_tokens"], model.config.text_dim, device=device, dtype=dtype) for _ in "cu"]
    grid = (lat_frames, setup["height"] // 16, setup["width"] // 16)
    timesteps = refinement_timesteps(device)
    print(f"{n_params / 1e9:.3f} B parameters, grid {grid} = {math.prod(grid)} tokens, {device} {dtype}", flush=True)

    sdpa_ctx = None
    if device.type == "cuda" and args.sdpa == "cudnn":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        sdpa_ctx = sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                                SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH], set_priority=True)
        sdpa_ctx.__enter__()
    rows = []
    for name in args.methods.split(","):
        try:
            row = run_method(name, model, latents, texts, timesteps, args, setup, grid, device)
        except Exception as exc:  # noqa: BLE001 - record (e.g. out of memory) and go on
            row = {"method": name, "error": benchlib.error_text(exc)}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "step_times_s"}), flush=True)
        benchlib.release_memory(device)
    if sdpa_ctx is not None:
        sdpa_ctx.__exit__(None, None, None)

    path = os.path.join(args.out, f"{args.tag}.json")
    if args.append and os.path.exists(path):
        with open(path) as fh:
            earlier = json.load(fh)["rows"]
        done = {r["method"] for r in rows}
        rows = [r for r in earlier if r["method"] not in done] + rows
        rows.sort(key=lambda r: METHODS.index(r["method"]))
    by = {r["method"]: r for r in rows if "error" not in r}
    ratios = {}
    for ours in VIDACCEL_VARIANTS:
        for other in ("dense", "reference"):
            if ours in by and other in by:
                ratios[f"{ours}_speedup_vs_{other}"] = round(by[other]["step_s"] / by[ours]["step_s"], 3)
                if by[other]["peak_mem_gib"]:
                    ratios[f"{ours}_peak_mem_ratio_vs_{other}"] = round(by[ours]["peak_mem_gib"]
                                                                        / by[other]["peak_mem_gib"], 3)
    meta = {**benchlib.versions(), "date": benchlib.utc_now(),
            "model": f"WanTransformer3DModel ({'toy smoke config' if args.smoke else 'Wan2.1-1.3B config'}, random "
                     f"{str(dtype).removeprefix('torch.')} weights)", "params": n_params,
            "size": f"{setup['height']}x{setup['width']}, {setup['frames']} frames", "grid": list(grid),
            "window": list(setup["window"]), "cache_steps": args.cache_steps, "cfg": True,
            "schedule": f"{len(timesteps)} refinement steps (strength {STRENGTH} of {SCHEDULE_STEPS})",
            "sdpa_priority": args.sdpa, "smoke": args.smoke, "device": str(device)}
    lines = [f"# FreeSwim refinement step ({meta['gpu'] or 'CPU'}{', SMOKE - not a measurement' if args.smoke else ''})",
             "", f"{benchlib.md_stamp(meta, 'torch', 'triton', 'diffusers')}. "
             f"{meta['model']}, {meta['size']}, grid {tuple(grid)}, window {setup['window']} x all frames, CFG, "
             f"cache_steps {args.cache_steps} unless the row says otherwise; {meta['schedule']}, {args.steps} timed "
             f"(rounded up to whole guide periods) after a warm-up period.", "",
             *benchlib.md_table_header("method", "cache_steps", "full branch", "s / step", "x dense", "guide step s",
                                       "reuse step s", "35 steps s (projected)", "peak GiB", "cache GiB")]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error'][:100]} | | | | | | | | |")
            continue
        reuse = f"{r['reuse_step_s']:.3f}" if r["reuse_step_s"] is not None else "-"
        period = {"dense": "-", "reference": args.cache_steps}.get(r["method"], r.get("cache_steps"))
        full = r.get("full_attention", "dense" if r["method"] == "reference" else "-").split(" (")[0]
        if r.get("full_density"):
            full += f" (density {r['full_density']:.3f})"
        speedup = f"{by['dense']['step_s'] / r['step_s']:.2f}x" if "dense" in by else "-"
        lines.append(f"| {r['method']} | {period} | {full} | {r['step_s']:.3f} | {speedup} | {r['guide_step_s']:.3f} | "
                     f"{reuse} | {r['projected_35_steps_s']:.1f} | {r['peak_mem_gib']} | {r['cache_gib']} |")
    if ratios:
        lines += ["", ", ".join(f"{k} {v}" for k, v in ratios.items())]
    benchlib.write_results(args.out, args.tag, {"meta": meta, "rows": rows, "ratios": ratios}, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
