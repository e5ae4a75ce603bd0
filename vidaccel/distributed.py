"""Multi-GPU through diffusers' context parallelism and torch.distributed (never a home-made engine).

Under Ulysses context parallelism each rank gathers the whole sequence for a subset of heads
before attention, so vidaccel's sparse self-attention runs unchanged there: the SDPA call it
swaps sees all ``T*H*W`` tokens. Ring attention hands each rank partial key/value chunks and
merges results by log-sum-exp; vidaccel does not plug into that path and says so.

Typical use, inside a ``torchrun --nproc_per_node N`` process::

    rank, world = vidaccel.distributed.init_distributed()
    pipe.to(f"cuda:{rank}")
    vidaccel.accelerate(pipe, "radial")
    vidaccel.distributed.enable_context_parallel(pipe, ulysses_degree=world)
"""

from __future__ import annotations

import os

import torch

from .core.adapters import ADAPTERS, adapter_for
from .core.features import CONTEXT_PARALLEL, SPARSE_ATTENTION, installed, refuse_conflicts
from .core.models import transformers
from .sparse.hooks import check_context_parallel

# the transformer classes diffusers ships a context-parallel plan (`_cp_plan`) for, among the supported ones
CONTEXT_PARALLEL_CLASSES = tuple(sorted(a.class_name for a in ADAPTERS.values() if a.context_parallel()))


def init_distributed() -> tuple[int, int]:
    """Initialise the default process group from torchrun's environment; returns (rank, world size).

    NCCL with one GPU per local rank when CUDA is available, gloo otherwise. A no-op (0, 1) outside
    a launcher.
    """
    import torch.distributed as dist

    if "RANK" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def enable_context_parallel(pipe_or_transformer, ulysses_degree: int | None = None, ring_degree: int = 1):
    """Turn on diffusers' context parallelism (Ulysses) for the pipeline's transformer(s).

    Args:
        ulysses_degree: ranks sharing one sequence; default: the world size. The number of attention
            heads must be divisible by it.
        ring_degree: must stay 1 while vidaccel sparse attention is active.
    Needs an initialised process group (`init_distributed`). Returns the same object.
    """
    import torch.distributed as dist
    from diffusers import ContextParallelConfig

    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: launch with torchrun and call init_distributed().")
    models = transformers(pipe_or_transformer)
    for model in models:
        refuse_conflicts(model, CONTEXT_PARALLEL)
        if not adapter_for(model).context_parallel():
            supported = [a.class_name for a in ADAPTERS.values() if a.context_parallel()]
            raise ValueError(
                f"diffusers has no context-parallel plan for {type(model).__name__}. Context parallelism works "
                f"for: {', '.join(sorted(supported))}. For other models, use data-parallel generation "
                f"(one prompt per GPU)."
            )
    degree = ulysses_degree or dist.get_world_size() // max(ring_degree, 1)
    if degree * max(ring_degree, 1) < 2:
        raise ValueError("Context parallelism needs at least 2 ranks: launch with torchrun --nproc_per_node 2 (or more).")
    config = ContextParallelConfig(ulysses_degree=degree if degree > 1 else None,
                                   ring_degree=ring_degree if ring_degree > 1 else None)
    for model in models:
        if installed(model, SPARSE_ATTENTION):
            check_context_parallel(config, type(model).__name__)
        heads = model.config.num_attention_heads
        if heads % degree:
            raise ValueError(f"{heads} attention heads are not divisible by ulysses_degree={degree}.")
        model.enable_parallelism(config=config)
    return pipe_or_transformer


def shard(items: list, rank: int, world: int) -> list:
    """The items rank `rank` handles in data-parallel generation (round robin, order kept)."""
    return items[rank::world]


__all__ = ["init_distributed", "enable_context_parallel", "check_context_parallel", "shard",
           "CONTEXT_PARALLEL_CLASSES"]
