"""Tiny random-weight transformers and pipelines of every supported class, built offline.

As diffusers' own tests do: the real diffusers classes at tiny configs, random weights, no download.

* `tiny_transformer(class_name, seed, **overrides)`: a tiny model of a supported transformer class
  (`TRANSFORMERS` holds the configs; the per-family tests and the pipelines below use the same ones).
* `TINY_PIPELINES`: tiny pipelines of real diffusers pipeline classes, one `TinyPipeline` each (the
  transformer class, the pipeline class, how to build it, the keywords of a short generation and the token grid
  that generation has). `tiny_pipeline(name)` finds one by transformer class, pipeline class or family label.
  `vidaccel bench pipeline --model tiny-random --family NAME` and ``tests/test_family_pipelines.py`` use them.

The pipelines run from prompt *embeddings* (random, seeded by the prompt text), not from text: most of these
pipelines' text encoders (Qwen2.5-VL, Gemma, Llama + CLIP, T5Gemma) would need a tokenizer from the Hub, and the
Wan-derived ones clean prompts with ``ftfy``, which vidaccel does not depend on. The text encoder is not what
vidaccel changes; every other stage of the pipeline (latents, conditioning, the denoising loop with CFG, the
scheduler, VAE decoding) runs as shipped. Random weights have no learned attention structure: these models check
that things run and agree, not quality.

Pipelines of supported classes that are not built here, and why, are in `NOT_BUILT`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

import torch

# ------------------------------------------------------------------------------------- transformers

_WAN = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
            text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True, rope_max_seq_len=32)
_QK = dict(qk_norm="rms_norm_across_heads")

# class name -> constructor keywords of its tiny model (text width 16 everywhere, latent channels 4 where free)
TRANSFORMERS: dict[str, dict] = {
    "WanTransformer3DModel": {**_WAN, **_QK},
    "WanVACETransformer3DModel": {**_WAN, "vace_layers": [0, 1], "vace_in_channels": 6, **_QK},
    "SkyReelsV2Transformer3DModel": {**_WAN, **_QK},
    "ChronoEditTransformer3DModel": {**_WAN, **_QK},
    "AnyFlowTransformer3DModel": dict(_WAN),
    "HeliosTransformer3DModel": {**{k: v for k, v in _WAN.items() if k != "rope_max_seq_len"}, "rope_dim": (4, 2, 2),
                                 "has_multi_term_memory_patch": False},
    "WanAnimateTransformer3DModel": dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=12, latent_channels=4,
        out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, image_dim=8, rope_max_seq_len=32,
        motion_encoder_size=16, motion_style_dim=8, motion_dim=4, motion_encoder_dim=8, face_encoder_hidden_dim=8,
        face_encoder_num_heads=2, inject_face_latents_blocks=1, motion_encoder_batch_size=4,
        motion_encoder_channel_sizes={"4": 8, "8": 8, "16": 8}),
    "HunyuanVideoTransformer3DModel": dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1, num_single_layers=1,
        num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
        pooled_projection_dim=8, rope_axes_dim=(2, 4, 4)),
    "HunyuanVideo15Transformer3DModel": dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=2, num_refiner_layers=1,
        text_embed_dim=16, text_embed_2_dim=8, image_embed_dim=8, rope_axes_dim=(2, 4, 4)),
    "CogVideoXTransformer3DModel": dict(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2, text_embed_dim=16,
        num_layers=2, sample_width=16, sample_height=16, sample_frames=9, patch_size=2, temporal_compression_ratio=4,
        max_text_seq_length=8),
    "LTXVideoTransformer3DModel": dict(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=2, caption_channels=16),
    "LTX2VideoTransformer3DModel": dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=8,
        audio_cross_attention_dim=16, num_layers=2, caption_channels=16, use_prompt_embeddings=False),
    "MochiTransformer3DModel": dict(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
        in_channels=4, text_embed_dim=16, time_embed_dim=4, max_sequence_length=16),
    "CosmosTransformer3DModel": dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=2, mlp_ratio=2,
        text_embed_dim=16, adaln_lora_dim=4, max_size=(8, 32, 32), patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0),
        concat_padding_mask=False,  # True needs torchvision
        extra_pos_embed_type="learnable"),
    "AllegroTransformer3DModel": dict(
        patch_size=2, patch_size_t=1, num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        num_layers=2, cross_attention_dim=16, sample_height=16, sample_width=16, sample_frames=8, caption_channels=16),
    "EasyAnimateTransformer3DModel": dict(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, patch_size=2, sample_width=16,
        sample_height=16, num_layers=2, mmdit_layers=2, time_embed_dim=4, text_embed_dim=16),
    "MotifVideoTransformer3DModel": dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1, num_single_layers=2,
        num_decoder_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=16, rope_axes_dim=(2, 4, 4)),
    "Kandinsky5Transformer3DModel": dict(
        in_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16, out_visual_dim=4, patch_size=(1, 2, 2),
        model_dim=32, ff_dim=64, num_text_blocks=1, num_visual_blocks=2, axes_dims=(4, 6, 6)),
}
_ZERO_INIT_MODULATION = {"Kandinsky5Transformer3DModel"}


def tiny_transformer(class_name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny random-weight model of the diffusers class `class_name` (eval mode), `overrides` replacing keywords
    of its `TRANSFORMERS` config. Zero-initialised modulation (Kandinsky 5) gets random weights, so that the blocks'
    outputs do not vanish."""
    import diffusers

    if class_name not in TRANSFORMERS:
        raise ValueError(f"No tiny config for {class_name}; vidaccel.tiny.families has: {', '.join(sorted(TRANSFORMERS))}.")
    torch.manual_seed(seed)
    model = getattr(diffusers, class_name)(**{**TRANSFORMERS[class_name], **overrides}).eval()
    if class_name in _ZERO_INIT_MODULATION:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "modulation" in name and not p.any():
                    p.normal_(0, 0.2)
    return model


