"""Triton kernels (installed as ``vidaccel.kernels``).

IMPORTANT: this file must import without error and without importing triton or vidaccel at
module level. From a checkout's root, ``import kernels`` finds this folder, and transformers /
diffusers probe ``import kernels`` (Hugging Face's kernel hub) at import time; an exception
here breaks ``import diffusers``. Keep heavy imports inside the functions.

Contract with `vidaccel.attention.sparse_attention`:
``block_sparse_attention(q, k, v, plan, text_len, text_position, attn_mask, scale) -> out`` and
``kernel_unsupported_reason(q, attn_mask) -> str | None``.
"""


def kernel_unsupported_reason(q, attn_mask) -> str | None:
    return "the block-sparse Triton kernel is not built yet"


def block_sparse_attention(q, k, v, plan, text_len=0, text_position="none", attn_mask=None, scale=None):
    raise NotImplementedError("the block-sparse Triton kernel is not built yet")
