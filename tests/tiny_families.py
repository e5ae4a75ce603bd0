"""Tiny random-weight builders and forward inputs for every supported transformer class.

One `Family` row per class: `build(seed)` makes a tiny model of the real diffusers class and
`inputs(grid, batch, seed, timestep)` the forward keywords that give token grid ``(T, H, W)``.
The per-family tests (tests/test_families.py) are parametrized over `FAMILIES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import tiny_models


@dataclass(frozen=True)
class Family:
    class_name: str
    build: Callable  # (seed) -> model
    inputs: Callable  # (grid, batch, seed, timestep) -> forward kwargs
    text_key: str = "encoder_hidden_states"  # the prompt input (CFG branches differ there)


def _rand(g, *shape):
    return torch.randn(*shape, generator=g)


def _old(family):
    def inputs(grid, batch, seed, timestep):
        return tiny_models.family_inputs(family, grid=grid, batch=batch, seed=seed, timestep=timestep)
    return inputs


# ----------------------------------------------------------------------------------------- Wan-like


def _wan_like(cls_name, **extra):
    def build(seed=0):
        import diffusers

        torch.manual_seed(seed)
        kw = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                  text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True, rope_max_seq_len=32)
        kw.update(extra)
        kw = {k: v for k, v in kw.items() if v is not None}
        return getattr(diffusers, cls_name)(**kw).eval()
    return build


def _wan_inputs(grid, batch, seed, timestep, channels=4, **extra):
    g = torch.Generator().manual_seed(seed)
    T, H, W = grid
    kw = dict(hidden_states=_rand(g, batch, channels, T, 2 * H, 2 * W), encoder_hidden_states=_rand(g, batch, 5, 16),
              timestep=torch.full((batch,), timestep), return_dict=False)
    kw.update({k: v(g, batch, T, H, W) if callable(v) else v for k, v in extra.items()})
    return kw


def _vace_inputs(grid, batch, seed, timestep):
    return _wan_inputs(grid, batch, seed, timestep,
                       control_hidden_states=lambda g, b, T, H, W: _rand(g, b, 6, T, 2 * H, 2 * W))


def _anyflow_inputs(grid, batch, seed, timestep):
    kw = _wan_inputs(grid, batch, seed, timestep)
    kw["hidden_states"] = kw["hidden_states"].transpose(1, 2)  # (B, F, C, H, W)
    kw["timestep"] = torch.full((batch, grid[0]), timestep)
    kw["r_timestep"] = torch.full((batch, grid[0]), timestep / 2)
    return kw


def _helios_inputs(grid, batch, seed, timestep):
    return _wan_inputs(grid, batch, seed, timestep)


FAMILIES = {
    "WanTransformer3DModel": Family("WanTransformer3DModel", lambda seed=0: tiny_models.wan_transformer(seed), _old("wan")),
    "HunyuanVideoTransformer3DModel": Family("HunyuanVideoTransformer3DModel",
                                             lambda seed=0: tiny_models.hunyuan_transformer(seed), _old("hunyuan")),
    "CogVideoXTransformer3DModel": Family("CogVideoXTransformer3DModel",
                                          lambda seed=0: tiny_models.cogvideox_transformer(seed), _old("cogvideox")),
    "LTXVideoTransformer3DModel": Family("LTXVideoTransformer3DModel",
                                         lambda seed=0: tiny_models.ltx_transformer(seed), _old("ltx")),
    "WanVACETransformer3DModel": Family("WanVACETransformer3DModel",
                                        _wan_like("WanVACETransformer3DModel", num_layers=2, vace_layers=[0, 1],
                                                  vace_in_channels=6, qk_norm="rms_norm_across_heads"),
                                        _vace_inputs),
    "SkyReelsV2Transformer3DModel": Family("SkyReelsV2Transformer3DModel",
                                           _wan_like("SkyReelsV2Transformer3DModel", qk_norm="rms_norm_across_heads"),
                                           lambda grid, batch, seed, timestep: _wan_inputs(grid, batch, seed, timestep)),
    "ChronoEditTransformer3DModel": Family("ChronoEditTransformer3DModel",
                                           _wan_like("ChronoEditTransformer3DModel", qk_norm="rms_norm_across_heads"),
                                           lambda grid, batch, seed, timestep: _wan_inputs(grid, batch, seed, timestep)),
    "AnyFlowTransformer3DModel": Family("AnyFlowTransformer3DModel", _wan_like("AnyFlowTransformer3DModel"),
                                        _anyflow_inputs),
    "HeliosTransformer3DModel": Family("HeliosTransformer3DModel",
                                       _wan_like("HeliosTransformer3DModel", rope_dim=(4, 2, 2), rope_max_seq_len=None,
                                                 has_multi_term_memory_patch=False),
                                       _helios_inputs),
}


def _helios_history_build(seed=0):
    return _wan_like("HeliosTransformer3DModel", rope_dim=(4, 2, 2), rope_max_seq_len=None,
                     has_multi_term_memory_patch=True)(seed)


def _helios_history_inputs(grid, batch, seed, timestep):
    """Helios with one frame of short history: its tokens are a clean prefix of the self-attention sequence."""
    g = torch.Generator().manual_seed(seed + 100)
    T, H, W = grid
    kw = _wan_inputs(grid, batch, seed, timestep)
    kw.update(latents_history_short=_rand(g, batch, 4, 1, 2 * H, 2 * W),
              indices_latents_history_short=torch.zeros(batch, 1, dtype=torch.long),
              indices_hidden_states=torch.arange(1, T + 1).unsqueeze(0).expand(batch, -1))
    return kw


# ------------------------------------------------------------------------------ other families


def _build(cls_name, unzero: bool = False, **kw):
    def build(seed=0):
        import diffusers

        torch.manual_seed(seed)
        model = getattr(diffusers, cls_name)(**kw).eval()
        if unzero:  # zero-initialised modulation would make the blocks' output vanish: give it random weights
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "modulation" in name and not p.any():
                        p.normal_(0, 0.2)
        return model
    return build


def _hunyuan15_inputs(grid, batch, seed, timestep):
    g = torch.Generator().manual_seed(seed)
    T, H, W = grid
    return dict(hidden_states=_rand(g, batch, 4, T, H, W), timestep=torch.full((batch,), timestep),
                encoder_hidden_states=_rand(g, batch, 6, 16),
                encoder_attention_mask=torch.ones(batch, 6, dtype=torch.long),
                encoder_hidden_states_2=_rand(g, batch, 3, 8),
                encoder_attention_mask_2=torch.ones(batch, 3, dtype=torch.long),
                image_embeds=torch.zeros(batch, 2, 8), return_dict=False)


def _mochi_inputs(grid, batch, seed, timestep):
    g = torch.Generator().manual_seed(seed)
    T, H, W = grid
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[1:, 4:] = 0  # the second prompt is shorter: Mochi drops its padding from joint attention
    return dict(hidden_states=_rand(g, batch, 4, T, 2 * H, 2 * W), encoder_hidden_states=_rand(g, batch, 6, 16),
                timestep=torch.full((batch,), timestep), encoder_attention_mask=mask, return_dict=False)


def _cosmos_inputs(grid, batch, seed, timestep):
    g = torch.Generator().manual_seed(seed)
    T, H, W = grid
    return dict(hidden_states=_rand(g, batch, 4, T, 2 * H, 2 * W), timestep=torch.full((batch,), timestep),
                encoder_hidden_states=_rand(g, batch, 5, 16), fps=24, return_dict=False)


def _allegro_inputs(grid, batch, seed, timestep):
    g = torch.Generator().manual_seed(seed)
    T, H, W = grid
    return dict(hidden_states=_rand(g, batch, 4, T, 2 * H, 2 * W), encoder_hidden_states=_rand(g, batch, 5, 16),
                timestep=torch.full((batch,), timestep), return_dict=False)


def _easyanimate_inputs(grid, batch, seed, timestep):
    g = torch.Generator().manual_seed(seed)
    T, H, W = grid
    return dict(hidden_states=_rand(g, batch, 4, T, 2 * H, 2 * W), timestep=torch.full((batch,), timestep),
                encoder_hidden_states=_rand(g, batch, 5, 16), return_dict=False)


def _motif_inputs(grid, batch, seed, timestep):
    g = torch.Generator().manual_seed(seed)
    T, H, W = grid
    return dict(hidden_states=_rand(g, batch, 4, T, 2 * H, 2 * W), timestep=torch.full((batch,), timestep),
                encoder_hidden_states=_rand(g, batch, 5, 16),
                encoder_attention_mask=torch.ones(batch, 5, dtype=torch.long), return_dict=False)


def _kandinsky5_inputs(grid, batch, seed, timestep):
    g = torch.Generator().manual_seed(seed)
    T, H, W = grid
    return dict(hidden_states=_rand(g, batch, T, 2 * H, 2 * W, 4), encoder_hidden_states=_rand(g, batch, 5, 16),
                timestep=torch.full((batch,), timestep), pooled_projections=_rand(g, batch, 8),
                visual_rope_pos=[torch.arange(T), torch.arange(H), torch.arange(W)], text_rope_pos=torch.arange(5),
                return_dict=False)


def _ltx2_inputs(grid, batch, seed, timestep):
    g = torch.Generator().manual_seed(seed)
    T, H, W = grid
    return dict(hidden_states=_rand(g, batch, T * H * W, 4), audio_hidden_states=_rand(g, batch, 5, 4),
                encoder_hidden_states=_rand(g, batch, 5, 16), audio_encoder_hidden_states=_rand(g, batch, 5, 16),
                timestep=torch.full((batch,), timestep), encoder_attention_mask=torch.ones(batch, 5, dtype=torch.long),
                audio_encoder_attention_mask=torch.ones(batch, 5, dtype=torch.long),
                num_frames=T, height=H, width=W, audio_num_frames=5, return_dict=False)


def _animate_inputs(grid, batch, seed, timestep):
    g = torch.Generator().manual_seed(seed)
    T, H, W = grid
    return dict(hidden_states=_rand(g, batch, 12, T, 2 * H, 2 * W), timestep=torch.full((batch,), timestep),
                encoder_hidden_states=_rand(g, batch, 5, 16), encoder_hidden_states_image=_rand(g, batch, 3, 8),
                pose_hidden_states=_rand(g, batch, 4, T - 1, 2 * H, 2 * W),
                face_pixel_values=_rand(g, batch, 3, 4 * (T - 1) - 3, 16, 16), return_dict=False)


FAMILIES.update({
    "HeliosTransformer3DModel+history": Family("HeliosTransformer3DModel", _helios_history_build,
                                               _helios_history_inputs),
    "HunyuanVideo15Transformer3DModel": Family("HunyuanVideo15Transformer3DModel", _build(
        "HunyuanVideo15Transformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10,
        num_layers=2, num_refiner_layers=1, text_embed_dim=16, text_embed_2_dim=8, image_embed_dim=8,
        rope_axes_dim=(2, 4, 4)), _hunyuan15_inputs),
    "MochiTransformer3DModel": Family("MochiTransformer3DModel", _build(
        "MochiTransformer3DModel", patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        pooled_projection_dim=16, in_channels=4, text_embed_dim=16, time_embed_dim=4, max_sequence_length=16),
        _mochi_inputs),
    "CosmosTransformer3DModel": Family("CosmosTransformer3DModel", _build(
        "CosmosTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12,
        num_layers=2, mlp_ratio=2, text_embed_dim=16, adaln_lora_dim=4, max_size=(8, 32, 32),
        patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0), concat_padding_mask=False,  # True needs torchvision
        extra_pos_embed_type="learnable"), _cosmos_inputs),
    "AllegroTransformer3DModel": Family("AllegroTransformer3DModel", _build(
        "AllegroTransformer3DModel", patch_size=2, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        in_channels=4, out_channels=4, num_layers=2, cross_attention_dim=16, sample_height=16, sample_width=16,
        sample_frames=8, caption_channels=16), _allegro_inputs),
    "EasyAnimateTransformer3DModel": Family("EasyAnimateTransformer3DModel", _build(
        "EasyAnimateTransformer3DModel", num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        patch_size=2, sample_width=16, sample_height=16, num_layers=2, mmdit_layers=2, time_embed_dim=4,
        text_embed_dim=16), _easyanimate_inputs),
    "MotifVideoTransformer3DModel": Family("MotifVideoTransformer3DModel", _build(
        "MotifVideoTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10,
        num_layers=1, num_single_layers=2, num_decoder_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=16,
        rope_axes_dim=(2, 4, 4)), _motif_inputs),
    "Kandinsky5Transformer3DModel": Family("Kandinsky5Transformer3DModel", _build(
        "Kandinsky5Transformer3DModel", unzero=True, in_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16,
        out_visual_dim=4, patch_size=(1, 2, 2), model_dim=32, ff_dim=64, num_text_blocks=1, num_visual_blocks=2,
        axes_dims=(4, 6, 6)), _kandinsky5_inputs),
    "LTX2VideoTransformer3DModel": Family("LTX2VideoTransformer3DModel", _build(
        "LTX2VideoTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=8, audio_cross_attention_dim=16, num_layers=2, caption_channels=16,
        use_prompt_embeddings=False), _ltx2_inputs),
    "WanAnimateTransformer3DModel": Family("WanAnimateTransformer3DModel", _build(
        "WanAnimateTransformer3DModel", patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8,
        in_channels=12, latent_channels=4, out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
        image_dim=8, rope_max_seq_len=32, motion_encoder_size=16, motion_style_dim=8, motion_dim=4,
        motion_encoder_dim=8, face_encoder_hidden_dim=8, face_encoder_num_heads=2, inject_face_latents_blocks=1,
        motion_encoder_batch_size=4, motion_encoder_channel_sizes={"4": 8, "8": 8, "16": 8}), _animate_inputs),
})
