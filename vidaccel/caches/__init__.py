"""Reuse across denoising steps: exact cross-attention K/V caching and profiled block feature reuse.

    vidaccel.enable_kv_cache(pipe)                              # exact; Wan (T2V, I2V), LTX-Video
    prof = vidaccel.profile(pipe, ["a fox in the snow"], height=480, width=832, num_frames=81,
                            num_inference_steps=50, path="wan480.json")
    vidaccel.enable_block_reuse(pipe, "profiled", profile="wan480.json")   # ProfilingDiT schedule
    vidaccel.disable_caches(pipe)                               # exact restore
"""

from .api import (
    cache_summary,
    disable_block_reuse,
    disable_caches,
    disable_kv_cache,
    enable_block_reuse,
    enable_kv_cache,
)
from .block_reuse import PRESETS as BLOCK_REUSE_PRESETS
from .block_reuse import BlockReuseConfig
from .kv_cache import KVCacheConfig
from .profile_io import Profile
from .profiler import profile
from .schedule import compute_steps

__all__ = [
    "enable_kv_cache", "disable_kv_cache", "enable_block_reuse", "disable_block_reuse", "disable_caches",
    "cache_summary", "BlockReuseConfig", "KVCacheConfig", "BLOCK_REUSE_PRESETS", "Profile", "profile", "compute_steps",
]
