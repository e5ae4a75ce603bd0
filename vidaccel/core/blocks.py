"""Hidden-state I/O of one transformer block call, read through diffusers' block metadata.

Block reuse and the profiler need a block's carried hidden states (and, in joint-attention
blocks, the text stream) from its arguments, and must build an output of the same structure.
diffusers' `TransformerBlockRegistry` describes the blocks it knows; for the others the model's
adapter says it (`ModelAdapter.block_io`, a `BlockStreams`).
"""

from __future__ import annotations

import torch
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.utils.torch_utils import unwrap_module


def _metadata(block: torch.nn.Module, streams) -> TransformerBlockMetadata:
    cls = type(unwrap_module(block))
    try:
        return TransformerBlockRegistry.get(cls)
    except ValueError:
        if streams is None:
            raise ValueError(f"diffusers has no block metadata for {cls.__name__}: give the model's ModelAdapter a "
                             f"block_io=BlockStreams(...) that names its hidden-state arguments.") from None
    hs_index, second_index = streams.returns
    return TransformerBlockMetadata(return_hidden_states_index=hs_index,
                                    return_encoder_hidden_states_index=second_index,
                                    hidden_states_argument_name=streams.hidden,
                                    encoder_hidden_states_argument_name=streams.second or "encoder_hidden_states",
                                    _cls=cls)


class BlockIO:
    """Reads the carried hidden states of a block call and builds its output, via diffusers' block metadata
    (or the adapter's `BlockStreams` where diffusers has none).

    Wan and LTX blocks carry ``hidden_states`` only; joint-attention blocks (CogVideoX, HunyuanVideo)
    also carry ``encoder_hidden_states`` and return both as a tuple; LTX-2 carries its audio stream.
    """

    def __init__(self, block: torch.nn.Module, streams=None):
        self.meta = _metadata(block, streams)

    @property
    def joint(self) -> bool:
        return self.meta.return_encoder_hidden_states_index is not None

    def inputs(self, args, kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = self.meta
        hs = m._get_parameter_from_args_kwargs(m.hidden_states_argument_name, args, kwargs)
        if not self.joint:
            return hs, None
        return hs, m._get_parameter_from_args_kwargs(m.encoder_hidden_states_argument_name, args, kwargs)

    def outputs(self, output) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(output, torch.Tensor):
            return output, None
        m = self.meta
        ehs = output[m.return_encoder_hidden_states_index] if self.joint else None
        return output[m.return_hidden_states_index], ehs

    def build(self, hs: torch.Tensor, ehs: torch.Tensor | None):
        if not self.joint:
            return hs
        out = [None, None]
        out[self.meta.return_hidden_states_index] = hs
        out[self.meta.return_encoder_hidden_states_index] = ehs
        return tuple(out)
