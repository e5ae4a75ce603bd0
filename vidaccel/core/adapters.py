"""Model adapters: the only model-specific knowledge in vidaccel.

An adapter says, for one diffusers transformer family, where the self-attention modules are,
how the token grid follows from the transformer's inputs, and where text tokens sit inside
self-attention (joint-attention models). Everything else is model-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def forward_argument(args, kwargs, name: str, position: int):
    """A forward argument passed by name or at `position`; None when absent."""
    if name in kwargs:
        return kwargs[name]
    if len(args) > position:
        return args[position]
    return None


def _grid_from_5d(x: torch.Tensor, frames_dim: int, pt: int, ph: int, pw: int):
    frames, height, width = x.shape[frames_dim], x.shape[-2], x.shape[-1]
    return (frames // pt, height // ph, width // pw)


def _wan_grid(model, args, kwargs):
    pt, ph, pw = model.config.patch_size
    return _grid_from_5d(forward_argument(args, kwargs, "hidden_states", 0), 2, pt, ph, pw)


def _hunyuan_grid(model, args, kwargs):
    p, pt = model.config.patch_size, model.config.patch_size_t
    return _grid_from_5d(forward_argument(args, kwargs, "hidden_states", 0), 2, pt, p, p)


def _cogvideox_grid(model, args, kwargs):
    p, pt = model.config.patch_size, model.config.patch_size_t or 1
    return _grid_from_5d(forward_argument(args, kwargs, "hidden_states", 0), 1, pt, p, p)


def _ltx_grid(model, args, kwargs):
    p, pt = model.config.patch_size, model.config.patch_size_t
    frames, height, width = (kwargs.get(k) for k in ("num_frames", "height", "width"))
    if None in (frames, height, width):
        raise ValueError("LTXVideoTransformer3DModel must be called with num_frames, height and width keywords.")
    return (frames // pt, height // p, width // p)


def _blocks(*names: str, attr: str):
    def find(model):
        found = []
        for blocks_name in names:
            for i, block in enumerate(getattr(model, blocks_name, None) or []):
                found.append((f"{blocks_name}.{i}.{attr}", getattr(block, attr)))
        return found

    return find


def block_of(module_name: str) -> str:
    """The qualified name of the block holding an attention module or block: ``blocks.3.attn1`` -> ``blocks.3``."""
    return module_name.rsplit(".", 1)[0]


def _hunyuan_attention(model):
    return _blocks("transformer_blocks", "single_transformer_blocks", attr="attn")(model)


@dataclass(frozen=True)
class ModelAdapter:
    family: str
    class_name: str
    text_position: str  # "none", "prefix" or "suffix": text tokens inside self-attention
    grid: Callable  # (model, args, kwargs) -> (T, H, W)
    self_attention: Callable  # model -> [(qualified name, attention module)] in layer order
    timestep_position: int  # positional index of `timestep` in forward (pipelines pass it by name)
    # vidaccel.caches: separate cross-attention modules (None for joint attention, where text tokens
    # change in every block), and the forward arguments (name, position) that alone determine their K/V
    cross_attention: Callable | None = None
    text_inputs: tuple = ()
    prediction_layout: str = "bcfhw"  # the transformer output: (B,C,F,H,W), (B,F,C,H,W) "bfchw" or tokens "bnc"

    def timestep(self, args, kwargs):
        return forward_argument(args, kwargs, "timestep", self.timestep_position)

    def blocks(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """The transformer blocks in execution order: the block of each self-attention module."""
        names = [block_of(name) for name, _ in self.self_attention(model)]
        return [(name, model.get_submodule(name)) for name in names]


ADAPTERS = {
    a.class_name: a
    for a in (
        ModelAdapter("wan", "WanTransformer3DModel", "none", _wan_grid, _blocks("blocks", attr="attn1"), 1,
                     cross_attention=_blocks("blocks", attr="attn2"),
                     text_inputs=(("encoder_hidden_states", 2), ("encoder_hidden_states_image", 3))),
        ModelAdapter("hunyuan", "HunyuanVideoTransformer3DModel", "suffix", _hunyuan_grid, _hunyuan_attention, 1),
        ModelAdapter("cogvideox", "CogVideoXTransformer3DModel", "prefix", _cogvideox_grid,
                     _blocks("transformer_blocks", attr="attn1"), 2, prediction_layout="bfchw"),
        ModelAdapter("ltx", "LTXVideoTransformer3DModel", "none", _ltx_grid,
                     _blocks("transformer_blocks", attr="attn1"), 2,
                     cross_attention=_blocks("transformer_blocks", attr="attn2"),
                     text_inputs=(("encoder_hidden_states", 1),), prediction_layout="bnc"),
    )
}


def adapter_for(model: torch.nn.Module) -> ModelAdapter:
    """The adapter of `model`'s class, or a TypeError that lists the supported classes."""
    name = type(model).__name__
    if name not in ADAPTERS:
        raise TypeError(
            f"vidaccel does not support {name}. Supported transformers: {', '.join(sorted(ADAPTERS))} "
            f"(pipelines whose `transformer` is one of these, e.g. WanPipeline, HunyuanVideoPipeline, "
            f"CogVideoXPipeline, LTXPipeline)."
        )
    return ADAPTERS[name]
