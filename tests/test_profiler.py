"""Profiler: sampled received attention vs exact, foreground estimate, R, tau, JSON round trip, CLI, errors."""

import json
import math
import subprocess
import sys

import pytest
import torch
from tiny_models import wan_pipeline

import vidaccel
from vidaccel.caches.foreground import foreground_mask, foreground_ratio, prediction_tokens
from vidaccel.caches.profile_io import Profile, choose_tau, otsu_threshold
from vidaccel.caches.profiler import received_attention

GRID = (3, 4, 4)  # a 9-frame 64x64 clip of the tiny Wan pipeline after VAE and patching


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory):
    pipe = wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    path = tmp_path_factory.mktemp("profile") / "tiny.json"
    kw = dict(height=64, width=64, num_frames=9, num_inference_steps=4, guidance_scale=5.0)
    before = pipe("a red circle moving right", **kw, output_type="latent",
                  generator=torch.Generator().manual_seed(0)).frames
    prof = vidaccel.profile(pipe, ["a red circle moving right", "a blue square moving up"], query_rows=16,
                            path=path, negative_prompt="green", **kw)
    after = pipe("a red circle moving right", **kw, output_type="latent",
                 generator=torch.Generator().manual_seed(0)).frames
    return pipe, prof, path, before, after


def test_profile_records_every_block_and_step_and_leaves_the_pipeline_unchanged(tiny_profile):
    pipe, prof, path, before, after = tiny_profile
    assert torch.equal(before, after)
    assert not any(n.startswith("vidaccel") for m in pipe.transformer.modules()
                   for n in getattr(getattr(m, "_diffusers_hook", None), "hooks", {}))
    (entry,) = prof.models
    assert entry.model_class == "WanTransformer3DModel" and entry.num_blocks == 2 and entry.grid == list(GRID)
    for b in entry.blocks:
        assert len(b.R_per_step) == len(b.residual_change_per_step) == len(b.attention_entropy_per_step) == 4
        assert math.isnan(b.residual_change_per_step[0]) and all(v > 0 for v in b.residual_change_per_step[1:])
        assert all(0 < e <= 1 for e in b.attention_entropy_per_step)
        assert 0 <= b.R <= 1
        assert b.kind == ("foreground" if b.R >= prof.tau["value"] else "background")
    assert prof.tau["method"] == "otsu" and 0 < prof.foreground["fraction"] < 1
    run = prof.run
    assert run["prompts"] == ["a red circle moving right", "a blue square moving up"] and run["seeds"] == [0, 1]
    assert (run["height"], run["width"], run["num_frames"], run["num_inference_steps"]) == (64, 64, 9, 4)


def test_profile_json_round_trips(tiny_profile):
    _, prof, path, _, _ = tiny_profile
    data = json.loads(path.read_text())  # strict JSON: nan is written as null
    assert data["format"] == "vidaccel-profile"
    assert data["models"][0]["blocks"][0]["residual_change_per_step"][0] is None
    loaded = Profile.load(path)
    assert json.dumps(loaded.to_dict(), sort_keys=True) == json.dumps(prof.to_dict(), sort_keys=True)
    forced = loaded.reclassified(2.0)  # R <= 1, so every block becomes background
    assert forced.models[0].background_blocks == [0, 1] and forced.tau["method"] == "given"


def test_profile_feeds_block_reuse(tiny_profile):
    pipe, _, path, _, _ = tiny_profile
    prof = Profile.load(path).reclassified(2.0)
    vidaccel.enable_block_reuse(pipe, "profiled", profile=prof)
    assert pipe.transformer._vidaccel_block_reuse.runs == [(0, 1)]
    vidaccel.disable_caches(pipe)


