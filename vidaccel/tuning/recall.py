"""Recall of a pattern: the share of dense attention's softmax mass on the keys the pattern keeps.

For sampled video query rows of one head, with the dense probabilities ``p`` over all keys (text keys of
joint attention included: sparse attention always keeps them),

    recall(pattern) = mean over rows of ( sum_{k kept by the pattern} p[k] + sum_{text keys} p[k] ).

A pattern that keeps every key has recall 1. Masks come from the pattern's one mask definition
(`Pattern.mask`), in the raster order of the token grid.
"""

from __future__ import annotations

import math

import torch

from ..core.sampled_attention import attention_rows


def candidate_masks(patterns: list, grid, rows: torch.Tensor, device) -> torch.Tensor:
    """bool ``(C, len(rows), N)``: for each pattern (None = dense) which video keys query rows `rows` keep."""
    n = math.prod(grid)
    keys = torch.arange(n, device=device)
    rows = rows.to(device)
    return torch.stack([torch.ones(len(rows), n, dtype=torch.bool, device=device) if p is None
                        else p.mask(grid, rows, keys) for p in patterns])


@torch.no_grad()
def kept_mass(query, key, rows: torch.Tensor, video: slice, masks: torch.Tensor, *, attn_mask=None,
              scale=None) -> torch.Tensor:
    """float64 ``(C, heads)``: summed over batch and rows, the softmax mass each candidate keeps per head.

    `rows` index the query sequence (text offset included); `video` is the slice of video keys; `masks` is
    `candidate_masks` for those rows. Divide by ``B * len(rows)`` for the mean recall.
    """
    heads = query.shape[1]
    out = torch.zeros(masks.shape[0], heads, dtype=torch.float64)
    keep = masks.float()
    for h in range(heads):
        p = attention_rows(query, key, rows, h, attn_mask=attn_mask, scale=scale)  # (B, n, S_k)
        text = p.sum(-1) - p[..., video].sum(-1)  # (B, n): mass on text keys, always kept
        kept = torch.einsum("bqk,cqk->cbq", p[..., video], keep) + text[None]
        out[:, h] = kept.sum((1, 2)).double().cpu()
    return out
