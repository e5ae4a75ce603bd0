"""Glue around the kernels: plan tables, gathers, the torch custom op, input validation.

Two kernels share one op and one plan contract: the Triton kernel (`block_sparse_fwd.py`, every
supported GPU and input) and, on Hopper with Triton 3.6, the warp-specialised Gluon kernel
(`block_sparse_fwd_hopper.py`) for the inputs it covers (no text tokens, no key-padding mask,
partial tiles from the int8 mask table; 1.15-1.25x the Triton kernel at 720p,
benchmarks/NOTES_kernels.md v6). `HOPPER_KERNEL = False` forces the Triton kernel.

Nothing here synchronises with the device per call: plan tables (block lists, rule tables and
the int8 mask blocks of partial tile pairs) are built once per (plan, device) and cached on the
device plan (`Plan._device_cache`); the per-call work is two gathers (K and V into tiled order;
none when the tiled order is the caller's, e.g. raster-chunk tiles, nor when the Gluon kernel reads
power-of-two box tiles straight from the caller's K/V: `HOPPER_BOX_KV`) and one kernel launch. The
query gather and the output scatter are fused into the kernel (it reads Q and writes O at the
caller's rows).

The launch is registered as the custom op ``torch.ops.vidaccel.block_sparse_attn_fwd`` with a
fake (meta) implementation, so ``torch.compile`` keeps attention in its graph (no graph break)
and the op can be captured in CUDA graphs after a warm-up call (the autotuner runs once per
configuration key on the first call).
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import torch
import triton

from vidaccel.plan import kernel_block

from .block_sparse_fwd import block_sparse_attn_fwd_kernel

SUPPORTED_DTYPES = (torch.bfloat16, torch.float16)
# Partial tiles read a precomputed int8 mask block per (query tile, partial key tile) pair when the
# table fits this budget (bytes); above it the kernel evaluates the pattern's rule in place.
MASK_TABLE_MAX_BYTES = int(os.environ.get("VIDACCEL_MASK_TABLE_MAX_BYTES", 6 * 2**30))
# K/V through TMA tensor descriptors on Hopper (None = auto: compute capability >= 9).
USE_TMA: Optional[bool] = None
SUPPORTED_HEAD_DIMS = (64, 128)
# The warp-specialised Gluon kernel (`block_sparse_fwd_hopper.py`) on Hopper for inputs it covers
# (TMA, int8 partial-mask table, no text tokens, no key-padding mask). None = auto (use it where it
# applies), False = always the Triton kernel (tests and sweeps force each path).
HOPPER_KERNEL: Optional[bool] = None
# The Gluon kernel reads K/V tiles straight from the caller's tensors as 3D token boxes (rank-5 TMA
# descriptors: no K/V gather) where the plan's tiles are power-of-two boxes of exactly one kernel
# block and the K/V strides allow it. None = auto, False = always gather (tests and sweeps).
HOPPER_BOX_KV: Optional[bool] = None
_LOG2E = 1.4426950408889634
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


_CAPABILITY: dict = {}


def _capability(device: torch.device) -> tuple[int, int]:
    index = device.index if device.index is not None else torch.cuda.current_device()
    cap = _CAPABILITY.get(index)
    if cap is None:
        cap = _CAPABILITY[index] = torch.cuda.get_device_capability(index)
    return cap


# --------------------------------------------------------------------------------------------
# validation: one helper for both auto dispatch (returns a reason) and forced dispatch (raises)
# --------------------------------------------------------------------------------------------
def kernel_unsupported_reason(q: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> Optional[str]:
    """None when the kernel can run this input, otherwise a sentence naming the problem and the fix."""
    if q.device.type != "cuda" and not _INTERPRET:
        return f"the Triton kernel needs a CUDA tensor, got q.device={q.device}"
    if q.device.type == "cuda" and _capability(q.device)[0] < 8:
        return f"the Triton kernel needs compute capability >= 8.0, got {_capability(q.device)}"
    if q.dtype not in SUPPORTED_DTYPES:
        return f"the Triton kernel supports bfloat16 and float16, got q.dtype={q.dtype} (cast the inputs)"
    if q.shape[-1] not in SUPPORTED_HEAD_DIMS:
        return f"the Triton kernel supports head_dim in {SUPPORTED_HEAD_DIMS}, got head_dim={q.shape[-1]}"
    if attn_mask is not None:
        B, _, S, _ = q.shape
        shape = tuple(attn_mask.shape)
        if attn_mask.dtype != torch.bool:
            return f"attn_mask must be boolean, got attn_mask.dtype={attn_mask.dtype}"
        if not (len(shape) == 4 and shape[0] in (1, B) and shape[1] == 1 and shape[2] == 1 and shape[3] == S):
            return (
                f"the Triton kernel supports only key-padding masks of shape (B, 1, 1, S) = ({B}, 1, 1, {S}), "
                f"got attn_mask.shape={shape}"
            )
    return None


# --------------------------------------------------------------------------------------------
# plan tables (built once per plan and device, cached on the device plan)
# --------------------------------------------------------------------------------------------
def kernel_tables(plan) -> dict:
    """Device tables the kernel reads: tiles, block lists, rule tables. Cached per device plan."""
    cached = plan._device_cache.get("kernel_tables")
    if cached is not None:
        return cached
    device = plan.perm.device
    T, H, W = plan.grid
    rule = plan.pattern.kernel_rule(plan.grid)  # CPU tensors: policy lives in the pattern
    cls = rule.temporal_classes.to(torch.int64)
    band = rule.band_width.to(torch.float32)
    wtab = torch.where(cls >= 0, band[cls.clamp(min=0)], torch.full(cls.shape, -1.0)).reshape(-1)
    lo, hi = rule.lo.to(torch.int32), rule.hi.to(torch.int32)
    has_window = bool((lo != 0).any()) or bool((hi != torch.tensor([H, W], dtype=torch.int32)).any())
    dil = tuple(int(d) for d in rule.dilation)
    tables = {
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
    plan._device_cache["kernel_tables"] = tables
    return tables


def mask_table_fits(tables: dict) -> bool:
    """Whether the plan has partial tiles and their int8 mask blocks fit `MASK_TABLE_MAX_BYTES`."""
    P, block = tables["num_partial"], tables["block"]
    return 0 < P and P * block * block <= MASK_TABLE_MAX_BYTES


def box_tile(plan, tables: dict) -> Optional[tuple[int, int, int]]:
    """The plan's tile as a K/V box for rank-5 TMA descriptors, or None: every side a power of two,
    exactly one kernel block of tokens, and grid sides below 1024 (item fields pack coordinates)."""
    tt, th, tw = plan.tile
    if th < 1 or tt * th * tw != tables["block"] or max(plan.grid) >= 1024:
        return None
    return plan.tile if all(x & (x - 1) == 0 for x in plan.tile) else None


def box_geometry(plan, tables: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 [num_tiles, 3] each: every tile's box origin (t, h, w) and its in-grid extent."""
    key = "box_geometry"
    if key not in tables:
        T, H, W = plan.grid
        tt, th, tw = plan.tile
        n_w = -(-W // tw)
        n_s = -(-H // th) * n_w
        tile = torch.arange(plan.num_tiles, device=plan.perm.device)
        spatial = tile % n_s
        origin = torch.stack([tile // n_s * tt, spatial // n_w * th, spatial % n_w * tw], 1)
        extent = torch.minimum(torch.tensor([tt, th, tw], device=tile.device),
                               torch.tensor([T, H, W], device=tile.device) - origin)
        tables[key] = (origin, extent)
    return tables[key]


def _key_rows(plan, tables: dict, key_tiles: torch.Tensor, box: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Raster index and validity of each key position of `key_tiles` as the kernel holds them:
    [len, BLOCK] each - kernel order (the tile's tokens, then padding) or box order (row-major
    (t, h, w) positions of the tile's box, out-of-grid ones invalid)."""
    block, n = tables["block"], plan.num_tokens
    ar = torch.arange(block, device=key_tiles.device)
    if not box:
        offs = tables["tile_offsets"].long()
        k0 = offs[key_tiles]
        valid = ar[None] < (offs[key_tiles + 1] - k0)[:, None]
        return tables["perm"].long()[(k0[:, None] + ar[None]).clamp(max=n - 1)], valid
    T, H, W = plan.grid
    _, th, tw = plan.tile
    origin, extent = box_geometry(plan, tables)
    local = torch.stack([ar // (th * tw), ar // tw % th, ar % tw], 1)  # [BLOCK, 3]
    valid = (local[None] < extent[key_tiles][:, None]).all(-1)
    pos = origin[key_tiles][:, None] + local[None]
    t, h, w = (pos[..., i].clamp(max=L - 1) for i, L in enumerate((T, H, W)))
    return (t * H + h) * W + w, valid


def partial_mask_table(plan, tables: dict, box: bool = False) -> Optional[torch.Tensor]:
    """int8 [num_partial, BLOCK, BLOCK]: the exact element mask of every partial tile pair, in
    the order of the plan's partial tables (rows = query positions in the tile, columns = keys in
    kernel order, or in box order with `box`: see `_key_rows`), 0 where attended and -1 where
    masked (ragged rows/columns are masked): the kernel turns -1 into an additive -1.7e38. Built
    once on the plan's device from the same `KernelRule` the in-kernel path evaluates; None when it
    would exceed `MASK_TABLE_MAX_BYTES`."""
    block, P = tables["block"], tables["num_partial"]
    if not mask_table_fits(tables):
        return None
    key = "partial_masks_box" if box else "partial_masks"
    if key in tables:
        return tables[key]
    device = plan.perm.device
    T, H, W = plan.grid
    HW = H * W
    n = plan.num_tokens
    offs = tables["tile_offsets"].long()
    counts = tables["partial_count"].long()
    pkv = tables["partial_kv"].long()
    qt = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts)
    kt = pkv[pkv >= 0]  # row-major: the same order as PART_BASE + j
    perm = tables["perm"].long()
    wtab = tables["wtab"]
    lo, hi = tables["lo"].view(-1, 2).long(), tables["hi"].view(-1, 2).long()
    dil_h, dil_w = tables["dilation"]
    ar = torch.arange(block, device=device)
    out = torch.empty(max(P, 1), block, block, dtype=torch.int8, device=device)
    chunk = max(1, (256 * 128 * 128) // (block * block))
    for c0 in range(0, P, chunk):
        q0 = offs[qt[c0 : c0 + chunk]]
        qv = ar[None] < (offs[qt[c0 : c0 + chunk] + 1] - q0)[:, None]
        rq = perm[(q0[:, None] + ar[None]).clamp(max=n - 1)]
        rk, kv = _key_rows(plan, tables, kt[c0 : c0 + chunk], box)
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
    tables[key] = out
    return out


def _rows(plan, tables: dict, text_len: int, text_position: str) -> tuple[torch.Tensor, bool]:
    """int32 [S]: kernel position -> sequence row (visual tokens in tiled order, then text), and
    whether that is the identity (raster-chunk tiles, no text prefix): then K/V need no gather."""
    key = (text_len, text_position)
    rows = tables["rows"].get(key)
    if rows is None:
        n = plan.num_tokens
        perm = tables["perm"]
        vis_start = text_len if text_position == "prefix" else 0
        text_start = 0 if text_position == "prefix" else n
        text = torch.arange(text_start, text_start + text_len, device=perm.device, dtype=torch.int32)
        rows = torch.cat([perm + vis_start, text]).contiguous()
        identity = bool(torch.equal(rows, torch.arange(rows.numel(), device=rows.device, dtype=rows.dtype)))
        rows = tables["rows"][key] = (rows, identity)  # one host sync per plan and text layout
    return rows


_GLUON: dict = {}
logger = logging.getLogger(__name__)


def _gluon_available() -> bool:
    """Gluon's Hopper API as used here is that of Triton 3.6 (the tested version); older Triton
    (3.2-3.5) runs the Triton kernel everywhere."""
    if "ok" not in _GLUON:
        try:
            ok = tuple(int(x) for x in triton.__version__.split(".")[:2]) >= (3, 6)
            if ok:
                from . import block_sparse_fwd_hopper  # noqa: F401
        except (ImportError, AttributeError, ValueError):
            ok = False
        _GLUON["ok"] = ok
    return _GLUON["ok"]


def _hopper_kernel_applies(q, use_tma: bool, text_len: int, has_mask: bool, tables: dict) -> bool:
    if HOPPER_KERNEL is False or not use_tma or text_len or has_mask or not mask_table_fits(tables):
        return False
    return (tables["block"] in (64, 128) and q.device.type == "cuda" and _capability(q.device)[0] == 9
            and _gluon_available())


def _box_layout(x: torch.Tensor) -> Optional[int]:
    """How a (B, heads, S, D) K or V tensor maps onto a rank-5 box descriptor: 0 = heads-major
    ((B * heads, T, H, W, D): batch stride = heads x head stride), 1 = heads interleaved per token
    ((B, T, H, W, heads * D): head stride = D, diffusers' (B, S, heads, D) transposed), None = neither
    (or strides TMA cannot address: multiples of 16 bytes). Strides only, so it traces under
    torch.compile; the op copies a base that is not 16-byte aligned."""
    B, Hh, S, D = x.shape
    sb, sh, ss, sd = x.stride()
    if sd != 1 or any(st * x.element_size() % 16 for st in (sb, sh, ss)):
        return None
    if B == 1 or sb == Hh * sh:
        return 0
    return 1 if sh == D else None


def _box_descriptor_view(x: torch.Tensor, grid, layout: int) -> torch.Tensor:
    B, Hh, S, D = x.shape
    sb, sh, ss, _ = x.stride()
    T, H, W = grid
    if layout == 0:
        return x.as_strided((B * Hh, T, H, W, D), (sh, H * W * ss, W * ss, ss, 1))
    return x.as_strided((B, T, H, W, Hh * D), (sb, H * W * ss, W * ss, ss, 1))


def _use_box_kv(plan, tables: dict, k: torch.Tensor, v: torch.Tensor) -> Optional[int]:
    """The box layout (see `_box_layout`) when the Gluon kernel can read K/V without a gather."""
    if HOPPER_BOX_KV is False or box_tile(plan, tables) is None or k.shape[2] != plan.num_tokens:
        return None
    layout = _box_layout(k)
    return layout if layout is not None and _box_layout(v) == layout else None


def hopper_consumers(block: int) -> int:
    """Consumer warpgroups per CTA of the Gluon kernel: the two halves of a 128-token query tile, or
    three 64-token tiles (``VIDACCEL_HOPPER_CONSUMERS=2``: two, to compare)."""
    if block == 128:
        return 2
    value = os.environ.get("VIDACCEL_HOPPER_CONSUMERS", "3")
    if value not in ("2", "3"):
        raise ValueError(f"VIDACCEL_HOPPER_CONSUMERS must be 2 or 3 (64-token tiles), got {value!r}; unset it for 3.")
    return int(value)


def hopper_item_lists(tables: dict, block: int, plan=None, consumers: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gluon kernel's per-CTA item lists, built once per plan from the block lists.

    A CTA's two consumer warpgroups take both 64-row halves of a 128-token query tile, or two
    neighbouring 64-token query tiles; its items are the union of their key tiles, interleaved so
    that both consumers advance together:
    int32 ``[CTAs, max_items + 1, 4]`` rows ``(key start, key length, code0, code1)`` (kernel-order
    token range of the key tile; code ``-1`` = full tile, ``>= 0`` = partial tile (its block in the
    partial-mask table), ``-2`` = that consumer skips it; a spare zero row ends every list, so the
    kernel can prefetch one item ahead) and int32 ``[CTAs]`` item counts. Given `plan` (box K/V,
    see `box_tile`), the two key fields are the box origin packed as ``t << 20 | h << 10 | w`` and
    its in-grid extent as ``t << 16 | h << 8 | w``, and partial codes index the box-order table."""
    key = ("hopper_items", block, plan is not None, consumers)
    if key in tables:
        return tables[key]
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
    # order: by the item's rank in its consumers' own key-tile-ordered lists (the later one for a shared
    # item), so the two consumers advance together - sorted by key tile alone, one consumer's own items
    # cluster at each end of the union and the other idles there (it may run only STAGES items ahead)
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
    tables[key] = (items, counts.to(torch.int32))
    return tables[key]


def _launch_hopper(q, kg, vg, out, lse, rows, tile_offsets, items, n_items, partial_masks, block: int,
                   scale: float, box: Optional[tuple] = None, box_layout: int = 0) -> None:
    """K/V: kernel-order (B, heads, S, D) tensors read by row blocks, or with `box` = (grid, tile)
    the caller's tensors read by 3D boxes through `_box_descriptor_view` (`box_layout`)."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from .block_sparse_fwd_hopper import (
        MAXNREG,
        MAXNREG_3,
        hopper_block_sparse_fwd_kernel,
        ring_stages,
    )

    B, Hh, S, D = q.shape
    dtype = gl.bfloat16 if q.dtype == torch.bfloat16 else gl.float16
    if box is None:
        layout = gl.NVMMASharedLayout.get_default_for([block, D], dtype)
        k_desc = TensorDescriptor.from_tensor(kg.view(B * Hh * S, D), [block, D], layout)
        v_desc = TensorDescriptor.from_tensor(vg.view(B * Hh * S, D), [block, D], layout)
    else:
        grid, tile = box
        shape = [1, *tile, D]
        layout = gl.NVMMASharedLayout.get_default_for(shape, dtype)
        k_desc = TensorDescriptor.from_tensor(_box_descriptor_view(kg, grid, box_layout), shape, layout)
        v_desc = TensorDescriptor.from_tensor(_box_descriptor_view(vg, grid, box_layout), shape, layout)
    # each consumer reads the 64 mask rows of its query rows
    pm_layout = gl.NVMMASharedLayout.get_default_for([64, block], gl.int8)
    pm_desc = TensorDescriptor.from_tensor(partial_masks.view(-1, block), [64, block], pm_layout)
    hopper_block_sparse_fwd_kernel[(items.shape[0], B * Hh)](
        k_desc, v_desc, pm_desc, q, out, lse, rows, tile_offsets, items, n_items,
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        Hh, S, tile_offsets.numel() - 1, items.shape[1], scale * _LOG2E, box_layout,
        STAGES=ring_stages(block), NC=items.shape[2] - 2, num_warps=4,
        maxnreg=MAXNREG if items.shape[2] == 4 else MAXNREG_3,
    )


# --------------------------------------------------------------------------------------------
# the custom op
# --------------------------------------------------------------------------------------------
@torch.library.custom_op("vidaccel::block_sparse_attn_fwd", mutates_args=())
def block_sparse_attn_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rows: torch.Tensor,
    kv_mask: Optional[torch.Tensor],
    tile_offsets: torch.Tensor,
    full_kv: torch.Tensor,
    full_count: torch.Tensor,
    partial_kv: torch.Tensor,
    partial_count: torch.Tensor,
    partial_base: torch.Tensor,
    partial_masks: Optional[torch.Tensor],
    perm: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    wtab: torch.Tensor,
    grid: list[int],
    dilation: list[int],
    has_window: bool,
    block: int,
    scale: float,
    use_tma: bool,
    rows_identity: bool,
    hopper_items: Optional[torch.Tensor],
    hopper_counts: Optional[torch.Tensor],
    box_tile: list[int],
    box_layout: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    B, Hh, S, D = q.shape
    T, H, W = grid
    N = T * H * W
    if q.stride(-1) != 1:
        q = q.contiguous()
    # K/V into kernel order (tiled visual tokens, then text); contiguous (B, heads, S, D)
    if box_tile:  # the Gluon kernel reads 3D boxes of the caller's K/V itself (box_layout: `_box_layout`)
        # TMA needs a 16-byte aligned base: a misaligned view gets an aligned copy with its strides
        kg, vg = (x if x.data_ptr() % 16 == 0 else torch.empty_strided(x.shape, x.stride(), dtype=x.dtype,
                                                                       device=x.device).copy_(x) for x in (k, v))
    elif rows_identity:  # tiled order is the caller's order: no gather, only a layout the descriptors can read
        kg, vg = k.contiguous(), v.contiguous()
    else:
        kg = k.index_select(2, rows)
        vg = v.index_select(2, rows)
    out = torch.empty_like(q)
    if out.stride(-1) != 1:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, Hh, S), dtype=torch.float32, device=q.device)
    text_len = S - N
    if hopper_items is not None:
        _launch_hopper(q, kg, vg, out, lse, rows, tile_offsets, hopper_items, hopper_counts, partial_masks, block,
                       scale, (grid, box_tile) if box_tile else None, box_layout)
        return out, lse
    n_text_tiles = triton.cdiv(text_len, block) if text_len > 0 else 0
    num_tiles = tile_offsets.numel() - 1
    has_mask = kv_mask is not None
    mask_arg = kv_mask if has_mask else rows
    stride_mb = (kv_mask.stride(0) if kv_mask.shape[0] > 1 else 0) if has_mask else 0
    if use_tma:
        from triton.tools.tensor_descriptor import TensorDescriptor

        k_desc = TensorDescriptor.from_tensor(kg.view(B * Hh * S, D), block_shape=[block, D])
        v_desc = TensorDescriptor.from_tensor(vg.view(B * Hh * S, D), block_shape=[block, D])
    else:
        k_desc, v_desc = kg, vg
    mask_table = partial_masks is not None
    pm_desc = partial_base
    if use_tma and mask_table:
        pm_desc = TensorDescriptor.from_tensor(partial_masks.view(-1, block), block_shape=[block, block])
    launch = (n_text_tiles + num_tiles, B * Hh)
    block_sparse_attn_fwd_kernel[launch](
        q, kg, vg, k_desc, v_desc, pm_desc, out, lse, rows, mask_arg,
        tile_offsets, full_kv, full_count, partial_kv, partial_count, partial_base,
        partial_masks if mask_table else partial_base,
        perm, lo, hi, wtab,
        q.stride(0), q.stride(1), q.stride(2),
        kg.stride(0), kg.stride(1), kg.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        stride_mb,
        Hh, N, S, n_text_tiles, full_kv.shape[1], partial_kv.shape[1],
        T, H * W, W, dilation[0], dilation[1],
        scale * _LOG2E,
        HEAD_DIM=D, BLOCK_M=block, BLOCK_N=block,
        HAS_WINDOW=has_window, HAS_DIL=tuple(dilation) != (1, 1), HAS_TEXT=text_len > 0, HAS_MASK=has_mask,
        USE_TMA=use_tma, MASK_TABLE=mask_table,
    )
    return out, lse


@block_sparse_attn_fwd.register_fake
def _(q, k, v, rows, kv_mask, tile_offsets, full_kv, full_count, partial_kv, partial_count, partial_base,
      partial_masks, perm, lo, hi, wtab, grid, dilation, has_window, block, scale, use_tma, rows_identity,
      hopper_items, hopper_counts, box_tile, box_layout):
    B, Hh, S, _ = q.shape
    return torch.empty_like(q), q.new_empty((B, Hh, S), dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# public entry points (the contract with `vidaccel.attention.sparse_attention`)
# --------------------------------------------------------------------------------------------
def block_sparse_attention_with_lse(
    q, k, v, plan, *, text_len: int = 0, text_position: str = "none", attn_mask=None, scale=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-sparse attention of ``(B, heads, S, head_dim)`` inputs under `plan` (on q's device).

    Returns ``(out, lse)``: out like SDPA's (q's layout), lse float32 ``(B, heads, S)`` in natural
    log units, both in the caller's sequence order. Rows whose every key is masked are undefined.
    """
    reason = kernel_unsupported_reason(q, attn_mask)
    if reason is not None:
        raise ValueError(f"block_sparse_attention cannot run this input: {reason}.")
    plan = plan.to(q.device)
    tables = kernel_tables(plan)
    rows, rows_identity = _rows(plan, tables, int(text_len), text_position)
    kv_mask = None
    if attn_mask is not None:
        m = attn_mask.reshape(attn_mask.shape[0], attn_mask.shape[-1])
        kv_mask = m.index_select(1, rows.to(m.device)).to(torch.int8)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    use_tma = USE_TMA
    if use_tma is None:
        use_tma = q.device.type == "cuda" and _capability(q.device)[0] >= 9
    items = counts = None
    box, box_layout = [], 0
    if _hopper_kernel_applies(q, use_tma, int(text_len), attn_mask is not None, tables):
        layout = _use_box_kv(plan, tables, k, v)
        if layout is not None:
            box, box_layout = list(plan.tile), layout
        items, counts = hopper_item_lists(tables, tables["block"], plan if box else None,
                                          hopper_consumers(tables["block"]))
        if not _GLUON.get("logged"):
            _GLUON["logged"] = True
            logger.info("vidaccel block-sparse attention uses the warp-specialised Gluon kernel (Hopper)")
    partial_masks = partial_mask_table(plan, tables, box=bool(box))
    return torch.ops.vidaccel.block_sparse_attn_fwd(
        q, k, v, rows, kv_mask,
        tables["tile_offsets"], tables["full_kv"], tables["full_count"], tables["partial_kv"],
        tables["partial_count"], tables["partial_base"], partial_masks,
        tables["perm"], tables["lo"], tables["hi"], tables["wtab"],
        list(plan.grid), list(tables["dilation"]), tables["has_window"], tables["block"], scale, bool(use_tma),
        rows_identity, items, counts, box, box_layout,
    )


def block_sparse_attention(
    q, k, v, plan, *, text_len: int = 0, text_position: str = "none", attn_mask=None, scale=None
) -> torch.Tensor:
    """Like `block_sparse_attention_with_lse` but returns only the output (SDPA's contract)."""
    return block_sparse_attention_with_lse(
        q, k, v, plan, text_len=text_len, text_position=text_position, attn_mask=attn_mask, scale=scale
    )[0]
