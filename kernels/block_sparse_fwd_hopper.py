"""Gluon forward kernel for Hopper (sm_90): warp-specialised block-sparse flash attention.

Same plan contract as `block_sparse_fwd.py` (see its docstring: ``TILE_OFF``, int8 partial-mask
blocks, ``ROWS`` for the fused query gather / output scatter, K/V in kernel order behind TMA
descriptors), restricted to the common self-attention case: no text tokens, no key-padding mask,
partial masks from the int8 table.

Why a second kernel: the Triton kernel is FlashAttention-2 shaped - all warps load, multiply and
run the softmax in lock step, so the tensor cores idle during every softmax (~390 TFLOP/s on full
tiles vs cuDNN's ~590; benchmarks/NOTES_kernels.md). Here each CTA has three partitions:

* a 1-warp **producer** issuing TMA loads of K/V tiles (and the partial tiles' mask rows) into a
  ring of shared-memory stages (mbarriers ``ready``/``empty``), running ahead of the consumers.
  K/V tiles are row blocks of kernel-order (gathered) copies, or - rank-5 descriptors, when the
  plan's tiles are power-of-two boxes of one block - 3D boxes read straight from the caller's
  tensors: no gather (2 x 232 MB of copies per call at 720p), out-of-grid rows arrive as zeros and
  are masked from the item's packed in-grid extent (full tiles) or by the box-order mask block.
  The box lands in shared memory as the same swizzled [BLOCK, D] image a row block would;
* NC 4-warp **consumer** warpgroups of 64 query rows each: both halves of one 128-token query
  tile (NC = 2), or NC = 2 or 3 neighbouring 64-token query tiles (3 by default,
  `KernelOptions.consumers`). They only meet at mbarriers, so one warpgroup's softmax runs while
  another's wgmmas occupy the tensor cores.

The CTA walks one **item list** (built by `kernels/plan_tables.py`): the union of its consumers'
key tiles, each item ``(key start, key length, one code per consumer)`` (box K/V: packed box
origin and in-grid extent instead of start and length) with code ``-1`` = full tile, ``>= 0`` =
partial (its mask block), ``-2`` = not visited by that consumer. Neighbouring 64-token query tiles share
most key tiles, so loading the union once cuts the K/V traffic from L2 by ~35-47 % (window
(9,15,15), radial at 720p) - 64-token tiles are bandwidth-bound otherwise. Every consumer arrives
on every item's ``empty`` barrier (count NC), visited or not, so the ring stays in step.
"""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

CONSUMER_REGS = gl.constexpr(240)
PRODUCER_REGS = gl.constexpr(24)
# registers per thread averaged over the 12 warps (default + consumer + padded producer warpgroup):
# the default partition gets what the workers leave, (168 * 12 - 24 * 4 - 240 * 4) / 4 = 240
MAXNREG = 168
# three consumers (64-token tiles): 16 warps at 128 registers; workers 24 + 2 x 160, the default gets 168
CONSUMER_REGS_3 = gl.constexpr(160)
MAXNREG_3 = 128


@gluon.constexpr_function
def is_box(block_shape):
    """K/V descriptors of rank 5 read 3D token boxes straight from the caller's tensors (no gather)."""
    return len(block_shape) == 5


@gluon.constexpr_function
def tile_rows(block_shape):
    """Key rows per K/V tile: the box's tokens (rank 5: [1, tt, th, tw, D]) or the row block."""
    return block_shape[1] * block_shape[2] * block_shape[3] if len(block_shape) == 5 else block_shape[0]


@gluon.constexpr_function
def ring_shape(stages, block_shape):
    return [stages] + list(block_shape)


