"""diffusers pipeline wrappers (installed as ``vidaccel.pipelines``)."""

from .freeswim import FreeSwimPipeline

__all__ = ["FreeSwimPipeline"]
