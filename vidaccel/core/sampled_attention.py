"""Softmax rows of one attention call, for a few sampled queries: what the profilers measure attention with.

Layout ``(B, heads, S, D)`` as diffusers passes it to SDPA. One head at a time, so memory is
``B x len(rows) x S_k``, never ``S x S``. Grouped-query keys (fewer key heads) map query head ``h`` to key
head ``h * key_heads // heads``.
"""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def attention_rows(query, key, rows: torch.Tensor, head: int, *, attn_mask=None, scale=None) -> torch.Tensor:
    """fp32 ``(B, len(rows), S_k)``: the attention probabilities of query rows `rows` of one head."""
    B, h, S, D = query.shape
    scale = scale if scale is not None else 1.0 / math.sqrt(D)
    rows = rows.to(query.device)
    kh = key[:, head * key.shape[1] // h].float()
    s = (query[:, head, rows].float() @ kh.transpose(-1, -2)) * scale
    if attn_mask is not None:
        m = attn_mask.expand(B, h, S, key.shape[-2])[:, head, rows]
        s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m.float()
    return torch.softmax(s, dim=-1)
