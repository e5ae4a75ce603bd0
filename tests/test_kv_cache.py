"""Cross-attention K/V cache: bit-identical outputs, fewer K/V projections (counted), exact keys and removal."""

import pytest
import torch
import torch.nn.functional as F
from tiny_models import cogvideox_transformer, family_inputs, hunyuan_transformer, ltx_transformer, wan_pipeline, \
    wan_transformer
from torch.overrides import TorchFunctionMode

import vidaccel
from vidaccel.caches.kv_cache import PROJECTION_HOOK, PROMPT_HOOK


class CountLinear(TorchFunctionMode):
    """Counts F.linear calls whose weight is one of `weights` (the projections that really ran)."""

    def __init__(self, weights):
        super().__init__()
        self.ids = {id(w) for w in weights}
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and id(args[1]) in self.ids:
            self.calls += 1
        return func(*args, **kwargs)


def _kv_weights(model, names=("to_k", "to_v", "to_kv", "add_k_proj", "add_v_proj", "to_added_kv")):
    blocks = getattr(model, "blocks", None) or model.transformer_blocks
    return [getattr(b.attn2, n).weight for b in blocks for n in names if getattr(b.attn2, n, None) is not None]


def _has_vidaccel_hooks(model) -> bool:
    return any(name.startswith("vidaccel") for m in model.modules()
               for name in getattr(getattr(m, "_diffusers_hook", None), "hooks", {}))


PIPE_KW = dict(prompt="a red circle moving right", negative_prompt="a blue square", height=32, width=32,
               num_frames=5, num_inference_steps=3, guidance_scale=5.0, output_type="pt")


def _generate(pipe):
    return pipe(**PIPE_KW, generator=torch.Generator().manual_seed(0)).frames


def test_wan_pipeline_bit_identical_with_fewer_projections():
    pipe = wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    weights = _kv_weights(pipe.transformer)
    with CountLinear(weights) as base:
        reference = _generate(pipe)
    vidaccel.enable_kv_cache(pipe)
    with CountLinear(weights) as cached:
        out = _generate(pipe)
    assert torch.equal(out, reference)
    layers, branches, steps = len(pipe.transformer.blocks), 2, 3
    assert base.calls == 2 * layers * branches * steps
    assert cached.calls == 2 * layers * branches  # once per prompt and branch, at the first step
    info = vidaccel.cache_summary(pipe)[0]["kv_cache"]
    assert info["hits"] == 2 * layers * branches * (steps - 1)
    # diffusers reset the stateful hooks after the call: nothing is held between generations
    assert not pipe.transformer._vidaccel_kv_cache.values and not pipe.transformer._vidaccel_kv_cache.prompts
    with CountLinear(weights) as again:
        assert torch.equal(_generate(pipe), reference)
    assert again.calls == cached.calls
    vidaccel.disable_caches(pipe)
    assert not _has_vidaccel_hooks(pipe.transformer) and "_vidaccel_kv_cache" not in pipe.transformer.__dict__
    assert torch.equal(_generate(pipe), reference)


