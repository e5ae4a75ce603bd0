"""Every supported transformer class, on a tiny random-weight model of the real diffusers class.

Parametrized over `tiny_families.FAMILIES` (one builder per class, shared by all tests here): a window
covering the whole grid reproduces dense attention, a small window changes the output, `remove` is
exact, CFG batches and a second resolution work, and block reuse, the profiler, the K/V cache (where it
applies) and `summary` run on each class. Unsupported classes raise with their reason.
"""

from __future__ import annotations

import re

import pytest
import torch

import vidaccel
from tiny_families import FAMILIES
from vidaccel.core.adapters import ADAPTERS, BUILTIN_CLASSES, UNSUPPORTED, adapter_for

WHOLE = vidaccel.WindowAttentionConfig(kernel=(99, 99, 99))
SMALL = vidaccel.WindowAttentionConfig(kernel=(1, 3, 3))
GRID, GRID2 = (3, 4, 6), (2, 6, 4)
IDS = list(FAMILIES)


def _out(output):
    if isinstance(output, torch.Tensor):
        return output
    return output[0] if isinstance(output, (tuple, list)) else output.sample


def _run(model, inputs):
    with torch.no_grad():
        return _out(model(**inputs)).clone()


SLOW_CACHES = {"WanAnimateTransformer3DModel"}  # its motion encoder makes each call the slowest of all


@pytest.fixture(scope="module", params=IDS)
def family(request):
    fam = FAMILIES[request.param]
    return fam, fam.build(0)


@pytest.fixture(scope="module", params=[pytest.param(i, marks=pytest.mark.slow) if FAMILIES[i].class_name in SLOW_CACHES
                                        else i for i in IDS])
def cache_family(request):
    """The same models for the cache and profiler tests (several denoising loops each); the slowest marked slow."""
    fam = FAMILIES[request.param]
    return fam, fam.build(0)


_REFERENCE: dict = {}


def _reference(fam, model):
    """The unmodified model's outputs over `_steps`, computed once per model."""
    key = id(fam)  # FAMILIES keeps each row alive (a model's id may be reused once its fixture is gone)
    if key not in _REFERENCE:
        _REFERENCE[key] = _steps(fam, model)
    return _REFERENCE[key]


def test_every_builtin_adapter_has_a_tiny_model_here():
    assert {f.class_name for f in FAMILIES.values()} == set(BUILTIN_CLASSES)
    assert len(BUILTIN_CLASSES) >= 12


def test_whole_grid_is_dense_small_window_is_not_remove_is_exact(family):
    fam, model = family
    inputs = fam.inputs(GRID, 2, 0, 500.0)  # batch 2 = a CFG batch
    dense = _run(model, inputs)
    before = dict(model.__dict__)
    vidaccel.accelerate(model, WHOLE)
    try:
        whole = _run(model, inputs)
    finally:
        vidaccel.remove(model)
    assert ((whole - dense).abs().max() / dense.abs().max()) <= 1e-5
    vidaccel.accelerate(model, SMALL)
    try:
        small = _run(model, inputs)
        info = vidaccel.summary(model, print_summary=False)["transformers"][0]
        state = model._vidaccel_sparse_attention
        assert info["layers"] == len(adapter_for(model).self_attention(model)) > 0
        assert set(state.sparse_calls) == set(range(info["layers"]))  # every self-attention layer went sparse
        assert info["grid"]["grid"] == list(GRID)
        assert (small - dense).abs().max() > 1e-4
    finally:
        vidaccel.remove(model)
    assert torch.equal(_run(model, inputs), dense)
    assert set(model.__dict__) == set(before)


def test_second_resolution_and_single_prompt(family):
    fam, model = family
    vidaccel.accelerate(model, SMALL)
    try:
        _run(model, fam.inputs(GRID, 1, 1, 500.0))
        second = fam.inputs(GRID2, 1, 5, 500.0)
        out = _run(model, second)
        info = vidaccel.summary(model, print_summary=False)["transformers"][0]
        assert info["plan_cache"]["misses"] == 2 and info["grid"]["grid"] == list(GRID2)
    finally:
        vidaccel.remove(model)
    vidaccel.accelerate(model, SMALL)  # a fresh state that has only seen the second grid
    try:
        assert torch.equal(_run(model, second), out)
    finally:
        vidaccel.remove(model)