# ----------------------------------------------------------------------------------------- components

TEXT_DIM = 16  # every tiny transformer above reads 16-wide text embeddings


def wan_vae(z_dim: int = 4):
    """A tiny `AutoencoderKLWan` (8x spatial, 4x temporal compression), as Wan-derived pipelines use."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    return AutoencoderKLWan(base_dim=3, z_dim=z_dim, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True], latents_mean=[0.0] * z_dim,
                            latents_std=[1.0] * z_dim).eval()


def _clip_vision():
    """A tiny CLIP vision encoder (8-wide hidden states) and its PIL image processor (16 px crops)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    try:
        from transformers import CLIPImageProcessorPil as processor_class  # no torchvision needed
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor as processor_class
    torch.manual_seed(0)
    encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                                               num_attention_heads=2, image_size=16, patch_size=8)).eval()
    return encoder, processor_class(crop_size=16, size={"shortest_edge": 16})


def image(size: int | tuple = 64, seed: int = 0):
    """A random RGB `PIL.Image` of ``size`` (height, width), for image-conditioned pipelines."""
    import numpy as np
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8"))


def embeddings(prompt: str, tokens: int = 5, dim: int = TEXT_DIM) -> torch.Tensor:
    """Random prompt embeddings ``(1, tokens, dim)`` seeded by the prompt text: the same prompt gives the same
    embeddings, a different one others."""
    g = torch.Generator().manual_seed(zlib.crc32(prompt.encode()))
    return torch.randn(1, tokens, dim, generator=g)


def _embeds(prompt, negative_prompt, *, tokens=5, mask=None, names=("prompt_embeds", "negative_prompt_embeds")):
    """Prompt and negative embeddings (and all-ones masks under the names in `mask`) for the call keywords."""
    out = {names[0]: embeddings(prompt, tokens), names[1]: embeddings("negative: " + negative_prompt, tokens)}
    for key in mask or ():
        out[key] = torch.ones(1, tokens, dtype=torch.long)
    return out


# ------------------------------------------------------------------------------------------ pipelines