@gluon.jit
def _producer(bufs, ptrs, strides, sizes):
    K_DESC, V_DESC, PM_DESC, k_smem, v_smem, m_smem, q_smem, ready, empty = bufs
    ITEMS, N_ITEMS = ptrs[5], ptrs[6]
    num_heads, S, max_items, heads_inner = sizes[0], sizes[1], sizes[3], sizes[5]
    BOX: gl.constexpr = is_box(K_DESC.block_type.shape)
    BLOCK: gl.constexpr = tile_rows(K_DESC.block_type.shape)
    HEAD_DIM: gl.constexpr = K_DESC.block_type.shape[-1]
    STAGES: gl.constexpr = k_smem.shape[0]
    SHARED: gl.constexpr = BLOCK == 128
    kv_bytes: gl.constexpr = 2 * K_DESC.block_type.nbytes
    m_bytes: gl.constexpr = PM_DESC.block_type.nbytes
    pid = gl.program_id(0)
    bh = gl.program_id(1)
    # box descriptors: dim 0 is batch x heads (heads-major tensors, coordinate 0 in the last dim) or
    # batch (heads interleaved per token: the head picks its D columns of the last dim)
    box_c0 = gl.where(heads_inner != 0, bh // num_heads, bh)
    box_c4 = gl.where(heads_inner != 0, (bh % num_heads) * HEAD_DIM, 0)
    row0 = bh * S  # row descriptors: first row of this (batch, head) in the (B * heads * S, D) view
    NC: gl.constexpr = q_smem.shape[0]  # consumers
    W: gl.constexpr = 2 + NC  # item row: key start, key length, one code per consumer
    item = ITEMS + pid.to(gl.int64) * max_items * W
    for i in range(gl.load(N_ITEMS + pid)):
        idx = i % STAGES
        row = item + W * i
        origin = gl.load(row)
        k_row = row0 + origin
        n_masks = 0
        for c in gl.static_range(NC):
            n_masks += (gl.load(row + 2 + c) >= 0).to(gl.int32)
        # a stage is free once every consumer arrived (mbarriers start with phase 1 complete)
        mbarrier.wait(empty.index(idx), ((i // STAGES) & 1) ^ 1)
        bar = ready.index(idx)
        for n in gl.static_range(NC + 1):  # expect() takes a compile-time byte count
            if n_masks == n:
                mbarrier.expect(bar, kv_bytes + n * m_bytes)
        for c in gl.static_range(NC):
            code = gl.load(row + 2 + c)
            if code >= 0:  # its 64-row half of a 128 block, or a whole 64 block
                tma.async_copy_global_to_shared(PM_DESC, [code * BLOCK + (64 * c if SHARED else 0), 0], bar,
                                                m_smem.index(NC * idx + c))
        if BOX:  # the item's key field: box origin packed as t << 20 | h << 10 | w; out-of-grid rows read 0
            box = [box_c0, origin >> 20, (origin >> 10) & 1023, origin & 1023, box_c4]
            tma.async_copy_global_to_shared(K_DESC, box, bar, k_smem.index(idx))
            tma.async_copy_global_to_shared(V_DESC, box, bar, v_smem.index(idx))
        else:
            tma.async_copy_global_to_shared(K_DESC, [k_row, 0], bar, k_smem.index(idx))
            tma.async_copy_global_to_shared(V_DESC, [k_row, 0], bar, v_smem.index(idx))


@gluon.jit
def _row_tile(base, b, h, stride_b, stride_h, stride_s, ROWS, start, length, M: gl.constexpr,
              HEAD_DIM: gl.constexpr, layout: gl.constexpr):
    # pointers and mask of M x HEAD_DIM elements at the caller's sequence rows ROWS[start : start + length]
    offs_m = gl.arange(0, M, layout=gl.SliceLayout(1, layout))
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, layout))
    ok = offs_m < length
    rows = gl.load(ROWS + start + offs_m, mask=ok, other=0).to(gl.int64)
    ptrs = (base + b.to(gl.int64) * stride_b + h.to(gl.int64) * stride_h
            + gl.expand_dims(rows * stride_s, 1) + gl.expand_dims(offs_d, 0))
    return ptrs, gl.expand_dims(ok, 1)


@gluon.jit
def _consume(bufs, ptrs, strides, sizes, C: gl.constexpr):
    K_DESC, k_smem, v_smem, m_smem, q_smem, ready, empty = bufs[0], bufs[3], bufs[4], bufs[5], bufs[6], bufs[7], bufs[8]
    Q, O, LSE, ROWS, TILE_OFF, ITEMS, N_ITEMS = ptrs
    stride_qb, stride_qh, stride_qs, stride_ob, stride_oh, stride_os = strides
    num_heads, S, num_tiles, max_items, qk_scale = sizes[0], sizes[1], sizes[2], sizes[3], sizes[4]
    # compile-time shape facts ride on the buffers (partition arguments cannot be constexpr)
    BOX: gl.constexpr = is_box(K_DESC.block_type.shape)
    BLOCK: gl.constexpr = tile_rows(K_DESC.block_type.shape)
    HEAD_DIM: gl.constexpr = K_DESC.block_type.shape[-1]
    STAGES: gl.constexpr = k_smem.shape[0]
    NC: gl.constexpr = q_smem.shape[0]
    SHARED: gl.constexpr = BLOCK == 128
    M: gl.constexpr = 64
    row_off: gl.constexpr = C * M if SHARED else 0  # this warpgroup's first row in its query tile
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    dtype: gl.constexpr = k_smem.dtype

    pid = gl.program_id(0)
    bh = gl.program_id(1)
    b = bh // num_heads
    h = bh % num_heads
    tile = pid if SHARED else NC * pid + C
    has_tile = tile < num_tiles  # the last CTA of an odd tile count has one idle consumer
    tile = gl.minimum(tile, num_tiles - 1)
    q_start = gl.load(TILE_OFF + tile) + row_off
    q_len = gl.where(has_tile, gl.load(TILE_OFF + tile + 1) - q_start, 0)

    # ---- Q: gathered from the caller's rows into this warpgroup's shared buffer ----
    q_ptrs, q_ok = _row_tile(Q, b, h, stride_qb, stride_qh, stride_qs, ROWS, q_start, q_len, M, HEAD_DIM, ld_layout)
    q_buf = q_smem.index(C)
    q_buf.store(gl.load(q_ptrs, mask=q_ok, other=0.0))
    fence_async_shared()

    acc = gl.zeros([M, HEAD_DIM], gl.float32, o_layout)
    m_i = gl.full([M], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([M], gl.float32, gl.SliceLayout(1, s_layout))
    s_zero = gl.zeros([M, BLOCK], gl.float32, s_layout)
    offs_n = gl.arange(0, BLOCK, layout=gl.SliceLayout(0, s_layout))

    W: gl.constexpr = 2 + NC
    item = ITEMS + pid.to(gl.int64) * max_items * W
    k_len_next = gl.load(item + 1)
    code_next = gl.load(item + 2 + C)
    for i in range(gl.load(N_ITEMS + pid)):
        idx = i % STAGES
        k_len = k_len_next
        code = code_next
        k_len_next = gl.load(item + W * (i + 1) + 1)  # prefetched: latency hidden behind this item
        code_next = gl.load(item + W * (i + 1) + 2 + C)
        mbarrier.wait(ready.index(idx), (i // STAGES) & 1)
        if code != -2:
            if BOX:
                k_tile = k_smem.index(idx).reshape([BLOCK, HEAD_DIM])
                v_tile = v_smem.index(idx).reshape([BLOCK, HEAD_DIM])
            else:
                k_tile = k_smem.index(idx)
                v_tile = v_smem.index(idx)
            s = warpgroup_mma(q_buf, k_tile.permute((1, 0)), s_zero, use_acc=False, is_async=True)
            s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
            if code == -1:
                if BOX:  # the key field is the box's in-grid extent packed as t << 16 | h << 8 | w
                    TW: gl.constexpr = K_DESC.block_type.shape[3]
                    TH: gl.constexpr = K_DESC.block_type.shape[2]
                    ok = ((offs_n // (TH * TW) < (k_len >> 16)) & ((offs_n // TW) % TH < ((k_len >> 8) & 255))
                          & (offs_n % TW < (k_len & 255)))
                else:
                    ok = offs_n < k_len
                qk = s * qk_scale + gl.expand_dims(gl.where(ok, 0.0, float("-inf")), 0)
            else:
                # int8 mask 0 / -1; -1 in a float's top byte is -1.7e38, a finite additive bias: a row
                # whose first visited tiles are all masked carries junk until its first attended key,
                # whose rescale factor exp2(-1.7e38 - m) erases it (no -inf - -inf)
                mk = m_smem.index(NC * idx + C).load(s_layout)
                qk = s * qk_scale + (mk.to(gl.int32) << 24).to(gl.float32, bitcast=True)
            m_new = gl.maximum(m_i, gl.max(qk, 1))
            p = gl.exp2(qk - gl.expand_dims(m_new, 1))
            alpha = gl.exp2(m_i - m_new)
            l_i = l_i * alpha + gl.sum(p, 1)
            m_i = m_new
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
            acc = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), v_tile, acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        mbarrier.arrive(empty.index(idx), count=1)

    # ---- epilogue: normalise, scatter O and LSE (natural log) to the caller's rows ----
    out = acc / gl.expand_dims(gl.convert_layout(l_i, gl.SliceLayout(1, o_layout)), 1)
    o_ptrs, o_ok = _row_tile(O, b, h, stride_ob, stride_oh, stride_os, ROWS, q_start, q_len, M, HEAD_DIM, o_layout)
    gl.store(o_ptrs, out.to(O.dtype.element_ty), mask=o_ok)
    offs_ms = gl.arange(0, M, layout=gl.SliceLayout(1, s_layout))
    ms_ok = offs_ms < q_len
    rows_s = gl.load(ROWS + q_start + offs_ms, mask=ms_ok, other=0)
    lse = (m_i + gl.log2(l_i)) * 0.6931471805599453
    gl.store(LSE + bh.to(gl.int64) * S + rows_s, lse, mask=ms_ok)


@gluon.jit
def _consumer0(bufs, ptrs, strides, sizes):
    _consume(bufs, ptrs, strides, sizes, 0)


@gluon.jit
def _consumer1(bufs, ptrs, strides, sizes):
    _consume(bufs, ptrs, strides, sizes, 1)


@gluon.jit
def _consumer2(bufs, ptrs, strides, sizes):
    _consume(bufs, ptrs, strides, sizes, 2)


@gluon.jit
def hopper_block_sparse_fwd_kernel(
    K_DESC, V_DESC, PM_DESC, Q, O, LSE, ROWS, TILE_OFF, ITEMS, N_ITEMS,
    stride_qb, stride_qh, stride_qs, stride_ob, stride_oh, stride_os,
    num_heads, S, num_tiles, max_items, qk_scale, heads_inner,
    STAGES: gl.constexpr, NC: gl.constexpr,
):
    """Grid: (CTAs of the item list = query tiles (BLOCK 128) or groups of NC query tiles (BLOCK 64),
    batch * heads); 4 warps (the default partition is consumer 0), ``maxnreg=MAXNREG`` (NC = 2) or
    ``MAXNREG_3`` (NC = 3). ``ITEMS`` int32 [CTAs, max_items + 1, 2 + NC], ``N_ITEMS`` int32 [CTAs]; ``PM_DESC`` reads 64-row
    slices of the int8 mask blocks; head dim and block size come from the K/V descriptors (rank 2:
    row blocks of kernel-order K/V; rank 5: 3D boxes, ``heads_inner`` = 0 for (B * heads, T, H, W, D)
    descriptors, 1 for (B, T, H, W, heads * D))."""
    BLOCK: gl.constexpr = tile_rows(K_DESC.block_type.shape)
    HEAD_DIM: gl.constexpr = K_DESC.block_type.shape[-1]
    dtype: gl.constexpr = K_DESC.dtype
    k_smem = gl.allocate_shared_memory(dtype, ring_shape(STAGES, K_DESC.block_type.shape), K_DESC.layout)
    v_smem = gl.allocate_shared_memory(dtype, ring_shape(STAGES, V_DESC.block_type.shape), V_DESC.layout)
    m_smem = gl.allocate_shared_memory(gl.int8, [NC * STAGES, 64, BLOCK], PM_DESC.layout)
    q_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([64, HEAD_DIM], dtype)
    q_smem = gl.allocate_shared_memory(dtype, [NC, 64, HEAD_DIM], q_layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=NC)
    args = ((K_DESC, V_DESC, PM_DESC, k_smem, v_smem, m_smem, q_smem, ready, empty),
            (Q, O, LSE, ROWS, TILE_OFF, ITEMS, N_ITEMS),
            (stride_qb, stride_qh, stride_qs, stride_ob, stride_oh, stride_os),
            (num_heads, S, num_tiles, max_items, qk_scale, heads_inner))
    if NC == 2:
        gl.warp_specialize([(_consumer0, args), (_producer, args), (_consumer1, args)],
                           [1, 4], [PRODUCER_REGS, CONSUMER_REGS])
    else:
        gl.warp_specialize([(_consumer0, args), (_producer, args), (_consumer1, args), (_consumer2, args)],
                           [1, 4, 4], [PRODUCER_REGS, CONSUMER_REGS_3, CONSUMER_REGS_3])