def _steps(fam, model, steps=3, batch=1, reset=True):
    """A tiny denoising loop: per step a conditional and an unconditional call (diffusers' cache_context where
    the class has it), decreasing timesteps; returns the outputs."""
    g = torch.Generator().manual_seed(7)
    outs = []
    for step in range(steps):
        inputs = fam.inputs(GRID, batch, 0, 900.0 - 300 * step)
        for branch in ("cond", "uncond"):
            kw = dict(inputs)
            if branch == "uncond":
                kw[fam.text_key] = kw[fam.text_key] + torch.randn(kw[fam.text_key].shape, generator=g)
            if hasattr(model, "cache_context"):
                with model.cache_context(branch):
                    outs.append(_run(model, kw))
            else:
                outs.append(_run(model, kw))
    if reset and hasattr(model, "_reset_stateful_cache"):  # what a pipeline does at its end
        model._reset_stateful_cache()
    return outs


def test_block_reuse_reuses_and_disable_is_exact(cache_family):
    fam, model = cache_family
    reference = _reference(fam, model)
    n = len(adapter_for(model).blocks(model))
    vidaccel.enable_block_reuse(model, vidaccel.BlockReuseConfig(background_blocks=list(range(n)), warmup_steps=1,
                                                                 interval=2))
    try:
        reused = _steps(fam, model, reset=False)
        report = vidaccel.cache_summary(model)
        state = model._vidaccel_block_reuse
        assert state.reused_block_calls > 0, report
        # conditional and unconditional passes keep separate deltas, with or without diffusers' cache_context
        assert len(state.branches) == 2, sorted(state.branches)
        if hasattr(model, "_reset_stateful_cache"):
            model._reset_stateful_cache()
        for a, b in zip(reused[:2], reference[:2]):  # the warm-up step computes every block
            assert torch.equal(a, b)
        assert all(torch.isfinite(o).all() for o in reused)
        assert vidaccel.summary(model, print_summary=False)["caches"]
    finally:
        vidaccel.disable_block_reuse(model)
    assert torch.equal(_steps(fam, model, steps=1)[0], reference[0])


def test_kv_cache_is_exact_or_refused_with_the_reason(cache_family):
    fam, model = cache_family
    adapter = adapter_for(model)
    if not adapter.kv_cache:
        with pytest.raises(ValueError, match="does not apply"):
            vidaccel.enable_kv_cache(model)
        return
    reference = _reference(fam, model)
    vidaccel.enable_kv_cache(model)
    try:
        cached = _steps(fam, model)
        hits = model._vidaccel_kv_cache.hits
    finally:
        vidaccel.disable_kv_cache(model)
    assert hits > 0
    assert all(torch.equal(a, b) for a, b in zip(cached, reference))


class _LoopPipeline:
    """The least a pipeline must do for `vidaccel.profile`: run the transformer over a schedule (cond + uncond)."""

    def __init__(self, fam, model):
        self.fam, self.transformer = fam, model

    def __call__(self, prompt=None, generator=None, num_inference_steps=4, output_type="latent", **kwargs):
        return _steps(self.fam, self.transformer, steps=num_inference_steps)


def test_profiler_and_summary_run(cache_family):
    fam, model = cache_family
    profile = vidaccel.profile(_LoopPipeline(fam, model), "a red circle", num_inference_steps=3, query_rows=8)
    entry = profile.models[0]
    assert entry.model_class == type(model).__name__
    assert len(entry.blocks) == len(adapter_for(model).blocks(model))
    assert all(b.R == b.R for b in entry.blocks)  # measured (not NaN) for every block
    vidaccel.accelerate(model, "radial")
    try:
        text = str(vidaccel.summary(model, grid=(4, 8, 8), print_summary=False))
        assert type(model).__name__ in text and "radial" in text
    finally:
        vidaccel.remove(model)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_classes_raise_with_their_reason(name):
    fake = type(name, (torch.nn.Module,), {})()  # the class name is what vidaccel looks up
    with pytest.raises(TypeError, match="does not support") as err:
        vidaccel.accelerate(fake, "window")
    assert UNSUPPORTED[name] in str(err.value)
    with pytest.raises(TypeError, match=re.escape(UNSUPPORTED[name])):
        vidaccel.enable_block_reuse(fake, vidaccel.BlockReuseConfig(background_blocks=[0]))


def test_unsupported_classes_exist_in_diffusers_and_are_not_adapted():
    import diffusers

    for name in list(UNSUPPORTED) + list(ADAPTERS):
        assert hasattr(diffusers, name), name
    assert not set(UNSUPPORTED) & set(ADAPTERS)
    for adapter in ADAPTERS.values():
        for pipeline in adapter.pipelines:
            assert hasattr(diffusers, pipeline), (adapter.class_name, pipeline)