@dataclass(frozen=True)
class TinyPipeline:
    """A tiny pipeline of a real diffusers pipeline class and the keywords of a short generation.

    Attributes:
        transformer: the transformer class it runs (a `vidaccel.supported_models()` class).
        pipeline: the diffusers pipeline class.
        components: ``seed -> dict`` of the pipeline's components (text encoders left out where it runs from
            embeddings).
        prompt: ``(prompt, negative_prompt) -> dict`` of the keywords that stand for the prompt (embeddings, masks).
        extra: ``() -> dict`` of conditioning keywords (an image, control or pose videos).
        size: the default ``(height, width, num_frames)`` in pixels and frames.
        grid: the token grid ``(T, H, W)`` of one transformer call at `size` (the tests check vidaccel sees it).
        output: the ``output_type`` compared: ``"pt"`` (decoded frames), or ``"latent"`` where the VAE cannot
            decode a tiny video (see `note`).
        guidance: the keyword of the CFG scale (None: the pipeline's guider carries it, built in `components`).
        frames_key: the keyword of the frame count (Wan-Animate: ``segment_frame_length``).
        requires: components the caller must pass to `build`, with the reason in `note`.
        note: what is special about this pipeline here.
    """

    transformer: str
    pipeline: str
    components: Callable
    prompt: Callable
    grid: tuple
    extra: Callable = dict
    size: tuple = (64, 64, 5)
    output: str = "pt"
    guidance: str | None = "guidance_scale"
    frames_key: str = "num_frames"
    requires: tuple = ()
    note: str = ""
    call: dict = field(default_factory=dict)  # fixed keywords of this pipeline's call

    def build(self, seed: int = 0, **components):
        """The pipeline with random weights (`seed`), progress bar off; `components` add to or replace its parts."""
        import diffusers

        missing = [name for name in self.requires if name not in components]
        if missing:
            raise ValueError(f"The tiny {self.pipeline} needs {', '.join(missing)} passed to build(): {self.note} (the "
                             f"tests pass a pass-through one, as diffusers' own tests do).")
        pipe = getattr(diffusers, self.pipeline)(**{**self.components(seed), **components})
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def call_kwargs(self, prompt: str = "a red circle moving right", negative_prompt: str = "", *, steps: int = 2,
                    guidance_scale: float = 5.0, height: int | None = None, width: int | None = None,
                    num_frames: int | None = None, output_type: str | None = None) -> dict:
        """Keywords for ``pipe(**kwargs, generator=...)``: a `steps`-step generation at `size` (or the sizes given)."""
        h, w, f = height or self.size[0], width or self.size[1], num_frames or self.size[2]
        kwargs = dict(self.prompt(prompt, negative_prompt), height=h, width=w, num_inference_steps=steps,
                      output_type=output_type or self.output, **self.call, **self.extra())
        kwargs[self.frames_key] = f
        if self.guidance is not None:
            kwargs[self.guidance] = guidance_scale
        return kwargs

    def prompted(self, call: Callable) -> Callable:
        """`call` (the pipeline, or what generates with it) behind the usual text keywords: the returned callable
        takes ``prompt``, ``negative_prompt``, ``height``, ``width``, ``num_frames``, ``num_inference_steps``,
        ``guidance_scale`` and ``output_type`` and passes `call_kwargs` of them (embeddings, conditioning) plus
        every other keyword (``generator``, ``callback_on_step_end``) to `call`."""

        def run(prompt="", negative_prompt=None, *, height=None, width=None, num_frames=None, num_inference_steps=2,
                guidance_scale=5.0, output_type=None, **kwargs):
            return call(**self.call_kwargs(prompt or "", negative_prompt or "", steps=num_inference_steps,
                                           guidance_scale=guidance_scale, height=height, width=width,
                                           num_frames=num_frames, output_type=output_type), **kwargs)

        return run


def _flow(shift: float = 3.0):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=shift)


def _flow_map():
    from diffusers import FlowMapEulerDiscreteScheduler

    return FlowMapEulerDiscreteScheduler()


def _helios_scheduler():
    from diffusers import HeliosScheduler

    return HeliosScheduler(stage_range=[0, 1], stages=1, use_dynamic_shifting=True)


def _unipc_flow(shift: float = 5.0):
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)


def _wan_components(transformer: str, scheduler=_flow, image_encoder: bool = False, **overrides):
    """Components of a Wan-derived pipeline: the tiny transformer, Wan VAE, a flow scheduler, no text encoder."""

    def components(seed):
        parts = dict(transformer=tiny_transformer(transformer, seed, **overrides), vae=wan_vae(), scheduler=scheduler(),
                     tokenizer=None, text_encoder=None)
        if image_encoder:
            parts["image_encoder"], parts["image_processor"] = _clip_vision()
        return parts

    return components


# I2V-style Wan transformers: noisy latents + condition latents + mask (4 + 4 + 4 channels), 8-wide CLIP image tokens
_I2V = dict(in_channels=12, image_dim=8, added_kv_proj_dim=16)


