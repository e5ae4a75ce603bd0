"""LoRA-loaded pipelines (diffusers' `load_lora_weights`, fused or not) with every vidaccel method: a tiny random
LoRA on the Wan transformer's attention and feed-forward projections, saved and loaded the way users load one."""

import pytest
import torch

import vidaccel
from tiny_models import wan_pipeline
from vidaccel import BlockReuseConfig

peft = pytest.importorskip("peft")

KW = dict(prompt="a cat", negative_prompt="", height=64, width=96, num_frames=9, num_inference_steps=3,
          guidance_scale=5.0, output_type="pt")
WHOLE = vidaccel.WindowAttentionConfig(kernel=(99, 99, 99))
SMALL = vidaccel.WindowAttentionConfig(kernel=(1, 3, 3))


def _run(pipe, **kw):
    return pipe(**{**KW, **kw}, generator=torch.Generator().manual_seed(0)).frames


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    """A random rank-4 LoRA (non-zero B, so it changes the output) saved in diffusers' LoRA format."""
    from diffusers import WanPipeline
    from peft.utils import get_peft_model_state_dict

    pipe = wan_pipeline(seed=0)
    pipe.transformer.add_adapter(peft.LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                                 target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_out"]))
    path = tmp_path_factory.mktemp("lora")
    WanPipeline.save_lora_weights(path, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer))
    return path


def _lora_pipeline(lora_dir, fuse: bool):
    pipe = wan_pipeline(seed=0)
    pipe.load_lora_weights(lora_dir, adapter_name="tiny")
    if fuse:
        pipe.fuse_lora()
    return pipe


@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
def test_every_method_on_a_lora_pipeline(lora_dir, fuse):
    base = _run(wan_pipeline(seed=0))
    pipe = _lora_pipeline(lora_dir, fuse)
    lora = _run(pipe)
    assert (lora - base).abs().max() > 1e-3  # the LoRA is live
    # sparse attention: a whole-grid window is the LoRA model's dense output; a small window differs; remove exact
    for config, exact in ((WHOLE, True), (SMALL, False), ("radial", None)):
        vidaccel.accelerate(pipe, config)
        out = _run(pipe)
        if exact:
            assert (out - lora).abs().max() <= 1e-5
        elif exact is False:
            assert (out - lora).abs().max() > 1e-4
        vidaccel.remove(pipe)
        assert torch.equal(_run(pipe), lora)
    # K/V cache (exact) and block reuse, stacked on sparse attention
    vidaccel.enable_kv_cache(pipe)
    assert torch.equal(_run(pipe), lora)
    vidaccel.accelerate(pipe, WHOLE)
    vidaccel.enable_block_reuse(pipe, BlockReuseConfig(background_blocks=(1,), warmup_steps=1, interval=10))
    reused = _run(pipe)
    assert torch.isfinite(reused).all() and (reused - lora).abs().max() > 0
    vidaccel.disable_caches(pipe)
    vidaccel.remove(pipe)
    assert torch.equal(_run(pipe), lora)
    # FreeSwim at 2x the size (its window branch differs from direct inference), then off again
    direct = _run(pipe, height=128, width=192)
    vidaccel.enable_freeswim(pipe, vidaccel.FreeSwimConfig(base_size=(64, 96)))
    high = _run(pipe, height=128, width=192)
    assert high.shape == direct.shape and torch.isfinite(high).all() and (high - direct).abs().max() > 1e-4
    vidaccel.disable_freeswim(pipe)
    assert torch.equal(_run(pipe), lora)


def test_lora_loaded_after_accelerate_and_unloaded_again(lora_dir):
    """The order users hit: accelerate first, then load (and later unload) a LoRA; remove stays exact."""
    pipe = wan_pipeline(seed=0)
    base = _run(pipe)
    vidaccel.accelerate(pipe, WHOLE)
    pipe.load_lora_weights(lora_dir, adapter_name="tiny")
    with_lora = _run(pipe)
    assert (with_lora - base).abs().max() > 1e-3
    vidaccel.remove(pipe)
    assert (_run(pipe) - with_lora).abs().max() <= 1e-5
    pipe.unload_lora_weights()
    assert torch.equal(_run(pipe), base)
