"""Profiled block reuse: exact at interval 1, delta arithmetic on real blocks, schedule, CFG separation, errors."""

import pytest
import torch
from tiny_models import TRANSFORMERS, family_inputs, wan_pipeline, wan_transformer

import vidaccel
from vidaccel.caches import BlockReuseConfig, compute_steps
from vidaccel.core.blocks import BlockIO
from vidaccel.caches.block_reuse import background_runs
from vidaccel.caches.profile_io import ModelProfile, Profile
from vidaccel.caches.schedule import interval_at

PIPE_KW = dict(prompt="a red circle moving right", negative_prompt="a blue square", height=32, width=32,
               num_frames=5, num_inference_steps=4, guidance_scale=5.0, output_type="pt")


def _generate(pipe):
    return pipe(**PIPE_KW, generator=torch.Generator().manual_seed(0)).frames


def _has_vidaccel_hooks(model) -> bool:
    return any(name.startswith("vidaccel") for m in model.modules()
               for name in getattr(getattr(m, "_diffusers_hook", None), "hooks", {}))


@pytest.fixture(scope="module")
def pipe_and_reference():
    pipe = wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe, _generate(pipe)


def test_interval_one_is_bit_identical_and_removal_exact(pipe_and_reference):
    pipe, reference = pipe_and_reference
    vidaccel.enable_block_reuse(pipe, BlockReuseConfig(background_blocks=(0, 1), warmup_steps=0, interval=1))
    assert torch.equal(_generate(pipe), reference)
    info = vidaccel.cache_summary(pipe)[0]["block_reuse"]
    assert info["runs"] == [[0, 1]] and info["reused_steps"] == 0 and info["computed_steps"] == 2 * 4
    vidaccel.disable_caches(pipe)
    assert not _has_vidaccel_hooks(pipe.transformer) and "_vidaccel_block_reuse" not in pipe.transformer.__dict__


def test_reuse_changes_output_and_composes_with_kv_cache(pipe_and_reference):
    pipe, reference = pipe_and_reference
    vidaccel.enable_block_reuse(pipe, BlockReuseConfig(background_blocks=(1,), warmup_steps=1, interval=10))
    reused = _generate(pipe)
    info = vidaccel.cache_summary(pipe)[0]["block_reuse"]
    assert info["computed_steps"] == 2 * 2 and info["reused_steps"] == 2 * 2  # steps 0-1 compute, 2-3 reuse
    assert info["reused_block_calls"] == 4
    assert not torch.equal(reused, reference)
    vidaccel.enable_kv_cache(pipe)  # exact, so stacking it changes nothing
    assert torch.equal(_generate(pipe), reused)
    vidaccel.disable_caches(pipe)
    assert torch.equal(_generate(pipe), reference)


def test_adaptive_with_tiny_threshold_recomputes_every_step(pipe_and_reference):
    """Exact reference for the adaptive mode: when every drift exceeds the threshold nothing is reused."""
    pipe, reference = pipe_and_reference
    config = BlockReuseConfig(background_blocks=(1,), warmup_steps=1, interval=None, adaptive=True,
                              drift_threshold=1e-9)
    vidaccel.enable_block_reuse(pipe, config)
    assert torch.equal(_generate(pipe), reference)
    info = vidaccel.cache_summary(pipe)[0]["block_reuse"]
    assert info["reused_steps"] == 0 and info["drift_recomputes"] == 2 * 2
    vidaccel.disable_caches(pipe)
    # a huge threshold reuses exactly like the fixed schedule with the same gap bound
    vidaccel.enable_block_reuse(pipe, BlockReuseConfig(background_blocks=(1,), warmup_steps=1, interval=10,
                                                       adaptive=True, drift_threshold=1e9))
    adaptive = _generate(pipe)
    vidaccel.disable_caches(pipe)
    vidaccel.enable_block_reuse(pipe, BlockReuseConfig(background_blocks=(1,), warmup_steps=1, interval=10))
    assert torch.equal(adaptive, _generate(pipe))
    vidaccel.disable_caches(pipe)


def _toy_calls(family, model, steps=3):
    """Per step, a cond and an uncond call with different text (like a CFG pipeline)."""
    g = torch.Generator().manual_seed(5)
    calls = []
    for step in range(steps):
        inputs = family_inputs(family, grid=(2, 2, 3), batch=1, seed=step, timestep=900.0 - 200 * step)
        for branch in ("cond", "uncond"):
            kw = dict(inputs)
            if branch == "uncond":
                ehs = kw["encoder_hidden_states"]
                kw["encoder_hidden_states"] = ehs + torch.randn(ehs.shape, generator=g)
            calls.append((step, branch, kw))
    return calls