def _image_input():
    return {"image": image(64)}


def _pil_video(frames: int, size: int, seed: int):
    return [image(size, seed + i) for i in range(frames)]


def _animate_inputs():
    return {"image": image(64), "pose_video": _pil_video(5, 64, 1), "face_video": _pil_video(5, 16, 11)}


def _hunyuan_components(seed):
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo(latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                                    norm_num_groups=4, spatial_compression_ratio=8, temporal_compression_ratio=4)
    return dict(transformer=tiny_transformer("HunyuanVideoTransformer3DModel", seed), vae=vae.eval(),
                scheduler=_flow(7.0), text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)


def _hunyuan_prompt(prompt, negative_prompt):  # guidance-distilled: no negative branch
    return dict(prompt_embeds=embeddings(prompt, 6), pooled_prompt_embeds=embeddings(prompt, 1, 8)[:, 0],
                prompt_attention_mask=torch.ones(1, 6, dtype=torch.long))


def _hunyuan15_components(seed):
    from diffusers import AutoencoderKLHunyuanVideo15
    from diffusers.guiders import ClassifierFreeGuidance

    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo15(latent_channels=4, block_out_channels=(16, 16, 16, 16), layers_per_block=1,
                                      spatial_compression_ratio=4, temporal_compression_ratio=2)
    # t2v: latents + condition latents + mask (4 + 4 + 1 channels)
    transformer = tiny_transformer("HunyuanVideo15Transformer3DModel", seed, in_channels=9, target_size=32,
                                   task_type="t2v")
    return dict(transformer=transformer, vae=vae.eval(), scheduler=_flow(7.0), text_encoder=None, tokenizer=None,
                text_encoder_2=None, tokenizer_2=None, guider=ClassifierFreeGuidance(guidance_scale=5.0))


def _hunyuan15_prompt(prompt, negative_prompt):
    out = {}
    for prefix, text in (("", prompt), ("negative_", "negative: " + negative_prompt)):
        out[f"{prefix}prompt_embeds"] = embeddings(text, 4)
        out[f"{prefix}prompt_embeds_mask"] = torch.ones(1, 4)
        out[f"{prefix}prompt_embeds_2"] = embeddings(text, 3, 8)
        out[f"{prefix}prompt_embeds_mask_2"] = torch.ones(1, 3)
    return out


def _cogvideox_components(seed):
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler

    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1,
                                 norm_num_groups=2, temporal_compression_ratio=4)
    return dict(transformer=tiny_transformer("CogVideoXTransformer3DModel", seed), vae=vae.eval(),
                scheduler=CogVideoXDDIMScheduler(), text_encoder=None, tokenizer=None)


def _ltx_components(seed):
    from diffusers import AutoencoderKLLTXVideo

    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(
        latent_channels=4, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False), decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4, upsample_factor=(1,) * 4,
        timestep_conditioning=False, patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False)
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    return dict(transformer=tiny_transformer("LTXVideoTransformer3DModel", seed), vae=vae.eval(), scheduler=_flow(),
                text_encoder=None, tokenizer=None)


def _mochi_components(seed):
    from diffusers import AutoencoderKLMochi

    torch.manual_seed(0)  # MochiPipeline assumes 12 latent channels
    vae = AutoencoderKLMochi(latent_channels=12, encoder_block_out_channels=(32,) * 4,
                             decoder_block_out_channels=(32,) * 4, layers_per_block=(1,) * 5,
                             latents_mean=(0.0,) * 12, latents_std=(1.0,) * 12)
    return dict(transformer=tiny_transformer("MochiTransformer3DModel", seed, in_channels=12), vae=vae.eval(),
                scheduler=_flow(), text_encoder=None, tokenizer=None)


def _cosmos_components(seed):
    from diffusers import AutoencoderKLCosmos, EDMEulerScheduler

    torch.manual_seed(0)
    vae = AutoencoderKLCosmos(latent_channels=4, encoder_block_out_channels=(8,) * 4, decode_block_out_channels=(8,) * 4,
                              attention_resolutions=(8,), resolution=64, num_layers=2, patch_size=4,
                              spatial_compression_ratio=4, temporal_compression_ratio=4, latents_mean=None,
                              latents_std=None)
    scheduler = EDMEulerScheduler(sigma_min=0.002, sigma_max=80, sigma_data=0.5, sigma_schedule="karras",
                                  num_train_timesteps=1000, prediction_type="epsilon", rho=7.0,
                                  final_sigmas_type="sigma_min")
    return dict(transformer=tiny_transformer("CosmosTransformer3DModel", seed), vae=vae.eval(), scheduler=scheduler,
                text_encoder=None, tokenizer=None)


