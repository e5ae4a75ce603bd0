"""The dispatch point and its exact reference implementation."""

import pytest
import torch
import torch.nn.functional as F

import vidaccel.sparse.attention as attention
from vidaccel import RadialPattern, WindowPattern, build_plan, sparse_attention


def _qkv(B, H, S, D, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, S, D, generator=g, dtype=dtype) for _ in range(3)]


def _naive(q, k, v, mask, scale=None):
    """Explicit masked softmax in float64."""
    scale = scale or q.shape[-1] ** -0.5
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    s = s.masked_fill(~mask, float("-inf"))
    return (s.softmax(-1) @ v.double()).to(q.dtype)


def _full_mask(pattern, grid, text_len, position):
    n = grid[0] * grid[1] * grid[2]
    S = n + text_len
    m = torch.ones(S, S, dtype=torch.bool)
    vis = slice(text_len, S) if position == "prefix" else slice(0, n)
    m[vis, vis] = pattern.dense_mask(grid)
    return m


@pytest.mark.parametrize("position,text_len", [("none", 0), ("prefix", 5), ("suffix", 7)])
@pytest.mark.parametrize("pattern", [WindowPattern((2, 3, 4)), RadialPattern(0.5, block_size=4)])
def test_reference_equals_naive_masked_softmax(pattern, position, text_len, monkeypatch):
    grid = (4, 5, 6)
    plan = build_plan(pattern, grid, tile_size=16)
    q, k, v = _qkv(2, 3, 120 + text_len, 8)
    monkeypatch.setattr(attention, "REFERENCE_CHUNK_BYTES", 2 * 3 * (120 + text_len) * 4 * 17)  # 17-row chunks
    out = sparse_attention(q, k, v, plan, text_len=text_len, text_position=position, backend="reference")
    expected = _naive(q, k, v, _full_mask(pattern, grid, text_len, position))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_key_padding_mask_is_applied():
    grid, pattern = (3, 4, 5), WindowPattern((2, 3, 3))
    plan = build_plan(pattern, grid)
    q, k, v = _qkv(2, 2, 66, 8, seed=1)
    key_mask = torch.ones(2, 1, 1, 66, dtype=torch.bool)
    key_mask[1, ..., -3:] = False  # padded text tokens of the second sample
    out = sparse_attention(q, k, v, plan, text_len=6, text_position="suffix", attn_mask=key_mask)
    expected = _naive(q, k, v, _full_mask(pattern, grid, 6, "suffix") & key_mask)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_whole_grid_window_reproduces_dense_through_the_masked_path():
    grid = (3, 7, 11)
    plan = build_plan(WindowPattern((3, 7, 11)), grid)
    q, k, v = _qkv(1, 2, 231, 16, seed=2)
    dense = F.scaled_dot_product_attention(q, k, v)
    masked = attention.reference_sparse_attention(q, k, v, plan)  # bypasses the dense shortcut
    assert ((masked - dense).abs().max() / dense.abs().max()) <= 1e-5
    assert torch.equal(sparse_attention(q, k, v, plan), dense)  # shortcut: plain SDPA


def test_bounded_memory_chunks(monkeypatch):
    """The reference never asks SDPA for more than the chunk budget of score rows."""
    grid = (4, 6, 6)
    plan = build_plan(WindowPattern((2, 3, 3)), grid)
    q, k, v = _qkv(1, 2, 144, 8)
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q_, k_, v_, attn_mask=None, scale=None):
        seen.append(q_.shape[2])
        return real(q_, k_, v_, attn_mask=attn_mask, scale=scale)

    monkeypatch.setattr(attention, "REFERENCE_CHUNK_BYTES", 1 * 2 * 144 * 4 * 10)
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    attention.reference_sparse_attention(q, k, v, plan)
    assert max(seen) == 10 and sum(seen) == 144


def test_errors_name_the_fix():
    plan = build_plan(WindowPattern((2, 3, 3)), (3, 4, 5))
    q, k, v = _qkv(1, 2, 60, 8)
    with pytest.raises(ValueError, match="token grid changed"):
        sparse_attention(q[:, :, :50], k[:, :, :50], v[:, :, :50], plan)
    with pytest.raises(ValueError, match="text_position"):
        sparse_attention(q, k, v, plan, text_len=3)
    with pytest.raises(ValueError, match="backend"):
        sparse_attention(q, k, v, plan, backend="cuda")
    with pytest.raises(ValueError, match="backend='triton' cannot run"):
        sparse_attention(q, k, v, plan, backend="triton")  # CPU tensor
    with pytest.raises(ValueError, match="boolean"):
        sparse_attention(q, k, v, plan, attn_mask=torch.zeros(1, 1, 1, 60))
