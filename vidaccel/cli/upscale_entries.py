"""Configuration-file entries that make a clip larger than the model's size: upsample + refine, FreeSwim.

    {name: refine, upscale: refine, strength: 0.7}
    {name: freeswim-c2, upscale: freeswim, cache_steps: 2}
    {name: freeswim-radial-c5, upscale: freeswim, cache_steps: 5, full_attention: {dense_steps: 0}}

Both run `vidaccel.pipelines.FreeSwimPipeline` as ``vidaccel upscale`` does: the wrapped pipeline at
the base size (default: the comparison's --height/--width, the model's own size), bicubic upsampling,
re-noising to ``strength`` and denoising at the target size (default: twice the base size; an entry's
``size: [H, W]`` sets it) - with FreeSwim's dual path (``freeswim``) or plainly (``refine``, the
wrapper's ``dual_path=False``). `vidaccel compare` measures these rows against a dense run at the
target size. Keys: ``strength``, ``base_steps``, ``flow_shift`` (the stages) and, for ``freeswim``,
the `FreeSwimConfig` fields; ``full_attention`` is ``dense``, ``radial`` or a mapping of
`RadialAttentionConfig` fields.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from ..core import validate

ENTRY_KEY = "upscale"
MODES = ("refine", "freeswim")
STAGE_KEYS = ("strength", "base_steps", "flow_shift")
DEFAULT_STRENGTH = 0.7  # FreeSwimPipeline's and `vidaccel upscale`'s default


def _freeswim_fields() -> list[str]:
    from ..freeswim import FreeSwimConfig

    return [f.name for f in dataclasses.fields(FreeSwimConfig)]


@dataclass(frozen=True)
class Upscale:
    """A parsed ``upscale`` entry: the mode, the stage settings and the `FreeSwimConfig` keyword arguments
    (``base_size`` absent: the comparison's size, filled in by `config`)."""

    mode: str
    strength: float = DEFAULT_STRENGTH
    base_steps: int | None = None
    flow_shift: float | None = None
    freeswim: dict = dataclasses.field(default_factory=dict)

    def base_size(self, default: tuple[int, int]) -> tuple[int, int]:
        return tuple(self.freeswim.get("base_size") or default)

    def config(self, base_size: tuple[int, int]):
        from ..freeswim import FreeSwimConfig

        return FreeSwimConfig(**{**_built(self.freeswim), "base_size": self.base_size(base_size)})

    def describe(self) -> dict:
        out = {"mode": self.mode, "strength": self.strength, "base_steps": self.base_steps, "flow_shift": self.flow_shift}
        out.update({k: list(v) if isinstance(v, tuple) else v for k, v in self.freeswim.items()})
        return out

    def check(self, pipe, base_size, target) -> None:
        """Before anything runs: a Wan pipeline and sizes FreeSwim takes (multiples of VAE x patch, >= base)."""
        from ..core.adapters import adapter_for
        from ..core.models import transformers
        from ..pipelines.freeswim import check_sizes

        model = transformers(pipe)[0]
        if not adapter_for(model).freeswim:
            raise ValueError(f"upscale entries run FreeSwimPipeline, which supports Wan pipelines only, not "
                             f"{type(pipe).__name__}")
        multiple = int(pipe.vae_scale_factor_spatial) * int(model.config.patch_size[1])
        check_sizes(int(target[0]), int(target[1]), self.base_size(base_size), multiple)

    def runner(self, pipe, base_size):
        """``(callable, wrapper)``: the FreeSwim wrapper's call with this entry's stage settings (it takes the
        pipeline's generation keywords), and the wrapper, whose ``remove()`` restores `pipe` exactly."""
        from ..pipelines import FreeSwimPipeline

        wrapper = FreeSwimPipeline(pipe, self.config(base_size))
        call = functools.partial(wrapper.__call__, strength=self.strength, base_num_inference_steps=self.base_steps,
                                 flow_shift=self.flow_shift, dual_path=self.mode == "freeswim")
        return call, wrapper


def _built(kwargs: dict) -> dict:
    """FreeSwimConfig keyword arguments with ``full_attention`` as FreeSwim takes it."""
    from ..sparse.config import RadialAttentionConfig

    out = dict(kwargs)
    full = out.get("full_attention")
    if isinstance(full, dict):
        out["full_attention"] = RadialAttentionConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                         for k, v in full.items()})
    return out


def parse(entry: dict, where: str) -> Upscale | None:
    """Pop ``upscale`` and its keys from `entry` (a config-file mapping); None when absent. Errors name the
    key and what is allowed; keys of other parts of the entry are left in it."""
    from ..freeswim import FreeSwimConfig

    mode = entry.pop(ENTRY_KEY, None)
    if mode is None:
        return None
    if mode not in MODES:
        raise ValueError(f"{where}: key {ENTRY_KEY!r} is {mode!r}; available: {', '.join(MODES)} (upsample + refine, "
                         f"or FreeSwim's dual path)")

    def take(key, check):
        value = entry.pop(key)
        try:
            return check(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: key {key!r} = {value!r} is invalid for upscale {mode}: {exc}") from None

    stage = {}
    if "strength" in entry:
        stage["strength"] = take("strength", _strength)
    if "base_steps" in entry:
        stage["base_steps"] = take("base_steps", lambda v: validate.integer("base_steps", v, minimum=1))
    if "flow_shift" in entry:
        stage["flow_shift"] = take("flow_shift", lambda v: validate.number("flow_shift", v, above=0.0))
    fields = _freeswim_fields()
    allowed = ["base_size"] if mode == "refine" else fields
    freeswim = {}
    for key in [k for k in entry if k in fields]:
        if key not in allowed:
            raise ValueError(f"{where}: key {key!r} is a FreeSwim setting; 'upscale: refine' runs the plain pipeline "
                             f"at the target size (only 'base_size' applies): use 'upscale: freeswim'")
        freeswim[key] = take(key, lambda v, key=key: _checked(key, v, FreeSwimConfig))
    return Upscale(mode, **stage, freeswim=freeswim)


def keys_of(mode: str) -> list[str]:
    """The entry keys `mode` takes, for messages."""
    return sorted([*STAGE_KEYS, *(["base_size"] if mode == "refine" else _freeswim_fields())])


def _strength(value) -> float:
    value = validate.number("strength", value, above=0.0)
    if value > 1.0:
        raise ValueError(f"strength must be in (0, 1] (the noise level to refine from), got strength={value!r}.")
    return value


def _plain(value):
    return tuple(value) if isinstance(value, list) else value


def _checked(key: str, value, cls):
    """`value` for FreeSwimConfig field `key`, checked by the config class itself (one key at a time)."""
    value = _plain(value)
    if key == "full_attention" and isinstance(value, dict):
        from ..sparse.config import RadialAttentionConfig

        fields = sorted(f.name for f in dataclasses.fields(RadialAttentionConfig))
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ValueError(f"full_attention is 'dense', 'radial' or a mapping of RadialAttentionConfig fields "
                             f"({', '.join(fields)}); {unknown[0]!r} is none of them")
        RadialAttentionConfig(**{k: _plain(v) for k, v in value.items()})  # raises naming the field
        cls(full_attention="radial")
        return value
    cls(**{key: value})
    return value
