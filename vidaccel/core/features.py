"""The feature table: what vidaccel can install on a transformer, and which features refuse each other.

Every ``enable_*`` / ``accelerate`` / ``profile`` call asks `refuse_conflicts(model, FEATURE)`
before it changes anything; nothing else decides compatibility. A feature's state lives at
``model.__dict__[feature.state_attr]`` (`installed`, `state_of`). Besides vidaccel's own features
the table knows outside conditions: diffusers' context parallelism (``enable_parallelism``) and
diffusers' caches (``enable_cache`` or ``apply_*`` hooks), in two kinds: step caches that skip
whole blocks (FirstBlockCache, MagCache, SeaCache) and attention caches that hook the attention
modules themselves (PyramidAttentionBroadcast, FasterCache, TaylorSeerCache). vidaccel refuses a
conflicting diffusers cache in both orders: its features check before installing, and while any
is installed ``transformer.enable_cache`` checks first (`refuse_diffusers_cache`, called by the
guard in `vidaccel.core.context`), with hooks applied by ``apply_*`` directly refused at the
transformer's next generation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Feature:
    """One row of the table.

    Attributes:
        key: short identifier used in `CONFLICTS`.
        label: how messages name it.
        state_attr: where its state lives on a transformer (None: nothing stays installed).
        turn_off: the call (or advice) that removes it, quoted in error messages.
        outermost: its block hooks must wrap every other feature's on the same modules (FreeSwim runs each
            block once per branch, and what it wraps - block reuse - must see each branch's call). Another
            feature's install or removal takes such a feature's hooks off and puts them back on top
            (`core.registry.beneath_outermost`).
    """

    key: str
    label: str
    state_attr: str | None
    turn_off: str
    outermost: bool = False


SPARSE_ATTENTION = Feature("sparse_attention", "vidaccel sparse attention", "_vidaccel_sparse_attention",
                           "vidaccel.remove(pipe)")
FREESWIM = Feature("freeswim", "FreeSwim", "_vidaccel_freeswim", "vidaccel.disable_freeswim(pipe)", outermost=True)
KV_CACHE = Feature("kv_cache", "The K/V cache", "_vidaccel_kv_cache", "vidaccel.disable_kv_cache(pipe)")
BLOCK_REUSE = Feature("block_reuse", "Block reuse", "_vidaccel_block_reuse", "vidaccel.disable_block_reuse(pipe)")
PROFILER = Feature("profiler", "vidaccel.profile", None, "run it without profiling")
CONTEXT_PARALLEL = Feature("context_parallel", "diffusers context parallelism", None,
                           "generate one video per GPU instead (data-parallel generation)")
DIFFUSERS_CACHE = Feature("diffusers_cache", "a diffusers step cache", None,
                          "call `pipe.transformer.disable_cache()` (or remove the apply_* hooks)")
DIFFUSERS_ATTENTION_CACHE = Feature("diffusers_attention_cache", "a diffusers attention cache", None,
                                    DIFFUSERS_CACHE.turn_off)
FEATURES = (SPARSE_ATTENTION, FREESWIM, KV_CACHE, BLOCK_REUSE)  # the ones with installed state

_SAME_BLOCKS = "both skip or approximate the same block computations; keep one of them"
_UNMODIFIED = "profiling must see the unmodified model, or its statistics describe something else"

# Pairs that cannot run together, with the reason (order-free: enabling either refuses the other).
CONFLICTS: dict[frozenset, str] = {
    frozenset({"sparse_attention", "freeswim"}):
        "both replace self-attention (FreeSwim brings its own window attention; use it alone)",
    frozenset({"freeswim", "context_parallel"}):
        "FreeSwim does not run under context parallelism (its window and full branches and the block-wise "
        "cross-attention cache assume the whole sequence on one rank)",
    frozenset({"block_reuse", "diffusers_cache"}): _SAME_BLOCKS,
    **{frozenset({other, "diffusers_attention_cache"}):
       "the diffusers cache hooks the same attention modules and replays their outputs, so vidaccel's "
       "attention never sees the calls it replaces; keep one of them"
       for other in ("sparse_attention", "freeswim")},
    frozenset({"block_reuse", "diffusers_attention_cache"}): _SAME_BLOCKS,
    **{frozenset({"profiler", other}): _UNMODIFIED
       for other in ("sparse_attention", "freeswim", "block_reuse", "diffusers_cache",
                     "diffusers_attention_cache")},
    frozenset({"profiler", "context_parallel"}):
        "attention samples need whole rows: profile in a single process",
}


class FeatureConflictError(RuntimeError, ValueError):
    """A feature was asked for while another that it cannot run with is active (or itself already is).

    A RuntimeError and a ValueError at once: ``enable_*`` and ``accelerate`` raised RuntimeError
    for these cases, the profiler and ``enable_context_parallel`` ValueError; both still catch it.
    """


@dataclass(frozen=True)
class Active:
    """A feature found active on a model; `label` names the specific diffusers cache where that applies."""

    feature: Feature
    label: str


def state_of(model: torch.nn.Module, feature: Feature):
    """The feature's state on `model`, or None."""
    return model.__dict__.get(feature.state_attr) if feature.state_attr else None


