"""Exact cross-attention K/V cache: text (and image) keys/values are computed once per prompt.

In Wan (T2V, I2V) and LTX-Video, cross-attention keys and values are projections of the prompt
embeddings only; they do not depend on the latents or the timestep, so every denoising step
recomputes the same tensors. This cache computes them once and returns the stored tensors on
later steps - bit-identical outputs, fewer projections.

How it works (diffusers hooks, no copied processor code):

* `PromptIdentityHook` (pre-forward on the transformer) identifies the prompt of this call from
  the forward arguments that alone determine the cross-attention K/V (`ModelAdapter.text_inputs`:
  ``encoder_hidden_states`` and, for Wan I2V, ``encoder_hidden_states_image``). Identity is by
  *content*: the same tensor object with an unchanged version counter is a hit without any
  work; another tensor (or an inference-mode tensor, which has no version counter) is compared
  with `torch.equal` against a stored copy (one reduction, no hash collisions). Memory
  addresses (``data_ptr``) are never used: they are reused by new tensors.
* `ProjectionCacheHook` (``new_forward`` on each K/V projection of every cross-attention module:
  ``to_k``, ``to_v``, fused ``to_kv``, image ``add_k_proj``/``add_v_proj``/fused ``to_added_kv``)
  returns the stored output for (projection, CFG branch, prompt), else computes and stores it.
  The CFG branch comes from the shared step tracker (diffusers' ``cache_context`` name).

State is reset at the end of every pipeline call (diffusers resets stateful hooks), so weights or
LoRA scales changed between generations are always picked up. While autograd records (training)
the cache steps aside. Joint-attention models (CogVideoX, HunyuanVideo) update their text tokens
in every block, so their text K/V differ per block and step: the cache does not apply there and
`enable_kv_cache` says so.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from ..core.adapters import ModelAdapter, forward_argument
from ..core.context import StepTracker
from ..core.hookset import HookSet
from ..core.nocopy import NotCopyable, VidaccelHook
from ..core.validate import integer

logger = logging.getLogger(__name__)

PROMPT_HOOK = "vidaccel_kv_cache_prompt"
PROJECTION_HOOK = "vidaccel_kv_cache"
PROJECTIONS = ("to_k", "to_v", "to_kv", "add_k_proj", "add_v_proj", "to_added_kv")
_USER = "kv_cache"


def _version(t: torch.Tensor) -> int | None:
    """The in-place version counter; None for inference-mode tensors, which have none (compared by content)."""
    return None if t.is_inference() else t._version


@dataclass
class _Prompt:
    pid: int
    copies: tuple  # detached clones (None where the input was None)
    refs: tuple  # weak references to the last tensors seen, for the no-work fast path
    versions: tuple


@dataclass(frozen=True)
class KVCacheConfig:
    """Settings of `vidaccel.enable_kv_cache` (immutable, validated on construction).

    Args:
        max_prompts: prompts whose K/V are held per transformer; the least recently used is dropped
            first. Default 4.
    """

    max_prompts: int = 4

    def __post_init__(self):
        object.__setattr__(self, "max_prompts", integer("max_prompts", self.max_prompts, minimum=1))


@dataclass
class KVCacheState(NotCopyable):
    """Everything `enable_kv_cache` installs on one transformer."""

    owner = _USER

    adapter: ModelAdapter
    max_prompts: int = 4
    tracker: StepTracker | None = None
    prompts: OrderedDict = field(default_factory=OrderedDict)  # pid -> _Prompt, least recently used first
    values: dict = field(default_factory=dict)  # (projection index, branch, pid) -> (tensor, version)
    current: tuple | None = None  # (pid, extra key) of the transformer call in progress
    next_pid: int = 0
    projection_names: list = field(default_factory=list)
    hooks: HookSet | None = None
    hits: int = 0
    misses: int = 0

    def reset(self) -> None:
        self.prompts.clear()
        self.values.clear()
        self.current = None

    @torch.compiler.disable
    def identify(self, tensors: tuple) -> int:
        """The id of the prompt whose K/V-determining inputs equal `tensors` (content, not address)."""
        for pid, p in self.prompts.items():
            if self._same(p, tensors):
                self.prompts.move_to_end(pid)
                return pid
        pid, self.next_pid = self.next_pid, self.next_pid + 1
        copies = tuple(None if t is None else t.detach().clone() for t in tensors)
        self.prompts[pid] = _Prompt(pid, copies, *self._refs(tensors))
        while len(self.prompts) > self.max_prompts:
            old, _ = self.prompts.popitem(last=False)
            self.values = {k: v for k, v in self.values.items() if k[2] != old}
        return pid

    @staticmethod
    def _refs(tensors):
        return (tuple(None if t is None else weakref.ref(t) for t in tensors),
                tuple(None if t is None else _version(t) for t in tensors))

    def _same(self, p: _Prompt, tensors: tuple) -> bool:
        if len(p.copies) != len(tensors):
            return False
        fast = all(
            (t is None and r is None)
            or (r is not None and t is not None and r() is t and v is not None and _version(t) == v)
            for t, r, v in zip(tensors, p.refs, p.versions)
        )
        if fast:
            return True
        for t, c in zip(tensors, p.copies):
            if (t is None) != (c is None):
                return False
            if t is not None and (t.shape != c.shape or t.dtype != c.dtype or t.device != c.device
                                  or not torch.equal(t, c)):
                return False
        p.refs, p.versions = self._refs(tensors)  # same content in a new tensor: take the fast path next time
        return True


class PromptIdentityHook(VidaccelHook):
    """Pre-forward hook on the transformer: which prompt (by content) does this call use?"""

    def __init__(self, state: KVCacheState):
        super().__init__()
        self.state = state

    def pre_forward(self, module, *args, **kwargs):
        state = self.state
        tensors = tuple(forward_argument(args, kwargs, name, pos) for name, pos in state.adapter.text_inputs)
        # a non-tensor prompt input (Cosmos 2.5's (text, image) tuple): the cache steps aside for this call
        if all(t is None for t in tensors) or torch.is_grad_enabled() \
                or not all(t is None or isinstance(t, torch.Tensor) for t in tensors):
            state.current = None
        else:
            lora_scale = (kwargs.get("attention_kwargs") or {}).get("scale", 1.0)  # PEFT scales K/V per call
            state.current = (state.identify(tensors), lora_scale)
        return args, kwargs

    def post_forward(self, module, output):
        self.state.current = None
        return output


class ProjectionCacheHook(VidaccelHook):
    """``new_forward`` on one K/V projection of a cross-attention module."""

    _is_stateful = True  # diffusers resets it at the end of every pipeline call

    def __init__(self, state: KVCacheState, index: int):
        super().__init__()
        self.state, self.index = state, index

    def new_forward(self, module, hidden_states, *args, **kwargs):
        state = self.state
        original = self.fn_ref.original_forward
        context = state.tracker.current
        if state.current is None or context is None or args or kwargs:
            return original(hidden_states, *args, **kwargs)
        # K/V depend on the prompt alone: separate passes at one step ("default", "default.1") may share them
        key = (self.index, context.branch.partition(".")[0], state.current)
        hit = state.values.get(key)
        if hit is not None:
            value, version = hit
            # the stored tensor must still be what we returned (nobody wrote into it; inference tensors
            # have no counter, and diffusers' processors never write into K/V) and fit this input
            if _version(value) == version and value.shape[:-1] == hidden_states.shape[:-1] \
                    and value.device == hidden_states.device:
                state.hits += 1
                return value
        value = original(hidden_states)
        state.values[key] = (value, _version(value))
        state.misses += 1
        return value

    def reset_state(self, module):
        self.state.reset()
        return module


def _projections(model: torch.nn.Module, adapter: ModelAdapter) -> list[tuple[str, torch.nn.Module]]:
    found = []
    for name, attn in adapter.cross_attention(model):
        for proj in PROJECTIONS:
            module = getattr(attn, proj, None)
            if isinstance(module, torch.nn.Module):
                found.append((f"{name}.{proj}", module))
    return found


def check_supported(model: torch.nn.Module, adapter: ModelAdapter) -> None:
    if adapter.cross_attention is not None and not adapter.text_inputs:
        raise ValueError(
            f"The cross-attention K/V cache does not apply to {type(model).__name__}: its cross-attention keys/values "
            f"do not depend on the prompt alone ({adapter.notes or 'see vidaccel.supported_models()'}), so they "
            f"cannot be reused exactly. Leave it off for this model (block reuse, vidaccel.enable_block_reuse, "
            f"does apply).")
    if adapter.cross_attention is None:
        raise ValueError(
            f"The cross-attention K/V cache does not apply to {type(model).__name__}: it uses joint attention, "
            f"where text tokens are updated by every block, so their keys/values differ per block and step and "
            f"cannot be reused exactly. It applies to models with separate text cross-attention (Wan, LTX-Video). "
            f"Leave it off for this model (block reuse, vidaccel.enable_block_reuse, does apply)."
        )


def install(model: torch.nn.Module, state: KVCacheState) -> None:
    """Register the prompt hook and the projection hooks; on failure remove what was added and re-raise."""

    def register(hooks: HookSet) -> None:
        hooks.add(model, PromptIdentityHook(state), PROMPT_HOOK)
        for index, (name, module) in enumerate(_projections(model, state.adapter)):
            state.projection_names.append(name)
            hooks.add(module, ProjectionCacheHook(state, index), PROJECTION_HOOK)

    state.hooks = HookSet(model, state.adapter, _USER)
    state.tracker = state.hooks.install(register)


def uninstall(model: torch.nn.Module, state: KVCacheState) -> None:
    """Remove exactly what `install` added and drop the cached tensors."""
    state.hooks.remove()
    state.reset()