def _cosmos2_components(seed):
    from diffusers import FlowMatchEulerDiscreteScheduler

    # latents + the conditioning mask channel (4 + 1); Cosmos 2 has no extra positional embedding
    transformer = tiny_transformer("CosmosTransformer3DModel", seed, in_channels=5, extra_pos_embed_type=None)
    return dict(transformer=transformer, vae=wan_vae(), scheduler=FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True),
                text_encoder=None, tokenizer=None)


def _allegro_components(seed):
    from diffusers import AutoencoderKLAllegro, EulerAncestralDiscreteScheduler

    torch.manual_seed(0)
    vae = AutoencoderKLAllegro(block_out_channels=(8,) * 4, latent_channels=4, layers_per_block=1, norm_num_groups=2,
                               temporal_compression_ratio=4, sample_size=16)
    vae.enable_tiling()  # diffusers implements Allegro decoding only in tiles
    # the pipeline's 3D RoPE splits a head in three: 12-wide heads (inner width 24 = the text width after projection)
    transformer = tiny_transformer("AllegroTransformer3DModel", seed, attention_head_dim=12, cross_attention_dim=24)
    return dict(transformer=transformer, vae=vae.eval(), scheduler=EulerAncestralDiscreteScheduler(), text_encoder=None,
                tokenizer=None)


def _easyanimate_components(seed):
    from diffusers import AutoencoderKLMagvit
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    vae = AutoencoderKLMagvit(latent_channels=4, block_out_channels=[8] * 4, layers_per_block=1, norm_num_groups=4,
                              spatial_group_norm=False)
    # EasyAnimate's encode_prompt reads the text encoder's dtype even for given embeddings: a one-layer BERT
    text_encoder = BertModel(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=16)).eval()
    return dict(transformer=tiny_transformer("EasyAnimateTransformer3DModel", seed), vae=vae.eval(), scheduler=_flow(),
                text_encoder=text_encoder, tokenizer=None)


def _motif_components(seed):
    from diffusers.guiders import ClassifierFreeGuidance

    # latents + condition latents + mask (4 + 4 + 1 channels)
    return dict(transformer=tiny_transformer("MotifVideoTransformer3DModel", seed, in_channels=9), vae=wan_vae(),
                scheduler=_flow(7.0), text_encoder=None, tokenizer=None,
                guider=ClassifierFreeGuidance(guidance_scale=5.0))


def _kandinsky5_components(seed):
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo(latent_channels=4, block_out_channels=(8,) * 4, layers_per_block=1,
                                    norm_num_groups=4, spatial_compression_ratio=8, temporal_compression_ratio=4)
    return dict(transformer=tiny_transformer("Kandinsky5Transformer3DModel", seed, visual_cond=False), vae=vae.eval(),
                scheduler=_flow(5.0), text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)


def _kandinsky5_prompt(prompt, negative_prompt):
    out = {}
    for prefix, text in (("", prompt), ("negative_", "negative: " + negative_prompt)):
        out[f"{prefix}prompt_embeds_qwen"] = embeddings(text, 5)
        out[f"{prefix}prompt_embeds_clip"] = embeddings(text, 1, 8)[:, 0]
        out[f"{prefix}prompt_cu_seqlens"] = torch.tensor([0, 5], dtype=torch.int32)
    return out


