"""Tiled plans: the compact form of a pattern that a block-sparse kernel consumes.

Tokens are permuted so that each contiguous tile of the sequence is a 3D box of the grid
(``tile = (tt, th, tw)`` tokens, or ``(tt, 0, c)``: tt frames x a run of c consecutive in-frame
raster positions, for bands in raster distance; edge tiles are ragged, never padded). Tiles are numbered
temporal-tile-major, then spatial tiles in raster order; inside a tile tokens keep raster order.
For each query tile the plan lists the key tiles it must visit, split into *full* tiles (every
pair attended: no masking needed) and *partial* tiles (the element rule must be applied).

Block classification is exact and cheap because every pattern is a union over temporal
classes (`Pattern.temporal_classes`) of spatial masks: a tile pair is full iff every frame pair
in it has a class whose spatial block is full, and visited iff any has a non-empty one.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from ..kernels.plan_tables import kernel_block
from .patterns import Grid, Pattern

EMPTY, PARTIAL, FULL = 0, 1, 2

# Tile shapes tried for each tile size; the plan builder keeps the one that visits the least work.
_TILE_SHAPES = {
    size: sorted(
        {(a, b, size // (a * b)) for a in (1, 2, 4, 8, 16, 32) for b in (1, 2, 4, 8, 16, 32) if size % (a * b) == 0}
    )
    for size in (16, 32, 64, 128)
}


# Kernel throughput per padded block relative to 128-token blocks (H100, bf16, d 128; measured in
# benchmarks/NOTES_kernels.md: 64-token blocks run ~5 % slower per element on the same work).
_BLOCK_EFFICIENCY = {128: 1.0, 64: 0.95}
AUTO_TILE_SIZES = (64, 128)  # what tile_size="auto" chooses from


TILE_SIZES = (16, 32, 64, 128, "auto")


def check_tile_size(tile_size) -> None:
    if isinstance(tile_size, (bool, float)) or tile_size not in TILE_SIZES:  # True == 1, 64.0 == 64
        raise ValueError(f"tile_size must be one of {TILE_SIZES}, got tile_size={tile_size!r}.")


def resolve_tile_size(tile_size, device=None):
    """``"auto"`` -> the tile sizes to search: 64 and 128 where the kernel runs (CUDA), else 128 alone
    (the reference path ignores tiles, so the cheaper plan search is the right one). Ints pass through."""
    if tile_size == "auto":
        on_cuda = device is not None and torch.device(device).type == "cuda"
        return AUTO_TILE_SIZES if on_cuda else (128,)
    return (tile_size,)


def _one_hot_groups(length: int, step: int) -> torch.Tensor:
    """float [n_groups, length]: row g selects the positions of group g."""
    ids = torch.arange(length) // step
    return torch.nn.functional.one_hot(ids, num_classes=math.ceil(length / step)).T.float()


@dataclass
class Plan:
    """A pattern bound to a grid and a tile shape, with its block tables (all int tensors)."""

    pattern: Pattern
    grid: Grid
    tile: tuple[int, int, int]
    perm: torch.Tensor  # int64 [N]: tiled position -> raster index
    tile_offsets: torch.Tensor  # int32 [num_tiles + 1]
    block_class: torch.Tensor  # int8 [num_tiles, num_tiles]: EMPTY / PARTIAL / FULL
    full_kv: torch.Tensor  # int32 [num_tiles, max_full], padded with -1
    full_count: torch.Tensor  # int32 [num_tiles]
    partial_kv: torch.Tensor  # int32 [num_tiles, max_partial], padded with -1
    partial_count: torch.Tensor  # int32 [num_tiles]
    density: float  # token density (attended pairs / N^2)
    _device_cache: dict = field(default_factory=dict, repr=False)
    _mask_cache: dict = field(default_factory=dict, repr=False)  # (text_len, position, device, dtype) -> [S, S]

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def num_tiles(self) -> int:
        return self.tile_offsets.numel() - 1

    @property
    def is_dense(self) -> bool:
        return self.density == 1.0

    def block_density(self) -> float:
        """Fraction of (query, key) token pairs inside visited tiles: the work a kernel does."""
        sizes = (self.tile_offsets[1:] - self.tile_offsets[:-1]).double()
        work = sizes[:, None] * sizes[None, :]
        return float((work * (self.block_class > 0)).sum() / (self.num_tokens**2))

    def full_mask(self, text_len: int, text_position: str, device, dtype) -> torch.Tensor:
        """``[S, S]`` mask over the whole sequence, text rows and columns dense, built once per (text length,
        text position, device, dtype): the reference path's mask depends only on the plan. ``dtype=torch.bool``:
        True = attend; a float dtype: additive, 0 or -inf (SDPA converts a boolean mask to this on every call;
        on CPU that costs about 30%)."""
        key = (text_len, text_position, str(device), dtype)
        if key not in self._mask_cache:
            n, s = self.num_tokens, self.num_tokens + text_len
            attend = torch.ones(s, s, dtype=torch.bool)
            start = text_len if text_position == "prefix" else 0
            attend[start:start + n, start:start + n] = self.pattern.dense_mask(self.grid)
            mask = attend if dtype == torch.bool else torch.zeros(s, s, dtype=dtype).masked_fill_(~attend, float("-inf"))
            self._mask_cache[key] = mask.to(device)
        return self._mask_cache[key]

    def to(self, device) -> "Plan":
        """A copy of the plan with its tensors on `device` (cached: uploaded once per device)."""
        device = torch.device(device)
        if self.perm.device == device:
            return self
        key = str(device)
        if key not in self._device_cache:
            tensors = {
                name: getattr(self, name).to(device)
                for name in ("perm", "tile_offsets", "block_class", "full_kv", "full_count",
                             "partial_kv", "partial_count")
            }
            self._device_cache[key] = Plan(self.pattern, self.grid, self.tile, density=self.density, **tensors)
        return self._device_cache[key]


def spatial_tile_of(grid: Grid, th: int, tw: int, device=None) -> tuple[torch.Tensor, int]:
    """(tile id of each in-frame raster index ``h * W + w``, number of spatial tiles).

    ``th >= 1``: (th, tw) boxes, numbered in raster order. ``th == 0``: *raster chunks* - runs of
    ``tw`` consecutive in-frame raster indices (they may wrap rows but never cross frames), the
    natural tile for bands in raster distance (radial attention).
    """
    _, H, W = grid
    s = torch.arange(H * W, device=device)
    if th == 0:
        return s // tw, math.ceil(H * W / tw)
    return (s // W // th) * math.ceil(W / tw) + (s % W) // tw, math.ceil(H / th) * math.ceil(W / tw)


def _spatial_block_stats(masks: list[torch.Tensor], grid: Grid, th: int, tw: int, chunk: int = 2048):
    """Per class: counts of attended pairs per (spatial q tile, spatial k tile), and tile sizes.

    Runs on the masks' device: float64 on CUDA (exact counts, no TF32), float32 on the CPU
    (counts stay far below 2**24 there).
    """
    _, H, W = grid
    S = H * W
    device = masks[0].device
    dtype = torch.float64 if device.type == "cuda" else torch.float32
    tile_of, n_s = spatial_tile_of(grid, th, tw, device)
    onehot = torch.nn.functional.one_hot(tile_of, n_s).to(dtype)  # [S, nS]
    counts = []
    for mask in masks:
        acc = torch.zeros(n_s, n_s, dtype=dtype, device=device)
        for start in range(0, S, chunk):
            acc.index_add_(0, tile_of[start : start + chunk], mask[start : start + chunk].to(dtype) @ onehot)
        counts.append(acc)
    return torch.stack(counts), onehot.sum(0)


def classify_blocks(pattern: Pattern, grid: Grid, tile, _spatial_cache: dict | None = None, device=None) -> torch.Tensor:
    """int8 [num_tiles, num_tiles] block classes (EMPTY/PARTIAL/FULL) for `tile`, without N x N work.

    `device` only says where the (exact) counting runs; the result is always on the CPU.
    """
    T, H, W = grid
    tt, th, tw = tile
    cache = {} if _spatial_cache is None else _spatial_cache
    if "masks" not in cache:
        cache["masks"] = [pattern.spatial_class_mask(c, grid, device=device) for c in range(pattern.num_classes(grid))]
    if (th, tw) not in cache:
        cache[(th, tw)] = _spatial_block_stats(cache["masks"], grid, th, tw)
    counts, s_sizes = cache[(th, tw)]  # [C, nS, nS], [nS]
    dev, dtype = counts.device, counts.dtype
    classes = pattern.temporal_classes(grid).to(dev)
    t_groups = _one_hot_groups(T, tt).to(device=dev, dtype=dtype)  # [nT, T]
    # frame-pair counts per class and temporal tile pair: [C, nT, nT]
    t_counts = torch.stack(
        [t_groups @ (classes == c).to(dtype) @ t_groups.T for c in range(counts.shape[0])]
    )
    t_sizes = t_groups.sum(1)
    attended = torch.einsum("cab,cij->aibj", t_counts, counts)  # [nT, nS, nT, nS]
    total = torch.einsum("a,b,i,j->aibj", t_sizes, t_sizes, s_sizes, s_sizes)
    n = t_sizes.numel() * s_sizes.numel()
    attended, total = attended.reshape(n, n), total.reshape(n, n)
    out = torch.full((n, n), PARTIAL, dtype=torch.int8, device=dev)
    out[attended == 0] = EMPTY
    out[attended == total] = FULL
    return out.cpu()


def tile_permutation(grid: Grid, tile) -> tuple[torch.Tensor, torch.Tensor]:
    """(perm, tile_offsets): tiled position -> raster index, and each tile's start in the sequence.

    ``tile = (tt, th, tw)`` boxes, or ``(tt, 0, c)``: tt frames x a raster chunk of c in-frame tokens.
    """
    T, H, W = grid
    tt, th, tw = tile
    idx = torch.arange(T * H * W)
    t, s = idx // (H * W), idx % (H * W)
    s_tile, n_s = spatial_tile_of(grid, th, tw)
    tile_id = (t // tt) * n_s + s_tile[s]
    # raster order is kept inside a tile, so a stable sort by tile id is the permutation
    perm = torch.sort(tile_id, stable=True).indices
    counts = torch.bincount(tile_id, minlength=math.ceil(T / tt) * n_s)
    offsets = torch.zeros(counts.numel() + 1, dtype=torch.int32)
    offsets[1:] = torch.cumsum(counts, 0)
    return perm, offsets


def _tables(block_class: torch.Tensor, kind: int):
    sel = block_class == kind
    count = sel.sum(1).to(torch.int32)
    width = max(int(count.max()) if count.numel() else 0, 1)
    # stable sort puts selected key tiles first, in increasing order
    order = torch.sort((~sel).to(torch.int8), dim=1, stable=True).indices[:, :width].to(torch.int32)
    cols = torch.arange(width)[None, :]
    return torch.where(cols < count[:, None], order, torch.full_like(order, -1)), count


def candidate_tiles(grid: Grid, tile_size: int, fill_slack: float = 1.1) -> list[tuple[int, int, int]]:
    """Tile shapes to try: the power-of-two boxes of `tile_size` tokens (clipped to the grid), plus
    every (tt, th, tw) box and (tt, 0, c) raster-chunk tile of more than half of `tile_size`
    tokens - any integer sides, not only powers of two - whose tile count is within `fill_slack`
    of the fewest (ragged edge tiles cost a whole kernel block, so shapes that tile the grid well
    win: e.g. (21, 3, 2) for the FreeSwim window at 21x45x80)."""
    if tile_size not in _TILE_SHAPES:
        raise ValueError(f"tile_size must be one of {sorted(_TILE_SHAPES)}, got {tile_size}.")
    T, H, W = grid
    # a tile longer than the grid along a dimension is clipped to it (small grids get smaller
    # tiles); very thin spatial tiles make the block statistics expensive and never win
    clipped = {tuple(min(a, L) for a, L in zip(t, grid)) for t in _TILE_SHAPES[tile_size]}
    keep = {t for t in clipped if t[1] * t[2] >= min(8, H * W)} or clipped
    dense_fill = []
    for tt in range(1, min(T, tile_size) + 1):
        for th in range(1, min(H, tile_size // tt) + 1):
            for tw in range(1, min(W, tile_size // (tt * th)) + 1):
                if 2 * tt * th * tw <= tile_size and tt * th * tw < T * H * W:
                    continue
                n = math.ceil(T / tt) * math.ceil(H / th) * math.ceil(W / tw)
                dense_fill.append((n, (tt, th, tw)))
        # raster chunks (tt, 0, c): tt frames x c consecutive in-frame tokens
        for c in range(max(1, tile_size // (2 * tt) + 1), min(H * W, tile_size // tt) + 1):
            dense_fill.append((math.ceil(T / tt) * math.ceil(H * W / c), (tt, 0, c)))
    if dense_fill:
        fewest = min(n for n, _ in dense_fill)
        keep |= {t for n, t in dense_fill if n <= fill_slack * fewest}
    return sorted(keep)


def _block_cost(blocks: torch.Tensor, offsets: torch.Tensor) -> float:
    """Predicted kernel time (arbitrary units) for a block table: each visited block costs a whole
    BLOCK x BLOCK step (ragged tiles are padded to the power of two above the largest tile); partial
    blocks also read their element mask, weighed as 35% extra; smaller blocks run at a lower rate."""
    block = kernel_block(offsets)
    n_full = int((blocks == FULL).sum())
    n_partial = int((blocks == PARTIAL).sum())
    return (n_full + 1.35 * n_partial) * block * block / _BLOCK_EFFICIENCY.get(block, _BLOCK_EFFICIENCY[64])


def build_plan(pattern: Pattern, grid: Grid, tile=None, tile_size: int | str = "auto", device=None) -> Plan:
    """Bind `pattern` to `grid`. With `tile=None`: the pattern's own tile (`Pattern.aligned_tile`) if it has
    one, else the tile shape with the least predicted kernel time among the candidates of `tile_size` tokens
    (16, 32, 64, 128, or ``"auto"``: 64 and 128 on a CUDA `device`, see `resolve_tile_size`).

    `device` (optional) is where the block statistics are counted - a CUDA device makes large grids
    fast (1088x1920 radial: seconds instead of minutes on the CPU); the plan itself stays on the
    CPU (use `Plan.to`).
    """
    grid = tuple(int(x) for x in grid)
    if len(grid) != 3 or min(grid) <= 0:
        raise ValueError(f"grid must be three positive ints (T, H, W), got {grid!r}.")
    pattern.validate(grid)
    device = torch.device(device) if device is not None else torch.device("cpu")
    spatial_cache: dict = {}  # per-class spatial masks, shared by block classification and density
    if tile is None:
        tile = pattern.aligned_tile(grid)  # tile-aligned windows bring their tile
    if tile is None:
        best = None
        # grouped by spatial shape: the spatial statistics are computed once per (th, tw)
        candidates = set().union(*(candidate_tiles(grid, ts) for ts in resolve_tile_size(tile_size, device)))
        for cand in sorted(candidates, key=lambda t: (t[1], t[2], t[0])):
            for key in [k for k in spatial_cache if k != "masks" and k != cand[1:]]:
                del spatial_cache[key]  # keep memory flat
            blocks = classify_blocks(pattern, grid, cand, spatial_cache, device=device)
            _, offsets = tile_permutation(grid, cand)
            work = _block_cost(blocks, offsets)
            if best is None or work < best[0] or (work == best[0] and cand < best[1]):
                best = (work, cand, blocks)
        _, tile, block_class = best
    else:
        tile = tuple(int(x) for x in tile)
        block_class = classify_blocks(pattern, grid, tile, spatial_cache, device=device)
    perm, offsets = tile_permutation(grid, tile)
    full_kv, full_count = _tables(block_class, FULL)
    partial_kv, partial_count = _tables(block_class, PARTIAL)
    return Plan(
        pattern=pattern,
        grid=grid,
        tile=tile,
        perm=perm,
        tile_offsets=offsets,
        block_class=block_class,
        full_kv=full_kv,
        full_count=full_count,
        partial_kv=partial_kv,
        partial_count=partial_count,
        density=pattern.density(grid, spatial_cache["masks"]),
    )


class PlanCache:
    """Bounded LRU cache of plans keyed by (pattern, grid, tile size, device). One per accelerated model."""

    def __init__(self, max_entries: int = 16):
        self.max_entries = max_entries
        self._plans: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, pattern: Pattern, grid: Grid, device=None, tile_size: int | str = "auto") -> Plan:
        key = (id(pattern), tuple(grid), tile_size, str(device) if device is not None else "cpu")
        plan = self._plans.get(key)
        if plan is not None:
            self.hits += 1
            self._plans.move_to_end(key)
            return plan
        self.misses += 1
        plan = build_plan(pattern, grid, tile_size=tile_size, device=device)
        if device is not None:
            plan = plan.to(device)
        self._plans[key] = plan
        while len(self._plans) > self.max_entries:
            self._plans.popitem(last=False)
        return plan

    def holds(self, plan: Plan) -> bool:
        """Whether `plan` is still cached (the LRU may have dropped it)."""
        return any(p is plan for p in self._plans.values())

    def find(self, pattern: Pattern, grid: Grid) -> Plan | None:
        """A cached plan of `pattern` at `grid` on any device, without building one (no stats change)."""
        for (pid, g, _, _), plan in self._plans.items():
            if pid == id(pattern) and g == tuple(grid):
                return plan
        return None

    def stats(self) -> dict:
        return {"entries": len(self._plans), "max_entries": self.max_entries, "hits": self.hits, "misses": self.misses}
