"""Brute-force tests: every pattern equals an independent naive implementation (plan tables against
the dense mask: test_plan_tables.py)."""

import random

import pytest
import torch

from naive import radial_mask, window_keys_1d, window_mask
from vidaccel.sparse.patterns import RadialPattern, WindowPattern
from vidaccel.sparse.plan import tile_permutation

WINDOW_CASES = [
    ((3, 7, 11), (3, 3, 3), 1, 1),
    ((3, 7, 11), (2, 4, 6), 1, 1),  # even kernels
    ((3, 7, 11), (1, 7, 11), 1, 1),
    ((5, 17, 29), (3, 5, 7), 1, 1),
    ((5, 17, 29), (4, 6, 8), 1, 1),
    ((5, 17, 29), (2, 3, 5), (1, 2, 3), 1),  # dilation
    ((5, 17, 29), (3, 5, 7), 1, (1, 2, 3)),  # stride
    ((5, 17, 29), (4, 8, 8), (1, 2, 1), (2, 4, 8)),  # stride = kernel: blocked
    ((4, 9, 10), (9, 30, 10), 1, 1),  # kernel >= dimension: whole dimension
]


@pytest.mark.parametrize("grid,kernel,dilation,stride", WINDOW_CASES)
def test_window_mask_equals_naive(grid, kernel, dilation, stride):
    pattern = WindowPattern(kernel, dilation, stride)
    d = pattern.dilation
    s = pattern.stride
    assert torch.equal(pattern.dense_mask(grid), window_mask(grid, pattern.kernel, d, s))


def test_window_random_cases_equal_naive():
    rng = random.Random(1234)
    for _ in range(12):
        grid = tuple(rng.randint(1, 13) for _ in range(3))
        dilation = tuple(rng.choice([1, 1, 2]) if L >= 4 else 1 for L in grid)
        kernel = tuple(rng.randint(1, max(1, L // d)) for L, d in zip(grid, dilation))
        stride = tuple(rng.randint(1, k) for k in kernel)
        pattern = WindowPattern(kernel, dilation, stride)
        assert torch.equal(pattern.dense_mask(grid), window_mask(grid, kernel, dilation, stride)), (grid, kernel)


def test_every_query_sees_exactly_kernel_keys():
    grid, kernel = (5, 17, 29), (3, 6, 7)
    counts = WindowPattern(kernel).dense_mask(grid).sum(1)
    assert torch.all(counts == 3 * 6 * 7)


def test_naive_window_is_inward_not_cut():
    # sanity of the oracle itself: border queries keep the full window, shifted inward
    assert window_keys_1d(7, 3)[0] == [0, 1, 2] and window_keys_1d(7, 3)[6] == [4, 5, 6]
    assert window_keys_1d(7, 4)[3] == [1, 2, 3, 4]  # even: k/2 left, k/2 - 1 right


@pytest.mark.parametrize(
    "grid,decay,sink,block",
    [((6, 4, 8), 0.5, True, 4), ((9, 5, 7), 1.0, False, 8), ((12, 3, 5), 0.2, True, 16), ((5, 17, 29), 0.95, True, 128)],
)
def test_radial_mask_equals_naive(grid, decay, sink, block):
    pattern = RadialPattern(decay, sink=sink, block_size=block)
    assert torch.equal(pattern.dense_mask(grid), radial_mask(grid, decay, sink, block))


def test_radial_frame_skipping_happens():
    # s = 15 tokens -> 2**4 = 16; d in [8, 15] gives undecayed 1 < block 4 -> only d % 4 == 0 kept
    grid = (16, 3, 5)
    mask = RadialPattern(1.0, sink=False, block_size=4).dense_mask(grid).reshape(16, 15, 16, 15)
    assert mask[0, :, 8].any() and not mask[0, :, 9].any() and mask[0, :, 12].any()


def test_window_rejects_bad_sizes():
    for kernel in [(0, 3, 3), (-1, 3, 3), (3, 3)]:
        with pytest.raises(ValueError):
            WindowPattern(kernel)
    with pytest.raises(ValueError, match="kernel\\*dilation"):
        WindowPattern((3, 5, 5), dilation=(1, 2, 2)).validate((4, 8, 8))


def test_tile_permutation_makes_boxes():
    grid, tile = (5, 7, 9), (2, 4, 4)
    perm, offsets = tile_permutation(grid, tile)
    assert torch.equal(torch.sort(perm).values, torch.arange(5 * 7 * 9))
    t, h, w = perm // 63, (perm // 9) % 7, perm % 9
    for i in range(len(offsets) - 1):
        a, b = offsets[i], offsets[i + 1]
        # each tile lies inside one tile-aligned box
        assert (t[a:b] // 2).unique().numel() == 1 and (h[a:b] // 4).unique().numel() == 1
        assert (w[a:b] // 4).unique().numel() == 1


def test_plan_density_of_reference_grids():
    # docs/methods.md section 5: FreeSwim window 43% and (9,15,15) 2.7% token density at 21x45x80
    assert WindowPattern((21, 30, 52)).density((21, 45, 80)) == pytest.approx(0.4333, abs=1e-3)
    assert WindowPattern((9, 15, 15)).density((21, 45, 80)) == pytest.approx(0.0268, abs=1e-3)