def _ltx2_components(seed):
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    torch.manual_seed(0)  # text connectors: 32-wide embeddings (2 x 16, as from two text-encoder layers) -> 16 wide
    connectors = LTX2TextConnectors(
        caption_channels=16, text_proj_in_factor=2, video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_double_precision=False,
        rope_type="split", video_hidden_dim=16, audio_hidden_dim=16)
    torch.manual_seed(0)
    vae = AutoencoderKLLTX2Video(  # 4x spatial, 2x temporal: 5 frames of 32x32 are a (2, 8, 8) token grid
        latent_channels=4, block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), layers_per_block=(1, 1),
        decoder_layers_per_block=(1, 1, 1), spatio_temporal_scaling=(True, True),
        decoder_spatio_temporal_scaling=(True, True), decoder_inject_noise=(False, False, False),
        downsample_type=("spatial", "spatial"), upsample_residual=(False, False), upsample_factor=(1, 1),
        timestep_conditioning=False, patch_size=1, patch_size_t=1, decoder_causal=False)
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    torch.manual_seed(0)
    audio_vae = AutoencoderKLLTX2Audio(base_channels=4, ch_mult=(1,), num_res_blocks=1, resolution=32, latent_channels=2,
                                       mel_bins=8)
    torch.manual_seed(0)
    vocoder = LTX2Vocoder(in_channels=16, hidden_channels=32, upsample_kernel_sizes=[4, 4], upsample_factors=[2, 2],
                          resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]], output_sampling_rate=16000)
    return dict(transformer=tiny_transformer("LTX2VideoTransformer3DModel", seed), vae=vae.eval(),
                audio_vae=audio_vae.eval(), vocoder=vocoder.eval(), connectors=connectors.eval(), scheduler=_flow(),
                text_encoder=None, tokenizer=None)


_MASKED = dict(mask=("prompt_attention_mask", "negative_prompt_attention_mask"))


def _masked(prompt, negative_prompt, tokens=5):
    return _embeds(prompt, negative_prompt, tokens=tokens, **_MASKED)


_COSMOS_GUARD = ("diffusers' Cosmos pipelines refuse to run without NVIDIA's cosmos_guardrail safety checker (a "
                 "separate package that downloads its own models), and vidaccel ships no stand-in for it")