@pytest.mark.parametrize("family", ["wan", "ltx", "cogvideox", "hunyuan"])
def test_delta_arithmetic_on_real_blocks_per_branch(family):
    """Reuse step: run output == run input now + (run output - run input) of the last compute step, same branch."""
    model = TRANSFORMERS[family]()
    blocks = vidaccel.core.adapters.adapter_for(model).blocks(model)
    names = [n for n, _ in blocks]
    run = background_runs(range(len(blocks)), names)[0]
    head, tail = blocks[run[0]][1], blocks[run[-1]][1]
    io = BlockIO(head)
    seen = []  # (step, branch, run input, run output)
    pre = head.register_forward_pre_hook(lambda m, a, k: seen.append([io.inputs(a, k)]), with_kwargs=True)
    post = tail.register_forward_hook(lambda m, a, o: seen[-1].append(io.outputs(o)))
    inner = []  # the tail block's attention really running
    attn = tail.attn if hasattr(tail, "attn") else tail.attn1
    probe = attn.register_forward_hook(lambda m, a, o: inner.append(1))
    vidaccel.enable_block_reuse(model, BlockReuseConfig(background_blocks=run, warmup_steps=0, interval=2))
    try:
        with torch.no_grad():
            for step, branch, kw in _toy_calls(family, model):
                with model.cache_context(branch, step_index=step):
                    model(**kw)
                seen[-1][:0] = [step, branch]
    finally:
        pre.remove(), post.remove(), probe.remove()
    assert compute_steps(3, 0, 2) == [True, False, True]
    assert len(inner) == 2 * 2  # steps 0 and 2, both branches; step 1 skipped the run
    for step, branch, (in_hs, in_ehs), (out_hs, out_ehs) in seen:
        if step != 1:
            continue
        (c_in, c_ein), (c_out, c_eout) = next((i, o) for s, b, i, o in seen if s == 0 and b == branch)
        assert torch.equal(out_hs, in_hs + (c_out - c_in))
        if in_ehs is not None:  # joint attention carries the text stream too
            assert torch.equal(out_ehs, in_ehs + (c_eout - c_ein))
    # the two branches stored different deltas: mixing them would have changed the output
    state = model._vidaccel_block_reuse
    deltas = [state.branches[(b, None)].deltas[0][0] for b in ("cond", "uncond")]  # (CFG branch, FreeSwim branch)
    assert not torch.equal(*deltas)
    vidaccel.disable_caches(model)


def test_runs_split_at_gaps_and_block_lists():
    names = ["transformer_blocks.0", "transformer_blocks.1", "single_transformer_blocks.0",
             "single_transformer_blocks.1", "single_transformer_blocks.2"]
    assert background_runs([0, 1, 2, 4], names) == [(0, 1), (2,), (4,)]
    assert background_runs([0, 1, 2, 3], names, first_allowed=1) == [(1,), (2, 3)]


def test_schedule_matches_profilingdit_and_decreases():
    flags = compute_steps(50)
    assert [s for s, c in enumerate(flags) if c] == [0, 1, 2, 3, 4, 5, 6, 12, 18, 24, 30, 36, 42, 48]
    assert all(compute_steps(20, 0, 1))
    intervals = [interval_at(s, 6, 8, 2, 50) for s in range(6, 50)]
    assert intervals[0] == 8 and intervals[-1] == 2 and intervals == sorted(intervals, reverse=True)
    decreasing = compute_steps(50, 6, 8, 2)
    gaps = [b - a for a, b in zip(*[[s for s, c in enumerate(decreasing) if c][i:] for i in (6, 7)])]
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > gaps[-1]


def test_sparse_attention_composes():
    pipe = wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    vidaccel.accelerate(pipe, vidaccel.WindowAttentionConfig(kernel=(1, 3, 3)))
    sparse = _generate(pipe)
    vidaccel.enable_block_reuse(pipe, BlockReuseConfig(background_blocks=(0, 1), warmup_steps=0, interval=1))
    assert torch.equal(_generate(pipe), sparse)
    vidaccel.disable_caches(pipe)
    assert torch.equal(_generate(pipe), sparse)
    vidaccel.remove(pipe)
    assert not _has_vidaccel_hooks(pipe.transformer)


