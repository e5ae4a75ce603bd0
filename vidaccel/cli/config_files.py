"""Acceleration configurations for the CLI: ``--accel`` presets and YAML/JSON config files.

`parse_accel`: a preset name or a config file -> `NamedConfig` objects; file errors name the
key. An entry combines sparse attention (``type``), vidaccel's caches (``kv_cache``,
``block_reuse``), one of diffusers' caches (``diffusers_cache``, `diffusers_caches`), an
upscaling stage (``upscale``, `upscale_entries`) and a target ``size``; combinations the feature
table refuses fail here. `applied` installs a `NamedConfig`, yields what generates with it and
removes it exactly: the one dispatch point of ``generate``, ``compare`` and ``bench``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..report.results import BASELINE


@dataclass(frozen=True)
class NamedConfig:
    """A labelled configuration: sparse attention (``config``), caches, an upscaling stage, a target size.

    ``config`` None and nothing else is a dense baseline. ``kv_cache`` holds `enable_kv_cache`
    keyword arguments, ``block_reuse`` a resolved `BlockReuseConfig`, ``diffusers_cache`` a
    `diffusers_caches.DiffusersCache`, ``upscale`` an `upscale_entries.Upscale` (None: not enabled).
    ``size`` is the target ``(height, width)`` in pixels (None: the run's own size; twice it for
    ``upscale``); ``reference`` names the baseline it is compared with (None: ``baseline``).
    """

    name: str
    config: object | None
    source: str
    kv_cache: dict | None = None
    block_reuse: object | None = None
    profile_path: str | None = None  # where block_reuse's profile came from, for the report
    diffusers_cache: object | None = None
    upscale: object | None = None
    size: tuple | None = None
    reference: str | None = None

    @property
    def is_baseline(self) -> bool:
        return (self.config is None and self.kv_cache is None and self.block_reuse is None
                and self.diffusers_cache is None and self.upscale is None)

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(height, width)`` this configuration generates at, for a comparison at ``height x width``."""
        if self.size is not None:
            return tuple(self.size)
        return (2 * height, 2 * width) if self.upscale is not None else (height, width)

    def describe(self) -> dict:
        out = {"name": self.name, "type": "dense" if self.config is None else type(self.config).__name__,
               "source": self.source}
        if self.config is not None:
            out.update(_fields(self.config))
        if self.kv_cache is not None:
            out["kv_cache"] = dict(self.kv_cache)
        if self.block_reuse is not None:
            out["block_reuse"] = {**_fields(self.block_reuse), "profile": self.profile_path}
            if self.block_reuse.profile is not None:  # how its blocks were classified (block_reuse.tau)
                out["block_reuse"]["tau"] = self.block_reuse.profile.tau.get("method")
        if self.diffusers_cache is not None:
            out["diffusers_cache"] = self.diffusers_cache.describe()
        if self.upscale is not None:
            out["upscale"] = self.upscale.describe()
        if self.size is not None:
            out["size"] = list(self.size)
        if self.reference is not None and self.reference != BASELINE:
            out["reference"] = self.reference
        if self.is_baseline and self.name != BASELINE:
            out["baseline"] = True  # the dense run at its size, that size's reference
        return out


def _fields(obj) -> dict:
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k != "profile"}


def _presets() -> dict:
    from ..sparse.config import PRESETS

    return PRESETS


def _preset_list() -> str:
    return ", ".join(sorted(_presets()))


def parse_accel(spec: str) -> list[NamedConfig]:
    """``--accel`` value: a preset name, or a ``.yaml``/``.yml``/``.json`` file (one config or ``configs:``)."""
    presets = _presets()
    if spec in presets:
        return [NamedConfig(spec, presets[spec](), f"preset {spec}")]
    if spec.lower().endswith((".yaml", ".yml", ".json")) or os.path.sep in spec:
        return load_config_file(spec)
    raise ValueError(f"unknown preset {spec!r}: available presets are {_preset_list()}; or pass a .yaml/.json "
                     f"config file")


