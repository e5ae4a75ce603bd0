"""The pattern contract: one mask definition over the `(T, H, W)` token grid.

A pattern is a pure description. It is written as a union over *temporal classes*:

    mask(q, k) = spatial_mask(c, q_hw, k_hw)   where c = temporal_classes(T)[t_q, t_k]
                 False                          where c == -1

Everything else - the dense reference mask, the chunked reference attention, the tiled block
tables for the kernel and the density in `vidaccel.summary` - is derived from these two methods,
so there is exactly one definition of each pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Grid = tuple[int, int, int]


@dataclass(frozen=True)
class KernelRule:
    """The element rule a kernel evaluates on partially covered tiles (see `Pattern.kernel_rule`).

    ``mask(q, k) = cls[t_q, t_k] >= 0 and lo_d(q) <= k_d < hi_d(q) and (k_d - lo_d(q)) % dil_d == 0
    for d in (h, w) and |s_q - s_k| <= width[cls[t_q, t_k]]`` with ``s = h * W + w``.
    Per-query bounds are computed by the pattern's own Python definition, so the kernel only
    tests membership.
    """

    temporal_classes: torch.Tensor  # int32 [T, T], -1 = no attention
    band_width: torch.Tensor  # float32 [C]; +inf for classes without a band
    lo: torch.Tensor  # int32 [N, 2]  per query (h, w) lower bound, raster order
    hi: torch.Tensor  # int32 [N, 2]  exclusive upper bound
    dilation: tuple[int, int]


class Pattern:
    """Base class: subclasses define `temporal_classes` and `spatial_mask`."""

    name: str = "pattern"

    def validate(self, grid: Grid) -> None:
        """Raise ValueError (naming the fix) if the pattern cannot be applied to `grid`."""

    def temporal_classes(self, grid: Grid) -> torch.Tensor:
        """int64 [T, T]: class of each (query frame, key frame) pair, -1 where nothing is attended."""
        raise NotImplementedError

    def spatial_mask(self, cls: int, grid: Grid, q_hw: torch.Tensor, k_hw: torch.Tensor) -> torch.Tensor:
        """bool mask for class `cls` between query spatial indices `q_hw` and key indices `k_hw`
        (raster index within a frame, ``h * W + w``); broadcasts like ``q_hw[:, None] vs k_hw[None]``."""
        raise NotImplementedError

    def num_classes(self, grid: Grid) -> int:
        return int(self.temporal_classes(grid).max().item()) + 1

    def kernel_rule(self, grid: Grid, device=None) -> KernelRule:
        raise NotImplementedError

    def aligned_tile(self, grid: Grid) -> tuple[int, int, int] | None:
        """The tile shape this pattern's windows are aligned to at `grid` (the plan then uses it), or None:
        the plan searches for the cheapest tile."""
        return None

    # ---- derived, shared by every pattern -------------------------------------------------
    def mask(self, grid: Grid, q_idx: torch.Tensor, k_idx: torch.Tensor) -> torch.Tensor:
        """bool [len(q_idx), len(k_idx)] for raster token indices (the single mask definition)."""
        _, H, W = grid
        S = H * W
        tq, sq = q_idx // S, q_idx % S
        tk, sk = k_idx // S, k_idx % S
        classes = self.temporal_classes(grid).to(q_idx.device)
        cls = classes[tq[:, None], tk[None, :]]
        out = torch.zeros(len(q_idx), len(k_idx), dtype=torch.bool, device=q_idx.device)
        for c in range(self.num_classes(grid)):
            sel = cls == c
            if sel.any():
                out |= sel & self.spatial_mask(c, grid, sq[:, None], sk[None, :])
        return out

    def dense_mask(self, grid: Grid, device=None) -> torch.Tensor:
        """bool [N, N] reference mask in raster order. For tests and small grids only."""
        n = grid[0] * grid[1] * grid[2]
        idx = torch.arange(n, device=device)
        return self.mask(grid, idx, idx)

    def spatial_class_mask(self, cls: int, grid: Grid, device=None) -> torch.Tensor:
        """bool [S, S] spatial mask of one class (S = H * W)."""
        s = torch.arange(grid[1] * grid[2], device=device)
        return self.spatial_mask(cls, grid, s[:, None], s[None, :])

    def density(self, grid: Grid, spatial_masks: list | None = None) -> float:
        """Exact fraction of attended (query, key) pairs among the N x N visual pairs.

        `spatial_masks` (optional): the per-class `spatial_class_mask` results, when already computed.
        """
        classes = self.temporal_classes(grid)
        S = grid[1] * grid[2]
        total = 0
        for c in range(self.num_classes(grid)):
            pairs = int((classes == c).sum())
            if pairs:
                mask = spatial_masks[c] if spatial_masks is not None else self.spatial_class_mask(c, grid)
                total += pairs * int(mask.sum())
        n = grid[0] * S
        return total / float(n * n)

    def __repr__(self) -> str:
        return self.name
