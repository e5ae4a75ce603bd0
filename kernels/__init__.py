"""Triton kernels (installed as ``vidaccel.kernels``).

IMPORTANT: this file must import without error and without importing triton or vidaccel at
module level. From a checkout's root, ``import kernels`` finds this folder, and transformers /
diffusers probe ``import kernels`` (Hugging Face's kernel hub) at import time; an exception
here breaks ``import diffusers``. Keep heavy imports inside the functions.

Contract with `vidaccel.sparse.attention.sparse_attention`:
``block_sparse_attention(q, k, v, plan, text_len, text_position, attn_mask, scale) -> out`` and
``kernel_unsupported_reason(q, attn_mask) -> str | None``. ``block_sparse_attention_with_lse``
also returns the log-sum-exp (float32, natural log, ``(B, heads, S)``). The Triton kernel is in
``block_sparse_fwd.py``, the warp-specialised Gluon kernel for Hopper in
``block_sparse_fwd_hopper.py``, the tables they read (built once per plan and device) in
``plan_tables.py``, the glue (gathers, torch custom op, the choice between the two kernels) in
``ops.py``.
"""


def _ops():
    from . import ops  # imports triton and torch; raises ImportError where triton is missing

    return ops


def kernel_unsupported_reason(q, attn_mask=None) -> str | None:
    """None when the Triton kernel can run `q` (and `attn_mask`), otherwise why not."""
    try:
        ops = _ops()
    except ImportError as exc:  # pragma: no cover - depends on the machine
        return f"the Triton kernel is unavailable ({exc})"
    return ops.kernel_unsupported_reason(q, attn_mask)


def block_sparse_attention(q, k, v, plan, text_len=0, text_position="none", attn_mask=None, scale=None):
    """Block-sparse attention under `plan`; returns the output like SDPA (see `ops`)."""
    return _ops().block_sparse_attention(
        q, k, v, plan, text_len=text_len, text_position=text_position, attn_mask=attn_mask, scale=scale
    )


def block_sparse_attention_with_lse(q, k, v, plan, text_len=0, text_position="none", attn_mask=None, scale=None):
    """Like `block_sparse_attention`, also returning the float32 log-sum-exp ``(B, heads, S)``."""
    return _ops().block_sparse_attention_with_lse(
        q, k, v, plan, text_len=text_len, text_position=text_position, attn_mask=attn_mask, scale=scale
    )


__all__ = ["block_sparse_attention", "block_sparse_attention_with_lse", "kernel_unsupported_reason"]
