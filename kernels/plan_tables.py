"""Plan tables the kernels read, built once per (plan, device) and cached on the device plan.

`kernel_tables` (block lists, rule tables, tile offsets), the int8 mask blocks of partial tile pairs
(`partial_mask_table`, kernel or box key order), the kernel-position -> sequence-row map (`sequence_rows`),
the box geometry of power-of-two tiles (`box_tile`, `box_geometry`) and the Gluon kernel's per-CTA
item lists (`hopper_item_lists`). Pure tensor code: it runs (and is tested) on the CPU.

On a CUDA device every table is built on a worker thread (`built_outside_graph_pools`): tables live as long as
their plan, and under ``torch.compile(mode="reduce-overhead")`` the first call of a graph runs with every
allocation of the calling thread routed into the CUDA-graph pool, which refuses tensors that outlive the call
without being its outputs (and would reuse their memory).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch

from .options import OPTIONS

# Partial tiles read a precomputed int8 mask block per (query tile, partial key tile) pair when the
# table fits this budget (bytes); above it the kernel evaluates the pattern's rule in place.


_BUILDING = threading.local()


def built_outside_graph_pools(device: torch.device, build, *args):
    """``build(*args)``; on a CUDA device on a worker thread (its allocations come from the caching allocator's own
    pool, see the module docstring), after the calling stream's work and with the result's work finished. Nested
    builds run inline."""
    if device.type != "cuda" or getattr(_BUILDING, "active", False):
        return build(*args)
    if torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            "vidaccel's plan tables cannot be built while a CUDA graph is being captured: run one call of the "
            "accelerated model (or of the kernel on this plan) before capturing; torch.compile's "
            "mode='reduce-overhead' does this itself in its warm-up run.")
    ready = torch.cuda.Event()
    ready.record(torch.cuda.current_stream(device))

    def run():
        _BUILDING.active = True
        try:
            with torch.cuda.device(device):
                torch.cuda.current_stream(device).wait_event(ready)
                out = build(*args)
                torch.cuda.current_stream(device).synchronize()
            return out
        finally:
            _BUILDING.active = False

    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(run).result()


def kernel_block(tile_offsets: torch.Tensor) -> int:
    """The kernel's BLOCK for a tiling: the power of two >= the largest tile (at least 16)."""
    return 1 << max(4, int((tile_offsets[1:] - tile_offsets[:-1]).max() - 1).bit_length())


def kernel_tables(plan) -> dict:
    """Device tables the kernel reads: tiles, block lists, rule tables. Cached per device plan."""
    cached = plan._device_cache.get("kernel_tables")
    if cached is not None:
        return cached
    plan._device_cache["kernel_tables"] = built_outside_graph_pools(plan.perm.device, _build_kernel_tables, plan)
    return plan._device_cache["kernel_tables"]


def _build_kernel_tables(plan) -> dict:
    device = plan.perm.device
    T, H, W = plan.grid
    rule = plan.pattern.kernel_rule(plan.grid)  # CPU tensors: policy lives in the pattern
    cls = rule.temporal_classes.to(torch.int64)
    band = rule.band_width.to(torch.float32)
    wtab = torch.where(cls >= 0, band[cls.clamp(min=0)], torch.full(cls.shape, -1.0)).reshape(-1)
    lo, hi = rule.lo.to(torch.int32), rule.hi.to(torch.int32)
    has_window = bool((lo != 0).any()) or bool((hi != torch.tensor([H, W], dtype=torch.int32)).any())
    dil = tuple(int(d) for d in rule.dilation)
    return {
        "tile_offsets": plan.tile_offsets.to(device=device, dtype=torch.int32),
        "full_kv": plan.full_kv.to(device=device, dtype=torch.int32).contiguous(),
        "full_count": plan.full_count.to(device=device, dtype=torch.int32),
        "partial_kv": plan.partial_kv.to(device=device, dtype=torch.int32).contiguous(),
        "partial_count": plan.partial_count.to(device=device, dtype=torch.int32),
        "partial_base": (torch.cumsum(plan.partial_count.to(torch.int64), 0) - plan.partial_count).to(
            device=device, dtype=torch.int32),
        "num_partial": int(plan.partial_count.sum()),
        "perm": plan.perm.to(device=device, dtype=torch.int32),
        "lo": lo.reshape(-1).to(device),
        "hi": hi.reshape(-1).to(device),
        "wtab": wtab.to(device),
        "has_window": has_window,
        "dilation": dil,
        "block": kernel_block(plan.tile_offsets),
        "rows": {},
    }


