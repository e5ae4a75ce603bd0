"""FreeSwim: training-free high-resolution generation and video upscaling (docs/methods.md section 2).

- `config`: `FreeSwimConfig` and the entropy-aware attention scale.
- `hooks`: the dual path as diffusers hooks (window branch, full branch, cross-attention override).
- `cache`: the full branch's per-layer cross-attention outputs (optionally offloaded to pinned memory).
- `api`: `enable_freeswim`, `disable_freeswim`, `set_freeswim_active`; `report`: the `summary` section.

The whole pipeline (base stage, upsampling, re-noising) is `vidaccel.pipelines.FreeSwimPipeline`.
"""

from .api import disable_freeswim, enable_freeswim, freeswim_states, set_freeswim_active
from .config import FreeSwimConfig, entropy_scale
from .report import format_freeswim_report, freeswim_report

__all__ = ["FreeSwimConfig", "enable_freeswim", "disable_freeswim", "set_freeswim_active", "freeswim_states",
           "freeswim_report", "format_freeswim_report", "entropy_scale"]
