"""The transformers of a pipeline, and a model's architecture identity.

Every feature works per transformer: a pipeline's ``transformer`` and, for Wan2.2, its
``transformer_2``. `transformers` and `named_transformers` are the one definition of that. A
``torch.compile``d transformer is unwrapped (its ``_orig_mod``): features install on, and are removed
from, the module that compiled code calls, so accelerating before or after compiling both work.
"""

from __future__ import annotations

import hashlib
import json

import torch
from diffusers.utils.torch_utils import unwrap_module

TRANSFORMER_ATTRIBUTES = ("transformer", "transformer_2")


def named_transformers(pipe_or_transformer) -> list[tuple[str, torch.nn.Module]]:
    """``[(pipeline attribute, transformer)]``; a bare transformer module is called ``"transformer"``.

    A module set as both ``transformer`` and ``transformer_2`` is listed once (as ``transformer``);
    ``torch.compile`` wrappers are unwrapped.

    Raises TypeError naming the fix when the object has no transformer.
    """
    if isinstance(pipe_or_transformer, torch.nn.Module):
        return [("transformer", unwrap_module(pipe_or_transformer))]
    named = []
    for name in TRANSFORMER_ATTRIBUTES:
        model = getattr(pipe_or_transformer, name, None)
        model = unwrap_module(model) if isinstance(model, torch.nn.Module) else model
        if model is not None and all(model is not seen for _, seen in named):  # one module set twice: once
            named.append((name, model))
    if not named:
        raise TypeError(
            f"{type(pipe_or_transformer).__name__} has no `transformer`: pass a diffusers video pipeline "
            f"(e.g. WanPipeline) or its transformer module."
        )
    return named


def transformers(pipe_or_transformer) -> list[torch.nn.Module]:
    """The transformers to act on: a pipeline's `transformer` (+ `transformer_2`), or the module itself."""
    return [model for _, model in named_transformers(pipe_or_transformer)]


def config_hash(model: torch.nn.Module) -> str:
    """A short hash of the model's public config: two models with the same hash have the same architecture."""
    config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
