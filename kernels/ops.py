"""Glue around the kernels: input validation, gathers, the choice of kernel, the torch custom op.

Two kernels share one op and one plan contract: the Triton kernel (`block_sparse_fwd.py`, every
supported GPU and input) and, on Hopper with Triton 3.6, the warp-specialised Gluon kernel
(`block_sparse_fwd_hopper.py`) for the inputs it covers (no text tokens, no key-padding mask,
partial tiles from the int8 mask table; 1.3-1.4x the autotuned Triton kernel at 720p,
benchmarks/NOTES_kernels.md v6-v7). ``OPTIONS.hopper_kernel = False`` forces the Triton kernel
(every code-path switch is in `options.py`).

Nothing here synchronises with the device per call: plan tables (`plan_tables.py`: block lists,
rule tables and the int8 mask blocks of partial tile pairs) are built once per (plan, device) and
cached on the device plan (`Plan._device_cache`); the per-call work is two gathers (K and V into tiled order;
none when the tiled order is the caller's, e.g. raster-chunk tiles, nor when the Gluon kernel reads
power-of-two box tiles straight from the caller's K/V: ``OPTIONS.hopper_box_kv``) and one kernel launch. The
query gather and the output scatter are fused into the kernel (it reads Q and writes O at the
caller's rows).

The launch is registered as the custom op ``torch.ops.vidaccel.block_sparse_attn_fwd`` with a
fake (meta) implementation, so ``torch.compile`` keeps attention in its graph (no graph break)
and the op can be captured in CUDA graphs after a warm-up call (the autotuner runs once per
configuration key on the first call).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Optional

import torch
import triton

from .block_sparse_fwd import block_sparse_attn_fwd_kernel
from .options import OPTIONS
from .plan_tables import box_tile, hopper_item_lists, kernel_tables, mask_table_fits, partial_mask_table, sequence_rows

SUPPORTED_DTYPES = (torch.bfloat16, torch.float16)
SUPPORTED_HEAD_DIMS = (64, 128)
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


logger = logging.getLogger(__name__)


@functools.cache
def _gluon_available() -> bool:
    """Gluon's Hopper API as used here is that of Triton 3.6 (the tested version); older Triton
    (3.2-3.5) runs the Triton kernel everywhere. Decided once per process."""
    try:
        ok = tuple(int(x) for x in triton.__version__.split(".")[:2]) >= (3, 6)
        if ok:
            from . import block_sparse_fwd_hopper  # noqa: F401
    except (ImportError, AttributeError, ValueError):
        ok = False
    return ok


@functools.cache
def _log_gluon_once() -> None:
    logger.info("vidaccel block-sparse attention uses the warp-specialised Gluon kernel (Hopper)")


def _hopper_kernel_applies(q, use_tma: bool, text_len: int, has_mask: bool, tables: dict) -> bool:
    if OPTIONS.hopper_kernel is False or not use_tma or text_len or has_mask or not mask_table_fits(tables):
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
    if OPTIONS.hopper_box_kv is False or box_tile(plan, tables) is None or k.shape[2] != plan.num_tokens:
        return None
    layout = _box_layout(k)
    return layout if layout is not None and _box_layout(v) == layout else None


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
        STAGES=OPTIONS.stages(block), NC=items.shape[2] - 2, num_warps=4,
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
# public entry points (the contract with `vidaccel.sparse.attention.sparse_attention`)
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
    rows, rows_identity = sequence_rows(plan, tables, int(text_len), text_position)
    kv_mask = None
    if attn_mask is not None:
        m = attn_mask.reshape(attn_mask.shape[0], attn_mask.shape[-1])
        kv_mask = m.index_select(1, rows.to(m.device)).to(torch.int8)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    use_tma = OPTIONS.use_tma
    if use_tma is None:
        use_tma = q.device.type == "cuda" and _capability(q.device)[0] >= 9
    items = counts = None
    box, box_layout = [], 0
    if _hopper_kernel_applies(q, use_tma, int(text_len), attn_mask is not None, tables):
        layout = _use_box_kv(plan, tables, k, v)
        if layout is not None:
            box, box_layout = list(plan.tile), layout
        items, counts = hopper_item_lists(tables, plan if box else None, OPTIONS.consumers(tables["block"]))
        if not torch.compiler.is_compiling():  # dynamo cannot trace a logger call (fullgraph would break)
            _log_gluon_once()
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
