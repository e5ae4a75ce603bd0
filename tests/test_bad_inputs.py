"""Issue 20's probe of bad input, kept as a suite: API, runtime, CLI and files.

Every case asserts the exception type, that the one-line message names the fix, and that the model
afterwards gives the same output as before; where a feature was on, turning it off restores the
dense output bit-identically. Fixtures build the tiny random-weight models of `tiny_models`.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import vidaccel
from tiny_models import family_inputs, wan_transformer

GRID = (3, 4, 6)


@pytest.fixture(scope="module")
def tiny():
    """(model, inputs, dense output) of a tiny Wan transformer."""
    model = wan_transformer()
    inputs = family_inputs("wan", grid=GRID)
    return model, inputs, _run(model, inputs)


def _run(model, inputs, step=0):
    with torch.no_grad(), model.cache_context("cond", step_index=step):
        return model(**inputs)[0]


def _same(model, inputs, expected):
    assert torch.equal(_run(model, inputs), expected)


# --------------------------------------------------------- #1 / #7: copying and pickling a hooked model

FEATURES = {
    "sparse_attention": (lambda m: vidaccel.accelerate(m, vidaccel.WindowAttentionConfig(kernel=(1, 3, 3))),
                         vidaccel.remove, "vidaccel.remove"),
    "freeswim": (lambda m: vidaccel.enable_freeswim(m, vidaccel.FreeSwimConfig(window=(2, 3))),
                 vidaccel.disable_freeswim, "vidaccel.disable_freeswim"),
    "kv_cache": (vidaccel.enable_kv_cache, vidaccel.disable_kv_cache, "vidaccel.disable_kv_cache"),
    "block_reuse": (lambda m: vidaccel.enable_block_reuse(m, vidaccel.BlockReuseConfig(background_blocks=[1])),
                    vidaccel.disable_block_reuse, "vidaccel.disable_block_reuse"),
}


@pytest.mark.parametrize("operation", [copy.deepcopy, pickle.dumps], ids=["deepcopy", "pickle"])
@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_copy_or_pickle_of_a_hooked_model_is_refused(tiny, feature, operation):
    model, inputs, dense = tiny
    enable, disable, fix = FEATURES[feature]
    enable(model)
    try:
        on = _run(model, inputs)
        with pytest.raises(TypeError, match=rf"Call {fix}\(pipe\).*before copying, then enable it again"):
            operation(model)
        _same(model, inputs, on)
    finally:
        disable(model)
    _same(model, inputs, dense)
    pickle.loads(pickle.dumps(model))  # plain again: copies and pickles as usual
    _same(copy.deepcopy(model), inputs, dense)


# ----------------------------------------------------------------- #2: a torch.compile'd transformer

@pytest.mark.parametrize("order", ["accelerate_then_compile", "compile_then_accelerate"])
def test_compiled_transformer_is_accelerated_and_removed_exactly(tiny, order):
    model, inputs, dense = tiny
    config = vidaccel.WindowAttentionConfig(kernel=(1, 3, 3))
    vidaccel.accelerate(model, config)
    sparse = _run(model, inputs)
    vidaccel.remove(model)
    if order == "accelerate_then_compile":
        vidaccel.accelerate(model, config)
        compiled = torch.compile(model, backend="eager")
    else:
        compiled = torch.compile(model, backend="eager")
        assert torch.equal(_run(compiled, inputs), dense)
        vidaccel.accelerate(compiled, config)  # was: "does not support OptimizedModule"
    assert torch.equal(_run(compiled, inputs), sparse) and vidaccel.summary(compiled, print_summary=False)["accelerated"]
    vidaccel.remove(compiled)  # was a silent no-op (the state lives on _orig_mod)
    assert not hasattr(model, "_vidaccel_sparse_attention")
    assert torch.equal(_run(compiled, inputs), dense)
    _same(model, inputs, dense)


# ------------------------------------------------------------- #3: diffusers caches, in either order

def _pab():
    from diffusers import PyramidAttentionBroadcastConfig

    return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2, current_timestep_callback=lambda: 500)


def _fbc():
    from diffusers import FirstBlockCacheConfig

    return FirstBlockCacheConfig(threshold=0.1)


CACHE_PAIRS = {  # vidaccel feature x the diffusers cache that conflicts with it
    "sparse_attention+PyramidAttentionBroadcast": ("sparse_attention", _pab),
    "freeswim+PyramidAttentionBroadcast": ("freeswim", _pab),
    "block_reuse+FirstBlockCache": ("block_reuse", _fbc),
    "block_reuse+PyramidAttentionBroadcast": ("block_reuse", _pab),
}


@pytest.mark.parametrize("pair", sorted(CACHE_PAIRS))
def test_diffusers_cache_enabled_after_a_vidaccel_feature_is_refused(tiny, pair):
    from vidaccel.core.features import FeatureConflictError, diffusers_caches

    model, inputs, dense = tiny
    feature, cache = CACHE_PAIRS[pair]
    enable, disable, fix = FEATURES[feature]
    enable(model)
    try:
        on = _run(model, inputs)
        with pytest.raises(FeatureConflictError, match=rf"diffusers' {pair.split('+')[1]} cannot run.*{fix}\(pipe\)"):
            model.enable_cache(cache())
        assert diffusers_caches(model) == [] and not model.is_cache_enabled
        _same(model, inputs, on)
    finally:
        disable(model)
    _same(model, inputs, dense)


@pytest.mark.parametrize("pair", sorted(CACHE_PAIRS))
def test_vidaccel_feature_enabled_after_a_diffusers_cache_is_refused(tiny, pair):
    from vidaccel.core.features import FeatureConflictError

    model, inputs, dense = tiny
    feature, cache = CACHE_PAIRS[pair]
    model.enable_cache(cache())
    try:
        with pytest.raises(FeatureConflictError, match=r"diffusers' .* is active.*disable_cache\(\)"):
            FEATURES[feature][0](model)
        assert not [k for k in model.__dict__ if k.startswith("_vidaccel")]
    finally:
        model.disable_cache()
    _same(model, inputs, dense)


def test_diffusers_cache_applied_directly_is_refused_before_the_next_generation_runs(tiny):
    from diffusers.hooks import apply_first_block_cache

    from vidaccel.core.features import FeatureConflictError

    model, inputs, dense = tiny
    enable, disable, _ = FEATURES["block_reuse"]
    enable(model)
    try:
        on = _run(model, inputs)
        model.__dict__["_vidaccel_step_tracker"].new_generation()  # as diffusers does after a pipeline call
        apply_first_block_cache(model, _fbc())  # behind enable_cache's back
        with pytest.raises(FeatureConflictError, match=r"FirstBlockCache cannot run.*disable_block_reuse\(pipe\)"):
            _run(model, inputs)
        for _, module in model.named_modules():
            if hasattr(module, "_diffusers_hook"):
                for name in ("fbc_leader_block_hook", "fbc_block_hook"):
                    module._diffusers_hook.remove_hook(name, recurse=False)
        _same(model, inputs, on)
    finally:
        disable(model)
    _same(model, inputs, dense)


# ---------------------------------------------------- #4, #8: output and input paths, before any work

def _cli(capsys, *argv):
    from vidaccel import cli

    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def _must_not_run(*args, **kwargs):
    raise AssertionError("expensive work started before the path was checked")


@pytest.fixture
def nothing_expensive(monkeypatch):
    """Model loading, the benchmarks and profiling fail the test if reached."""
    from vidaccel.caches import profiler
    from vidaccel.cli import loading
    from vidaccel.cli.commands import bench, upscale

    for module, name in ((loading, "load_pipeline"), (bench, "_bench_attention"), (bench, "_bench_pipeline"),
                         (upscale, "_load"), (profiler, "_install")):
        monkeypatch.setattr(module, name, _must_not_run)


def _bad_outputs(tmp_path):
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "a_file").write_text("x")
    return {"folder": (tmp_path / "folder.mp4", "is a folder: give a file path"),
            "under_a_file": (tmp_path / "a_file" / "out.mp4", "is a file, not a folder; choose another path")}


COMMANDS_WITH_OUT = {
    "generate": lambda out: ["generate", "a red circle", "--out", out],
    "upscale": lambda out: ["upscale", "a red circle", "--output", out],
    "profile": lambda out: ["profile", "a red circle", "--out", out],
    "bench": lambda out: ["bench", "attention", "--grid", "2", "2", "2", "--out", out],
}


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
@pytest.mark.parametrize("command", sorted(COMMANDS_WITH_OUT))
def test_unwritable_output_is_one_line_before_any_work(capsys, tmp_path, nothing_expensive, command, where):
    out, message = _bad_outputs(tmp_path)[where]
    code, err = _cli(capsys, *COMMANDS_WITH_OUT[command](out))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert ".partial" not in err and "Errno" not in err


def test_profile_api_checks_its_path_before_running(tmp_path, nothing_expensive):
    from tiny_models import wan_pipeline

    out, message = _bad_outputs(tmp_path)["folder"]
    pipe = wan_pipeline()
    with pytest.raises(ValueError, match=message):
        vidaccel.profile(pipe, "a red circle", height=32, width=32, num_frames=5, num_inference_steps=2, path=out)
    assert not hasattr(pipe.transformer, "_diffusers_hook")


def test_a_result_that_cannot_be_written_is_kept(tmp_path):
    from vidaccel.core.validate import save_or_keep

    written = []

    def write(path):
        if not written:
            written.append(None)
            raise PermissionError(13, "Permission denied")
        path.write_text("result")
        written.append(path)
        return path

    with pytest.raises(OSError, match=r"could not write .*out.json \(Permission denied\); the result was saved to"):
        save_or_keep(write, tmp_path / "out.json")
    assert written[-1].read_text() == "result"


@pytest.mark.parametrize("kind,message", [("folder", "is a folder, not a video file"),
                                          ("not_a_video", "is not a readable video"),
                                          ("empty", "is not a readable video")])
def test_unreadable_upscale_input_is_one_line(capsys, tmp_path, nothing_expensive, kind, message):
    path = tmp_path / "clip.mp4"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"" if kind == "empty" else b"this is not a video\n" * 100)
    code, err = _cli(capsys, "upscale", "--input", path, "--output", tmp_path / "out.mp4")
    assert code == 2 and message in err and "with --input" in err and len(err.strip().splitlines()) == 1, err
    assert "ffmpeg version" not in err


# ---------------------------------------------------------------- #6: profile files of the wrong shape

def _profile_dict():
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "bench_caches_tiny_profile.json"
    return json.loads(path.read_text())


def _edit(change):
    data = _profile_dict()
    change(data)
    return data


BAD_PROFILES = {
    "top_level_list": (lambda d: [d], "a JSON list, not an object"),
    "no_models": (lambda d: _edit(lambda x: x.pop("models")), "missing key 'models'"),
    "models_not_a_list": (lambda d: _edit(lambda x: x.update(models={})), "key 'models' is {}"),
    "unknown_top_key": (lambda d: _edit(lambda x: x.update(extra=1)), "unknown key 'extra'"),
    "unknown_block_key": (lambda d: _edit(lambda x: x["models"][0]["blocks"][2].update(speed=3)),
                          "unknown key 'models[0].blocks[2].speed'"),
    "banana_kind": (lambda d: _edit(lambda x: x["models"][0]["blocks"][1].update(kind="banana")),
                    "key 'models[0].blocks[1].kind' is 'banana', expected 'foreground' or 'background'"),
    "string_R": (lambda d: _edit(lambda x: x["models"][0]["blocks"][0].update(R="high")),
                 "key 'models[0].blocks[0].R' is 'high', expected a number or null"),
    "missing_num_blocks": (lambda d: _edit(lambda x: x["models"][0].pop("num_blocks")),
                           "missing key 'models[0].num_blocks'"),
    "tau_without_value": (lambda d: _edit(lambda x: x.update(tau={"method": "otsu"})), "key 'tau'"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_bad_profile_file_names_the_key_and_the_fix(tmp_path, case):
    import json

    from vidaccel.caches.profile_io import Profile

    make, message = BAD_PROFILES[case]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(make(_profile_dict())))
    with pytest.raises(ValueError) as info:
        Profile.load(path)
    text = str(info.value)
    assert message in text and str(path) in text and "vidaccel profile" in text and "\n" not in text, text


def test_bad_profile_leaves_the_model_unchanged(tiny, tmp_path):
    import json

    model, inputs, dense = tiny
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(BAD_PROFILES["banana_kind"][0](None)))
    with pytest.raises(ValueError, match="banana"):
        vidaccel.enable_block_reuse(model, vidaccel.BlockReuseConfig(profile=str(path)))
    assert "_vidaccel_block_reuse" not in model.__dict__
    _same(model, inputs, dense)


# ------------------------------------------------- #9, #10: wrong types and silent coercions refused

W, R = vidaccel.WindowAttentionConfig, vidaccel.RadialAttentionConfig
BAD_VALUES = {  # id -> (call, what the one-line message must say)
    "kernel_float": (lambda: W(kernel=3.0), r"kernel must be an int or three ints \(t, h, w\).*3\.0 \(float\)"),
    "kernel_none": (lambda: W(kernel=None), r"kernel must be an int or three ints.*None"),
    "kernel_set": (lambda: W(kernel={15, 9, 1}), r"a set has no order; pass a tuple"),
    "dilation_float": (lambda: W(dilation=2.5), r"dilation must be an int or three ints"),
    "stride_str": (lambda: W(stride="1"), r"stride must be an int or three ints"),
    "dense_steps_bool": (lambda: W(dense_steps=True), r"dense_steps must be an int >= 0.*True \(bool\)"),
    "tile_size_float": (lambda: W(tile_size=64.0), r"tile_size must be one of"),
    "decay_str": (lambda: R(decay_factor="0.2"), r"decay_factor must be a finite number.*'0\.2' \(str\)"),
    "block_size_str": (lambda: R(block_size="8"), r"block_size must be an int >= 1.*'8' \(str\)"),
    "block_size_none": (lambda: R(block_size=None), r"block_size must be an int >= 1.*None"),
    "block_size_fraction": (lambda: R(block_size=2.9), r"block_size must be an int >= 1.*2\.9"),
    "sink_str": (lambda: R(sink="no"), r"sink must be True or False, got sink='no'"),
    "dense_layers_float": (lambda: R(dense_layers=1.0), r"dense_layers must be an int >= 0"),
    "base_size_none": (lambda: vidaccel.FreeSwimConfig(base_size=None), r"base_size must be two ints \(height, width\)"),
    "window_scalar": (lambda: vidaccel.FreeSwimConfig(window=4), r"window must be two ints \(k_h, k_w\)"),
    "override_str": (lambda: vidaccel.FreeSwimConfig(override="yes"), r"override must be True or False"),
    "interval_str": (lambda: vidaccel.BlockReuseConfig(interval="6", background_blocks=[0]),
                     r"interval must be an int >= 1.*'6' \(str\)"),
    "interval_fraction": (lambda: vidaccel.BlockReuseConfig(interval=1.5, background_blocks=[0]),
                          r"interval must be an int >= 1.*1\.5"),
    "background_fraction": (lambda: vidaccel.BlockReuseConfig(background_blocks=(0.5,)),
                            r"background_blocks\[0\] must be an int >= 0.*\(a block index\)"),
    "adaptive_str": (lambda: vidaccel.BlockReuseConfig(adaptive="no", background_blocks=[0]),
                     r"adaptive must be True or False"),
    "max_prompts_str": (lambda: vidaccel.KVCacheConfig(max_prompts="3"), r"max_prompts must be an int >= 1.*'3'"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_wrong_type_or_coercible_value_is_refused_by_name(tiny, case):
    call, match = BAD_VALUES[case]
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    _same(*tiny)


@pytest.mark.parametrize("case,match", [
    ("enable_kv_cache", r"max_prompts must be an int >= 1.*'3' \(str\)"),
    ("summary_grid", r"grid must be three ints \(T, H, W\) in tokens, each >= 1, got grid=\(0, 1, 1\)"),
])
def test_wrong_api_arguments_are_refused_and_change_nothing(tiny, case, match):
    model, inputs, dense = tiny
    if case == "summary_grid":
        vidaccel.accelerate(model, W(kernel=(1, 3, 3)))
        on = _run(model, inputs)
        with pytest.raises(ValueError, match=match):  # was ZeroDivisionError
            vidaccel.summary(model, grid=(0, 1, 1), print_summary=False)
        _same(model, inputs, on)
        vidaccel.remove(model)
    else:
        with pytest.raises(ValueError, match=match):
            vidaccel.enable_kv_cache(model, max_prompts="3")
        assert "_vidaccel_kv_cache" not in model.__dict__
    _same(model, inputs, dense)


def test_numpy_integers_are_accepted_as_ints(tiny):
    import numpy as np

    model, inputs, dense = tiny
    vidaccel.accelerate(model, W(kernel=(1, 3, 3)))
    expected = _run(model, inputs)
    vidaccel.remove(model)
    vidaccel.accelerate(model, W(kernel=tuple(np.int64(k) for k in (1, 3, 3)), dilation=np.int32(1)))
    _same(model, inputs, expected)
    vidaccel.remove(model)
    _same(model, inputs, dense)


def test_config_file_value_of_the_wrong_type_names_file_entry_and_key(tmp_path, capsys, nothing_expensive):
    path = tmp_path / "radial.yaml"
    path.write_text("configs:\n  - {type: radial, name: small}\n  - {type: radial, block_size: '8'}\n")
    code, err = _cli(capsys, "generate", "a red circle", "--accel", path, "--out", tmp_path / "x.mp4")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(path) in err and "configs[1]" in err and "'block_size'" in err and "must be an int >= 1" in err, err


def test_radial_that_is_fully_dense_at_the_grid_warns(tiny):
    model, inputs, dense = tiny
    vidaccel.accelerate(model, R(decay_factor=4.0, dense_steps=0, dense_layers=0, block_size=8))
    with pytest.warns(UserWarning, match=r"decay_factor=4 attends every token pair at grid \(3, 4, 6\).*smaller"):
        _run(model, inputs)
    vidaccel.remove(model)
    _same(model, inputs, dense)


# -------------------------------------------------------- #11: a dilation that cannot fit the grid

@pytest.mark.parametrize("kernel,dilation,fix", [
    ((1, 3, 3), (1, 1, 1000), r"Use dilation <= 2 for kernel=3\."),  # was "at most kernel=0"
    ((1, 3, 2), (1, 1, 4), r"Use dilation <= 3 for kernel=2 or kernel <= 1 for dilation=4\."),
])
def test_dilation_that_cannot_fit_names_a_valid_fix(tiny, kernel, dilation, fix):
    model, inputs, dense = tiny
    vidaccel.accelerate(model, W(kernel=kernel, dilation=dilation))
    with pytest.raises(ValueError, match=r"does not fit the token grid along w.*" + fix):
        _run(model, inputs)
    vidaccel.remove(model)
    _same(model, inputs, dense)


# ------------------------------------------------- #17: the CPU reference path is cheap and said to be slow

def test_reference_builds_its_mask_once_per_plan_and_matches_the_chunked_path(monkeypatch):
    from vidaccel.sparse import attention
    from vidaccel.sparse.plan import PlanCache

    pattern = R(block_size=8).resolved("wan").build_pattern()
    plan = PlanCache().get(pattern, GRID)
    q, k, v = (torch.randn(2, 2, 72 + 5, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    calls = []
    real = type(pattern).mask
    monkeypatch.setattr(type(pattern), "mask", lambda self, *a: calls.append(1) or real(self, *a))
    first = attention.reference_sparse_attention(q, k, v, plan, 5, "suffix")
    second = attention.reference_sparse_attention(q, k, v, plan, 5, "suffix")
    assert len(calls) == 1 and torch.equal(first, second)  # was: the mask rebuilt on every call
    monkeypatch.setattr(attention, "REFERENCE_CACHED_MASK_BYTES", 0)  # the chunked path for long sequences
    torch.testing.assert_close(attention.reference_sparse_attention(q, k, v, plan, 5, "suffix"), first)


def test_summary_says_plainly_when_sparse_attention_ran_on_the_slow_reference(tiny):
    model, inputs, dense = tiny
    vidaccel.accelerate(model, W(kernel=(1, 3, 3)))
    _run(model, inputs)
    text = str(vidaccel.summary(model, print_summary=False))
    vidaccel.remove(model)
    assert "SLOW PATH" in text and "slower than dense attention" in text and "CUDA" in text, text
    _same(model, inputs, dense)
