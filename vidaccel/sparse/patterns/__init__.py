"""Sparse attention patterns over the `(T, H, W)` token grid (raster order ``t*H*W + h*W + w``)."""

from .base import Grid, KernelRule, Pattern
from .radial import RadialPattern
from .window import TileAlignedWindowPattern, WindowPattern, window_bounds

__all__ = ["Grid", "KernelRule", "Pattern", "RadialPattern", "TileAlignedWindowPattern", "WindowPattern", "window_bounds"]
