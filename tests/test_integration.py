"""accelerate / remove / summary on tiny random-weight models of all four families."""

import pytest
import torch

import vidaccel
from tiny_models import TRANSFORMERS, family_inputs, wan_pipeline

FAMILIES = ["wan", "hunyuan", "cogvideox", "ltx"]
WHOLE = vidaccel.WindowAttentionConfig(kernel=(99, 99, 99))
SMALL = vidaccel.WindowAttentionConfig(kernel=(1, 3, 3))


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs)[0]


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request):
    return request.param, TRANSFORMERS[request.param]()


def test_whole_grid_window_is_dense_small_window_is_not_and_remove_is_exact(family_model):
    family, model = family_model
    inputs = family_inputs(family, grid=(3, 4, 6), batch=2)  # batch 2 = a CFG batch
    dense = _run(model, inputs)
    state_before = dict(model.__dict__)
    vidaccel.accelerate(model, WHOLE)
    whole = _run(model, inputs)
    assert ((whole - dense).abs().max() / dense.abs().max()) <= 1e-5
    vidaccel.remove(model)
    vidaccel.accelerate(model, SMALL)
    small = _run(model, inputs)
    info = vidaccel.summary(model, print_summary=False)["transformers"][0]
    assert info["sparse_calls"] == info["layers"]  # one sparse call per self-attention layer
    assert (small - dense).abs().max() > 1e-3
    vidaccel.remove(model)
    assert torch.equal(_run(model, inputs), dense)
    assert set(model.__dict__) == set(state_before)


def test_sparse_output_equals_reference_sparse_model(family_model):
    """The hooked model computes exactly the masked attention: compare against replacing SDPA by the
    naive masked softmax over the pattern's dense mask."""
    family, model = family_model
    grid = (3, 4, 6)
    inputs = family_inputs(family, grid=grid, batch=2, seed=3)
    vidaccel.accelerate(model, SMALL)
    out = _run(model, inputs)
    vidaccel.remove(model)
    pattern = vidaccel.WindowPattern((1, 3, 3))
    vis = pattern.dense_mask(grid)
    n = vis.shape[0]
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def masked_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False):
        q, k, v = query, key, value
        S = q.shape[-2]
        if S != k.shape[-2] or S < n:  # cross-attention: untouched
            return real_sdpa(q, k, v, attn_mask=attn_mask, scale=scale)
        text = S - n
        m = torch.ones(S, S, dtype=torch.bool)
        sl = slice(text, S) if family == "cogvideox" else slice(0, n)
        m[sl, sl] = vis
        if attn_mask is not None:
            m = m & attn_mask
        return real_sdpa(q, k, v, attn_mask=m, scale=scale)

    torch.nn.functional.scaled_dot_product_attention = masked_sdpa
    try:
        expected = _run(model, inputs)
    finally:
        torch.nn.functional.scaled_dot_product_attention = real_sdpa
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_second_resolution_builds_a_new_correct_plan(family_model):
    family, model = family_model
    vidaccel.accelerate(model, SMALL)
    _run(model, family_inputs(family, grid=(3, 4, 6)))
    second = family_inputs(family, grid=(2, 6, 4), seed=5)
    out = _run(model, second)
    info = vidaccel.summary(model, print_summary=False)["transformers"][0]
    assert info["plan_cache"]["misses"] == 2 and info["grid"]["grid"] == [2, 6, 4]
    vidaccel.remove(model)
    vidaccel.accelerate(model, SMALL)  # fresh state that has only ever seen the second grid
    assert torch.equal(_run(model, second), out)
    vidaccel.remove(model)


PIPE_KW = dict(prompt="a red circle moving right", negative_prompt="blue", height=64, width=96, num_frames=9,
               num_inference_steps=3, guidance_scale=5.0, output_type="pt")


def _pipe_run(pipe, **overrides):
    return pipe(**{**PIPE_KW, **overrides}, generator=torch.Generator().manual_seed(0)).frames


