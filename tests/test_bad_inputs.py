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
