"""3D neighborhood ("sliding window") attention with NATTEN semantics (docs/methods.md section 1).

Per dimension of size ``L`` with kernel ``k``, dilation ``d`` and stride ``s``:
tokens split into ``d`` dilation groups (``x % d``); inside a group of size ``L_g`` a query's
stride-group leader is ``min((x // s) * s + s // 2, L_g - 1)`` and its window starts at
``clamp(leader - k // 2, 0, L_g - k)``: windows are shifted inward at borders, never cut, so every
query sees exactly ``k`` keys per dimension. ``k >= L`` (with ``d == 1``) means the whole dimension.
"""

from __future__ import annotations

import math

import torch

from ...core.validate import ints
from .base import Grid, KernelRule, Pattern

_DIMS = ("t", "h", "w")


def _as_triple(value, name: str) -> tuple[int, int, int]:
    return ints(name, value, 3, labels="(t, h, w)", minimum=None)  # signs are checked with the reason below


def window_start(coord: torch.Tensor, length: int, kernel: int, dilation: int, stride: int) -> torch.Tensor:
    """First key of each query's window, in units of the query's dilation group (see `window_bounds`)."""
    group = coord % dilation
    x = coord // dilation
    group_len = (length - group + dilation - 1) // dilation
    k = torch.minimum(torch.full_like(group_len, kernel), group_len)
    leader = torch.minimum((x // stride) * stride + stride // 2, group_len - 1)
    return torch.clamp(leader - kernel // 2, min=torch.zeros_like(group_len), max=group_len - k)


def window_bounds(coord: torch.Tensor, length: int, kernel: int, dilation: int, stride: int):
    """(lo, hi) in grid coordinates: keys ``lo, lo + d, ..., hi - d`` (same dilation group)."""
    kernel = min(kernel, length) if dilation == 1 else kernel
    start = window_start(coord, length, kernel, dilation, stride)
    group = coord % dilation
    lo = start * dilation + group
    return lo, lo + kernel * dilation


def window_member(q: torch.Tensor, k: torch.Tensor, length: int, kernel: int, dilation: int, stride: int):
    lo, hi = window_bounds(q, length, kernel, dilation, stride)
    return (k >= lo) & (k < hi) & ((k - lo) % dilation == 0)


class WindowPattern(Pattern):
    """Inward 3D window of ``kernel = (kt, kh, kw)`` tokens, optional dilation and stride."""

    def __init__(self, kernel, dilation=1, stride=1):
        self.kernel = _as_triple(kernel, "kernel")
        self.dilation = _as_triple(dilation, "dilation")
        self.stride = _as_triple(stride, "stride")
        for dim, k, d, s in zip(_DIMS, self.kernel, self.dilation, self.stride):
            if k <= 0:
                raise ValueError(f"Window kernel size must be positive, got kernel[{dim}]={k}.")
            if d <= 0 or s <= 0:
                raise ValueError(f"Dilation and stride must be positive, got {dim}: dilation={d}, stride={s}.")
            if s > k:
                raise ValueError(f"Stride must not exceed the kernel size, got {dim}: stride={s} > kernel={k}.")
        self.name = f"window_k{'x'.join(map(str, self.kernel))}"
        if self.dilation != (1, 1, 1):
            self.name += f"_d{'x'.join(map(str, self.dilation))}"
        if self.stride != (1, 1, 1):
            self.name += f"_s{'x'.join(map(str, self.stride))}"

    def effective_kernel(self, grid: Grid) -> tuple[int, int, int]:
        return tuple(min(k, L) if d == 1 else k for k, L, d in zip(self.kernel, grid, self.dilation))

    def validate(self, grid: Grid) -> None:
        for dim, k, d, L in zip(_DIMS, self.kernel, self.dilation, grid):
            if d > 1 and k * d > L:
                fixes = [f"dilation <= {L // k} for kernel={k}" if L // k > 1 else f"dilation=1 for kernel={k}"]
                if L // d >= 1:
                    fixes.append(f"kernel <= {L // d} for dilation={d}")
                raise ValueError(
                    f"Window does not fit the token grid along {dim}: kernel*dilation = {k}*{d} = {k * d} "
                    f"> {L} tokens. Use {' or '.join(fixes)}."
                )

    def temporal_classes(self, grid: Grid) -> torch.Tensor:
        self.validate(grid)
        T = grid[0]
        t = torch.arange(T)
        member = window_member(t[:, None], t[None, :], T, self.kernel[0], self.dilation[0], self.stride[0])
        return torch.where(member, 0, -1)

    def num_classes(self, grid: Grid) -> int:
        return 1

    def spatial_mask(self, cls, grid, q_hw, k_hw):
        _, H, W = grid
        qh, qw, kh, kw = q_hw // W, q_hw % W, k_hw // W, k_hw % W
        return window_member(qh, kh, H, self.kernel[1], self.dilation[1], self.stride[1]) & window_member(
            qw, kw, W, self.kernel[2], self.dilation[2], self.stride[2]
        )

    def kernel_rule(self, grid: Grid, device=None) -> KernelRule:
        T, H, W = grid
        s = torch.arange(H * W)
        h, w = s // W, s % W
        lo_h, hi_h = window_bounds(h, H, self.kernel[1], self.dilation[1], self.stride[1])
        lo_w, hi_w = window_bounds(w, W, self.kernel[2], self.dilation[2], self.stride[2])
        lo = torch.stack([lo_h, lo_w], -1).repeat(T, 1).to(torch.int32)
        hi = torch.stack([hi_h, hi_w], -1).repeat(T, 1).to(torch.int32)
        return KernelRule(
            temporal_classes=self.temporal_classes(grid).to(device=device, dtype=torch.int32),
            band_width=torch.full((1,), float("inf"), device=device),
            lo=lo.to(device),
            hi=hi.to(device),
            dilation=(self.dilation[1], self.dilation[2]),
        )


def odd_multiple(kernel: int, tile: int) -> int:
    """The odd multiple of `tile` nearest `kernel` (at least `tile` itself); `kernel` unchanged for a tile of 1.

    Odd, because a window of ``m * tile`` keys centred on a query tile starts ``(m - 1) / 2`` tiles before it:
    on the tile grid exactly when ``m`` is odd."""
    if tile == 1:
        return kernel
    return max(1, 2 * round((kernel / tile - 1) / 2) + 1) * tile


class TileAlignedWindowPattern(WindowPattern):
    """Tile-aligned 3D windows (STA / GNA "strided" semantics, docs/methods.md section 1).

    The grid is cut into tiles of ``tile = (tt, th, tw)`` tokens from the origin; all queries of a tile share
    one window: ``kernel`` rounded per dimension to the nearest odd multiple of the tile (`odd_multiple`),
    centred on the query tile and shifted inward at borders. This is `WindowPattern` with ``stride = tile``
    on the rounded kernel, so every window is a union of whole tiles wherever the grid divides by the tile
    (a kernel block visits no partial tiles there); ragged edge tiles keep the inward rule.

    Args:
        kernel: the wanted window in tokens ``(kt, kh, kw)`` (or one int); ``rounded_kernel`` is what runs.
        tile: ``(tt, th, tw)``, 16 to 128 tokens (the kernel's block sizes); also the plan's tile shape.
    """

    def __init__(self, kernel, tile):
        requested = _as_triple(kernel, "kernel")
        tile = ints("tile", tile, 3, labels="(t, h, w)")
        if not 16 <= math.prod(tile) <= 128:
            raise ValueError(f"tile must hold 16 to 128 tokens (a kernel block), got tile={tile} = "
                             f"{math.prod(tile)} tokens; e.g. (1, 8, 16) or (1, 8, 8).")
        if min(requested) <= 0:
            raise ValueError(f"Window kernel size must be positive, got kernel={requested}.")
        super().__init__(tuple(odd_multiple(k, s) for k, s in zip(requested, tile)), stride=tile)
        self.requested_kernel, self.tile = requested, tile
        self.name = f"tile_window_k{'x'.join(map(str, self.kernel))}_t{'x'.join(map(str, tile))}"

    @property
    def rounded_kernel(self) -> tuple[int, int, int]:
        return self.kernel

    def aligned_tile(self, grid: Grid) -> tuple[int, int, int]:
        return tuple(min(s, L) for s, L in zip(self.tile, grid))
