"""Plan tables equal the dense mask (torch.equal) for box tiles, ``(tt, 0, c)`` raster-chunk tiles and
the non-power-of-two shapes the plan builder may choose; the tile candidate search."""

import pytest
import torch

from vidaccel import RadialPattern, WindowPattern, build_plan
from vidaccel.sparse.plan import EMPTY, FULL, PARTIAL, candidate_tiles, tile_permutation


def _expected_blocks(pattern, grid, plan):
    mask = pattern.dense_mask(grid)[plan.perm][:, plan.perm]
    offsets = plan.tile_offsets.tolist()
    n = plan.num_tiles
    expected = torch.empty(n, n, dtype=torch.int8)
    for i in range(n):
        for j in range(n):
            block = mask[offsets[i] : offsets[i + 1], offsets[j] : offsets[j + 1]]
            expected[i, j] = FULL if block.all() else (PARTIAL if block.any() else EMPTY)
    return expected


CASES = [
    # box tiles
    (WindowPattern((3, 5, 7)), (3, 7, 11), (3, 4, 8)),
    (WindowPattern((2, 4, 6), stride=(1, 2, 3)), (5, 17, 29), (2, 4, 8)),
    (WindowPattern((3, 5, 7), dilation=(1, 2, 2)), (5, 17, 29), (1, 8, 16)),
    (RadialPattern(0.5, block_size=8), (6, 5, 7), (2, 2, 4)),
    # raster-chunk and non-power-of-two tiles
    (RadialPattern(0.2, block_size=16), (7, 6, 10), (1, 0, 24)),
    (RadialPattern(1.0, sink=False, block_size=8), (6, 5, 7), (2, 0, 9)),
    (WindowPattern((3, 3, 5)), (5, 7, 11), (1, 0, 13)),
    (WindowPattern((2, 4, 6), stride=(1, 2, 3)), (5, 9, 13), (5, 3, 2)),
    (WindowPattern((3, 3, 3), dilation=(1, 2, 2)), (3, 9, 13), (3, 3, 3)),
]


@pytest.mark.parametrize("pattern,grid,tile", CASES)
def test_tables_equal_dense_mask(pattern, grid, tile):
    plan = build_plan(pattern, grid, tile=tile)
    assert torch.equal(plan.block_class, _expected_blocks(pattern, grid, plan))
    for i in range(plan.num_tiles):
        assert torch.all(plan.block_class[i, plan.full_kv[i, : plan.full_count[i]].long()] == FULL)
        assert torch.all(plan.block_class[i, plan.partial_kv[i, : plan.partial_count[i]].long()] == PARTIAL)
        assert int(plan.full_count[i] + plan.partial_count[i]) == int((plan.block_class[i] > 0).sum())
        assert torch.all(plan.full_kv[i, plan.full_count[i]:] == -1)  # padding
    assert plan.density == pytest.approx(pattern.dense_mask(grid).float().mean().item())


