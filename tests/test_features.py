"""The feature table (vidaccel/core/features.py): the one place that decides which features run together."""

import pytest

import vidaccel
from tiny_models import wan_pipeline, wan_transformer
from vidaccel.core import features
from vidaccel.core.features import FeatureConflictError


def test_state_attributes_keep_their_names():
    # the strings other code (and users' checks) rely on
    assert {f.key: f.state_attr for f in features.FEATURES} == {
        "sparse_attention": "_vidaccel_sparse_attention", "freeswim": "_vidaccel_freeswim",
        "kv_cache": "_vidaccel_kv_cache", "block_reuse": "_vidaccel_block_reuse"}


def test_every_conflict_names_known_features_and_a_reason():
    keys = {f.key for f in (*features.FEATURES, features.PROFILER, features.CONTEXT_PARALLEL,
                            features.DIFFUSERS_CACHE, features.DIFFUSERS_ATTENTION_CACHE)}
    for pair, reason in features.CONFLICTS.items():
        assert len(pair) == 2 and pair <= keys and reason


def test_conflict_error_is_both_runtime_and_value_error():
    assert issubclass(FeatureConflictError, RuntimeError) and issubclass(FeatureConflictError, ValueError)


def test_refusals_hold_in_both_orders_and_change_nothing():
    model = wan_transformer()
    vidaccel.enable_kv_cache(model)  # a feature that stacks with both, so the refusal must leave it alone
    vidaccel.accelerate(model, "window")
    before = dict(model.__dict__)
    with pytest.raises(FeatureConflictError, match=r"vidaccel sparse attention is active.*vidaccel.remove\(pipe\)"):
        vidaccel.enable_freeswim(model)
    assert model.__dict__ == before
    vidaccel.remove(model)
    vidaccel.enable_freeswim(model)
    before = dict(model.__dict__)
    with pytest.raises(FeatureConflictError, match=r"FreeSwim is active.*vidaccel.disable_freeswim\(pipe\)"):
        vidaccel.accelerate(model, "window")
    assert model.__dict__ == before
    vidaccel.disable_freeswim(model)
    vidaccel.disable_kv_cache(model)
    assert features.active(model) == []


def test_the_profiler_refuses_freeswim():
    """Profiling must see the unmodified model; FreeSwim was the one modification it used to miss."""
    pipe = wan_pipeline()
    vidaccel.enable_freeswim(pipe)
    with pytest.raises(ValueError, match=r"vidaccel.profile cannot run.*FreeSwim is active.*disable_freeswim"):
        vidaccel.profile(pipe, "a red circle", height=32, width=32, num_frames=5, num_inference_steps=2)
    vidaccel.disable_freeswim(pipe)


def test_one_module_as_both_transformers_is_accelerated_once():
    """Issue 20 #14: `transformer_2 is transformer` failed with diffusers' 'Hook ... already exists'."""
    import torch

    from tiny_models import family_inputs

    pipe = wan_pipeline()
    pipe.transformer_2 = pipe.transformer
    model = pipe.transformer
    inputs = family_inputs("wan", grid=(3, 4, 8))
    with torch.no_grad():
        reference = model(**inputs)[0]
    before = dict(model.__dict__)
    vidaccel.accelerate(pipe, vidaccel.WindowAttentionConfig(kernel=(1, 3, 3)))
    vidaccel.enable_kv_cache(pipe)
    assert len(vidaccel.summary(pipe, print_summary=False)["transformers"]) == 1
    vidaccel.disable_caches(pipe)
    vidaccel.remove(pipe)
    with torch.no_grad():
        assert torch.equal(model(**inputs)[0], reference)
    assert set(model.__dict__) == set(before)
