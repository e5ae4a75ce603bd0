"""Radial attention: static O(n log n) mask with spatiotemporal energy decay (docs/methods.md section 3).

With ``s = H * W`` tokens per frame and frame distance ``d = |t_q - t_k|``:

* ``d <= 1``: dense; with ``sink=True`` every query also attends frame 0 densely.
* ``d >= 2``: a band ``|s_q - s_k| <= width(d)`` in raster-index distance inside the frame, with
  ``width(d) = max(block_size, 2**bitlen(s) / 2**bitlen(d) * decay_factor)`` (the reference code's
  rule; the band halves each time ``d`` doubles).
* Frame skipping: when the undecayed width ``2**bitlen(s) / 2**bitlen(d)`` falls below
  ``block``, only frame pairs with ``d % m == 0`` (``m = block // undecayed``) are kept.
* ``block = min(block_size, s)``: a block is never larger than a frame. The rule was made for
  frames far larger than a kernel block (Wan at 480p: 1,560 tokens); on a frame smaller than
  ``block_size`` it would otherwise skip every frame at distance >= 2 with no sparsity gained
  inside the kept frames (a band of ``block_size`` already covers the whole frame). Grids whose
  frames hold at least ``block_size`` tokens are unaffected.

Each distinct band width is one temporal class; class 0 is "dense".
"""

from __future__ import annotations

import warnings

import torch

from ...core.validate import flag, integer, number
from .base import Grid, KernelRule, Pattern


class RadialPattern(Pattern):
    def __init__(self, decay_factor: float = 1.0, sink: bool = True, block_size: int = 128):
        decay_factor = number("decay_factor", decay_factor, hint=" (Wan's default: 0.2)")
        if not decay_factor > 0:
            raise ValueError(f"decay_factor must be > 0, got decay_factor={decay_factor!r}.")
        self.decay_factor = decay_factor
        self.sink = flag("sink", sink)
        self.block_size = integer("block_size", block_size, minimum=1, hint=" (tokens; default 128)")
        self.name = f"radial_decay{self.decay_factor:g}" + ("_sink" if self.sink else "")
        self._rules: dict = {}  # grid -> frame rule; the pattern is immutable, so this is safe

    def _frame_rule(self, grid: Grid):
        """(temporal class matrix, band width per class) - class 0 is dense (width = inf)."""
        grid = tuple(grid)
        if grid not in self._rules:
            self._rules[grid] = self._build_frame_rule(grid)
        classes, widths = self._rules[grid]
        return classes.clone(), widths

    def _build_frame_rule(self, grid: Grid):
        T, H, W = grid
        s_bits = (H * W).bit_length()
        block = min(self.block_size, H * W)  # see the module docstring
        widths = [float("inf")]
        classes = torch.full((T, T), -1, dtype=torch.long)
        for tq in range(T):
            for tk in range(T):
                d = abs(tq - tk)
                if d <= 1 or (self.sink and tk == 0):
                    classes[tq, tk] = 0
                    continue
                undecayed = 2.0**s_bits / 2.0 ** d.bit_length()
                if undecayed < block and d % int(block // undecayed) != 0:
                    continue
                width = max(float(block), undecayed * self.decay_factor)
                if width not in widths:
                    widths.append(width)
                classes[tq, tk] = widths.index(width)
        if bool((classes >= 0).all()) and min(widths) >= H * W - 1:
            warnings.warn(
                f"Radial attention with decay_factor={self.decay_factor:g} attends every token pair at grid {grid} "
                f"(100% dense: no speed-up). Use a smaller decay_factor (the family default, e.g. Wan's 0.2) or "
                f"leave sparse attention off for this size.", UserWarning, stacklevel=2)
        return classes, widths

    def temporal_classes(self, grid: Grid) -> torch.Tensor:
        return self._frame_rule(grid)[0]

    def num_classes(self, grid: Grid) -> int:
        return len(self._frame_rule(grid)[1])

    def spatial_mask(self, cls, grid, q_hw, k_hw):
        width = self._frame_rule(grid)[1][cls]
        if width == float("inf"):
            # (q - k).shape, not torch.broadcast_shapes: that imports torch._refs, half a second on a first call
            return torch.ones((q_hw - k_hw).shape, dtype=torch.bool, device=q_hw.device)
        return (q_hw - k_hw).abs() <= width

    def kernel_rule(self, grid: Grid, device=None) -> KernelRule:
        T, H, W = grid
        classes, widths = self._frame_rule(grid)
        n = T * H * W
        lo = torch.zeros(n, 2, dtype=torch.int32)
        hi = torch.tensor([H, W], dtype=torch.int32).expand(n, 2).contiguous()
        return KernelRule(
            temporal_classes=classes.to(device=device, dtype=torch.int32),
            band_width=torch.tensor(widths, dtype=torch.float32, device=device),
            lo=lo.to(device),
            hi=hi.to(device),
            dilation=(1, 1),
        )
