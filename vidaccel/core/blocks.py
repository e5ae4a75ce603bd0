"""Shared by the cache hooks: exact hook bookkeeping, a model's transformer blocks, their hidden-state
I/O, model identity, and detection of diffusers' own caches (which would skip the same blocks again)."""

from __future__ import annotations

import hashlib
import json

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks._helpers import TransformerBlockRegistry
from diffusers.utils.torch_utils import unwrap_module

from ..adapters import ModelAdapter
from ..context import StepTracker, attach_step_tracker, detach_step_tracker, register_hook, unregister_hooks


class HookSet:
    """The hooks one feature registers on a model, plus its share of the model's step tracker.

    `install(register)` attaches the tracker and calls ``register(self)``, which adds hooks with
    `add`; on any failure everything added is removed again. `remove` undoes it exactly, in reverse.
    """

    def __init__(self, model: torch.nn.Module, adapter: ModelAdapter, user: str):
        self.model, self.adapter, self.user = model, adapter, user
        self.entries: list[tuple[torch.nn.Module, str, bool]] = []

    def add(self, module: torch.nn.Module, hook: ModelHook, name: str) -> None:
        self.entries.append((module, name, register_hook(module, hook, name)))

    def install(self, register) -> StepTracker:
        try:
            tracker = attach_step_tracker(self.model, self.adapter, self.user)
            register(self)
        except BaseException:
            self.remove()
            raise
        HookRegistry.check_if_exists_or_initialize(self.model).invalidate_child_registries_cache()
        return tracker

    def remove(self) -> None:
        for module, name, created in reversed(self.entries):
            unregister_hooks(module, [name], created)
        self.entries.clear()
        detach_step_tracker(self.model, self.user)


def transformer_blocks(model: torch.nn.Module, adapter: ModelAdapter) -> list[tuple[str, torch.nn.Module]]:
    """The blocks in execution order, from the adapter's self-attention list (``blocks.3.attn1`` -> ``blocks.3``)."""
    names = [name.rsplit(".", 1)[0] for name, _ in adapter.self_attention(model)]
    return [(name, model.get_submodule(name)) for name in names]


def config_hash(model: torch.nn.Module) -> str:
    """A short hash of the model's public config: two models with the same hash have the same architecture."""
    config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class BlockIO:
    """Reads the carried hidden states of a block call and builds its output, via diffusers' block metadata.

    Wan and LTX blocks carry ``hidden_states`` only; joint-attention blocks (CogVideoX, HunyuanVideo)
    also carry ``encoder_hidden_states`` and return both as a tuple.
    """

    def __init__(self, block: torch.nn.Module):
        self.meta = TransformerBlockRegistry.get(type(unwrap_module(block)))

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


def _diffusers_cache_hooks() -> dict[str, str]:
    from diffusers.hooks.faster_cache import _FASTER_CACHE_BLOCK_HOOK, _FASTER_CACHE_DENOISER_HOOK
    from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK
    from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK
    from diffusers.hooks.sea_cache import _SEA_CACHE_BLOCK_HOOK, _SEA_CACHE_LEADER_BLOCK_HOOK
    from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK

    return {
        _FASTER_CACHE_BLOCK_HOOK: "FasterCache", _FASTER_CACHE_DENOISER_HOOK: "FasterCache",
        _FBC_BLOCK_HOOK: "FirstBlockCache", _FBC_LEADER_BLOCK_HOOK: "FirstBlockCache",
        _MAG_CACHE_BLOCK_HOOK: "MagCache", _MAG_CACHE_LEADER_BLOCK_HOOK: "MagCache",
        _PYRAMID_ATTENTION_BROADCAST_HOOK: "PyramidAttentionBroadcast",
        _SEA_CACHE_BLOCK_HOOK: "SeaCache", _SEA_CACHE_LEADER_BLOCK_HOOK: "SeaCache",
        _TAYLORSEER_CACHE_HOOK: "TaylorSeerCache",
    }


def diffusers_caches(model: torch.nn.Module) -> list[str]:
    """Names of diffusers step caches active on `model` (``enable_cache`` or ``apply_*`` hooks)."""
    found = set()
    config = getattr(model, "_cache_config", None)
    if config is not None:
        found.add(type(config).__name__.replace("Config", ""))
    known = _diffusers_cache_hooks()
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            found.update(known[name] for name in registry.hooks if name in known)
    return sorted(found)


def refuse_diffusers_caches(model: torch.nn.Module, feature: str) -> None:
    found = diffusers_caches(model)
    if found:
        raise RuntimeError(
            f"{type(model).__name__} already runs diffusers' {', '.join(found)}, which skips or approximates the "
            f"same block computations as vidaccel {feature}. Use one of them: call `pipe.transformer.disable_cache()` "
            f"(or remove the apply_* hooks) first, or keep the diffusers cache and skip {feature}."
        )
