"""Triton forward kernel: block-sparse flash attention over a tiled plan (no Python policy here).

One program handles one query tile of one (batch, head). Programs ``0 .. n_text_tiles - 1`` are
the text query rows (dense over every key); the rest are the plan's visual query tiles, which
visit, in this order: the *full* key tiles (no element mask), the *partial* key tiles, then the
text keys. Partial tiles take their element mask either from a precomputed int8 table (one
BLOCK_M x BLOCK_N block per partial tile pair, ``MASK_TABLE``; fastest) or by evaluating the
`vidaccel.sparse.patterns.KernelRule` from (t, h, w) coordinates in the kernel (no extra memory).

Layout contract (set up by `kernels/ops.py`):
* ``Q``/``O`` are read/written in the caller's sequence order through ``ROWS`` (kernel position
  -> sequence row), so the query gather and output scatter are fused into the kernel.
* ``K``/``V`` are already gathered into kernel order: ``N`` visual tokens in tiled order, then the
  text tokens. ``TILE_OFF`` gives each tile's start in that order (ragged, no padding). On Hopper
  they are read through TMA tensor descriptors over the ``(B * heads * S, D)`` view (``USE_TMA``);
  rows past a ragged tile's end are finite neighbours or zero fill, and are masked.
* Rule tables: ``PERM`` (tiled position -> raster index), ``LO``/``HI`` (per raster query, (h, w)
  window bounds), ``WTAB`` (float [T*T]: band width of each frame pair, -1 = not attended).
"""

import os

import triton
import triton.language as tl
import triton.testing


def _configs():
    # (BLOCK 128, d 128): 2-3 stages of K+V (64 KB a stage) + Q 32 KB fit Hopper's 227 KB; the
    # autotuner drops configs that run out of shared memory. MASK_TMA: partial-tile masks through
    # a TMA descriptor (async, pipelined, but 16 KB of shared memory a stage at BLOCK 128) or
    # plain vector loads into registers - the faster one depends on the share of partial tiles.
    if os.environ.get("TRITON_INTERPRET", "0") == "1":  # CPU interpreter: nothing to tune
        return [triton.Config({"MASK_TMA": True}, num_warps=4, num_stages=1)]
    out = []
    # one stage (no software pipelining) is the fallback that always fits: text rows and text keys add
    # loops of their own, and at BLOCK 128 their pipelined buffers can exceed shared memory
    for warps, stages in ((8, 2), (8, 3), (4, 2), (4, 3), (8, 1)):
        out.append(triton.Config({"MASK_TMA": False}, num_warps=warps, num_stages=stages))
    for warps, stages in ((8, 2), (4, 2), (4, 3)):
        out.append(triton.Config({"MASK_TMA": True}, num_warps=warps, num_stages=stages))
    return out


def _prune(configs, named_args, **kwargs):
    """MASK_TMA only matters with TMA on and a mask table: otherwise keep one variant."""
    args = {**named_args, **kwargs}
    if args.get("USE_TMA") and args.get("MASK_TABLE"):
        return configs
    return [c for c in configs if not c.kwargs.get("MASK_TMA")] or configs