def test_raster_chunks_stay_inside_frames():
    grid, tile = (4, 5, 7), (2, 0, 12)
    perm, offsets = tile_permutation(grid, tile)
    assert torch.equal(torch.sort(perm).values, torch.arange(4 * 35))
    t, s = perm // 35, perm % 35
    for i in range(len(offsets) - 1):
        a, b = offsets[i], offsets[i + 1]
        assert (t[a:b] // 2).unique().numel() == 1 and (s[a:b] // 12).unique().numel() == 1
        assert 0 < b - a <= 24


@pytest.mark.parametrize("pattern,grid", [(RadialPattern(0.2, block_size=16), (9, 6, 10)),
                                          (WindowPattern((3, 5, 7)), (5, 9, 13))])
def test_chosen_tile_is_exact_and_fits_tile_size(pattern, grid):
    plan = build_plan(pattern, grid, tile_size=32)
    assert plan.tile in candidate_tiles(grid, 32)
    sizes = plan.tile_offsets[1:] - plan.tile_offsets[:-1]
    assert int(sizes.max()) <= 32
    assert torch.equal(plan.block_class, _expected_blocks(pattern, grid, plan))


def test_candidates_include_well_filling_shapes():
    cands = candidate_tiles((21, 45, 80), 128)
    assert (21, 3, 2) in cands  # tiles 21x45x80 exactly with 126-token tiles
    assert (1, 0, 120) in cands  # 3600 tokens per frame = 30 chunks of 120
    assert all(t[0] * max(t[1], 1) * t[2] <= 128 for t in cands)


@pytest.mark.parametrize("pattern,grid", [(WindowPattern((3, 7, 7)), (6, 20, 24)),
                                          (RadialPattern(0.2, block_size=32), (8, 12, 20)),
                                          (WindowPattern((16, 16, 16)), (16, 16, 16))])  # 128 wins here
def test_auto_tile_size_picks_the_cheaper_of_64_and_128(pattern, grid, monkeypatch):
    """"auto" searches the 64- and 128-token candidates together and keeps the lowest predicted kernel
    time (the block cost weighs 64-token blocks as 5 % slower); its tables are exact. The CUDA-only
    search is forced here on the CPU. The first two cases pick 64-token tiles, the whole-grid window 128."""
    from vidaccel.sparse import plan as plan_mod

    by_size = {ts: build_plan(pattern, grid, tile_size=ts) for ts in (64, 128)}
    cost = {ts: plan_mod._block_cost(p.block_class, p.tile_offsets) for ts, p in by_size.items()}
    monkeypatch.setattr(plan_mod, "resolve_tile_size", lambda ts, device=None: (64, 128))
    auto = build_plan(pattern, grid, tile_size="auto")
    assert plan_mod._block_cost(auto.block_class, auto.tile_offsets) == pytest.approx(min(cost.values()))
    assert torch.equal(auto.block_class, _expected_blocks(pattern, grid, auto))


def test_auto_tile_size_resolution():
    from vidaccel.sparse.plan import resolve_tile_size

    assert resolve_tile_size("auto", "cuda") == (64, 128)
    assert resolve_tile_size("auto", "cpu") == resolve_tile_size("auto") == (128,)  # reference path: tiles unused
    assert resolve_tile_size(64, "cuda") == (64,)
    assert build_plan(WindowPattern((3, 5, 7)), (5, 9, 13), tile_size="auto").tile == \
        build_plan(WindowPattern((3, 5, 7)), (5, 9, 13), tile_size=128).tile


HOPPER_CASES = [  # 128-token blocks (one query tile per CTA) and 64-token blocks (2 or 3 per CTA, ragged count)
    (WindowPattern((3, 5, 7)), (3, 7, 11), (3, 4, 8)),
    (WindowPattern((3, 5, 7), dilation=(1, 2, 2)), (5, 17, 29), (1, 8, 8)),  # box K/V, ragged in h and w
    (WindowPattern((2, 4, 6), stride=(1, 2, 3)), (5, 17, 29), (2, 4, 8)),  # box K/V, ragged in t, h, w
    (WindowPattern((3, 6, 8)), (5, 17, 29), (2, 8, 8)),  # box K/V, 128-token boxes
    (RadialPattern(0.2, block_size=16), (7, 6, 10), (1, 0, 60)),
]


@pytest.mark.parametrize("consumers", [2, 3])
@pytest.mark.parametrize("box", [False, True], ids=["kernel-order", "box"])
@pytest.mark.parametrize("pattern,grid,tile", HOPPER_CASES)
def test_hopper_item_lists_rebuild_the_dense_mask(pattern, grid, tile, box, consumers):
    """The Gluon kernel's per-CTA item lists (union of its consumers' key tiles) plus the int8
    partial-mask blocks give back exactly the pattern's mask, and each CTA loads a key tile once.
    Keys as the kernel reads them: kernel-order row blocks of gathered K/V, or (box) the 3D boxes of
    the caller's K/V - the item's packed origin and in-grid extent, mask columns in box order."""
    from vidaccel.kernels import plan_tables

    plan = build_plan(pattern, grid, tile=tile)
    tables = plan_tables.kernel_tables(plan)
    block = tables["block"]
    if box and plan_tables.box_tile(plan, tables) is None:
        assert tile[1] == 0 or any(x & (x - 1) for x in tile) or tile[0] * tile[1] * tile[2] != block
        pytest.skip("not a power-of-two box of one block: the kernel gathers K/V")
    masks = plan_tables.partial_mask_table(plan, tables, box=box)
    items, counts = plan_tables.hopper_item_lists(tables, plan if box else None, consumers)
    nc = items.shape[2] - 2
    assert nc == (2 if block == 128 else consumers)
    offsets = plan.tile_offsets.tolist()
    T, H, W = grid
    n = plan.num_tokens
    rebuilt = torch.zeros(n, n, dtype=torch.bool)  # [query in kernel order, key in raster order]

    def key_rows(field0, field1):
        """Raster index of each key position the kernel holds (-1: padding or outside the grid)."""
        if not box:
            rows = plan.perm[field0 : field0 + field1].tolist()
            return rows + [-1] * (block - len(rows))
        origin = (field0 >> 20, field0 >> 10 & 1023, field0 & 1023)
        extent = (field1 >> 16, field1 >> 8 & 255, field1 & 255)
        tt, th, tw = tile
        out = []
        for j in range(block):
            local = (j // (th * tw), j // tw % th, j % tw)
            ok = all(x < e for x, e in zip(local, extent))
            t, h, w = (o + x for o, x in zip(origin, local))
            assert ok == (t < T and h < H and w < W), "extent is the in-grid part of the box"
            out.append((t * H + h) * W + w if ok else -1)
        return out

    for cta in range(items.shape[0]):
        cta_items = items[cta, : counts[cta]].tolist()
        assert items[cta, counts[cta]:].eq(0).all(), "zero rows past the list (the kernel prefetches one)"
        keys = [tuple(r[:2]) for r in cta_items]
        assert len(keys) == len(set(keys)), "one item per key tile"
        for f0, f1, *codes in cta_items:
            assert codes != [-2] * nc, "an item nobody visits"
            krows = torch.tensor(key_rows(f0, f1))
            valid = krows >= 0
            for c, code in enumerate(codes):
                tile_index = cta if block == 128 else nc * cta + c
                if code == -2:
                    continue
                q0, q1 = offsets[tile_index], offsets[tile_index + 1]
                row0 = q0 + (64 * c if block == 128 else 0)
                for r in range(row0, min(q1, row0 + 64)):
                    attended = valid if code == -1 else valid & (masks[code, r - q0] == 0)
                    if code != -1:
                        assert not (masks[code, r - q0] == 0)[~valid].any(), "padding keys masked"
                    rebuilt[r, krows[attended]] = True
    assert torch.equal(rebuilt, pattern.dense_mask(grid)[plan.perm])


def test_gluon_kernel_gate_follows_the_triton_version(monkeypatch, request):
    """The Gluon kernel is offered only with Triton >= 3.6 (its tested API); its module imports on
    any machine with that Triton (CPU included), and older versions fall back to the Triton kernel."""
    import triton

    from vidaccel.kernels import ops

    request.addfinalizer(ops._gluon_available.cache_clear)  # later tests decide again, on the real version
    ops._gluon_available.cache_clear()
    expected = tuple(int(x) for x in triton.__version__.split(".")[:2]) >= (3, 6)
    assert ops._gluon_available() is expected
    ops._gluon_available.cache_clear()
    monkeypatch.setattr(triton, "__version__", "3.5.1")
    assert ops._gluon_available() is False


def test_hopper_consumer_count_and_its_override(monkeypatch):
    """Three consumer warpgroups at 64-token tiles (measured 4-5 % faster than two on H100), two
    halves of a 128-token tile; the environment override takes 2 or 3 and names the fix otherwise."""
    from vidaccel.kernels.options import OPTIONS

    monkeypatch.delenv("VIDACCEL_HOPPER_CONSUMERS", raising=False)
    assert (OPTIONS.consumers(64), OPTIONS.consumers(128)) == (3, 2)
    monkeypatch.setenv("VIDACCEL_HOPPER_CONSUMERS", "2")
    assert (OPTIONS.consumers(64), OPTIONS.consumers(128)) == (2, 2)
    monkeypatch.setenv("VIDACCEL_HOPPER_CONSUMERS", "4")
    with pytest.raises(ValueError, match="must be 2 or 3"):
        OPTIONS.consumers(64)


def test_hopper_ring_stages_and_their_override(monkeypatch):
    """Ring depth by tile size; the sweep override takes only depths that fit in shared memory."""
    from vidaccel.kernels.options import OPTIONS

    ring_stages = OPTIONS.stages
    monkeypatch.delenv("VIDACCEL_HOPPER_STAGES", raising=False)
    assert (ring_stages(64), ring_stages(128)) == (3, 2)
    monkeypatch.setenv("VIDACCEL_HOPPER_STAGES", "4")
    assert ring_stages(64) == 4
    with pytest.raises(ValueError, match=r"int in 2\.\.2 at 128-token tiles.*unset it"):
        ring_stages(128)
    for bad in ("1", "5", "three"):
        monkeypatch.setenv("VIDACCEL_HOPPER_STAGES", bad)
        with pytest.raises(ValueError, match="VIDACCEL_HOPPER_STAGES"):
            ring_stages(64)


@pytest.mark.parametrize("layout", ["bhsd", "bshd"])
def test_box_descriptor_views_address_the_callers_tokens(layout):
    """The rank-5 views the Gluon kernel's box descriptors are built on: the kernel's coordinates
    (dim 0: batch x heads or batch; last dim: 0 or head x D) reach token (t, h, w) of each head,
    and TMA accepts their strides. Tensors they cannot describe gather instead."""
    from vidaccel.kernels import ops

    B, Hh, T, H, W, D = 2, 3, 3, 5, 8, 64
    shape = (B, Hh, T * H * W, D) if layout == "bhsd" else (B, T * H * W, Hh, D)
    x = torch.randn(shape, dtype=torch.bfloat16)
    x = x if layout == "bhsd" else x.transpose(1, 2)
    mode = ops._box_layout(x)
    assert mode == (0 if layout == "bhsd" else 1)
    view = ops._box_descriptor_view(x, (T, H, W), mode)
    for b in range(B):
        for h in range(Hh):
            c0, c4 = (b * Hh + h, 0) if mode == 0 else (b, h * D)
            assert torch.equal(view[c0, ..., c4 : c4 + D].reshape(T * H * W, D), x[b, h])
    if ops._gluon_available():
        from triton.experimental.gluon import language as gl
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

        block = [1, 2, 4, 8, D]
        TensorDescriptor.from_tensor(view, block, gl.NVMMASharedLayout.get_default_for(block, gl.bfloat16))
    # a head slice keeps interleaved heads addressable (the last dim is just narrower); heads-major
    # tensors lose the batch = heads x head-stride relation and gather
    assert ops._box_layout(x[:, :2]) == (None if layout == "bhsd" else 1)
    assert ops._box_layout(x[..., ::2]) is None  # not contiguous in D
