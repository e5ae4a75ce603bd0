"""Every user error names the fix and leaves the model or pipeline usable and unchanged."""

import pytest
import torch

import vidaccel
from tiny_models import family_inputs, wan_pipeline, wan_transformer


@pytest.fixture(scope="module")
def model_and_reference():
    model = wan_transformer()
    inputs = family_inputs("wan", grid=(3, 4, 6))
    with torch.no_grad():
        return model, inputs, model(**inputs)[0]


def _still_unchanged(model, inputs, reference):
    with torch.no_grad():
        assert torch.equal(model(**inputs)[0], reference)
    assert not hasattr(model, "_vidaccel_sparse_attention")


def test_unsupported_model_lists_supported_classes(model_and_reference):
    from vidaccel.core.adapters import ADAPTERS

    with pytest.raises(TypeError, match="Supported transformers: " + ", ".join(sorted(ADAPTERS)) + r".*register_adapter"):
        vidaccel.accelerate(torch.nn.Linear(2, 2), "radial")
    with pytest.raises(TypeError, match="has no `transformer`"):
        vidaccel.accelerate(object(), "radial")
    _still_unchanged(*model_and_reference)


@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel=(0, 3, 3)), "must be positive"),
    (dict(kernel=(3, -1, 3)), "must be positive"),
    (dict(kernel=(3, 3)), "three ints"),
    (dict(kernel=(3, 3, 3), stride=(4, 1, 1)), "Stride must not exceed"),
    (dict(kernel=(3, 3, 3), dilation=(0, 1, 1)), "must be positive"),
    (dict(dense_steps=-1), "dense_steps"),
    (dict(backend="cuda"), "backend must be one of"),
])
def test_invalid_window_configs(kwargs, match, model_and_reference):
    with pytest.raises(ValueError, match=match):
        vidaccel.accelerate(model_and_reference[0], vidaccel.WindowAttentionConfig(**kwargs))
    _still_unchanged(*model_and_reference)


def test_invalid_radial_config(model_and_reference):
    with pytest.raises(ValueError, match="decay_factor must be > 0"):
        vidaccel.RadialAttentionConfig(decay_factor=0)
    _still_unchanged(*model_and_reference)


def test_dilated_window_larger_than_grid_fails_at_call_and_recovers(model_and_reference):
    model, inputs, reference = model_and_reference
    vidaccel.accelerate(model, vidaccel.WindowAttentionConfig(kernel=(1, 3, 4), dilation=(1, 1, 2)))
    with pytest.raises(ValueError, match="kernel\\*dilation = 4\\*2 = 8 > 6 tokens"):
        with torch.no_grad():
            model(**inputs)
    with torch.no_grad():  # a grid the window fits still runs on the same accelerated model
        model(**family_inputs("wan", grid=(3, 4, 8)))
    vidaccel.remove(model)
    _still_unchanged(model, inputs, reference)


def test_accelerating_twice_says_remove_first(model_and_reference):
    model, inputs, reference = model_and_reference
    vidaccel.accelerate(model, "window")
    with pytest.raises(RuntimeError, match="Call vidaccel.remove\\(pipe\\) first"):
        vidaccel.accelerate(model, "radial")
    vidaccel.remove(model)
    _still_unchanged(model, inputs, reference)


def test_unknown_preset_lists_presets(model_and_reference):
    with pytest.raises(ValueError, match="Unknown preset 'fast'. Available presets: radial, tile_window, window"):
        vidaccel.accelerate(model_and_reference[0], "fast")
    with pytest.raises(TypeError, match="config must be"):
        vidaccel.accelerate(model_and_reference[0], 3)
    _still_unchanged(*model_and_reference)