@triton.jit
def _softmax_step(acc, l_i, m_i, qk, v, GUARD: tl.constexpr):
    # qk is already in log2 units; GUARD protects rows whose every key so far is masked.
    m_ij = tl.maximum(m_i, tl.max(qk, 1))
    if GUARD:
        m_use = tl.where(m_ij == float("-inf"), 0.0, m_ij)
    else:
        m_use = m_ij
    p = tl.math.exp2(qk - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, l_i, m_ij


@triton.jit
def _load_kv(k_base, v_base, K_DESC, V_DESC, desc_row, kpos, offs_d, n_valid, stride_ks, USE_TMA: tl.constexpr):
    if USE_TMA:
        kk = K_DESC.load([desc_row, 0])
        vv = V_DESC.load([desc_row, 0])
    else:
        kk = tl.load(k_base + kpos[:, None] * stride_ks + offs_d[None, :], mask=n_valid[:, None], other=0.0)
        vv = tl.load(v_base + kpos[:, None] * stride_ks + offs_d[None, :], mask=n_valid[:, None], other=0.0)
    return kk, vv


@triton.jit
def _key_tile(KV_LIST, TILE_OFF, k_base, v_base, K_DESC, V_DESC, row0, offs_n, offs_d, stride_ks, USE_TMA: tl.constexpr):
    # one visited key tile of a block list: its kernel positions, valid lanes (ragged tiles), K and V
    kt = tl.load(KV_LIST)
    k_start = tl.load(TILE_OFF + kt)
    k_len = tl.load(TILE_OFF + kt + 1) - k_start
    kpos = k_start + offs_n
    n_valid = offs_n < k_len
    kk, vv = _load_kv(k_base, v_base, K_DESC, V_DESC, row0 + k_start, kpos, offs_d, n_valid, stride_ks, USE_TMA)
    return kpos, n_valid, kk, vv


@triton.jit
def _dense_keys(acc, l_i, m_i, q, k_base, v_base, K_DESC, V_DESC, m_base, row0, k_lo, S, offs_n, offs_d, stride_ks,
                qk_scale, BLOCK_N: tl.constexpr, HAS_MASK: tl.constexpr, USE_TMA: tl.constexpr):
    # every key in [k_lo, S) in BLOCK_N steps: text rows over all keys, visual rows over the text keys
    for start in range(k_lo, S, BLOCK_N):
        kpos = start + offs_n
        n_valid = kpos < S
        kk, vv = _load_kv(k_base, v_base, K_DESC, V_DESC, row0 + start, kpos, offs_d, n_valid, stride_ks, USE_TMA)
        qk = tl.dot(q, tl.trans(kk)) * qk_scale
        ok = n_valid
        if HAS_MASK:
            ok = ok & (tl.load(m_base + kpos, mask=n_valid, other=0) != 0)
        qk = tl.where(ok[None, :], qk, float("-inf"))
        acc, l_i, m_i = _softmax_step(acc, l_i, m_i, qk, vv, True)
    return acc, l_i, m_i


def _autotune_bench(kernel_call, quantiles):
    # Triton's default (100 ms a config) times a 25 ms kernel only 4 times, too few to tell configs
    # 5 % apart (measured: benchmarks/NOTES_kernels.md v5); long kernels get >= 12 timed runs
    times = triton.testing.do_bench(kernel_call, quantiles=quantiles)
    if times[0] > 8.0:
        times = triton.testing.do_bench(kernel_call, warmup=1, rep=12 * times[0], quantiles=quantiles)
    return times


@triton.autotune(
    configs=_configs(),
    do_bench=_autotune_bench,
    key=["HEAD_DIM", "BLOCK_M", "BLOCK_N", "HAS_WINDOW", "HAS_DIL", "HAS_TEXT", "HAS_MASK", "USE_TMA", "MASK_TABLE"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def block_sparse_attn_fwd_kernel(
    Q, K, V, K_DESC, V_DESC, PMASK_DESC, O, LSE, ROWS, KVMASK,
    TILE_OFF, FULL_KV, FULL_CNT, PART_KV, PART_CNT, PART_BASE, PMASK,
    PERM, LO, HI, WTAB,
    stride_qb, stride_qh, stride_qs,
    stride_kb, stride_kh, stride_ks,
    stride_ob, stride_oh, stride_os,
    stride_mb,
    num_heads, N, S, n_text_tiles, max_full, max_part,
    T, HW, W, dil_h, dil_w,
    qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_WINDOW: tl.constexpr, HAS_DIL: tl.constexpr, HAS_TEXT: tl.constexpr, HAS_MASK: tl.constexpr,
    USE_TMA: tl.constexpr, MASK_TABLE: tl.constexpr, MASK_TMA: tl.constexpr,
):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_heads
    h = bh % num_heads
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    m_base = KVMASK + b.to(tl.int64) * stride_mb
    row0 = bh * S  # first row of this (batch, head) in the descriptors' (B * heads * S, D) view

    is_text = pid < n_text_tiles
    if is_text:
        q_start = N + pid * BLOCK_M
        q_len = tl.minimum(S - q_start, BLOCK_M)
        tile = pid * 0
    else:
        tile = pid - n_text_tiles
        q_start = tl.load(TILE_OFF + tile)
        q_len = tl.load(TILE_OFF + tile + 1) - q_start
    m_valid = offs_m < q_len
    pos = q_start + offs_m
    rows = tl.load(ROWS + pos, mask=m_valid, other=0).to(tl.int64)
    q_ptrs = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh + rows[:, None] * stride_qs + offs_d[None, :]
    q = tl.load(q_ptrs, mask=m_valid[:, None], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)

    if is_text:
        # text query rows: dense over all S keys (kernel order does not matter for dense rows)
        acc, l_i, m_i = _dense_keys(acc, l_i, m_i, q, k_base, v_base, K_DESC, V_DESC, m_base, row0, 0, S, offs_n,
                                    offs_d, stride_ks, qk_scale, BLOCK_N, HAS_MASK, USE_TMA)
    else:
        # ---- fully covered key tiles: no element mask (ragged tails through an additive bias) ----
        n_full = tl.load(FULL_CNT + tile)
        for j in range(0, n_full):
            kpos, n_valid, kk, vv = _key_tile(FULL_KV + tile * max_full + j, TILE_OFF, k_base, v_base, K_DESC, V_DESC,
                                              row0, offs_n, offs_d, stride_ks, USE_TMA)
            if HAS_MASK:
                ok = n_valid & (tl.load(m_base + kpos, mask=n_valid, other=0) != 0)
                qk = tl.dot(q, tl.trans(kk)) * qk_scale
                qk = tl.where(ok[None, :], qk, float("-inf"))
                acc, l_i, m_i = _softmax_step(acc, l_i, m_i, qk, vv, True)
            else:
                bias = tl.where(n_valid, 0.0, float("-inf"))  # fuses with the scale into one FMA
                qk = tl.dot(q, tl.trans(kk)) * qk_scale + bias[None, :]
                acc, l_i, m_i = _softmax_step(acc, l_i, m_i, qk, vv, False)

        # ---- partially covered key tiles: exact element mask ----
        n_part = tl.load(PART_CNT + tile)
        if MASK_TABLE:
            # precomputed int8 masks, one BLOCK_M x BLOCK_N block per (tile, partial key tile) pair
            pbase = tl.load(PART_BASE + tile).to(tl.int64)
            mask_offs = offs_m[:, None] * BLOCK_N + offs_n[None, :]
            for j in range(0, n_part):
                kpos, n_valid, kk, vv = _key_tile(PART_KV + tile * max_part + j, TILE_OFF, k_base, v_base, K_DESC,
                                                  V_DESC, row0, offs_n, offs_d, stride_ks, USE_TMA)
                if USE_TMA and MASK_TMA:
                    mk = PMASK_DESC.load([((pbase + j) * BLOCK_M).to(tl.int32), 0])
                else:
                    mk = tl.load(PMASK + (pbase + j) * (BLOCK_M * BLOCK_N) + mask_offs)
                # entries are 0 (attended) or -1 (masked); in the top byte of a float that is +0.0 or
                # -1.7e38: an additive bias, so a partial tile costs one FMA per score like a full one.
                # The bias is finite (no -inf - -inf): a row whose first tiles are all masked carries
                # junk until its first attended key, whose rescale factor exp2(-1.7e38 - m) erases it
                bias = (mk.to(tl.int32) << 24).to(tl.float32, bitcast=True)
                qk = tl.dot(q, tl.trans(kk)) * qk_scale + bias
                if HAS_MASK:
                    ok = tl.load(m_base + kpos, mask=n_valid, other=0) != 0
                    qk = tl.where(ok[None, :], qk, float("-inf"))
                    acc, l_i, m_i = _softmax_step(acc, l_i, m_i, qk, vv, True)
                else:
                    acc, l_i, m_i = _softmax_step(acc, l_i, m_i, qk, vv, False)
        else:
            if n_part > 0:
                r_q = tl.load(PERM + pos, mask=m_valid, other=0)
                t_q = r_q // HW
                s_q = r_q - t_q * HW
                if HAS_WINDOW:
                    lo_h = tl.load(LO + 2 * r_q, mask=m_valid, other=0)
                    lo_w = tl.load(LO + 2 * r_q + 1, mask=m_valid, other=0)
                    hi_h = tl.load(HI + 2 * r_q, mask=m_valid, other=0)
                    hi_w = tl.load(HI + 2 * r_q + 1, mask=m_valid, other=0)
                for j in range(0, n_part):
                    kpos, n_valid, kk, vv = _key_tile(PART_KV + tile * max_part + j, TILE_OFF, k_base, v_base,
                                                      K_DESC, V_DESC, row0, offs_n, offs_d, stride_ks, USE_TMA)
                    qk = tl.dot(q, tl.trans(kk)) * qk_scale
                    r_k = tl.load(PERM + kpos, mask=n_valid, other=0)
                    t_k = r_k // HW
                    s_k = r_k - t_k * HW
                    width = tl.load(WTAB + t_q[:, None] * T + t_k[None, :])
                    diff = s_q[:, None] - s_k[None, :]
                    diff = tl.where(diff < 0, -diff, diff)
                    ok = diff.to(tl.float32) <= width
                    if HAS_WINDOW:
                        h_k = s_k // W
                        w_k = s_k - h_k * W
                        ok = ok & (h_k[None, :] >= lo_h[:, None]) & (h_k[None, :] < hi_h[:, None])
                        ok = ok & (w_k[None, :] >= lo_w[:, None]) & (w_k[None, :] < hi_w[:, None])
                        if HAS_DIL:
                            ok = ok & (((h_k[None, :] - lo_h[:, None]) % dil_h) == 0)
                            ok = ok & (((w_k[None, :] - lo_w[:, None]) % dil_w) == 0)
                    ok = ok & n_valid[None, :]
                    if HAS_MASK:
                        ok = ok & (tl.load(m_base + kpos, mask=n_valid, other=0) != 0)[None, :]
                    qk = tl.where(ok, qk, float("-inf"))
                    acc, l_i, m_i = _softmax_step(acc, l_i, m_i, qk, vv, True)

        # ---- text keys: dense for visual queries ----
        if HAS_TEXT:
            acc, l_i, m_i = _dense_keys(acc, l_i, m_i, q, k_base, v_base, K_DESC, V_DESC, m_base, row0, N, S, offs_n,
                                        offs_d, stride_ks, qk_scale, BLOCK_N, HAS_MASK, USE_TMA)

    # ---- epilogue: normalise, write O and LSE (natural log) at the caller's sequence rows ----
    out = acc / l_i[:, None]
    o_ptrs = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh + rows[:, None] * stride_os + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=m_valid[:, None])
    lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453
    tl.store(LSE + bh.to(tl.int64) * S + rows, lse, mask=m_valid)
