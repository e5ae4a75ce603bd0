"""vidaccel: faster, higher-resolution video diffusion transformers in diffusers, without retraining."""

from .attention import sparse_attention
from .patterns import RadialPattern, WindowPattern
from .plan import Plan, PlanCache, build_plan

__version__ = "0.1.0"