def _syntax_error(path: Path, exc: Exception) -> str:
    """One line naming the file, line and column (YAML's own message spans several lines with a snippet)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"config file {path}, line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)  # yaml.MarkedYAMLError
    if mark is not None:
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        context = getattr(exc, "context", None)
        context = f" ({' '.join(context.split())})" if context else ""
        return f"config file {path}, line {mark.line + 1} column {mark.column + 1}: invalid YAML: {problem}{context}"
    return f"config file {path}: cannot parse it ({' '.join(str(exc).split())})"


def load_config_file(path) -> list[NamedConfig]:
    """Read a YAML/JSON file holding one configuration mapping or ``configs: [mapping, ...]``.

    A mapping has ``type`` (a preset name: its config class), optional ``name`` and the config
    class's fields, e.g. ``{type: radial, decay_factor: 0.2, dense_steps: 2}`` or
    ``{type: window, kernel: [3, 5, 5]}``; and/or ``kv_cache``, ``block_reuse``, ``diffusers_cache``
    with its keys (`diffusers_caches`), ``upscale`` with its keys (`upscale_entries`), ``size``.
    Errors say which key is wrong and what is allowed; refused combinations fail here.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise ValueError(_syntax_error(path, exc)) from exc
    if isinstance(data, dict) and "configs" in data:
        extra = sorted(set(data) - {"configs"})
        if extra:
            raise ValueError(f"config file {path}: unknown top-level key {extra[0]!r} next to 'configs'")
        entries = data["configs"]
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"config file {path}: key 'configs' must be a non-empty list of mappings")
        where = [f"configs[{i}]" for i in range(len(entries))]
    else:
        entries, where = [data], ["top level"]
    out = []
    for i, (entry, loc) in enumerate(zip(entries, where)):
        default = path.stem if len(entries) == 1 else f"{path.stem}-{i}"
        out.append(_config_from_mapping(entry, f"config file {path} ({loc})", default, path.parent))
    return out


COMMON_KEYS = ("name", "type", "kv_cache", "block_reuse", "diffusers_cache", "upscale", "size")


def _config_from_mapping(entry, where: str, default_name: str, base_dir: Path) -> NamedConfig:
    from . import diffusers_caches, upscale_entries

    presets = _presets()
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping like {{type: radial, dense_steps: 2}}, got {entry!r}")
    entry = dict(entry)
    kind = entry.pop("type", None)
    name = str(entry.pop("name", default_name))
    kv = _kv_cache_options(entry.pop("kv_cache", None), where)
    reuse, profile_path = _block_reuse_options(entry.pop("block_reuse", None), where, base_dir)
    if kind is not None and kind not in presets:
        raise ValueError(f"{where}: key 'type' is {kind!r}; available: {_preset_list()}")
    cache = diffusers_caches.parse(entry, where)
    upscale = upscale_entries.parse(entry, where)
    size = _size_option(entry.pop("size", None), where)
    _refuse_combinations(where, kind, kv, reuse, cache, upscale)
    extra = {"diffusers_cache": cache, "upscale": upscale, "size": size}
    if kind is None:
        if entry:
            raise ValueError(f"{where}: unknown key {sorted(entry)[0]!r}{_for(None, cache, upscale)}; valid keys: "
                             f"{', '.join(_valid_keys(None, cache, upscale))}"
                             + ("" if cache or upscale else f" (sparse attention needs 'type': one of {_preset_list()})"))
        if kv is None and reuse is None and cache is None and upscale is None:
            raise ValueError(f"{where}: missing key 'type' (sparse attention: one of {_preset_list()}); an entry "
                             f"with only kv_cache, block_reuse, diffusers_cache or upscale needs no type"
                             + (" (a dense run at another size is the baseline there, added by compare)" if size else ""))
        return NamedConfig(name, None, where, kv, reuse, profile_path, **extra)
    cls = presets[kind]
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in entry.items():
        if key not in fields:
            raise ValueError(f"{where}: unknown key {key!r}{_for(kind, cache, upscale)}; valid keys: "
                             f"{', '.join(_valid_keys(kind, cache, upscale))}")
        kwargs[key] = tuple(value) if isinstance(value, list) else value
        try:  # one key at a time, so the message names the key that is wrong
            cls(**{key: kwargs[key]})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: key {key!r} = {value!r} is invalid: {exc}") from None
    try:
        config = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: keys {', '.join(map(repr, kwargs))} do not fit together: {exc}") from None
    return NamedConfig(name, config, where, kv, reuse, profile_path, **extra)


def _for(kind, cache, upscale) -> str:
    parts = ([f"type {kind}"] if kind else []) + ([f"diffusers_cache {cache.kind}"] if cache else []) + (
        [f"upscale {upscale.mode}"] if upscale else [])
    return f" for {' with '.join(parts)}" if parts else ""


def _valid_keys(kind, cache, upscale) -> list[str]:
    from . import diffusers_caches, upscale_entries

    keys = list(COMMON_KEYS)
    if kind is not None:
        keys += sorted(f.name for f in dataclasses.fields(_presets()[kind]))
    if cache is not None:
        keys += diffusers_caches.keys_of(cache.kind)
    if upscale is not None:
        keys += upscale_entries.keys_of(upscale.mode)
    return list(dict.fromkeys(keys))


