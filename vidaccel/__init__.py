"""vidaccel: faster, higher-resolution video diffusion transformers in diffusers, without retraining.

    import vidaccel
    vidaccel.accelerate(pipe, "radial")     # or "window", or a config object
    video = pipe(prompt, ...).frames[0]
    vidaccel.summary(pipe); vidaccel.remove(pipe)

Layout (docs/architecture.md): `core` (the diffusers integration every method shares), one
package per method (`sparse`, `freeswim`, `caches`), `api` (accelerate / remove / summary),
`distributed`, `metrics`, `report`, `tiny`, `cli`; kernels in `vidaccel.kernels`, pipeline
wrappers in `vidaccel.pipelines`.
"""

from . import distributed
from .api import accelerate, remove, summary
from .caches import (BlockReuseConfig, KVCacheConfig, Profile, cache_summary, disable_block_reuse, disable_caches,
                     disable_kv_cache, enable_block_reuse, enable_kv_cache, profile)
from .freeswim import FreeSwimConfig, disable_freeswim, enable_freeswim, set_freeswim_active
from .sparse import (PRESETS, Plan, PlanCache, RadialAttentionConfig, RadialPattern, WindowAttentionConfig,
                     WindowPattern, build_plan, sparse_attention)
from .version import __version__  # noqa: F401  (re-exported: vidaccel.__version__)

__all__ = [
    # sparse attention
    "accelerate", "remove", "summary", "sparse_attention", "PRESETS", "RadialAttentionConfig",
    "WindowAttentionConfig", "RadialPattern", "WindowPattern", "Plan", "PlanCache", "build_plan",
    # FreeSwim
    "FreeSwimConfig", "enable_freeswim", "disable_freeswim", "set_freeswim_active",
    # caches
    "enable_kv_cache", "disable_kv_cache", "enable_block_reuse", "disable_block_reuse", "disable_caches",
    "cache_summary", "profile", "Profile", "BlockReuseConfig", "KVCacheConfig",
    # multi-GPU (vidaccel.distributed.init_distributed, enable_context_parallel, shard)
    "distributed",
]
