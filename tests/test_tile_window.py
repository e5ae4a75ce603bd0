"""Tile-aligned windows (STA / GNA "strided" semantics): the mask against an independent brute-force definition,
whole-tile windows giving plans without partial blocks, the tile choice, and the model path."""

import itertools

import pytest
import torch

import vidaccel
from tiny_models import TRANSFORMERS, family_inputs
from vidaccel.sparse import attention
from vidaccel.sparse.config import TileWindowAttentionConfig, choose_tile
from vidaccel.sparse.patterns import TileAlignedWindowPattern
from vidaccel.sparse.patterns.window import odd_multiple
from vidaccel.sparse.plan import FULL, PARTIAL, build_plan


def _naive_range(q: int, length: int, kernel: int, tile: int) -> range:
    """Keys of query coordinate `q` along one dimension: the m = kernel / tile tiles centred on q's tile,
    shifted inward to stay inside [0, length), or the whole dimension when the window does not fit."""
    if kernel >= length:
        return range(length)
    start = (q // tile) * tile - (kernel // tile - 1) // 2 * tile
    start = max(0, min(start, length - kernel))
    return range(start, start + kernel)


def _naive_mask(grid, kernel, tile) -> torch.Tensor:
    T, H, W = grid
    coords = list(itertools.product(range(T), range(H), range(W)))
    m = torch.zeros(len(coords), len(coords), dtype=torch.bool)
    for i, q in enumerate(coords):
        ranges = [_naive_range(q[d], grid[d], kernel[d], tile[d]) for d in range(3)]
        for j, k in enumerate(coords):
            m[i, j] = all(k[d] in ranges[d] for d in range(3))
    return m


CASES = [((4, 8, 16), (3, 12, 16), (1, 4, 16)),    # the tile divides the grid
         ((5, 9, 13), (3, 10, 10), (1, 4, 4)),     # ragged edge tiles
         ((6, 12, 10), (4, 8, 6), (2, 4, 2)),      # two-frame tiles, even multiples rounded to odd
         ((3, 7, 11), (9, 9, 9), (1, 4, 4))]       # window larger than the grid: whole dimensions


@pytest.mark.parametrize("grid,kernel,tile", CASES)
def test_mask_equals_brute_force_and_queries_of_a_tile_share_their_window(grid, kernel, tile):
    pattern = TileAlignedWindowPattern(kernel, tile)
    assert all(k % s == 0 and (k // s) % 2 == 1 or s == 1 for k, s in zip(pattern.kernel, tile))
    mask = pattern.dense_mask(grid)
    assert torch.equal(mask, _naive_mask(grid, pattern.kernel, tile))
    T, H, W = grid
    idx = torch.arange(T * H * W)
    tile_id = ((idx // (H * W)) // tile[0], (idx // W % H) // tile[1], (idx % W) // tile[2])
    for a, b in itertools.combinations(range(0, T * H * W, 7), 2):
        if all(t[a] == t[b] for t in tile_id):
            assert torch.equal(mask[a], mask[b])


def test_whole_tile_windows_have_no_partial_blocks_where_the_tile_divides_the_grid():
    grid, tile = (4, 16, 32), (1, 4, 16)
    plan = build_plan(TileAlignedWindowPattern((3, 12, 16), tile), grid)
    assert plan.tile == tile  # the pattern's own tile, not a searched one
    assert int((plan.block_class == PARTIAL).sum()) == 0 and int((plan.block_class == FULL).sum()) > 0
    assert abs(plan.block_density() - plan.density) < 1e-12
    # ragged edges: partial blocks only where a window is shifted inward off the tile grid
    ragged = build_plan(TileAlignedWindowPattern((3, 12, 16), tile), (4, 18, 32))
    assert 0 < int((ragged.block_class == PARTIAL).sum()) < int((ragged.block_class == FULL).sum())


def test_reference_attention_equals_masked_softmax(monkeypatch):
    grid = (3, 9, 13)
    plan = build_plan(TileAlignedWindowPattern((3, 10, 10), (1, 4, 4)), grid)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 351, 8, generator=g) for _ in range(3))
    monkeypatch.setattr(attention, "REFERENCE_CHUNK_BYTES", 2 * 3 * 351 * 4 * 29)  # several chunks
    out = vidaccel.sparse_attention(q, k, v, plan, backend="reference")
    mask = plan.pattern.dense_mask(grid)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,tile,expected", [(15, 8, 8), (30, 8, 24), (20, 8, 24), (9, 1, 9), (16, 1, 16),
                                                  (3, 8, 8), (52, 4, 52), (40, 16, 48)])
def test_odd_multiple(kernel, tile, expected):
    assert odd_multiple(kernel, tile) == expected


def test_auto_tile_and_rounded_kernels():
    assert choose_tile((9, 15, 15)) == (1, 4, 16)
    config = TileWindowAttentionConfig()
    assert config.resolved_tile() == (1, 4, 16) and config.build_pattern().kernel == (9, 12, 16)
    assert TileWindowAttentionConfig(kernel=(9, 24, 16), tile=(1, 8, 16)).build_pattern().kernel == (9, 24, 16)
    for kernel in [(21, 30, 52), (5, 13, 17), (3, 7, 11)]:
        tile = choose_tile(kernel)
        assert tile[0] == 1 and 64 <= tile[0] * tile[1] * tile[2] <= 128 and min(tile[1:]) >= 4


@pytest.mark.parametrize("bad, match", [(dict(tile=(1, 2, 4)), "16 to 128 tokens"), (dict(tile=(2, 16, 16)), "16 to 128"),
                                        (dict(tile="big"), "'auto' or three ints"), (dict(kernel=0), "kernel"),
                                        (dict(dense_steps=-1), "dense_steps")])
def test_bad_configs_name_the_fix(bad, match):
    with pytest.raises(ValueError, match=match):
        TileWindowAttentionConfig(**bad)


def test_model_path_whole_grid_is_dense_small_window_is_not_and_remove_is_exact():
    model = TRANSFORMERS["wan"]()
    inputs = family_inputs("wan", grid=(3, 8, 8))
    with torch.no_grad():
        dense = model(**inputs)[0]
    vidaccel.accelerate(model, TileWindowAttentionConfig(kernel=(99, 99, 99), tile=(1, 4, 4)))
    with torch.no_grad():
        whole = model(**inputs)[0]
    assert ((whole - dense).abs().max() / dense.abs().max()) <= 1e-5
    vidaccel.remove(model)
    vidaccel.accelerate(model, TileWindowAttentionConfig(kernel=(1, 4, 4), tile=(1, 4, 4)))
    with torch.no_grad():
        small = model(**inputs)[0]
    assert (small - dense).abs().max() > 1e-3
    assert "tile_window_k1x4x4_t1x4x4" in str(vidaccel.summary(model, print_summary=False))
    vidaccel.remove(model)
    with torch.no_grad():
        assert torch.equal(model(**inputs)[0], dense)
    vidaccel.accelerate(model, "tile_window")  # the preset
    vidaccel.remove(model)