TINY_PIPELINES: tuple[TinyPipeline, ...] = (
    TinyPipeline("WanTransformer3DModel", "WanPipeline", _wan_components("WanTransformer3DModel"), _embeds, (2, 4, 4)),
    TinyPipeline("WanTransformer3DModel", "WanImageToVideoPipeline",
                 _wan_components("WanTransformer3DModel", image_encoder=True, **_I2V), _embeds, (2, 4, 4),
                 extra=_image_input, note="Wan2.1 image-to-video: a tiny CLIP vision encoder adds image tokens"),
    TinyPipeline("WanVACETransformer3DModel", "WanVACEPipeline",  # control: 2 x 4 video latents + 64 mask channels
                 _wan_components("WanVACETransformer3DModel", vace_in_channels=72), _embeds, (2, 4, 4)),
    TinyPipeline("SkyReelsV2Transformer3DModel", "SkyReelsV2Pipeline",
                 _wan_components("SkyReelsV2Transformer3DModel", scheduler=_unipc_flow), _embeds, (2, 4, 4)),
    TinyPipeline("SkyReelsV2Transformer3DModel", "SkyReelsV2DiffusionForcingPipeline",
                 _wan_components("SkyReelsV2Transformer3DModel", scheduler=_unipc_flow), _embeds, (4, 4, 4),
                 size=(64, 64, 13), call=dict(prompt=None, base_num_frames=13, ar_step=1, causal_block_size=2),
                 note="asynchronous diffusion forcing (ar_step=1) in blocks of 2 latent frames: a causal frame-block "
                      "mask in self-attention"),
    TinyPipeline("ChronoEditTransformer3DModel", "ChronoEditPipeline",
                 _wan_components("ChronoEditTransformer3DModel", image_encoder=True, **_I2V), _embeds, (2, 4, 4),
                 extra=_image_input),
    TinyPipeline("WanAnimateTransformer3DModel", "WanAnimatePipeline",
                 _wan_components("WanAnimateTransformer3DModel", scheduler=_unipc_flow, image_encoder=True), _embeds,
                 (3, 4, 4), extra=_animate_inputs, frames_key="segment_frame_length",
                 note="the reference image is one more latent frame"),
    TinyPipeline("AnyFlowTransformer3DModel", "AnyFlowPipeline",
                 _wan_components("AnyFlowTransformer3DModel", scheduler=_flow_map), _embeds, (2, 4, 4)),
    TinyPipeline("HeliosTransformer3DModel", "HeliosPipeline",
                 _wan_components("HeliosTransformer3DModel", scheduler=_helios_scheduler, has_multi_term_memory_patch=True),
                 _embeds, (9, 4, 4), size=(64, 64, 9),
                 note="Helios generates 33-frame chunks (9 latent frames) with history tokens"),
    TinyPipeline("HunyuanVideoTransformer3DModel", "HunyuanVideoPipeline", _hunyuan_components, _hunyuan_prompt,
                 (3, 2, 2), size=(16, 16, 9)),
    TinyPipeline("HunyuanVideo15Transformer3DModel", "HunyuanVideo15Pipeline", _hunyuan15_components,
                 _hunyuan15_prompt, (3, 4, 4), size=(16, 16, 5), guidance=None),
    TinyPipeline("CogVideoXTransformer3DModel", "CogVideoXPipeline", _cogvideox_components,
                 lambda p, n: _embeds(p, n, tokens=8), (3, 2, 2), size=(32, 32, 9)),
    TinyPipeline("LTXVideoTransformer3DModel", "LTXPipeline", _ltx_components, _masked, (3, 8, 8), size=(32, 32, 9)),
    TinyPipeline("LTX2VideoTransformer3DModel", "LTX2Pipeline", _ltx2_components,
                 lambda p, n: {k: v.repeat(1, 1, 2) if v.is_floating_point() else v for k, v in _masked(p, n).items()},
                 (2, 8, 8), size=(32, 32, 5), call=dict(frame_rate=25.0),
                 note="video and audio: the audio stream runs through its own VAE and vocoder"),
    TinyPipeline("MochiTransformer3DModel", "MochiPipeline", _mochi_components, lambda p, n: _masked(p, n, 6),
                 (2, 4, 4), size=(64, 64, 7)),
    TinyPipeline("CosmosTransformer3DModel", "CosmosTextToWorldPipeline", _cosmos_components, _embeds, (3, 4, 4),
                 size=(32, 32, 9), requires=("safety_checker",), note=_COSMOS_GUARD),
    TinyPipeline("CosmosTransformer3DModel", "Cosmos2VideoToWorldPipeline", _cosmos2_components, _embeds, (2, 4, 4),
                 extra=_image_input, requires=("safety_checker",), note=_COSMOS_GUARD),
    TinyPipeline("AllegroTransformer3DModel", "AllegroPipeline", _allegro_components, _masked, (2, 4, 4),
                 size=(64, 64, 8), output="latent", call=dict(negative_prompt=None, clean_caption=False),
                 note="compared on latents: diffusers decodes Allegro only in tiles of 24 frames x 256 x 256 px, which "
                      "a tiny video does not fill (the decoded frames are all grey)"),
    TinyPipeline("EasyAnimateTransformer3DModel", "EasyAnimatePipeline", _easyanimate_components, _masked, (2, 4, 4)),
    TinyPipeline("MotifVideoTransformer3DModel", "MotifVideoPipeline", _motif_components, _masked, (2, 4, 4),
                 guidance=None),
    TinyPipeline("Kandinsky5Transformer3DModel", "Kandinsky5T2VPipeline", _kandinsky5_components, _kandinsky5_prompt,
                 (2, 4, 4)),
)

# Supported transformer classes with no tiny pipeline here: class -> why (every built-in class has one today).
NOT_BUILT: dict[str, str] = {}


def tiny_pipeline(name: str) -> TinyPipeline:
    """The `TinyPipeline` for a transformer class, a pipeline class or a family label (``"wan"``, ``"mochi"``, ...):
    the first entry of `TINY_PIPELINES` that matches. Raises ValueError naming the known names."""
    from vidaccel import supported_models

    classes = {row["class"] for row in supported_models() if name in (row["class"], row["family"])}
    for spec in TINY_PIPELINES:
        if name == spec.pipeline or spec.transformer in classes:
            return spec
    if name in NOT_BUILT:
        raise ValueError(f"No tiny pipeline for {name}: {NOT_BUILT[name]}.")
    raise ValueError(f"No tiny pipeline for {name!r}: use a transformer class, a pipeline or a family label of "
                     f"vidaccel.supported_models() ({', '.join(s.pipeline for s in TINY_PIPELINES)}).")


__all__ = ["TRANSFORMERS", "TINY_PIPELINES", "NOT_BUILT", "TinyPipeline", "tiny_transformer", "tiny_pipeline",
           "wan_vae", "image", "embeddings", "TEXT_DIM"]
