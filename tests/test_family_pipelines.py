"""The diffusers pipeline of every supported class, end to end at a tiny size, dense and accelerated.

Parametrized over `vidaccel.tiny.families.TINY_PIPELINES` (real diffusers pipeline classes with tiny random-weight
components, built offline; the transformers are the same tiny configs as tests/test_families.py). For each: a
two-step generation with CFG runs dense; `vidaccel.accelerate` with a window covering the whole grid reproduces it
(fp32, <= 1e-5 relative); a small window runs on every self-attention layer at the grid the pipeline makes and
changes the output; `vidaccel.remove` restores the dense output bit for bit.

The pipelines run from prompt embeddings, not text (the module docstring of `vidaccel.tiny.families` says why).
Every supported class has at least one pipeline here (a class without one would need its reason in `NOT_BUILT`,
checked below). Other pipelines of a class (image-to-video and video-to-video variants) run the same transformer
with other conditioning inputs; besides one text-to-video pipeline per class, the ones run here are
WanImageToVideoPipeline (CLIP image tokens), SkyReelsV2DiffusionForcingPipeline (a causal frame-block mask),
Cosmos2VideoToWorldPipeline (image-conditioned Cosmos 2), ChronoEditPipeline and WanAnimatePipeline. The other
variants listed in the adapters (e.g. HunyuanVideoImageToVideoPipeline, the Cosmos 2.5 pipelines, the remaining
image- and video-to-video pipelines) have no tiny build yet: not attempted, so no claim either way.
"""

from __future__ import annotations

import pytest
import torch

import vidaccel
from vidaccel.core.adapters import ADAPTERS, BUILTIN_CLASSES
from vidaccel.tiny.families import NOT_BUILT, TINY_PIPELINES, tiny_pipeline

WHOLE = vidaccel.WindowAttentionConfig(kernel=(99, 99, 99))
SMALL = vidaccel.WindowAttentionConfig(kernel=(1, 3, 3))


class PassThroughSafetyChecker(torch.nn.Module):
    """Stands in for NVIDIA's cosmos_guardrail checker (as diffusers' own Cosmos tests do): accepts every prompt
    and returns every video unchanged. A test double for random-weight models only."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the pipeline a device and dtype to read

    @property
    def device(self):
        return self.anchor.device

    @property
    def dtype(self):
        return self.anchor.dtype

    def check_text_safety(self, prompt):
        return True

    def check_video_safety(self, video):
        return video


def build(spec, seed=0):
    extra = {"safety_checker": PassThroughSafetyChecker()} if "safety_checker" in spec.requires else {}
    return spec.build(seed, **extra)


def generate(pipe, kwargs):
    with torch.no_grad():
        out = pipe(**kwargs, generator=torch.Generator().manual_seed(0))
    return (out.frames if hasattr(out, "frames") else out[0]).clone()


def _attributes(pipe) -> dict:
    """The attribute names of every module component (what vidaccel adds while installed)."""
    return {name: set(m.__dict__) for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}


def test_every_supported_class_has_a_tiny_pipeline_or_a_reason():
    built = {spec.transformer for spec in TINY_PIPELINES}
    assert built | set(NOT_BUILT) == set(BUILTIN_CLASSES) and not built & set(NOT_BUILT)
    for spec in TINY_PIPELINES:  # each is one of its class's pipelines in the adapter table
        assert spec.pipeline in ADAPTERS[spec.transformer].pipelines, spec.pipeline
    with pytest.raises(ValueError, match="No tiny pipeline for 'nope'"):
        tiny_pipeline("nope")
    assert tiny_pipeline("wan").pipeline == "WanPipeline" and tiny_pipeline("mochi").pipeline == "MochiPipeline"
    with pytest.raises(ValueError, match="safety_checker"):
        tiny_pipeline("cosmos").build()


@pytest.mark.parametrize("spec", TINY_PIPELINES, ids=[s.pipeline for s in TINY_PIPELINES])
def test_pipeline_runs_dense_whole_window_small_window_and_remove_is_exact(spec):
    pipe = build(spec)
    kwargs = spec.call_kwargs()
    dense = generate(pipe, kwargs)
    assert torch.isfinite(dense).all()
    if spec.pipeline == "SkyReelsV2DiffusionForcingPipeline":
        assert pipe.transformer.config.num_frame_per_block == 2  # the causal frame-block mask is on
    if spec.output == "pt":
        assert dense.shape[-2:] == spec.size[:2]
    before = _attributes(pipe)

    vidaccel.accelerate(pipe, WHOLE)
    try:
        whole = generate(pipe, kwargs)
    finally:
        vidaccel.remove(pipe)
    assert (whole - dense).abs().max() <= 1e-5 * dense.abs().max()

    vidaccel.accelerate(pipe, SMALL)
    try:
        small = generate(pipe, kwargs)
        info = vidaccel.summary(pipe, print_summary=False)["transformers"][0]
        state = pipe.transformer._vidaccel_sparse_attention
        assert info["grid"]["grid"] == list(spec.grid)  # the grid vidaccel read from the pipeline's call
        assert set(state.sparse_calls) == set(range(info["layers"]))  # every self-attention layer went sparse
    finally:
        vidaccel.remove(pipe)
    assert (small - dense).abs().max() > 1e-3 * dense.abs().max()

    assert torch.equal(generate(pipe, kwargs), dense)
    assert _attributes(pipe) == before
