"""FreeSwim: dual path, cross-attention override and caching, pipeline stages, CLI, errors (CPU)."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import vidaccel
from tiny_models import family_inputs, hunyuan_transformer, wan_pipeline, wan_transformer
from vidaccel.freeswim import (
    FreeSwimConfig,
    disable_freeswim,
    enable_freeswim,
    entropy_scale,
    freeswim_report,
)
from vidaccel.sparse.patterns import WindowPattern
from vidaccel.pipelines import FreeSwimPipeline
from vidaccel.pipelines.freeswim import check_sizes, refinement_start

BASE = (32, 32)  # tiny "training" size: 2x2 tokens after VAE 8 x patch 2
TARGET = (64, 48)  # latent token grid (2, 4, 3) for 5 frames
STEPS, STRENGTH = 4, 0.75  # refinement steps 1..3


def _clip(seed=0, frames=5, size=BASE):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, frames, 3, *size, generator=g)


def _run(fs, **kwargs):
    args = dict(prompt="a red circle moving right", video=_clip(), height=TARGET[0], width=TARGET[1],
                num_inference_steps=STEPS, strength=STRENGTH, guidance_scale=5.0, output_type="latent",
                generator=torch.Generator().manual_seed(1), max_sequence_length=16)
    args.update(kwargs)
    return fs(**args).frames


@pytest.fixture
def pipe():
    p = wan_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


# --- an independent, literal dual path: two transformer passes, pre-projection replacement ---------------
class _PerCallSelfAttention(TorchFunctionMode):
    """Self-attention calls (as many keys as queries), in block order, take the next of `masks` (a bool
    [N, N] mask or None = dense) and of `scales`; cross-attention runs unchanged."""

    def __init__(self, masks, scales):
        super().__init__()
        self.masks, self.scales = iter(masks), iter(scales)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        q, k, v = (args[i] if len(args) > i else kwargs[name] for i, name in enumerate(("query", "key", "value")))
        if q.shape[-2] != k.shape[-2]:  # cross-attention
            return func(*args, **kwargs)
        mask, scale = next(self.masks), next(self.scales)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[None, None], scale=scale)


def _uniform_self_attention(grid, window=None, scale=None) -> _PerCallSelfAttention:
    """Every self-attention call dense with `scale`, or masked to the window (dense when it covers the grid)."""
    mask = None if window is None else WindowPattern((grid[0], *window)).dense_mask(grid)
    if mask is not None and bool(mask.all()):
        mask = None
    return _PerCallSelfAttention(itertools.repeat(mask), itertools.repeat(scale))


class NaiveDualPath:
    """docs/methods.md section 2 read literally, full branch on every step: pass 1 = full branch (dense self-attention,
    entropy scale) recording each block's input to ``attn2.to_out[0]``; pass 2 = window branch with that input
    replaced; unconditional calls (every second call under CFG) = window branch only."""

    def __init__(self, model, window):
        self.model, self.window, self.calls = model, window, 0

    def __enter__(self):
        self.saved = self.model.__dict__.get("forward")  # diffusers' hook registry wraps forward
        self.model.forward = self.forward  # instance attribute: the pipeline calls this
        return self

    def __exit__(self, *exc):
        self.model.forward = self.saved

    def forward(self, hidden_states, **kwargs):
        model = self.model
        grid = (hidden_states.shape[2], hidden_states.shape[3] // 2, hidden_states.shape[4] // 2)
        cond = self.calls % 2 == 0
        self.calls += 1
        run = lambda: type(model).forward(model, hidden_states, **kwargs)  # noqa: E731
        if not cond:
            with _uniform_self_attention(grid, self.window):
                return run()
        n, n_train = math.prod(grid), grid[0] * self.window[0] * self.window[1]
        head_dim = model.config.attention_head_dim
        scale = math.sqrt(math.log(n) / math.log(n_train)) / math.sqrt(head_dim)
        recorded, handles = {}, []
        for i, block in enumerate(model.blocks):
            handles.append(block.attn2.to_out[0].register_forward_pre_hook(
                lambda mod, args, i=i: recorded.__setitem__(i, args[0])))
        with _uniform_self_attention(grid, None, scale):
            run()
        for h in handles:
            h.remove()
        handles = [block.attn2.to_out[0].register_forward_pre_hook(lambda mod, args, i=i: (recorded[i],))
                   for i, block in enumerate(model.blocks)]
        try:
            with _uniform_self_attention(grid, self.window):
                return run()
        finally:
            for h in handles:
                h.remove()


def test_cache_steps_1_equals_uncached_dual_path(pipe):
    fs = FreeSwimPipeline(pipe, FreeSwimConfig(base_size=BASE, cache_steps=1))
    ours = _run(fs)
    with NaiveDualPath(pipe.transformer, window=(2, 2)) as naive:
        reference = _run(fs, dual_path=False)
    assert naive.calls == 2 * 3  # 3 refinement steps x (cond, uncond)
    assert torch.equal(ours, reference)
    plain = _run(fs, dual_path=False)
    assert not torch.allclose(ours, plain)  # the dual path changes the result


def test_cache_steps_2_reuses_and_differs_from_every_step(pipe):
    every = _run(FreeSwimPipeline(pipe, FreeSwimConfig(base_size=BASE, cache_steps=1)))
    vidaccel.disable_freeswim(pipe)
    fs = FreeSwimPipeline(pipe, FreeSwimConfig(base_size=BASE, cache_steps=2))
    cached = _run(fs)
    counts = freeswim_report(pipe)[0]["counts"]
    assert (counts["guide_calls"], counts["reuse_calls"], counts["window_calls"]) == (2, 1, 3)  # steps 0, 2 guide
    assert not torch.equal(every, cached)


def test_every_block_overridden_on_guide_steps_and_reused_otherwise():
    model = wan_transformer(layers=3)
    inputs = family_inputs("wan", grid=(3, 4, 6), batch=1)
    enable_freeswim(model, FreeSwimConfig(window=(2, 3), cache_steps=2))
    computed, outputs, handles = {}, [], []
    for i, block in enumerate(model.blocks):  # independent counters: plain torch hooks
        handles.append(block.attn2.to_q.register_forward_hook(
            lambda *a, i=i: computed.__setitem__(i, computed.get(i, 0) + 1)))
        handles.append(block.attn2.register_forward_hook(lambda mod, a, out, i=i: outputs.append((i, out))))
    log = []
    with torch.no_grad():
        for step in range(4):
            for branch in ("cond", "uncond"):
                computed.clear()
                outputs.clear()
                with model.cache_context(branch, step_index=step):
                    model(**inputs)
                log.append((step, branch, dict(computed), list(outputs)))
    last_full = {}
    for step, branch, counts, outs in log:
        layers = [i for i, _ in outs]
        if branch == "uncond":  # own window-branch cross-attention, computed in every block
            assert counts == {0: 1, 1: 1, 2: 1} and layers == [0, 1, 2]
            assert all(not torch.equal(out, last_full[i]) for i, out in outs)
        elif step % 2 == 0:  # guide: full branch computes, window branch gets exactly its output
            assert counts == {0: 1, 1: 1, 2: 1} and layers == [0, 0, 1, 1, 2, 2]
            for (i, full), (j, window) in zip(outs[0::2], outs[1::2]):
                assert i == j and torch.equal(full, window)
                last_full[i] = full
        else:  # reuse: nothing recomputed, every block replays the guide step's output
            assert counts == {} and layers == [0, 1, 2]
            assert all(torch.equal(out, last_full[i]) for i, out in outs)
    for h in handles:
        h.remove()
    report = freeswim_report(model)[0]
    assert report["counts"]["cross_attention_reused"] == 4 * 3  # 4 conditional calls x 3 blocks
    entry = inputs["hidden_states"].shape[0] * math.prod((3, 4, 6)) * model.config.num_attention_heads * 8 * 4
    assert report["cache_bytes"]["device"] == 3 * entry  # one fp32 (B, N, dim) output per block
    disable_freeswim(model)


def test_radial_full_branch_equals_literal_masked_dual_path():
    model = wan_transformer(layers=3)
    grid, window = (6, 4, 6), (2, 3)
    inputs = family_inputs("wan", grid=grid, batch=1)
    radial = vidaccel.RadialAttentionConfig(decay_factor=1.0, block_size=4, dense_steps=1, dense_layers=1)
    n, n_train, head_dim = math.prod(grid), grid[0] * window[0] * window[1], model.config.attention_head_dim
    radial_mask = radial.build_pattern().dense_mask(grid)
    assert 0.3 < radial_mask.float().mean() < 0.9  # the pattern really drops pairs at this grid
    window_mask = WindowPattern((grid[0], *window)).dense_mask(grid)
    full_scale = entropy_scale(n, n_train, head_dim)
    radial_scale = entropy_scale(round(radial_mask.float().mean().item() * n), n_train, head_dim)

    def literal(step):  # docs/methods.md section 2 with the full branch's masks per block: full pass, then replaced window pass
        full = [None if layer == 0 or step < 1 else radial_mask for layer in range(3)]
        scales = [full_scale if m is None else radial_scale for m in full]
        recorded = {}
        handles = [b.attn2.to_out[0].register_forward_pre_hook(lambda mod, a, i=i: recorded.__setitem__(i, a[0]))
                   for i, b in enumerate(model.blocks)]
        with _PerCallSelfAttention(full, scales):
            model(**inputs)
        for h in handles:
            h.remove()
        handles = [b.attn2.to_out[0].register_forward_pre_hook(lambda mod, a, i=i: (recorded[i],))
                   for i, b in enumerate(model.blocks)]
        with _PerCallSelfAttention([window_mask] * 3, [None] * 3):
            out = model(**inputs)[0]
        for h in handles:
            h.remove()
        return out

    with torch.no_grad():
        expected = [literal(step) for step in (0, 1)]
        enable_freeswim(model, FreeSwimConfig(window=window, cache_steps=1, full_attention=radial))
        ours, counts = [], []
        for step in (0, 1):
            with model.cache_context("cond", step_index=step):
                ours.append(model(**inputs)[0])
            c = freeswim_report(model)[0]["counts"]
            counts.append((c["full_attention_dense"], c["full_attention_sparse"]))
        text = vidaccel.summary(model, print_summary=False)
        disable_freeswim(model)
        enable_freeswim(model, FreeSwimConfig(window=window, cache_steps=1))
        with model.cache_context("cond", step_index=1):
            dense_full = model(**inputs)[0]
        disable_freeswim(model)
    assert counts == [(3, 0), (4, 2)]  # step 0 dense (dense_steps=1); step 1: block 0 dense, blocks 1-2 radial
    for got, want in zip(ours, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # radial changed the full branch: far beyond the tolerance the equality above allows
    assert (ours[1] - dense_full).abs().max() > 50 * 1e-5
    assert "full branch self-attention: radial (decay 1, sink; dense in the first 1 steps and 1 blocks)" in str(text)


def test_full_attention_config_errors_and_defaults():
    with pytest.raises(ValueError, match="'dense', 'radial' or a vidaccel.RadialAttentionConfig"):
        FreeSwimConfig(full_attention="window")
    with pytest.raises(ValueError, match="full_attention"):
        FreeSwimConfig(full_attention=vidaccel.WindowAttentionConfig())
    assert FreeSwimConfig().full_attention_config() is None
    wan = FreeSwimConfig(full_attention="radial").full_attention_config()
    assert (wan.decay_factor, wan.dense_steps, wan.dense_layers) == (0.2, 12, 1)  # Wan's radial defaults


def test_whole_grid_window_without_override_equals_plain_pipeline(pipe):
    fs = FreeSwimPipeline(pipe, FreeSwimConfig(base_size=TARGET, override=False))  # window = whole grid
    plain = _run(fs, dual_path=False)
    assert torch.equal(_run(fs), plain)
    assert freeswim_report(pipe)[0]["counts"]["window_calls"] == 6
    fs.remove()
    fs = FreeSwimPipeline(pipe, FreeSwimConfig(base_size=TARGET, window=(64, 64), override=False,
                                               entropy_scaling=False))
    assert torch.equal(_run(fs), plain)


def test_cache_is_model_dtype_and_summary_reports_bytes():
    model = wan_transformer(layers=2).to(torch.bfloat16)
    inputs = family_inputs("wan", grid=(2, 4, 4), batch=1)
    inputs = {k: v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
    enable_freeswim(model, FreeSwimConfig(window=(2, 2), offload_cache=True))  # offload: no-op on CPU
    with torch.no_grad(), model.cache_context("cond", step_index=0):
        model(**inputs)
    report = freeswim_report(model)[0]
    assert report["cache_dtype"] == "torch.bfloat16"
    assert report["cache_bytes"]["device"] == 2 * (1 * 32 * 16 * 2)  # 2 blocks x (1, 32 tokens, 16 dim) bf16
    text = str(vidaccel.summary(model, print_summary=False))
    assert "FreeSwim" in text and "2.0 KiB on device" in text
    disable_freeswim(model)


def test_entropy_scale_from_real_sizes():
    assert entropy_scale(1000, 1000, 64) is None  # window branch at training scale: SDPA default
    assert entropy_scale(171360, 21 * 30 * 52, 128) == pytest.approx(
        math.sqrt(math.log(171360) / math.log(32760)) / math.sqrt(128))
    assert entropy_scale(171360, 32760, 128) > 128 ** -0.5  # the full branch sharpens


@pytest.mark.parametrize("full_attention", ["dense", "radial"])
def test_input_video_round_trips_mp4(tmp_path, capsys, full_attention):
    from vidaccel.cli import main
    from vidaccel.pipelines.video_io import read_video
    from vidaccel.report.video import write_mp4

    frames = (torch.rand(10, 32, 32, 3) * 255).to(torch.uint8).numpy()
    src = write_mp4(tmp_path / "in.mp4", frames, fps=8)
    dst = tmp_path / "out" / "up.mp4"
    rc = main(["upscale", "--input", str(src), "--output", str(dst), "--model", "tiny-random", "--base-size", "32",
               "32", "--height", "64", "--width", "48", "--steps", "4", "--strength", "0.5",
               "--full-attention", full_attention])
    assert rc == 0
    assert f"full branch self-attention: {full_attention}" in capsys.readouterr().out  # the option reached the hooks
    out, fps = read_video(dst)
    assert out.shape == (9, 64, 48, 3) and fps == pytest.approx(8)  # 10 frames trimmed to 4k+1 = 9
    assert out.std() > 0


def test_size_errors_name_the_fix_and_leave_the_pipeline_working(pipe):
    model = pipe.transformer
    inputs = family_inputs("wan", grid=(2, 4, 3), batch=1)
    with torch.no_grad():
        before = model(**inputs)[0]
    fs = FreeSwimPipeline(pipe, FreeSwimConfig(base_size=BASE))
    with pytest.raises(ValueError, match="height=70 is not a multiple of 16.*nearest valid values are 64 and 80"):
        _run(fs, height=70)
    with pytest.raises(ValueError, match="smaller than the base resolution 32x32"):
        _run(fs, height=16, width=48)
    with pytest.raises(ValueError, match="strength"):
        _run(fs, strength=0.1)
    with pytest.warns(UserWarning, match="untested"):
        check_sizes(96, 64, BASE, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_sizes(64, 64, BASE, 16)  # exactly 4x: no warning
    assert refinement_start(50, 0.7) == 15
    assert _run(fs).shape == (1, 4, 2, 8, 6)  # still works after the errors
    fs.remove()
    assert not hasattr(model, "_diffusers_hook") and "forward" not in model.__dict__
    with torch.no_grad():
        assert torch.equal(model(**inputs)[0], before)
    with pytest.raises(RuntimeError, match="was removed"):
        _run(fs)


def test_wrong_scheduler_and_conflicts_raise_before_changing_anything(pipe):
    from diffusers import DDIMScheduler

    fs = FreeSwimPipeline(pipe, FreeSwimConfig(base_size=BASE))
    flow = pipe.scheduler
    pipe.scheduler = DDIMScheduler()
    with pytest.raises(TypeError, match="flow-matching scheduler"):
        _run(fs)
    pipe.scheduler = flow
    with pytest.raises(RuntimeError, match="already enabled"):
        enable_freeswim(pipe)
    fs.remove()
    vidaccel.accelerate(pipe, "window")
    with pytest.raises(RuntimeError, match="vidaccel.remove"):
        enable_freeswim(pipe)
    vidaccel.remove(pipe)
    with pytest.raises(TypeError, match="does not run on HunyuanVideoTransformer3DModel: its text is attended jointly"):
        enable_freeswim(hunyuan_transformer())
    with pytest.raises(ValueError, match="cache_steps"):
        FreeSwimConfig(cache_steps=0)
    with pytest.raises(ValueError, match="base_size"):
        FreeSwimConfig(base_size=(480,))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_offloaded_cache_matches_device_cache_on_gpu():
    model = wan_transformer(layers=3).cuda()
    inputs = {k: v.cuda() if torch.is_tensor(v) else v for k, v in family_inputs("wan", (3, 8, 8), 1).items()}
    outs = {}
    for offload in (False, True):
        enable_freeswim(model, FreeSwimConfig(window=(4, 4), offload_cache=offload))
        with torch.no_grad():
            for step in range(3):
                with model.cache_context("cond", step_index=step):
                    outs[offload, step] = model(**inputs)[0]
        report = freeswim_report(model)[0]
        disable_freeswim(model)
        if offload:
            assert report["cache_bytes"]["host"] > 0
    assert all(torch.equal(outs[False, s], outs[True, s]) for s in range(3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_radial_full_branch_kernel_matches_reference_on_gpu():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(  # head_dim 64: a size the kernel runs
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=64, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=64, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=64).eval().cuda().to(torch.bfloat16)
    grid = (9, 12, 20)  # 2,160 tokens: ragged 64- and 128-token tiles
    inputs = {k: v.cuda().to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else
              v.cuda() if torch.is_tensor(v) else v for k, v in family_inputs("wan", grid, 1).items()}
    outs, reports = {}, {}
    for backend in ("triton", "reference"):
        radial = vidaccel.RadialAttentionConfig(decay_factor=0.5, block_size=32, dense_steps=0, dense_layers=0,
                                                backend=backend)
        enable_freeswim(model, FreeSwimConfig(window=(6, 10), full_attention=radial, backend=backend))
        with torch.no_grad(), model.cache_context("cond", step_index=0):
            outs[backend] = model(**inputs)[0].float()
        reports[backend] = freeswim_report(model)[0]
        state = vidaccel.freeswim.freeswim_states(model)[0][1]
        density = state.plan_cache.find(state.full_pattern, grid).density
        disable_freeswim(model)
    assert density < 0.8  # the full branch really is sparse here
    assert reports["triton"]["counts"]["full_attention_sparse"] == 2  # backend="triton" raises rather than fall back
    torch.testing.assert_close(outs["triton"], outs["reference"], rtol=3e-2, atol=3e-2)


def test_image_to_video_with_two_transformers_runs_each_own_cache():
    """WanImageToVideoPipeline (Wan2.2 style: `transformer_2` below the boundary, no image encoder)."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    def transformer(seed):  # in_channels = noisy latents 4 + condition latents 4 + mask 4
        torch.manual_seed(seed)
        return WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=12, out_channels=4,
            text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32).eval()

    t2v = wan_pipeline()
    pipe = WanImageToVideoPipeline(tokenizer=t2v.tokenizer, text_encoder=t2v.text_encoder, vae=t2v.vae,
                                   scheduler=t2v.scheduler, transformer=transformer(0), transformer_2=transformer(1),
                                   boundary_ratio=0.5)
    pipe.set_progress_bar_config(disable=True)
    fs = FreeSwimPipeline(pipe, FreeSwimConfig(base_size=BASE))
    embeds = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))  # (the I2V prompt cleaner needs ftfy)
    out = fs(prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds), image=torch.rand(1, 3, *BASE),
             video=_clip(), height=TARGET[0], width=TARGET[1], num_inference_steps=STEPS, strength=STRENGTH,
             output_type="latent").frames
    assert out.shape == (1, 4, 2, 8, 6) and torch.isfinite(out).all()
    high, low = (r["counts"] for r in freeswim_report(pipe))
    # steps 0-1 on `transformer` (guide, reuse); step 2 on `transformer_2`: its own full branch (guide)
    assert (high["guide_calls"], high["reuse_calls"], low["guide_calls"], low["reuse_calls"]) == (1, 1, 1, 0)
    fs.remove()
    assert not hasattr(pipe.transformer, "_diffusers_hook") and not hasattr(pipe.transformer_2, "_diffusers_hook")