def _size_option(value, where: str) -> tuple | None:
    """``size: [height, width]`` in pixels: the target size of the entry's runs."""
    if value is None:
        return None
    from ..core.validate import ints

    try:
        return ints("size", value, 2, labels="[height, width] in pixels", scalar=False)
    except ValueError as exc:
        raise ValueError(f"{where}: key 'size' = {value!r} is invalid: {exc}") from None


def _refuse_combinations(where, kind, kv, reuse, cache, upscale) -> None:
    """What the feature table refuses, and what compare does not combine, fails here, before any model loads."""
    from ..core import features

    wanted = []
    if kind is not None:
        wanted.append(features.Active(features.SPARSE_ATTENTION, f"sparse attention (type: {kind})"))
    if kv is not None:
        wanted.append(features.Active(features.KV_CACHE, "the K/V cache (kv_cache)"))
    if reuse is not None:
        wanted.append(features.Active(features.BLOCK_REUSE, "block reuse (block_reuse)"))
    if cache is not None:
        wanted.append(features.Active(features.cache_feature(cache.cache),
                                      f"diffusers' {cache.cache} (diffusers_cache: {cache.kind})"))
    if upscale is not None:
        label = ("FreeSwim (upscale: freeswim)" if upscale.mode == "freeswim" else
                 "upsample + refine (upscale: refine, which runs FreeSwimPipeline with FreeSwim's hooks installed)")
        wanted.append(features.Active(features.FREESWIM, label))
    features.refuse_combination(wanted, where)
    if upscale is not None and cache is not None:
        raise ValueError(f"{where}: keys 'upscale' and 'diffusers_cache' do not combine: the base and refinement "
                         f"stages are two pipeline calls with different step counts; compare the cache at the base "
                         f"size in its own entry")


