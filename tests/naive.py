"""Independent, deliberately naive re-statements of docs/methods.md for the brute-force tests."""

from __future__ import annotations

import itertools

import torch


def window_keys_1d(L: int, k: int, d: int = 1, s: int = 1) -> list[list[int]]:
    """For each query position, the key positions of a NATTEN inward window along one dimension."""
    out = []
    for q in range(L):
        members = [x for x in range(L) if x % d == q % d]  # the query's dilation group
        pos, n = members.index(q), len(members)
        kk = min(k, n)
        leader = min((pos // s) * s + s // 2, n - 1)
        start = max(0, min(leader - k // 2, n - kk))
        out.append(members[start : start + kk])
    return out


def window_mask(grid, kernel, dilation=(1, 1, 1), stride=(1, 1, 1)) -> torch.Tensor:
    per_dim = []
    for L, k, d, s in zip(grid, kernel, dilation, stride):
        m = torch.zeros(L, L, dtype=torch.bool)
        for q, keys in enumerate(window_keys_1d(L, k, d, s)):
            m[q, keys] = True
        per_dim.append(m)
    mt, mh, mw = per_dim
    full = mt[:, None, None, :, None, None] & mh[None, :, None, None, :, None] & mw[None, None, :, None, None, :]
    n = grid[0] * grid[1] * grid[2]
    return full.reshape(n, n)


def radial_mask(grid, decay_factor, sink=True, block_size=128) -> torch.Tensor:
    T, H, W = grid
    s = H * W
    block = min(block_size, s)  # a block never exceeds a frame
    pos = torch.arange(s)
    band_dist = (pos[:, None] - pos[None, :]).abs()
    out = torch.zeros(T, s, T, s, dtype=torch.bool)
    for tq, tk in itertools.product(range(T), range(T)):
        d = abs(tq - tk)
        if d <= 1 or (sink and tk == 0):
            out[tq, :, tk, :] = True
            continue
        undecayed = 2 ** s.bit_length() / 2 ** d.bit_length()
        if undecayed < block:
            if d % int(block // undecayed) != 0:
                continue
        width = max(block, undecayed * decay_factor)
        out[tq, :, tk, :] = band_dist <= width
    return out.reshape(T * s, T * s)
