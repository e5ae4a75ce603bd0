"""diffusers' own caches as configuration-file entries, applied through ``transformer.enable_cache``.

    {name: fbc-0.1, diffusers_cache: first_block, threshold: 0.1}
    {name: mag, diffusers_cache: mag, threshold: 0.06, calibrate: true}      # or mag_ratios: [1.0, ...]
    {name: taylor, diffusers_cache: taylorseer, cache_interval: 4, use_lite_mode: true}
    {name: pab, diffusers_cache: pab, spatial_attention_block_skip_range: 2}

`parse` reads an entry's ``diffusers_cache`` and its keys (diffusers' own field names) into a
`DiffusersCache`; `enable` builds the diffusers config for each transformer of a pipeline and applies
it, `disable` removes it exactly (``disable_cache`` plus the hook registries, rebound ``forward``
attributes and ``_cache_config`` that diffusers leaves behind); `calibrate_mag` runs MagCache's
calibration mode once and reads the ratios it prints. Not exposed as keys: MagCache's
``num_inference_steps`` (the run's step count) and PAB's ``current_timestep_callback`` (the
pipeline's ``current_timestep``).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass, field, replace

from ..core import validate


def _optional_int(minimum):
    return lambda name, v: validate.integer(name, v, minimum=minimum, optional=True)


def _int(minimum):
    return lambda name, v: validate.integer(name, v, minimum=minimum)


def _number(minimum=0.0, maximum=None):
    def check(name, v):
        v = validate.number(name, v, minimum=minimum)
        if maximum is not None and v > maximum:
            raise ValueError(f"{name} must be a number between {minimum} and {maximum}, got {name}={v!r}.")
        return v

    return check


def _ratios(name, v):
    if not isinstance(v, (list, tuple)) or not v:
        raise ValueError(f"{name} must be a non-empty list of numbers (one per step, from a calibration run), got "
                         f"{name}={v!r}.")
    return tuple(validate.number(f"{name}[{i}]", x, minimum=0.0) for i, x in enumerate(v))


def _patterns(name, v):
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or not all(isinstance(p, str) for p in v):
        raise ValueError(f"{name} must be a list of regular expressions (module names), got {name}={v!r}.")
    for p in v:
        try:
            re.compile(p)
        except re.error as exc:
            raise ValueError(f"{name}: {p!r} is not a regular expression ({exc}).") from None
    return tuple(v)


def _timestep_range(name, v):
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"{name} must be two timesteps [low, high] (skip while low < t < high), got {name}={v!r}.")
    low, high = (validate.number(f"{name}[{i}]", x, minimum=0.0) for i, x in enumerate(v))
    if not low < high:
        raise ValueError(f"{name} must have low < high, got {name}={v!r}.")
    return (low, high)


DTYPES = ("float32", "bfloat16", "float16")


def _dtype(name, v):
    if v not in DTYPES:
        raise ValueError(f"{name} must be one of {', '.join(DTYPES)}, got {name}={v!r} (default: the transformer's "
                         f"dtype).")
    return v


_PAB_KEYS = {f"{what}_attention_{key}": check for what in ("spatial", "temporal", "cross")
             for key, check in (("block_skip_range", _optional_int(1)), ("timestep_skip_range", _timestep_range),
                                ("block_identifiers", _patterns))}


@dataclass(frozen=True)
class Kind:
    """One diffusers cache: the entry value, diffusers' name (the feature table's label), its config
    class in ``diffusers.hooks`` and the keys an entry may give (with their checks)."""

    key: str
    cache: str
    config_class: str
    keys: dict = field(default_factory=dict)


KINDS = {k.key: k for k in (
    Kind("first_block", "FirstBlockCache", "FirstBlockCacheConfig", {"threshold": _number()}),
    Kind("mag", "MagCache", "MagCacheConfig", {
        "threshold": _number(), "max_skip_steps": _int(0), "retention_ratio": _number(0.0, 1.0),
        "mag_ratios": _ratios, "calibrate": validate.flag}),
    Kind("taylorseer", "TaylorSeerCache", "TaylorSeerCacheConfig", {
        "cache_interval": _int(1), "disable_cache_before_step": _int(1), "disable_cache_after_step": _optional_int(1),
        "max_order": _int(0), "taylor_factors_dtype": _dtype, "skip_predict_identifiers": _patterns,
        "cache_identifiers": _patterns, "use_lite_mode": validate.flag}),
    Kind("pab", "PyramidAttentionBroadcast", "PyramidAttentionBroadcastConfig", _PAB_KEYS),
)}
ENTRY_KEY = "diffusers_cache"
_NOT_KEYS = {"num_inference_steps": "it is the run's step count (--steps), filled in by vidaccel",
             "current_timestep_callback": "vidaccel passes the pipeline's current_timestep"}


@dataclass(frozen=True)
class DiffusersCache:
    """A parsed ``diffusers_cache`` entry: the kind (a `KINDS` key) and its checked options.

    For MagCache, ``options["mag_ratios"]`` holds given ratios; ``calibrate: true`` leaves them to
    `calibrate_mag`, whose result `with_ratios` stores in ``calibrated``.
    """

    kind: str
    options: dict
    calibrated: tuple | None = None

    @property
    def cache(self) -> str:
        """diffusers' name of the cache, e.g. ``"FirstBlockCache"``."""
        return KINDS[self.kind].cache

    @property
    def needs_calibration(self) -> bool:
        return bool(self.options.get("calibrate")) and self.calibrated is None

    def with_ratios(self, ratios) -> "DiffusersCache":
        return replace(self, calibrated=tuple(float(r) for r in ratios))

    def describe(self) -> dict:
        return {"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}}

    def config(self, pipe, model, steps: int):
        """diffusers' config object for `model` (a fresh one per transformer: diffusers keeps state in it)."""
        import torch
        from diffusers import hooks

        cls = getattr(hooks, KINDS[self.kind].config_class)
        kwargs = {k: v for k, v in self.options.items() if k != "calibrate"}
        if self.kind == "mag":
            if self.needs_calibration:
                raise RuntimeError("MagCache with calibrate: true needs its calibration run first (calibrate_mag)")
            ratios = self.calibrated if self.calibrated is not None else kwargs["mag_ratios"]
            kwargs.update(mag_ratios=list(ratios), num_inference_steps=int(steps))
        elif self.kind == "taylorseer":
            dtype = kwargs.pop("taylor_factors_dtype", None)
            kwargs["taylor_factors_dtype"] = getattr(torch, dtype) if dtype else model.dtype
            for key in ("skip_predict_identifiers", "cache_identifiers"):
                if kwargs.get(key) is not None:
                    kwargs[key] = list(kwargs[key])
        elif self.kind == "pab":
            kwargs["current_timestep_callback"] = lambda: _current_timestep(pipe)
        return cls(**kwargs)

    def summary_line(self) -> str:
        extra = ""
        if self.calibrated is not None:
            extra = f", mag_ratios calibrated on this model: [{', '.join(f'{r:.4f}' for r in self.calibrated)}]"
        return f"diffusers {KINDS[self.kind].config_class}({json.dumps(self.describe())}){extra}"


def _current_timestep(pipe):
    t = getattr(pipe, "current_timestep", None)
    return 0 if t is None else t


def _kinds() -> str:
    return ", ".join(sorted(KINDS))


def parse(entry: dict, where: str) -> DiffusersCache | None:
    """Pop ``diffusers_cache`` and its keys from `entry` (a config-file mapping); None when absent. Errors
    name the key and what is allowed. Keys of other parts of the entry are left in it."""
    kind = entry.pop(ENTRY_KEY, None)
    if kind is None:
        return None
    if kind not in KINDS:
        raise ValueError(f"{where}: key {ENTRY_KEY!r} is {kind!r}; available: {_kinds()}")
    spec = KINDS[kind]
    for key, why in _NOT_KEYS.items():
        if key in entry:
            raise ValueError(f"{where}: key {key!r} is not taken for {ENTRY_KEY} {kind}: {why}")
    options = {}
    for key in [k for k in entry if k in spec.keys]:
        value = entry.pop(key)
        try:
            options[key] = spec.keys[key](key, value)
        except ValueError as exc:
            raise ValueError(f"{where}: key {key!r} = {value!r} is invalid for {ENTRY_KEY} {kind}: {exc}") from None
    if kind == "mag":
        if options.get("mag_ratios") is None and not options.get("calibrate"):
            raise ValueError(f"{where}: {ENTRY_KEY} mag needs calibrated magnitude ratios: give 'calibrate: true' "
                             f"(vidaccel runs diffusers' calibration mode once, untimed, and uses its ratios) or "
                             f"'mag_ratios: [1.0, ...]' (one per step, from an earlier calibration on this model)")
        if options.get("mag_ratios") is not None and options.get("calibrate"):
            raise ValueError(f"{where}: {ENTRY_KEY} mag takes either 'calibrate: true' or 'mag_ratios', not both")
    if kind == "pab" and not any(options.get(f"{w}_attention_block_skip_range") for w in ("spatial", "temporal",
                                                                                            "cross")):
        raise ValueError(f"{where}: {ENTRY_KEY} pab needs at least one of 'spatial_attention_block_skip_range', "
                         f"'temporal_attention_block_skip_range', 'cross_attention_block_skip_range' (an int >= 1: "
                         f"recompute that attention every N-th step)")
    return DiffusersCache(kind, options)


def keys_of(kind: str) -> list[str]:
    """The entry keys `kind` takes, for messages."""
    return sorted(KINDS[kind].keys)


# ----------------------------------------------------------------------------------- apply / remove


@dataclass
class _Installed:
    model: object
    registries: set  # ids of modules that had a diffusers hook registry before
    forwards: set  # ids of modules that had a `forward` instance attribute before
    had_cache_config: bool


def _snapshot(model) -> _Installed:
    modules = list(model.modules())
    return _Installed(model, {id(m) for m in modules if hasattr(m, "_diffusers_hook")},
                      {id(m) for m in modules if "forward" in m.__dict__}, "_cache_config" in model.__dict__)


def _one_transformer(pipe):
    from ..core.models import transformers

    models = transformers(pipe)
    if len(models) > 1:
        raise ValueError(f"diffusers' MagCache counts steps per transformer, and {type(pipe).__name__} splits the "
                         f"steps between {len(models)} transformers (Wan2.2): leave MagCache out for this pipeline")
    return models


def enable(pipe, cache: DiffusersCache, steps: int) -> list:
    """Apply `cache` to every transformer of `pipe` with ``transformer.enable_cache`` (the feature table is
    asked first when vidaccel is installed); returns the handle `disable` takes. All or nothing."""
    from ..core.models import transformers

    models = _one_transformer(pipe) if cache.kind == "mag" else transformers(pipe)
    done = []
    try:
        for model in models:
            installed = _snapshot(model)
            model.enable_cache(cache.config(pipe, model, steps))
            done.append(installed)
            if cache.kind == "taylorseer" and not _hooked(model):
                raise ValueError(
                    f"diffusers' TaylorSeer hooks no module of {type(model).__name__}: its default patterns "
                    f"(attention modules named '...attn') match none here. Set 'use_lite_mode: true' or "
                    f"'cache_identifiers: [regex, ...]' (module names such as 'blocks\\.\\d+\\.attn1')")
    except BaseException:
        disable(done)
        raise
    return done


def _hooked(model) -> bool:
    return any(getattr(m, "_diffusers_hook", None) is not None and m._diffusers_hook.hooks for m in model.modules())


def disable(handle: list) -> None:
    """Undo `enable` exactly: ``disable_cache``, then drop what it leaves behind on modules that had none of
    it before (empty hook registries, the re-bound ``forward``, the ``_cache_config`` attribute)."""
    from ..core.registry import invalidate_hook_caches, unregister_hooks

    for installed in reversed(handle):
        model = installed.model
        if getattr(model, "_cache_config", None) is not None:
            model.disable_cache()
        for module in model.modules():
            if id(module) not in installed.registries and hasattr(module, "_diffusers_hook"):
                unregister_hooks(module, [], created=True)  # acts only on a registry left empty
            elif id(module) not in installed.forwards and "forward" in module.__dict__:
                unregister_hooks(module, [], created=False)
        if not installed.had_cache_config:
            model.__dict__.pop("_cache_config", None)
        invalidate_hook_caches(model)
    handle.clear()


CALIBRATION_BANNER = "Calibration Complete"  # diffusers prints it, then the ratios' list on the next line


def calibrate_mag(pipe, steps: int, run_once) -> list[float]:
    """MagCache's calibration mode for one generation (`run_once()`, nothing skipped); returns the ratios
    diffusers prints at its end (the first branch to finish: the conditional one in Wan's loop)."""
    from diffusers.hooks import MagCacheConfig

    (model,) = _one_transformer(pipe)
    handle = [_snapshot(model)]
    buffer = io.StringIO()
    try:
        model.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=int(steps)))
        with contextlib.redirect_stdout(buffer):
            run_once()
    finally:
        disable(handle)
    lines = buffer.getvalue().splitlines()
    for k, line in enumerate(lines[:-1]):
        if CALIBRATION_BANNER in line:
            ratios = json.loads(lines[k + 1])
            if len(ratios) == steps:
                return [float(r) for r in ratios]
    raise RuntimeError(f"diffusers' MagCache calibration printed no {steps} ratios after a {steps}-step run (it "
                       f"prints them when a branch finishes num_inference_steps steps); pass 'mag_ratios' instead")