def _kv_cache_options(value, where: str) -> dict | None:
    """``kv_cache: true`` or ``{max_prompts: N}`` -> `enable_kv_cache` kwargs; false/absent -> None."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, dict) and set(value) <= {"max_prompts"}:
        if not isinstance(value.get("max_prompts", 1), int) or value.get("max_prompts", 1) < 1:
            raise ValueError(f"{where}: key 'kv_cache.max_prompts' must be an int >= 1, got {value['max_prompts']!r}")
        return dict(value)
    raise ValueError(f"{where}: key 'kv_cache' must be true, false or {{max_prompts: N}}, got {value!r}")


def _block_reuse_options(value, where: str, base_dir: Path):
    """``block_reuse: {profile: FILE, preset: profiled|adaptive, tau: T, <BlockReuseConfig fields>}``; ``tau``
    classifies the profile's blocks again (a number, otsu, median or background:F, a block budget), so one
    profile gives several budgets."""
    if value is None or value is False:
        return None, None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: key 'block_reuse' must be a mapping such as {{profile: tiny.json}}, got {value!r}")
    from dataclasses import replace

    from ..caches.block_reuse import PRESETS as REUSE_PRESETS
    from ..caches.block_reuse import BlockReuseConfig, resolve_config

    value = dict(value)
    preset = value.pop("preset", "profiled")
    tau = value.pop("tau", None)
    if preset not in REUSE_PRESETS:
        raise ValueError(f"{where}: key 'block_reuse.preset' is {preset!r}; available: {', '.join(sorted(REUSE_PRESETS))}")
    fields = {f.name for f in dataclasses.fields(BlockReuseConfig)}
    for key in value:
        if key not in fields:
            raise ValueError(f"{where}: unknown key 'block_reuse.{key}'; valid keys: preset, tau, "
                             f"{', '.join(sorted(fields))}")
    profile_path = None
    if value.get("profile") is not None:
        path = Path(value["profile"]).expanduser()
        path = path if path.is_absolute() or path.exists() else base_dir / path  # relative to the config file
        if not path.is_file():
            raise ValueError(f"{where}: key 'block_reuse.profile': {value['profile']!r} does not exist (make one with "
                             f"`vidaccel profile ... --out FILE`)")
        value["profile"] = profile_path = str(path)
    if isinstance(value.get("background_blocks"), list):
        value["background_blocks"] = tuple(value["background_blocks"])
    try:
        config = resolve_config(replace(REUSE_PRESETS[preset], **value))
    except (TypeError, ValueError, OSError) as exc:
        raise ValueError(f"{where}: key 'block_reuse' is invalid: {exc}") from None
    if tau is not None:
        if config.profile is None:
            raise ValueError(f"{where}: key 'block_reuse.tau' classifies a profile's blocks: give 'block_reuse.profile'")
        try:
            config = replace(config, profile=config.profile.reclassified(tau))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: key 'block_reuse.tau' = {tau!r} is invalid: {exc} (a number, 'otsu', "
                             f"'median' or 'background:F')") from None
    return config, profile_path


def accel_configs(specs: list[str] | None) -> list[NamedConfig]:
    """All configurations from repeated ``--accel`` values, with unique names."""
    out = [c for spec in specs or [] for c in parse_accel(spec)]
    seen = {BASELINE}
    for c in out:
        if not re.fullmatch(r"[\w.-]+", c.name):
            raise ValueError(f"configuration name {c.name!r} ({c.source}): use letters, digits, '_', '-' or '.'")
        if c.name in seen:
            raise ValueError(f"configuration name {c.name!r} is used twice ({c.source}); give each a distinct "
                             f"'name' in its config file")
        seen.add(c.name)
    return out


def with_baselines(configs: list[NamedConfig], height: int, width: int) -> list[NamedConfig]:
    """The dense baseline, then `configs` in order, with a dense baseline at each other target size placed
    before the first configuration at that size (``baseline-HxW``: direct generation there). Each
    configuration gets its target ``size`` (None at ``height x width``) and the name of its baseline."""
    out = [NamedConfig(BASELINE, None, "dense attention")]
    names = {(height, width): BASELINE}
    taken = {c.name for c in configs}
    for c in configs:
        size = c.target_size(height, width)
        if size not in names:
            name = f"{BASELINE}-{size[0]}x{size[1]}"
            if name in taken:
                raise ValueError(f"configuration name {name!r} ({c.source}) is the name of the dense run at "
                                 f"{size[0]}x{size[1]}, which compare adds: rename the configuration")
            out.append(NamedConfig(name, None, f"dense attention at {size[0]}x{size[1]} (direct generation)",
                                   size=size))
            names[size] = name
        out.append(dataclasses.replace(c, size=None if size == (height, width) else size, reference=names[size]))
    return out


def compare_only(configs, command: str) -> None:
    """`command` (generate, bench) runs at one size against the dense pipeline: refuse ``upscale`` and
    ``size`` entries, which need a dense run at their own size (`vidaccel compare`)."""
    for c in configs:
        if c.upscale is not None or c.size is not None:
            raise ValueError(f"{c.source}: configuration {c.name!r} has 'upscale' or 'size'; `vidaccel {command}` runs "
                             f"at one size: use `vidaccel compare` (it adds a dense baseline at the target size) or "
                             f"`vidaccel upscale`")


def calibrated(pipe, named: NamedConfig, steps: int, run_once) -> NamedConfig:
    """`named` with MagCache ratios measured by a calibration run when its entry says ``calibrate: true``
    (``run_once(runner)`` generates once, untimed, with the rest of the configuration installed); else `named`."""
    from . import diffusers_caches

    cache = named.diffusers_cache
    if cache is None or not cache.needs_calibration:
        return named
    rest = dataclasses.replace(named, diffusers_cache=None)
    with applied(pipe, rest, steps=steps) as runner:
        ratios = diffusers_caches.calibrate_mag(pipe, steps, lambda: run_once(runner))
    return dataclasses.replace(named, diffusers_cache=cache.with_ratios(ratios))


@contextmanager
def applied(pipe, named: NamedConfig, *, steps: int | None = None, base_size: tuple | None = None):
    """Install everything `named` asks for (nothing for a baseline) and yield the callable that generates
    with it: the pipeline, or for an ``upscale`` entry the FreeSwim wrapper's call with the entry's stage
    settings (same keywords). On exit, and on any error while installing, undo it exactly.

    ``steps``: the run's denoising steps (MagCache counts them; default: the pipeline's own default).
    ``base_size``: the base stage's ``(height, width)`` for ``upscale`` entries.
    """
    import vidaccel

    from . import diffusers_caches
    from .generation import pipeline_default

    handle, wrapper = None, None
    try:
        if named.config is not None:
            vidaccel.accelerate(pipe, named.config)
        if named.kv_cache is not None:
            vidaccel.enable_kv_cache(pipe, **named.kv_cache)
        if named.block_reuse is not None:
            vidaccel.enable_block_reuse(pipe, named.block_reuse)
        if named.diffusers_cache is not None:
            handle = diffusers_caches.enable(pipe, named.diffusers_cache,
                                             steps if steps is not None else pipeline_default(pipe, "num_inference_steps"))
        runner = pipe
        if named.upscale is not None:
            if base_size is None:
                raise ValueError(f"configuration {named.name!r} (upscale) needs the base size it upsamples from")
            runner, wrapper = named.upscale.runner(pipe, base_size)
        yield runner
    finally:
        if wrapper is not None:
            wrapper.remove()
        if handle is not None:
            diffusers_caches.disable(handle)
        if named.kv_cache is not None or named.block_reuse is not None:
            vidaccel.disable_caches(pipe)
        if named.config is not None:
            vidaccel.remove(pipe)