def test_upscale_cli_errors_exit_2_with_the_fix(tmp_path, capsys):
    from vidaccel.cli import main

    args = ["upscale", "a red circle", "--model", "tiny-random", "--steps", "2", "--output", str(tmp_path / "o.mp4")]
    assert main(args + ["--height", "70", "--width", "64"]) == 2
    assert "nearest valid values are 64 and 80" in capsys.readouterr().err
    assert main(args + ["--input", str(tmp_path / "missing.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(args[:-1] + [str(tmp_path / "o.avi")]) == 2
    assert "must end in .mp4" in capsys.readouterr().err


def test_bench_freeswim_smoke(tmp_path):
    """scripts/bench_freeswim.py at toy sizes: the variants run their own configuration (whole guide periods,
    radial full branch sparse after block 0) and the files are written."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_freeswim.py"
    methods = "dense,vidaccel,vidaccel_radial_full_cache5"
    result = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(tmp_path), "--steps", "2",
                             "--methods", methods], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "bench_freeswim.json").read_text())
    rows = {r["method"]: r for r in data["rows"]}
    assert list(rows) == methods.split(",") and all(r["finite_output"] for r in rows.values())
    assert rows["vidaccel"]["steps_timed"] == 2 and rows["vidaccel"]["full_attention"] == "dense"
    radial = rows["vidaccel_radial_full_cache5"]
    assert radial["steps_timed"] == 5 and radial["cache_steps"] == 5  # --steps 2 rounded up to one period
    assert radial["full_density"] < 1 and radial["calls"]["full_attention_sparse"] > 0
    assert radial["calls"]["guide_calls"] == 2  # warm-up period + timed period, one guide step each
    assert set(data["ratios"]) >= {"vidaccel_speedup_vs_dense", "vidaccel_radial_full_cache5_speedup_vs_dense"}
    assert "| vidaccel_radial_full_cache5 | 5 | radial (density" in (tmp_path / "bench_freeswim.md").read_text()
