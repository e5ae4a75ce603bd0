"""FreeSwim on every class whose adapter says it runs there (the ``freeswim`` feature), and its reason elsewhere.

Transformer level, on the tiny models of tests/tiny_families.py: a FreeSwim window covering the whole grid (the
cross-attention override on, the full branch every step) reproduces the dense model over a two-step loop with CFG
(fp32, <= 1e-5 relative) - for Wan-VACE that needs its control hints in the full branch too; a small window changes
the output; `disable_freeswim` is exact. Pipeline level, `FreeSwimPipeline` on SkyReelsV2Pipeline, WanVACEPipeline
and a Wan2.2-style WanPipeline with `transformer_2` (tiny pipelines of `vidaccel.tiny.families`): a window covering
the target grid reproduces the plain pipeline at the target size. Every other class refuses with its reason.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

import vidaccel
from tiny_families import FAMILIES
from vidaccel.core.adapters import ADAPTERS, BUILTIN_CLASSES
from vidaccel.freeswim import FreeSwimConfig, disable_freeswim, enable_freeswim, freeswim_report
from vidaccel.pipelines import FreeSwimPipeline
from vidaccel.tiny.families import tiny_pipeline, tiny_transformer

FREESWIM = sorted(name for name in BUILTIN_CLASSES if ADAPTERS[name].freeswim)
REFUSED = sorted(set(BUILTIN_CLASSES) - set(FREESWIM))
GRID = (4, 4, 6)
# the classes, and SkyReels-V2 with diffusion forcing's causal mask over blocks of 2 latent frames
CASES = {name: (FAMILIES[name], {}) for name in FREESWIM}
CASES["SkyReelsV2Transformer3DModel+causal"] = (FAMILIES["SkyReelsV2Transformer3DModel"], {"num_frame_per_block": 2})


def _loop(fam, model, steps=2):
    """Conditional and unconditional calls per step (diffusers' cache_context with the step index)."""
    outs = []
    with torch.no_grad():
        for step in range(steps):
            inputs = fam.inputs(GRID, 1, 0, 900.0 - 400 * step)
            for branch in ("cond", "uncond"):
                kw = dict(inputs)
                if branch == "uncond":
                    kw[fam.text_key] = -kw[fam.text_key]
                with model.cache_context(branch, step_index=step):
                    out = model(**kw)
                outs.append((out[0] if isinstance(out, tuple) else out.sample).clone())
    model._reset_stateful_cache()
    return outs


def test_the_flag_covers_the_wan_like_flow_matching_classes():
    assert FREESWIM == ["ChronoEditTransformer3DModel", "SkyReelsV2Transformer3DModel", "WanTransformer3DModel",
                        "WanVACETransformer3DModel"]
    rows = {r["class"]: r["features"]["freeswim"] for r in vidaccel.supported_models()}
    assert sorted(c for c, yes in rows.items() if yes) == FREESWIM


@pytest.mark.parametrize("case", sorted(CASES))
def test_whole_grid_window_reproduces_dense_small_window_changes_disable_is_exact(case):
    fam, overrides = CASES[case]
    name = fam.class_name
    model = tiny_transformer(name, 0, **overrides)
    dense = _loop(fam, model)
    before = dict(model.__dict__)
    enable_freeswim(model, FreeSwimConfig(window=GRID[1:], cache_steps=1))  # the window is the whole grid
    try:
        whole = _loop(fam, model)
        counts = freeswim_report(model)[0]["counts"]
    finally:
        disable_freeswim(model)
    assert counts["guide_calls"] == 2 and counts["cross_attention_reused"] == 2 * len(ADAPTERS[name].blocks(model))
    for got, want in zip(whole, dense):
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    if name == "WanVACETransformer3DModel":
        assert counts["control_window_calls"] == 4 * len(model.vace_blocks)  # 2 steps x (cond, uncond)
        enable_freeswim(model, FreeSwimConfig(window=GRID[1:]))
        _loop(fam, model, steps=1)
        assert "control blocks (outside the dual path, shared by both branches): 4 window" in str(
            vidaccel.summary(model, print_summary=False))
        disable_freeswim(model)
    enable_freeswim(model, FreeSwimConfig(window=(1, 2), cache_steps=2))
    try:
        small = _loop(fam, model)
    finally:
        disable_freeswim(model)
    assert all((s - d).abs().max() > 1e-3 * d.abs().max() for s, d in zip(small, dense))
    assert all(torch.equal(a, b) for a, b in zip(_loop(fam, model), dense))
    assert set(model.__dict__) == set(before)


@pytest.mark.parametrize("name", REFUSED)
def test_other_classes_refuse_with_their_reason(name):
    model = FAMILIES[name].build(0)
    reason = ADAPTERS[name].freeswim_refusal()
    assert reason
    with pytest.raises(TypeError, match=re.escape(f"FreeSwim does not run on {name}: {reason}")):
        enable_freeswim(model)
    assert not hasattr(model, "_vidaccel_freeswim") and not hasattr(model, "_diffusers_hook")


def _wan22(seed=0):
    spec = tiny_pipeline("WanPipeline")
    return spec, spec.build(seed, transformer_2=tiny_transformer("WanTransformer3DModel", seed + 1), boundary_ratio=0.5)


@pytest.mark.parametrize("which", ["SkyReelsV2Pipeline", "WanVACEPipeline", "WanPipeline+transformer_2"])
def test_freeswim_pipeline_whole_target_window_equals_the_plain_pipeline(which):
    spec, pipe = _wan22() if which.endswith("transformer_2") else (tiny_pipeline(which), None)
    pipe = pipe or spec.build(0)
    height, width = 64, 48  # token grid (2, 4, 3): the window of base size 64x48 covers it
    call = spec.call_kwargs(height=height, width=width)
    embeds = {k: call[k] for k in ("prompt_embeds", "negative_prompt_embeds")}
    with torch.no_grad():
        reference = pipe(**call, generator=torch.Generator().manual_seed(0)).frames
    clip = torch.rand(1, 5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fs = FreeSwimPipeline(pipe, FreeSwimConfig(base_size=(height, width), cache_steps=1))

    def run(dual_path):
        return fs(video=clip, height=height, width=width, num_inference_steps=4, strength=0.75, guidance_scale=5.0,
                  output_type="latent", generator=torch.Generator().manual_seed(1), dual_path=dual_path,
                  **embeds).frames

    plain, ours = run(False), run(True)
    reports = freeswim_report(pipe)
    assert sum(r["counts"]["guide_calls"] for r in reports) == 3  # 3 refinement steps, each with its full branch
    if which.endswith("transformer_2"):
        assert all(r["counts"]["guide_calls"] > 0 for r in reports)  # both transformers ran the dual path
    assert (ours - plain).abs().max() <= 1e-5 * plain.abs().max()
    fs.remove()
    with torch.no_grad():
        assert torch.equal(pipe(**call, generator=torch.Generator().manual_seed(0)).frames, reference)


def test_a_registered_adapter_claiming_freeswim_without_cross_attention_is_refused_with_the_fix():
    from diffusers import WanTransformer3DModel

    class NoCrossTransformer3DModel(WanTransformer3DModel):
        pass

    adapter = dataclasses.replace(ADAPTERS["WanTransformer3DModel"], class_name="NoCrossTransformer3DModel",
                                  cross_attention=None, text_inputs=())
    vidaccel.register_adapter(adapter)
    try:
        torch.manual_seed(0)
        model = NoCrossTransformer3DModel(**{k: v for k, v in FAMILIES["WanTransformer3DModel"].build(0).config.items()
                                             if not k.startswith("_")})
        with pytest.raises(ValueError, match="has no module in its cross_attention list"):
            enable_freeswim(model)
        assert not hasattr(model, "_vidaccel_freeswim")
    finally:
        vidaccel.unregister_adapter("NoCrossTransformer3DModel")
