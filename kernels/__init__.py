"""Triton kernels (installed as ``vidaccel.kernels``). Imported lazily: CPU machines have no triton.

Contract with `vidaccel.attention.sparse_attention`:
``block_sparse_attention(q, k, v, plan, text_len, text_position, attn_mask, scale) -> out`` and
``kernel_unsupported_reason(q, attn_mask) -> str | None``.
"""

try:
    import triton  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise ImportError("triton is not installed") from exc

raise ImportError("the block-sparse Triton kernel is not built yet")