def mask_table_fits(tables: dict) -> bool:
    """Whether the plan has partial tiles and their int8 mask blocks fit `OPTIONS.mask_table_bytes()`."""
    P, block = tables["num_partial"], tables["block"]
    return 0 < P and P * block * block <= OPTIONS.mask_table_bytes()


def box_tile(plan, tables: dict) -> Optional[tuple[int, int, int]]:
    """The plan's tile as a K/V box for rank-5 TMA descriptors, or None: every side a power of two,
    exactly one kernel block of tokens, and grid sides below 1024 (item fields pack coordinates)."""
    tt, th, tw = plan.tile
    if th < 1 or tt * th * tw != tables["block"] or max(plan.grid) >= 1024:
        return None
    return plan.tile if all(x & (x - 1) == 0 for x in plan.tile) else None


def box_geometry(plan, tables: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 [num_tiles, 3] each: every tile's box origin (t, h, w) and its in-grid extent."""
    if "box_geometry" not in tables:
        tables["box_geometry"] = built_outside_graph_pools(plan.perm.device, _build_box_geometry, plan)
    return tables["box_geometry"]


def _build_box_geometry(plan) -> tuple[torch.Tensor, torch.Tensor]:
    T, H, W = plan.grid
    tt, th, tw = plan.tile
    n_w = -(-W // tw)
    n_s = -(-H // th) * n_w
    tile = torch.arange(plan.num_tiles, device=plan.perm.device)
    spatial = tile % n_s
    origin = torch.stack([tile // n_s * tt, spatial // n_w * th, spatial % n_w * tw], 1)
    extent = torch.minimum(torch.tensor([tt, th, tw], device=tile.device),
                           torch.tensor([T, H, W], device=tile.device) - origin)
    return origin, extent


def _tile_rows(plan, tables: dict, tiles: torch.Tensor, box: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Raster index and validity of each token position of `tiles` as the kernel holds them:
    [len, BLOCK] each - kernel order (the tile's tokens, then padding; queries always, keys
    without box reads) or box order (row-major (t, h, w) positions of the tile's box, out-of-grid
    ones invalid; keys read as boxes)."""
    block, n = tables["block"], plan.num_tokens
    ar = torch.arange(block, device=tiles.device)
    if not box:
        offs = tables["tile_offsets"].long()
        start = offs[tiles]
        valid = ar[None] < (offs[tiles + 1] - start)[:, None]
        return tables["perm"].long()[(start[:, None] + ar[None]).clamp(max=n - 1)], valid
    T, H, W = plan.grid
    _, th, tw = plan.tile
    origin, extent = box_geometry(plan, tables)
    local = torch.stack([ar // (th * tw), ar // tw % th, ar % tw], 1)  # [BLOCK, 3]
    valid = (local[None] < extent[tiles][:, None]).all(-1)
    pos = origin[tiles][:, None] + local[None]
    t, h, w = (pos[..., i].clamp(max=L - 1) for i, L in enumerate((T, H, W)))
    return (t * H + h) * W + w, valid


def partial_mask_table(plan, tables: dict, box: bool = False) -> Optional[torch.Tensor]:
    """int8 [num_partial, BLOCK, BLOCK]: the exact element mask of every partial tile pair, in
    the order of the plan's partial tables (rows = query positions in the tile, columns = keys in
    kernel order, or in box order with `box`: see `_tile_rows`), 0 where attended and -1 where
    masked (ragged rows/columns are masked): the kernel turns -1 into an additive -1.7e38. Built
    once on the plan's device from the same `KernelRule` the in-kernel path evaluates; None when it
    would exceed `OPTIONS.mask_table_bytes()`."""
    if not mask_table_fits(tables):
        return None
    key = "partial_masks_box" if box else "partial_masks"
    if key not in tables:
        tables[key] = built_outside_graph_pools(plan.perm.device, _build_partial_masks, plan, tables, box)
    return tables[key]


def _build_partial_masks(plan, tables: dict, box: bool) -> torch.Tensor:
    block, P = tables["block"], tables["num_partial"]
    device = plan.perm.device
    T, H, W = plan.grid
    HW = H * W
    counts = tables["partial_count"].long()
    pkv = tables["partial_kv"].long()
    qt = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts)
    kt = pkv[pkv >= 0]  # row-major: the same order as PART_BASE + j
    wtab = tables["wtab"]
    lo, hi = tables["lo"].view(-1, 2).long(), tables["hi"].view(-1, 2).long()
    dil_h, dil_w = tables["dilation"]
    out = torch.empty(max(P, 1), block, block, dtype=torch.int8, device=device)
    chunk = max(1, (256 * 128 * 128) // (block * block))
    for c0 in range(0, P, chunk):
        rq, qv = _tile_rows(plan, tables, qt[c0 : c0 + chunk])
        rk, kv = _tile_rows(plan, tables, kt[c0 : c0 + chunk], box)
        tq, sq = rq // HW, rq % HW
        tk, sk = rk // HW, rk % HW
        ok = (sq[:, :, None] - sk[:, None, :]).abs().float() <= wtab[tq[:, :, None] * T + tk[:, None, :]]
        if tables["has_window"]:
            hk, wk = (sk // W)[:, None, :], (sk % W)[:, None, :]
            lh, lw = lo[rq, 0][:, :, None], lo[rq, 1][:, :, None]
            ok &= (hk >= lh) & (hk < hi[rq, 0][:, :, None]) & (wk >= lw) & (wk < hi[rq, 1][:, :, None])
            if dil_h > 1:
                ok &= (hk - lh) % dil_h == 0
            if dil_w > 1:
                ok &= (wk - lw) % dil_w == 0
        ok &= qv[:, :, None] & kv[:, None, :]
        out[c0 : c0 + chunk] = ok.to(torch.int8) - 1
    return out


def sequence_rows(plan, tables: dict, text_len: int, text_position: str) -> tuple[torch.Tensor, bool]:
    """int32 [S]: kernel position -> sequence row (visual tokens in tiled order, then text), and
    whether that is the identity (raster-chunk tiles, no text prefix): then K/V need no gather."""
    key = (text_len, text_position)
    if key not in tables["rows"]:
        tables["rows"][key] = built_outside_graph_pools(plan.perm.device, _build_rows, plan, tables, text_len,
                                                        text_position)
    return tables["rows"][key]


def _build_rows(plan, tables: dict, text_len: int, text_position: str) -> tuple[torch.Tensor, bool]:
    n = plan.num_tokens
    perm = tables["perm"]
    vis_start = text_len if text_position == "prefix" else 0
    text_start = 0 if text_position == "prefix" else n
    text = torch.arange(text_start, text_start + text_len, device=perm.device, dtype=torch.int32)
    rows = torch.cat([perm + vis_start, text]).contiguous()
    identity = bool(torch.equal(rows, torch.arange(rows.numel(), device=rows.device, dtype=rows.dtype)))
    return rows, identity  # one host sync per plan and text layout


def hopper_item_lists(tables: dict, plan=None, consumers: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gluon kernel's per-CTA item lists, built once per plan from the block lists.

    A CTA's consumer warpgroups take both 64-row halves of a 128-token query tile, or `consumers`
    (2 or 3) neighbouring 64-token query tiles; its items are the union of their key tiles,
    interleaved so that the consumers advance together:
    int32 ``[CTAs, max_items + 1, 2 + NC]`` rows ``(key start, key length, code per consumer)``
    (kernel-order token range of the key tile; code ``-1`` = full tile, ``>= 0`` = partial tile (its
    block in the partial-mask table), ``-2`` = that consumer skips it; a spare zero row ends every list, so the
    kernel can prefetch one item ahead) and int32 ``[CTAs]`` item counts. Given `plan` (box K/V,
    see `box_tile`), the two key fields are the box origin packed as ``t << 20 | h << 10 | w`` and
    its in-grid extent as ``t << 16 | h << 8 | w``, and partial codes index the box-order table."""
    key = ("hopper_items", plan is not None, consumers)
    if key not in tables:
        tables[key] = built_outside_graph_pools(tables["full_kv"].device, _build_items, tables, plan, consumers)
    return tables[key]


def _build_items(tables: dict, plan, consumers: int) -> tuple[torch.Tensor, torch.Tensor]:
    block = tables["block"]
    fk, pk = tables["full_kv"].long(), tables["partial_kv"].long()
    nt = fk.shape[0]
    dev = fk.device
    full, part = fk >= 0, pk >= 0  # left-packed rows, -1 padded
    full_tile = torch.arange(nt, device=dev)[:, None].expand_as(fk)[full]
    part_tile = torch.arange(nt, device=dev)[:, None].expand_as(pk)[part]
    part_column = torch.arange(pk.shape[1], device=dev)[None, :].expand_as(pk)[part]
    # one entry per (query tile, visited key tile): code -1 (full) or its partial-mask block
    tile = torch.cat([full_tile, part_tile])
    kt = torch.cat([fk[full], pk[part]])
    code = torch.cat([torch.full_like(full_tile, -1), tables["partial_base"].long()[part_tile] + part_column])
    shared = block == 128
    nc = 2 if shared else consumers
    cta = tile if shared else tile // nc
    n_ctas = nt if shared else (nt + nc - 1) // nc
    uniq, inv = torch.unique(cta * nt + kt, return_inverse=True)
    codes = torch.full((uniq.numel(), nc), -2, dtype=torch.long, device=dev)
    if shared:
        codes[inv] = code[:, None]
    else:
        codes[inv, tile % nc] = code
    # order: by the item's rank in its consumers' own key-tile-ordered lists (the latest one for a shared
    # item), so the consumers advance together - sorted by key tile alone, one consumer's own items
    # cluster at each end of the union and the others idle there (they may run only STAGES items ahead)
    by_tile = torch.argsort(tile * nt + kt)
    counts_tile = torch.bincount(tile, minlength=nt)
    rank = torch.empty_like(kt)
    rank[by_tile] = torch.arange(kt.numel(), device=dev) - (torch.cumsum(counts_tile, 0) - counts_tile)[tile[by_tile]]
    item_rank = torch.zeros(uniq.numel(), dtype=torch.long, device=dev).scatter_reduce(0, inv, rank, "amax")
    item_cta = uniq // nt
    order = torch.argsort((item_cta * (int(rank.max()) + 1) + item_rank) * nt + uniq % nt)
    uniq, codes, item_cta = uniq[order], codes[order], item_cta[order]
    counts = torch.bincount(item_cta, minlength=n_ctas)
    pos = torch.arange(uniq.numel(), device=dev) - (torch.cumsum(counts, 0) - counts)[item_cta]
    key_tile = uniq % nt
    if plan is None:
        offsets = tables["tile_offsets"].long()
        fields = [offsets[key_tile], offsets[key_tile + 1] - offsets[key_tile]]
    else:
        origin, extent = (x[key_tile] for x in box_geometry(plan, tables))
        fields = [origin[:, 0] << 20 | origin[:, 1] << 10 | origin[:, 2],
                  extent[:, 0] << 16 | extent[:, 1] << 8 | extent[:, 2]]
    items = torch.zeros((n_ctas, int(counts.max()) + 1, 2 + nc), dtype=torch.int32, device=dev)
    items[item_cta, pos] = torch.cat([torch.stack(fields, 1), codes], 1).to(torch.int32)
    return items, counts.to(torch.int32)