def _profile_for(model, background, **changes) -> Profile:
    from vidaccel.core.models import config_hash
    from vidaccel.caches.profile_io import BlockStats

    n = changes.pop("num_blocks", len(model.blocks))
    blocks = [BlockStats(i, f"blocks.{i}", "background" if i in background else "foreground", 0.0) for i in range(n)]
    entry = ModelProfile("transformer", changes.pop("model_class", type(model).__name__),
                         changes.pop("config_hash", config_hash(model)), n, [2, 2, 3], blocks)
    return Profile(run={}, foreground={}, tau={"value": 0.5, "method": "given", "detail": ""}, models=[entry])


def test_profile_drives_reuse_and_wrong_profiles_are_rejected(tmp_path):
    model = wan_transformer()
    vidaccel.enable_block_reuse(model, "profiled", profile=_profile_for(model, {1}))
    assert model._vidaccel_block_reuse.runs == [(1,)] and model._vidaccel_block_reuse.source == "profile"
    vidaccel.disable_caches(model)
    wrong = _profile_for(model, {1}, num_blocks=30, config_hash="0123456789abcdef")
    with pytest.raises(ValueError) as err:
        vidaccel.enable_block_reuse(model, profile=wrong)
    assert "number of blocks: profile 30, this model 2" in str(err.value) and "config hash" in str(err.value)
    assert "vidaccel profile" in str(err.value)
    path = _profile_for(model, {0}, model_class="LTXVideoTransformer3DModel").save(tmp_path / "p.json")
    with pytest.raises(ValueError, match="class: profile 'LTXVideoTransformer3DModel'"):
        vidaccel.enable_block_reuse(model, profile=str(path))
    assert not _has_vidaccel_hooks(model)


def test_missing_profile_says_how_to_make_one(tmp_path):
    model = wan_transformer()
    with pytest.raises(ValueError, match="vidaccel profile"):
        vidaccel.enable_block_reuse(model)
    with pytest.raises(FileNotFoundError, match="vidaccel profile"):
        vidaccel.enable_block_reuse(model, "profiled", profile=tmp_path / "none.json")
    with pytest.raises(ValueError, match="Unknown block reuse preset"):
        vidaccel.enable_block_reuse(model, "fast")
    for bad in (dict(interval=0), dict(warmup_steps=-1), dict(min_interval=2), dict(drift_threshold=0),
                dict(interval=None)):
        with pytest.raises(ValueError):
            vidaccel.enable_block_reuse(model, BlockReuseConfig(background_blocks=(1,), **bad))
    with pytest.raises(ValueError, match="out of range"):
        vidaccel.enable_block_reuse(model, BlockReuseConfig(background_blocks=(5,)))
    assert not _has_vidaccel_hooks(model) and "_vidaccel_block_reuse" not in model.__dict__


def test_diffusers_caches_are_refused_and_state_kept():
    from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig, apply_taylorseer_cache

    model = wan_transformer()
    model.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    with pytest.raises(RuntimeError, match="FirstBlockCache"):
        vidaccel.enable_block_reuse(model, BlockReuseConfig(background_blocks=(1,)))
    model.disable_cache()
    # hooks without enable_cache are found too (lite mode: diffusers' default patterns miss Wan's attn1/attn2)
    apply_taylorseer_cache(model, TaylorSeerCacheConfig(use_lite_mode=True))
    with pytest.raises(RuntimeError, match="TaylorSeer"):
        vidaccel.enable_block_reuse(model, BlockReuseConfig(background_blocks=(1,)))
    assert not _has_vidaccel_hooks(model)


def test_enabling_twice_is_refused():
    model = wan_transformer()
    vidaccel.enable_block_reuse(model, BlockReuseConfig(background_blocks=(1,)))
    with pytest.raises(RuntimeError, match="already enabled"):
        vidaccel.enable_block_reuse(model, BlockReuseConfig(background_blocks=(0,)))
    assert model._vidaccel_block_reuse.runs == [(1,)]
    vidaccel.disable_block_reuse(model)
    assert not _has_vidaccel_hooks(model)


@pytest.mark.slow
def test_bench_caches_smoke(tmp_path):
    """scripts/bench_caches.py end to end at toy sizes: every method runs and the files are written."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_caches.py"
    result = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(tmp_path)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "bench_caches_smoke.json").read_text())["rows"]
    assert [r["method"] for r in rows][0] == "baseline" and not [r for r in rows if "error" in r]
    exact = {r["method"]: r["bit_identical"] for r in rows if r["method"] != "baseline"}
    assert exact["vidaccel_kv_cache"] is True and exact["vidaccel_reuse_all_blocks"] is False
    assert (tmp_path / "bench_caches_smoke.md").is_file()
