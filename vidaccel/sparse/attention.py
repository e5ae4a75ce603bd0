"""The single dispatch point for sparse self-attention: `sparse_attention`.

Layout is SDPA's: ``q, k, v`` are ``(B, heads, S, head_dim)`` with ``S = N + text_len`` where the
``N = T*H*W`` visual tokens are in raster order and the text tokens of joint-attention models
sit before (``text_position="prefix"``, CogVideoX) or after (``"suffix"``, HunyuanVideo) them.
Text tokens attend and are attended densely. ``attn_mask`` is an optional boolean key mask
broadcastable to ``(B, heads, S, S)`` (e.g. HunyuanVideo's text padding mask ``(B, 1, 1, S)``).

Backends: ``"reference"`` is exact SDPA with masks derived from the pattern: one call with the
plan's cached ``S x S`` mask while it fits `REFERENCE_CACHED_MASK_BYTES`, else chunks of query
rows (memory bounded by ``chunk x S``); it is slower than dense attention; ``"triton"`` is the block-sparse kernel
(CUDA only, `vidaccel.kernels`); ``"auto"`` picks the kernel when it supports the input.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from .plan import Plan

logger = logging.getLogger(__name__)

_TEXT_POSITIONS = ("none", "prefix", "suffix")
BACKENDS = ("auto", "reference", "triton")
_logged_fallbacks: set = set()

# Bytes of score matrix the reference may hold per chunk (B * heads * chunk * S * 4 bytes).
REFERENCE_CHUNK_BYTES = 256 * 2**20
# A sequence whose whole mask fits this many bytes keeps it with the plan and every chunk slices its rows:
# additive in the input's dtype where that fits (4096 tokens in fp32), else boolean (8192 tokens); longer
# sequences build each chunk's mask per call.
REFERENCE_CACHED_MASK_BYTES = 64 * 2**20


def _visual_slice(text_len: int, text_position: str, total: int) -> slice:
    if text_position == "prefix":
        return slice(text_len, total)
    return slice(0, total - text_len)


def reference_sparse_attention(q, k, v, plan: Plan, text_len=0, text_position="none", attn_mask=None, scale=None):
    """Exact reference: SDPA per chunk of query rows (score memory at most `REFERENCE_CHUNK_BYTES`; one call
    when the sequence fits), with rows of the plan's cached mask, or for long sequences the chunk's mask
    built from the pattern."""
    B, Hh, S, D = q.shape
    n = plan.num_tokens
    vis = _visual_slice(text_len, text_position, S)
    chunk = max(1, min(S, REFERENCE_CHUNK_BYTES // max(1, B * Hh * S * 4)))
    cached, additive = None, False
    if S * S <= REFERENCE_CACHED_MASK_BYTES:
        additive = S * S * q.element_size() <= REFERENCE_CACHED_MASK_BYTES
        cached = plan.full_mask(text_len, text_position, q.device, q.dtype if additive else torch.bool)
    key_idx = torch.arange(n, device=q.device)
    out = torch.empty_like(q)
    for start in range(0, S, chunk):
        stop = min(S, start + chunk)
        if cached is not None:
            mask = cached[start:stop]
        else:
            rows = torch.arange(start, stop, device=q.device)
            mask = torch.ones(len(rows), S, dtype=torch.bool, device=q.device)
            vis_rows = (rows >= vis.start) & (rows < vis.stop)
            if vis_rows.any():
                mask[vis_rows, vis] = plan.pattern.mask(plan.grid, rows[vis_rows] - vis.start, key_idx)
        if attn_mask is not None:
            keep = (attn_mask if attn_mask.shape[-2] == 1 else attn_mask[..., start:stop, :]).to(torch.bool)
            mask = mask.masked_fill(~keep, float("-inf")) if additive else mask & keep
        out[:, :, start:stop] = F.scaled_dot_product_attention(q[:, :, start:stop], k, v, attn_mask=mask,
                                                               scale=scale)
    return out


def check_backend(backend) -> None:
    """Raise ValueError naming the choices unless `backend` is one of `BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got backend={backend!r}.")


def _check_inputs(q, k, v, plan, text_len, text_position, attn_mask, backend):
    check_backend(backend)
    if text_position not in _TEXT_POSITIONS:
        raise ValueError(f"text_position must be one of {_TEXT_POSITIONS}, got {text_position!r}.")
    if q.dim() != 4 or k.shape != v.shape[:-1] + k.shape[-1:] or q.shape[:2] != k.shape[:2]:
        raise ValueError(
            f"Expected q, k, v as (batch, heads, tokens, head_dim) with matching batch/heads, got "
            f"q={tuple(q.shape)}, k={tuple(k.shape)}, v={tuple(v.shape)}."
        )
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"Sparse self-attention needs as many keys as queries, got {q.shape[2]} and {k.shape[2]}.")
    if text_position == "none" and text_len:
        raise ValueError("text_len > 0 needs text_position='prefix' or 'suffix'.")
    expected = plan.num_tokens + text_len
    if q.shape[2] != expected:
        raise ValueError(
            f"Sequence length {q.shape[2]} does not match the plan: grid {plan.grid} has {plan.num_tokens} "
            f"visual tokens + {text_len} text tokens = {expected}. The token grid changed: build a plan "
            f"for the new grid (vidaccel does this automatically per call when used through `accelerate`)."
        )
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        raise ValueError(f"attn_mask must be boolean (True = attend), got dtype {attn_mask.dtype}.")


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: Plan,
    *,
    text_len: int = 0,
    text_position: str = "none",
    attn_mask: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Sparse self-attention of ``(B, heads, S, head_dim)`` inputs under `plan`. Returns like SDPA.

    Semantic parameters: `plan` (pattern bound to the grid), `text_len`/`text_position`,
    `attn_mask`, `scale` (default ``head_dim ** -0.5``). Performance knob: `backend`.
    A plan that attends every pair runs plain SDPA.
    """
    _check_inputs(q, k, v, plan, text_len, text_position, attn_mask, backend)
    path, reason = attention_path(q, attn_mask, plan, backend)
    if path == "dense":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    if path == "kernel":
        from ..kernels import block_sparse_attention  # lazy: triton exists only on CUDA machines

        return block_sparse_attention(
            q, k, v, plan.to(q.device), text_len=text_len, text_position=text_position,
            attn_mask=attn_mask, scale=scale,
        )
    if backend == "triton":
        raise ValueError(f"backend='triton' cannot run this input: {reason}. Use backend='auto' or 'reference'.")
    if reason not in _logged_fallbacks and not torch.compiler.is_compiling():  # dynamo cannot trace a log call
        _logged_fallbacks.add(reason)
        logger.info("vidaccel sparse attention uses the reference implementation: %s", reason)
    return reference_sparse_attention(q, k, v, plan, text_len, text_position, attn_mask, scale)


def attention_path(q: torch.Tensor, attn_mask, plan: Plan, backend: str) -> tuple[str, str | None]:
    """Which path `sparse_attention` takes: ``("dense", None)`` for a plan that attends every pair,
    ``("kernel", None)``, or ``("reference", why the kernel does not run)``."""
    if plan.is_dense and backend != "triton":
        return "dense", None
    if backend == "reference":
        return "reference", "backend='reference' was asked for"
    reason = _kernel_unsupported_reason(q, attn_mask)
    return ("kernel", None) if reason is None else ("reference", reason)


def _kernel_unsupported_reason(q: torch.Tensor, attn_mask) -> str | None:
    """None when the Triton kernel can run `q`; otherwise why not (shared by auto and forced dispatch)."""
    if q.device.type != "cuda":
        return f"the Triton kernel needs a CUDA tensor, got device {q.device.type}"
    try:
        from ..kernels import kernel_unsupported_reason
    except ImportError as exc:  # triton missing, or kernels not built for this platform
        return f"the Triton kernel is unavailable ({exc})"
    return kernel_unsupported_reason(q, attn_mask)


def dense_flops(batch: int, heads: int, tokens: int, head_dim: int) -> float:
    """FLOPs of dense attention forward (two matmuls)."""
    return 4.0 * batch * heads * tokens * tokens * head_dim


__all__ = ["sparse_attention", "reference_sparse_attention", "attention_path", "dense_flops"]