def test_received_attention_matches_exact_softmax():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 40, 8, generator=g), torch.randn(2, 3, 40, 8, generator=g)
    mask = torch.rand(2, 1, 40, 40, generator=g) > 0.3
    mask[..., 0] = True
    rows = torch.tensor([0, 7, 13, 39])
    exact = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(8) + torch.where(mask, 0.0, float("-inf")), -1)
    expected = exact[:, :, rows].mean(2).mean(1)
    got = received_attention(q, k, rows, attn_mask=mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(received_attention(q, k, rows, scale=0.3),
                               torch.softmax(q @ k.transpose(-1, -2) * 0.3, -1)[:, :, rows].mean(2).mean(1))


def _moving_square(T=4, H=12, W=12, C=4):
    """A synthetic prediction: a square of distinct feature moving right over a flat, noisy background."""
    g = torch.Generator().manual_seed(1)
    x = 0.05 * torch.randn(1, C, T, H, W, generator=g)
    truth = torch.zeros(T, H, W, dtype=torch.bool)
    for t in range(T):
        truth[t, 4:8, 2 + 2 * t: 6 + 2 * t] = True
    x[0, :, truth] += torch.tensor([1.0, -1.0, 0.5, 0.8]).unsqueeze(-1)
    return x, truth


@pytest.mark.parametrize("method", ["pca", "motion"])
def test_foreground_estimate_finds_the_moving_square(method):
    x, truth = _moving_square()
    tokens = prediction_tokens(x, "bcfhw", (4, 12, 12))
    mask = foreground_mask(tokens, (4, 12, 12), method).reshape(4, 12, 12)
    if method == "pca":
        iou = (mask & truth).sum() / (mask | truth).sum()
        assert iou > 0.6
    else:  # motion energy marks where the square was or is (leading and trailing edges)
        assert (mask & truth).sum() / mask.sum() > 0.4 and not mask[:, :2].any()


def test_prediction_tokens_layouts_agree():
    x = torch.randn(2, 4, 3, 8, 6)  # (B, C, F, H, W), patch (1, 2, 2) -> grid (3, 4, 3)
    a = prediction_tokens(x, "bcfhw", (3, 4, 3))
    b = prediction_tokens(x.transpose(1, 2), "bfchw", (3, 4, 3))
    assert a.shape == (2, 36, 16) and torch.equal(a, b)
    assert torch.equal(a[0, 0], x[0, :, 0, :2, :2].permute(0, 1, 2).reshape(-1))


def test_foreground_ratio_bounds():
    fg = torch.zeros(1, 2 * 3 * 3, dtype=torch.bool)
    fg[0, [0, 1, 9, 10]] = True
    focused = fg.float() + 0.01
    background = (~fg).float() + 0.01
    assert foreground_ratio(focused, fg, (2, 3, 3)) == 1.0
    assert foreground_ratio(background, fg, (2, 3, 3)) == 0.0
    assert math.isnan(foreground_ratio(focused, torch.zeros_like(fg), (2, 3, 3)))


def test_tau_choices():
    assert 0.3 < otsu_threshold([0.1, 0.12, 0.15, 0.8, 0.85]) < 0.8
    assert choose_tau([0.1, 0.9], 0.4) == {"value": 0.4, "method": "given", "detail": "set by the user"}
    assert choose_tau([0.1, 0.5, 0.9], "median")["value"] == 0.5
    with pytest.raises(ValueError, match="otsu"):
        choose_tau([0.1], "best")


def test_tau_background_fraction_is_a_block_budget():
    from vidaccel.caches.profile_io import classify

    R = [0.9, 0.2, float("nan"), 0.5, 0.1, 0.7, 0.3, 0.6, 0.8, 0.4]  # 10 blocks, one not measured
    for fraction, want in [(0.0, 0), (0.3, 3), (0.5, 5), (0.7, 7), (0.9, 9), (1.0, 9)]:
        info = choose_tau(R, f"background:{fraction}")
        background = sorted(i for i, r in enumerate(R) if classify(r, info["value"]) == "background")
        lowest = sorted(range(len(R)), key=lambda i: (math.isnan(R[i]), R[i]))[:want]
        assert background == sorted(lowest), (fraction, background)
        assert info["method"] == f"background:{fraction:g}" and f"{want} of 10" in info["detail"]
    ties = choose_tau([0.2, 0.2, 0.2, 0.9], "background:0.5")  # a cut inside a tie keeps the tie foreground
    assert sum(classify(r, ties["value"]) == "background" for r in [0.2, 0.2, 0.2, 0.9]) == 0
    for bad in ("background:1.5", "background:x", "background:-0.1"):
        with pytest.raises(ValueError, match="between 0 and 1"):
            choose_tau(R, bad)


def test_reclassified_takes_every_tau_form(tiny_profile):
    _, prof, _, _, _ = tiny_profile
    half = prof.reclassified("background:0.5")  # 2 blocks: the lower-R one is reused
    lower = min(prof.models[0].blocks, key=lambda b: b.R).index
    assert half.models[0].background_blocks == [lower] and half.tau["method"] == "background:0.5"
    assert prof.reclassified("background:1.0").models[0].background_blocks == [0, 1]
    assert prof.reclassified("median").tau["method"] == "median"


def test_profiling_refuses_modified_models():
    pipe = wan_pipeline()
    vidaccel.accelerate(pipe, "window")
    with pytest.raises(ValueError, match="vidaccel.remove"):
        vidaccel.profile(pipe, "a red circle", height=32, width=32, num_frames=5, num_inference_steps=2)
    vidaccel.remove(pipe)
    with pytest.raises(ValueError, match="foreground"):
        vidaccel.profile(pipe, "a red circle", foreground="edges")


def test_non_native_attention_backend_is_reported_and_hooks_removed():
    pipe = wan_pipeline()
    attn = pipe.transformer.blocks[1].attn1
    real = attn.processor
    attn.processor = lambda attn_module, hidden_states, *args, **kwargs: hidden_states  # never calls SDPA
    try:
        with pytest.raises(RuntimeError, match="native attention backend"):
            vidaccel.profile(pipe, "a red circle", height=32, width=32, num_frames=5, num_inference_steps=2)
    finally:
        attn.processor = real
    assert not any(n.startswith("vidaccel") for m in pipe.transformer.modules()
                   for n in getattr(getattr(m, "_diffusers_hook", None), "hooks", {}))


def test_cli_profile_writes_json(tmp_path):
    model_dir = tmp_path / "tiny"
    wan_pipeline().save_pretrained(model_dir)
    out = tmp_path / "p.json"
    result = subprocess.run(
        [sys.executable, "-m", "vidaccel.cli", "profile", "a red circle moving right", "--model", str(model_dir),
         "--height", "64", "--width", "64", "--frames", "9", "--steps", "2", "--query-rows", "8", "--tau", "0.5",
         "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "background blocks" in result.stdout and Profile.load(out).tau == {
        "value": 0.5, "method": "given", "detail": "set by the user"}
    bad = subprocess.run([sys.executable, "-m", "vidaccel.cli", "profile", "x", "--model", str(model_dir),
                          "--tau", "best", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--tau" in bad.stderr
