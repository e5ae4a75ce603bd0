"""vidaccel: faster, higher-resolution video diffusion transformers in diffusers, without retraining.

    import vidaccel
    vidaccel.accelerate(pipe, "radial")     # or "window", or a config object
    video = pipe(prompt, ...).frames[0]
    vidaccel.summary(pipe); vidaccel.remove(pipe)

Layout (docs/architecture.md): `core` (the diffusers integration every method shares), one
package per method (`sparse`, `freeswim`, `caches`, `tuning`), `api` (accelerate / remove / summary),
`distributed`, `support` (supported models, adapters), `metrics`, `report`, `tiny`, `cli`; kernels in `vidaccel.kernels`, pipeline
wrappers in `vidaccel.pipelines`.
"""

from .version import __version__  # noqa: F401  (re-exported: vidaccel.__version__)

# Lazy facade: the names below are imported from their module on first use (PEP 562), so that
# `import vidaccel` (and with it the `vidaccel` command line's --help) does not pay for torch and
# diffusers. `from vidaccel import X`, `vidaccel.X` and `from vidaccel import *` work as before.
_LAZY = {
    "accelerate": ".api", "remove": ".api", "summary": ".api",
    "BlockReuseConfig": ".caches", "KVCacheConfig": ".caches", "Profile": ".caches", "cache_summary": ".caches",
    "disable_block_reuse": ".caches", "disable_caches": ".caches", "disable_kv_cache": ".caches",
    "enable_block_reuse": ".caches", "enable_kv_cache": ".caches", "profile": ".caches",
    "FreeSwimConfig": ".freeswim", "disable_freeswim": ".freeswim", "enable_freeswim": ".freeswim",
    "set_freeswim_active": ".freeswim",
    "PRESETS": ".sparse", "Plan": ".sparse", "PlanCache": ".sparse", "RadialAttentionConfig": ".sparse",
    "RadialPattern": ".sparse", "WindowAttentionConfig": ".sparse", "WindowPattern": ".sparse",
    "TileWindowAttentionConfig": ".sparse", "TileAlignedWindowPattern": ".sparse",
    "build_plan": ".sparse", "sparse_attention": ".sparse",
    "TunedAttentionConfig": ".sparse.tuned", "SparsityProfile": ".sparse.tuned", "tune": ".tuning",
    "supported_models": ".support", "unsupported_models": ".support", "register_adapter": ".support",
    "unregister_adapter": ".support", "ModelAdapter": ".core.adapters", "BlockStreams": ".core.adapters",
}
_LAZY_MODULES = ("distributed",)  # submodules that are part of the public facade (in __all__)


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _LAZY_MODULES or not name.startswith("_"):  # any submodule: vidaccel.sparse.config, ...
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_MODULES))


__all__ = [
    # sparse attention
    "accelerate", "remove", "summary", "sparse_attention", "PRESETS", "RadialAttentionConfig",
    "WindowAttentionConfig", "TileWindowAttentionConfig", "RadialPattern", "WindowPattern", "TileAlignedWindowPattern",
    "Plan", "PlanCache", "build_plan",
    # per-layer / per-head patterns measured on the model
    "tune", "TunedAttentionConfig", "SparsityProfile",
    # FreeSwim
    "FreeSwimConfig", "enable_freeswim", "disable_freeswim", "set_freeswim_active",
    # caches
    "enable_kv_cache", "disable_kv_cache", "enable_block_reuse", "disable_block_reuse", "disable_caches",
    "cache_summary", "profile", "Profile", "BlockReuseConfig", "KVCacheConfig",
    # multi-GPU (vidaccel.distributed.init_distributed, enable_context_parallel, shard)
    "distributed",
    # supported models and new architectures (docs/adapters.md)
    "supported_models", "unsupported_models", "register_adapter", "unregister_adapter", "ModelAdapter",
    "BlockStreams",
]