def _calls(model, kwargs_list, branches, weights):
    """Call the transformer like a pipeline: one cache_context per call; returns outputs and projection count."""
    outs = []
    with CountLinear(weights) as counter:
        for step, (kwargs, branch) in enumerate(zip(kwargs_list, branches)):
            with model.cache_context(branch, step_index=step // 2):
                outs.append(model(**kwargs)[0])
    return outs, counter.calls


def _wan_i2v_transformer():
    """tiny_models' Wan config plus Wan2.1-I2V's image K/V projections (added_kv_proj_dim = inner dim)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32, image_dim=12, added_kv_proj_dim=16,
    ).eval()


@pytest.mark.parametrize("fused", [False, True])
def test_wan_i2v_image_kv_and_fused_projections(fused):
    model = _wan_i2v_transformer()
    if fused:
        for block in model.blocks:
            block.attn2.fuse_projections()
    g = torch.Generator().manual_seed(1)
    base = family_inputs("wan", grid=(2, 3, 4), batch=1)
    # the I2V processor takes the last 512 context tokens as text, the rest as image tokens
    text = {b: torch.randn(1, 512, 16, generator=g) for b in ("cond", "uncond")}
    image = torch.randn(1, 4, 12, generator=g)
    calls = []
    for step in range(3):
        latents = torch.randn(1, 4, 2, 6, 8, generator=g)
        for branch in ("cond", "uncond"):
            calls.append(dict(base, hidden_states=latents, encoder_hidden_states=text[branch],
                              encoder_hidden_states_image=image, timestep=torch.tensor([900.0 - 300 * step])))
    branches = ["cond", "uncond"] * 3
    used = ("to_kv", "to_added_kv") if fused else ("to_k", "to_v", "add_k_proj", "add_v_proj")
    weights = _kv_weights(model, used)
    assert len(weights) == (4 if fused else 8)  # text K/V and image K/V per block
    with torch.no_grad():
        reference, n_base = _calls(model, calls, branches, weights)
        vidaccel.enable_kv_cache(model)
        cached, n_cached = _calls(model, calls, branches, weights)
    assert all(torch.equal(a, b) for a, b in zip(cached, reference))
    assert n_base == 3 * 2 * len(weights) and n_cached == 2 * len(weights)
    vidaccel.disable_kv_cache(model)
    assert not _has_vidaccel_hooks(model)


def test_ltx_bit_identical_and_fewer_projections():
    model = ltx_transformer()
    base = family_inputs("ltx", grid=(2, 3, 4), batch=2)
    g = torch.Generator().manual_seed(2)
    calls = [dict(base, hidden_states=torch.randn(2, 24, 4, generator=g), timestep=torch.tensor([900 - 300 * s] * 2))
             for s in range(3)]
    weights = _kv_weights(model)
    with torch.no_grad():
        reference, n_base = _calls(model, calls, ["cond_uncond"] * 3, weights)
        vidaccel.enable_kv_cache(model)
        cached, n_cached = _calls(model, calls, ["cond_uncond"] * 3, weights)
    assert all(torch.equal(a, b) for a, b in zip(cached, reference))
    assert n_base == 3 * len(weights) and n_cached == len(weights)
    vidaccel.disable_kv_cache(model)


def test_branches_and_prompts_never_mix():
    """Keys are (projection, CFG branch, prompt content): same storage with new content is a new prompt."""
    model = wan_transformer()
    base = family_inputs("wan", grid=(2, 2, 3), batch=1)
    g = torch.Generator().manual_seed(3)
    prompt_a, prompt_b = torch.randn(1, 5, 16, generator=g), torch.randn(1, 5, 16, generator=g)
    shared = prompt_a.clone()  # one tensor object whose content changes in place (same data_ptr)
    weights = _kv_weights(model)
    with torch.no_grad():
        vidaccel.enable_kv_cache(model)
        state = model._vidaccel_kv_cache
        outs = []
        with CountLinear(weights) as counter:
            for step, (branch, ehs) in enumerate([("cond", shared), ("uncond", prompt_b), ("cond", shared)]):
                if step == 2:
                    shared.copy_(prompt_b)  # in place: must not hit the entry of prompt_a
                with model.cache_context(branch, step_index=step):
                    outs.append(model(**dict(base, encoder_hidden_states=ehs))[0])
        assert {key[1] for key in state.values} == {"cond", "uncond"}
        assert len(state.prompts) == 2  # prompt_a and prompt_b (the changed tensor matched prompt_b by content)
        assert counter.calls == 3 * len(weights)  # no call reused another branch's or prompt's K/V
        vidaccel.disable_kv_cache(model)
        expected = [model(**dict(base, encoder_hidden_states=e))[0] for e in (prompt_a, prompt_b, prompt_b)]
    assert all(torch.equal(a, b) for a, b in zip(outs, expected))


def test_same_content_new_tensor_is_a_hit_and_lru_bound():
    model = wan_transformer()
    base = family_inputs("wan", grid=(2, 2, 3), batch=1)
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randn(1, 5, 16, generator=g) for _ in range(3)]
    with torch.no_grad():
        vidaccel.enable_kv_cache(model, max_prompts=2)
        state = model._vidaccel_kv_cache
        model(**dict(base, encoder_hidden_states=prompts[0]))
        misses = state.misses
        model(**dict(base, encoder_hidden_states=prompts[0].clone()))  # new tensor, same content
        assert state.misses == misses and state.hits == misses
        model(**dict(base, encoder_hidden_states=prompts[1]))
        model(**dict(base, encoder_hidden_states=prompts[2]))
        assert len(state.prompts) == 2 and all(k[2] != 0 for k in state.values)  # prompt 0 dropped with its K/V
        vidaccel.disable_caches(model)


@pytest.mark.parametrize("make", [cogvideox_transformer, hunyuan_transformer])
def test_joint_attention_models_are_refused_with_the_reason(make):
    model = make()
    with pytest.raises(ValueError, match="joint attention"):
        vidaccel.enable_kv_cache(model)
    assert not _has_vidaccel_hooks(model) and "_vidaccel_kv_cache" not in model.__dict__


def test_errors_leave_the_model_unchanged():
    model = wan_transformer()
    with pytest.raises(ValueError, match="max_prompts"):
        vidaccel.enable_kv_cache(model, max_prompts=0)
    vidaccel.enable_kv_cache(model)
    with pytest.raises(RuntimeError, match="already enabled"):
        vidaccel.enable_kv_cache(model)
    registry = model._diffusers_hook
    assert PROMPT_HOOK in registry.hooks
    assert all(PROJECTION_HOOK in b.attn2.to_k._diffusers_hook.hooks for b in model.blocks)
    vidaccel.disable_caches(model)
    assert not _has_vidaccel_hooks(model)
    assert "forward" not in model.__dict__ and not hasattr(model.blocks[0].attn2.to_k, "_diffusers_hook")


def test_inference_mode_tensors_are_compared_by_content():
    """Inference tensors have no version counter: identity alone is never trusted, content decides."""
    model = wan_transformer()
    base = family_inputs("wan", grid=(2, 2, 3), batch=1)
    g = torch.Generator().manual_seed(6)
    weights = _kv_weights(model)
    with torch.inference_mode():
        prompt = torch.randn(1, 5, 16, generator=g)
        other = torch.randn(1, 5, 16, generator=g)
        reference = [model(**dict(base, encoder_hidden_states=e))[0] for e in (prompt, prompt, other)]
        vidaccel.enable_kv_cache(model)
        with CountLinear(weights) as counter:
            first = model(**dict(base, encoder_hidden_states=prompt))[0]
            second = model(**dict(base, encoder_hidden_states=prompt))[0]
            prompt.copy_(other)  # allowed in inference mode, invisible to a version counter
            third = model(**dict(base, encoder_hidden_states=prompt))[0]
        vidaccel.disable_caches(model)
    assert torch.equal(first, reference[0]) and torch.equal(second, reference[1]) and torch.equal(third, reference[2])
    assert counter.calls == 2 * len(weights)


def test_wan22_both_transformers_cached_and_profiled():
    pipe = wan_pipeline(two_transformers=True)
    pipe.set_progress_bar_config(disable=True)
    reference = _generate(pipe)
    vidaccel.enable_kv_cache(pipe)
    assert torch.equal(_generate(pipe), reference)
    entries = vidaccel.cache_summary(pipe)
    assert [e["attribute"] for e in entries] == ["transformer", "transformer_2"]
    assert all(e["kv_cache"]["misses"] == 2 * 2 * 2 for e in entries)  # 2 projections x 2 blocks x 2 branches
    vidaccel.disable_caches(pipe)
    prof = vidaccel.profile(pipe, "a red circle", height=32, width=32, num_frames=5, num_inference_steps=3,
                            query_rows=4)
    assert [m.attribute for m in prof.models] == ["transformer", "transformer_2"]
    assert all(len(b.R_per_step) == 3 for m in prof.models for b in m.blocks)
