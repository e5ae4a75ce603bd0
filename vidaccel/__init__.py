"""vidaccel: faster, higher-resolution video diffusion transformers in diffusers, without retraining.

    import vidaccel
    vidaccel.accelerate(pipe, "radial")     # or "window", or a config object
    video = pipe(prompt, ...).frames[0]
    vidaccel.summary(pipe); vidaccel.remove(pipe)
"""

from . import distributed
from .api import accelerate, remove, summary
from .attention import sparse_attention
from .caches import (BlockReuseConfig, Profile, cache_summary, disable_block_reuse, disable_caches, disable_kv_cache,
                     enable_block_reuse, enable_kv_cache, profile)
from .config import PRESETS, RadialAttentionConfig, WindowAttentionConfig
from .freeswim_hooks import FreeSwimConfig, disable_freeswim, enable_freeswim, set_freeswim_active
from .patterns import RadialPattern, WindowPattern
from .plan import Plan, PlanCache, build_plan

__version__ = "0.1.0"

__all__ = [
    # sparse attention
    "accelerate", "remove", "summary", "sparse_attention", "PRESETS", "RadialAttentionConfig",
    "WindowAttentionConfig", "RadialPattern", "WindowPattern", "Plan", "PlanCache", "build_plan",
    # FreeSwim
    "FreeSwimConfig", "enable_freeswim", "disable_freeswim", "set_freeswim_active",
    # caches
    "enable_kv_cache", "disable_kv_cache", "enable_block_reuse", "disable_block_reuse", "disable_caches",
    "cache_summary", "profile", "Profile", "BlockReuseConfig",
    # multi-GPU (vidaccel.distributed.init_distributed, enable_context_parallel, shard)
    "distributed",
]
