"""Tiny random-weight builders and forward inputs for every supported transformer class.

One `Family` row per class: `build(seed)` makes a tiny model of the real diffusers class (the configs are
`vidaccel.tiny.families.TRANSFORMERS`, which the tiny pipelines of tests/test_family_pipelines.py share) and
`inputs(grid, batch, seed, timestep)` the forward keywords that give token grid ``(T, H, W)``.
The per-family tests (tests/test_families.py) are parametrized over `FAMILIES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import tiny_models
from vidaccel.tiny.families import tiny_transformer


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


def _tiny(class_name, **overrides):
    """The builder of `class_name`'s tiny model (vidaccel.tiny.families.TRANSFORMERS, shared with the pipelines)."""
    return lambda seed=0: tiny_transformer(class_name, seed, **overrides)


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
                                        _tiny("WanVACETransformer3DModel"), _vace_inputs),
    "SkyReelsV2Transformer3DModel": Family("SkyReelsV2Transformer3DModel",
                                           _tiny("SkyReelsV2Transformer3DModel"),
                                           lambda grid, batch, seed, timestep: _wan_inputs(grid, batch, seed, timestep)),
    "ChronoEditTransformer3DModel": Family("ChronoEditTransformer3DModel",
                                           _tiny("ChronoEditTransformer3DModel"),
                                           lambda grid, batch, seed, timestep: _wan_inputs(grid, batch, seed, timestep)),
    "AnyFlowTransformer3DModel": Family("AnyFlowTransformer3DModel", _tiny("AnyFlowTransformer3DModel"),
                                        _anyflow_inputs),
    "HeliosTransformer3DModel": Family("HeliosTransformer3DModel",
                                       _tiny("HeliosTransformer3DModel"), _helios_inputs),
}


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
    "HeliosTransformer3DModel+history": Family("HeliosTransformer3DModel",
                                               _tiny("HeliosTransformer3DModel", has_multi_term_memory_patch=True),
                                               _helios_history_inputs),
})
FAMILIES.update({name: Family(name, _tiny(name), inputs) for name, inputs in (
    ("HunyuanVideo15Transformer3DModel", _hunyuan15_inputs), ("MochiTransformer3DModel", _mochi_inputs),
    ("CosmosTransformer3DModel", _cosmos_inputs), ("AllegroTransformer3DModel", _allegro_inputs),
    ("EasyAnimateTransformer3DModel", _easyanimate_inputs), ("MotifVideoTransformer3DModel", _motif_inputs),
    ("Kandinsky5Transformer3DModel", _kandinsky5_inputs), ("LTX2VideoTransformer3DModel", _ltx2_inputs),
    ("WanAnimateTransformer3DModel", _animate_inputs),
)})