def test_a_processor_or_backend_changed_after_accelerate_is_reported(model_and_reference):
    """Wan runs on vidaccel's attention backend: a processor swapped in afterwards, or another backend set on the
    processors (``set_attention_backend``), would bypass vidaccel silently; the next call says so and how to fix."""
    model, inputs, reference = model_and_reference
    vidaccel.accelerate(model, "window")
    attn = model.blocks[0].attn1
    real = attn.processor

    def processor_without_sdpa(attn_module, hidden_states, *args, **kwargs):
        return hidden_states  # like a custom processor: vidaccel never sees its attention

    attn.processor = processor_without_sdpa
    try:
        with pytest.raises(RuntimeError, match="processor of blocks.0.attn1 was changed.*vidaccel.remove"):
            with torch.no_grad():
                model(**inputs)
    finally:
        attn.processor = real
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    default = _AttentionBackendRegistry._active_backend  # set_attention_backend also changes the process default
    try:
        model.set_attention_backend("_native_math")
        with pytest.raises(RuntimeError, match=r"attention backend \(now '_native_math'\) of blocks.0.attn1 was"):
            with torch.no_grad():
                model(**inputs)
    finally:
        model.reset_attention_backend()
        _AttentionBackendRegistry._active_backend = default
    vidaccel.remove(model)
    _still_unchanged(model, inputs, reference)


def test_a_processor_without_sdpa_is_reported_on_the_sdpa_swap_path():
    """CogVideoX's processor calls SDPA itself (the SDPA swap): one that never calls it names the fix."""
    from tiny_models import cogvideox_transformer

    model, inputs = cogvideox_transformer(), family_inputs("cogvideox", grid=(3, 4, 6))
    vidaccel.accelerate(model, "window")
    assert vidaccel.summary(model, print_summary=False)["transformers"][0]["attention_path"] == "sdpa_swap"
    attn = model.transformer_blocks[0].attn1
    real = attn.processor
    attn.processor = lambda attn_module, hidden_states, encoder_hidden_states, **kw: (hidden_states,
                                                                                      encoder_hidden_states)
    try:
        with pytest.raises(RuntimeError, match="native attention backend"):
            with torch.no_grad():
                model(**inputs)
    finally:
        attn.processor = real
    vidaccel.remove(model)


def test_pipeline_runs_unchanged_after_errors():
    pipe = wan_pipeline()
    kw = dict(prompt="a red circle", height=32, width=48, num_frames=5, num_inference_steps=2, output_type="pt")
    reference = pipe(**kw, generator=torch.Generator().manual_seed(0)).frames
    for bad in ["nope", vidaccel.WindowAttentionConfig(kernel=(1, 9, 9), dilation=(1, 3, 3))]:
        try:
            vidaccel.accelerate(pipe, bad)
            pipe(**kw, generator=torch.Generator().manual_seed(0))
        except (ValueError, TypeError):
            pass
        vidaccel.remove(pipe)
        assert torch.equal(pipe(**kw, generator=torch.Generator().manual_seed(0)).frames, reference)


def test_remove_without_accelerate_is_harmless(model_and_reference):
    vidaccel.remove(model_and_reference[0])
    _still_unchanged(*model_and_reference)


def test_remove_is_exact_when_diffusers_created_the_hook_registry_first():
    """diffusers' `cache_context` creates a hook registry on the transformer; remove keeps that
    registry but leaves no `forward` instance attribute behind."""
    model = wan_transformer()
    with model.cache_context("cond"):
        pass
    before = dict(model.__dict__)
    vidaccel.accelerate(model, "window")
    vidaccel.enable_kv_cache(model)
    vidaccel.disable_kv_cache(model)
    vidaccel.remove(model)
    assert set(model.__dict__) == set(before) and "forward" not in model.__dict__
    assert model._diffusers_hook is before["_diffusers_hook"] and not model._diffusers_hook.hooks


def test_accelerate_refuses_a_freeswim_model_and_block_reuse_stacks_on_it():
    model = wan_transformer()
    vidaccel.enable_freeswim(model)
    with pytest.raises(RuntimeError, match="disable_freeswim"):
        vidaccel.accelerate(model, "window")
    assert not hasattr(model, "_vidaccel_sparse_attention")
    vidaccel.enable_block_reuse(model, vidaccel.BlockReuseConfig(background_blocks=[0]))  # tests/test_freeswim_reuse.py
    vidaccel.disable_freeswim(model)
    vidaccel.disable_block_reuse(model)
    assert "_vidaccel_block_reuse" not in model.__dict__ and "_vidaccel_freeswim" not in model.__dict__