def test_wan22_two_transformer_pipeline_with_cfg():
    pipe = wan_pipeline(two_transformers=True)
    dense = _pipe_run(pipe)
    vidaccel.accelerate(pipe, WHOLE)
    assert (_pipe_run(pipe) - dense).abs().max() <= 1e-5
    vidaccel.remove(pipe)
    config = vidaccel.RadialAttentionConfig(decay_factor=0.5, dense_steps=1, dense_layers=1, block_size=4)
    vidaccel.accelerate(pipe, config)
    sparse = _pipe_run(pipe)
    info = vidaccel.summary(pipe, print_summary=False)
    t1, t2 = info["transformers"]
    # 3 steps x (cond + uncond); boundary 0.5 splits the steps between the two transformers
    assert t1["sparse_calls"] + t2["sparse_calls"] > 0 and t1["dense_calls"] > 0
    assert (sparse - dense).abs().max() > 1e-4
    # a second resolution in the same pipeline, then exact restore
    _pipe_run(pipe, height=32, width=64)
    vidaccel.remove(pipe)
    assert torch.equal(_pipe_run(pipe), dense)


def test_dense_warmup_by_step_and_layer():
    pipe = wan_pipeline()
    config = vidaccel.RadialAttentionConfig(decay_factor=0.5, dense_steps=2, dense_layers=1, block_size=4)
    vidaccel.accelerate(pipe, config)
    _pipe_run(pipe, num_inference_steps=4)
    state = pipe.transformer._vidaccel_sparse_attention
    # layer 0 always dense; layer 1 dense for steps 0-1 (x2 for CFG) and sparse for steps 2-3
    assert state.dense_calls == {0: 8, 1: 4} and state.sparse_calls == {1: 4}
    vidaccel.remove(pipe)


def test_radial_density_at_720p_reported_by_summary():
    pipe = wan_pipeline()
    vidaccel.accelerate(pipe, "radial")
    info = vidaccel.summary(pipe, grid=(21, 45, 80), print_summary=False)["transformers"][0]
    assert 0.15 <= info["grid"]["density"] <= 0.40
    assert "dense (dense_layers)" in info["layer_groups"][0]["mode"]
    text = str(vidaccel.summary(pipe, grid=(21, 45, 80), print_summary=False))
    assert "token density 24.5%" in text
    vidaccel.remove(pipe)


def test_wan_image_to_video_transformer():
    """Wan I2V: image K/V in cross-attention; self-attention is the sparse one."""
    model = TRANSFORMERS["wan"](image_dim=12)
    inputs = family_inputs("wan", grid=(3, 4, 6))
    inputs["encoder_hidden_states_image"] = torch.randn(2, 3, 12, generator=torch.Generator().manual_seed(1))
    dense = _run(model, inputs)
    vidaccel.accelerate(model, WHOLE)
    assert ((_run(model, inputs) - dense).abs().max() / dense.abs().max()) <= 1e-5
    vidaccel.remove(model)
    vidaccel.accelerate(model, SMALL)
    assert (_run(model, inputs) - dense).abs().max() > 1e-3
    vidaccel.remove(model)
    assert torch.equal(_run(model, inputs), dense)


def test_summary_block_density_from_the_plan_cache_or_on_request():
    model = TRANSFORMERS["wan"]()
    vidaccel.accelerate(model, SMALL)
    _run(model, family_inputs("wan", grid=(3, 4, 6)))
    cached = vidaccel.summary(model, print_summary=False)["transformers"][0]["grid"]
    assert cached["tile"] is not None and cached["block_density"] >= cached["density"]
    other = vidaccel.summary(model, grid=(5, 8, 8), print_summary=False)["transformers"][0]["grid"]
    assert other["tile"] is None and "no plan built yet" in str(vidaccel.summary(model, grid=(5, 8, 8),
                                                                                 print_summary=False))
    built = vidaccel.summary(model, grid=(5, 8, 8), blocks=True, print_summary=False)["transformers"][0]["grid"]
    assert built["tile"] is not None and built["density"] == other["density"]
    vidaccel.remove(model)


def test_torch_compile_of_an_accelerated_transformer_matches_eager():
    """The attention modules run eagerly inside the compiled model (graph break, see sdpa_swap)."""
    model = TRANSFORMERS["wan"]()
    inputs = family_inputs("wan", grid=(3, 4, 6))
    vidaccel.accelerate(model, SMALL)
    eager = _run(model, inputs)
    compiled = torch.compile(model)
    with torch.no_grad():
        out = compiled(**inputs)[0]
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    assert vidaccel.summary(model, print_summary=False)["transformers"][0]["sparse_calls"] == 4
    vidaccel.remove(model)