def installed(model: torch.nn.Module, feature: Feature) -> bool:
    return state_of(model, feature) is not None


def active(model: torch.nn.Module) -> list[Active]:
    """Everything from the table that is active on `model` now."""
    found = [Active(f, f.label) for f in FEATURES if installed(model, f)]
    if getattr(model, "_parallel_config", None) is not None:
        found.append(Active(CONTEXT_PARALLEL, CONTEXT_PARALLEL.label))
    found += [Active(cache_feature(name), f"diffusers' {name}") for name in diffusers_caches(model)]
    return found


def _conflict_lines(feature: Feature, others) -> list[str]:
    lines = []
    for other in others:
        reason = CONFLICTS.get(frozenset({feature.key, other.feature.key}))
        if reason is not None:
            lines.append(f"{other.label} is active, and {reason} (to fix: {other.feature.turn_off})")
    return lines


def refuse_conflicts(model: torch.nn.Module, feature: Feature) -> None:
    """Raise `FeatureConflictError` when `feature` is already installed on `model` or cannot run with
    something active there; the message names each conflict, why, and the call that turns it off."""
    name = type(model).__name__
    others = active(model)
    for other in others:
        if other.feature == feature and feature.state_attr is not None:
            raise FeatureConflictError(
                f"{feature.label} is already enabled on {name}. Call {feature.turn_off} first, then enable it "
                f"again with the new settings.")
    if conflicts := _conflict_lines(feature, others):
        raise FeatureConflictError(f"{feature.label} cannot run on {name} as it is: " + "; ".join(conflicts)
                                   + ". Turn off what is named, then try again.")


def refuse_combination(wanted, where: str) -> None:
    """Raise `FeatureConflictError` when two of `wanted` (`Active` entries: what a configuration asks for,
    before anything is installed) cannot run together; the message names `where`, both and the reason."""
    wanted = list(wanted)
    lines = []
    for i, a in enumerate(wanted):
        for b in wanted[i + 1:]:
            reason = CONFLICTS.get(frozenset({a.feature.key, b.feature.key}))
            if reason is not None:
                lines.append(f"{a.label} and {b.label} cannot run together: {reason}")
    if lines:
        raise FeatureConflictError(f"{where}: " + "; ".join(lines) + " (vidaccel's feature table refuses this "
                                   "combination). Split it into separate configurations.")


def refuse_diffusers_cache(model: torch.nn.Module, cache: str) -> None:
    """Raise `FeatureConflictError` when diffusers' cache `cache` (e.g. ``"FirstBlockCache"``) cannot run
    with the vidaccel features installed on `model`."""
    installed_features = [Active(f, f.label) for f in FEATURES if installed(model, f)]
    if conflicts := _conflict_lines(cache_feature(cache), installed_features):
        raise FeatureConflictError(
            f"diffusers' {cache} cannot run on {type(model).__name__} with vidaccel as it is: " + "; ".join(conflicts)
            + f". Turn off what is named first, or leave {cache} off ({DIFFUSERS_CACHE.turn_off} once applied).")


# ------------------------------------------------------------------------------- diffusers caches


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


_ATTENTION_CACHES = ("FasterCache", "PyramidAttentionBroadcast", "TaylorSeerCache")


def cache_feature(cache: str) -> Feature:
    """The table row of diffusers' cache `cache`: an attention cache or a step cache."""
    return DIFFUSERS_ATTENTION_CACHE if cache in _ATTENTION_CACHES else DIFFUSERS_CACHE


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


# ------------------------------------------------------------------------------------------ cache-dit


def cache_dit_wraps_hooks(model: torch.nn.Module) -> bool:
    """cache-dit was enabled after a diffusers hook (vidaccel's) was on `model`: it wrapped the hooked forward (a
    ``functools.partial``), which its ``disable_cache`` cannot restore, and which removing the hooks would drop."""
    return bool(getattr(model, "_is_cached", False)) and isinstance(model.__dict__.get("_original_forward"),
                                                                    functools.partial)


def refuse_cache_dit_after_vidaccel(model: torch.nn.Module) -> None:
    """Raise `FeatureConflictError` naming the order that works when cache-dit wrapped vidaccel's hooks."""
    if cache_dit_wraps_hooks(model):
        raise FeatureConflictError(
            f"cache-dit was enabled on {type(model).__name__} after vidaccel, so it wraps vidaccel's hooks: "
            f"cache_dit.disable_cache cannot undo that, and vidaccel.remove would drop cache-dit's wrapper. Enable "
            f"cache-dit first: call vidaccel.remove(pipe), then cache_dit.disable_cache(pipe), then "
            f"cache_dit.enable_cache(pipe, ...) and vidaccel.accelerate(pipe, ...) in that order.")


def let_cache_dit_unwrap(model: torch.nn.Module) -> None:
    """Once vidaccel's hooks are gone from `model`, point cache-dit's saved forward (the hooked one) at the class's
    own, so that ``cache_dit.disable_cache`` can finish (it re-binds that function to the module)."""
    if cache_dit_wraps_hooks(model):
        model.__dict__["_original_forward"] = type(model).forward
