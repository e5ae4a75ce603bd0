"""Sparse self-attention on the 3D token grid: patterns, plans, the dispatch point and its hooks.

- `patterns/`: pure pattern definitions over ``(t, h, w)`` (`WindowPattern`, `TileAlignedWindowPattern`, `RadialPattern`).
- `plan`: a pattern bound to a grid as a 3D tile permutation + full/partial block tables (`PlanCache`).
- `attention`: `sparse_attention`, the single dispatch point (kernel on CUDA, exact reference elsewhere).
- `config`: `WindowAttentionConfig`, `TileWindowAttentionConfig`, `RadialAttentionConfig`, presets and the dense warm-up rule.
- `hooks`: the diffusers hooks `vidaccel.accelerate` installs; `report`: its `summary` section.
"""

from .attention import sparse_attention
from .config import PRESETS, RadialAttentionConfig, TileWindowAttentionConfig, WindowAttentionConfig
from .patterns import RadialPattern, TileAlignedWindowPattern, WindowPattern
from .plan import Plan, PlanCache, build_plan

__all__ = ["sparse_attention", "PRESETS", "RadialAttentionConfig", "TileWindowAttentionConfig", "WindowAttentionConfig",
           "RadialPattern", "TileAlignedWindowPattern", "WindowPattern", "Plan", "PlanCache", "build_plan"]
