"""Worker for tests/test_cache_dit.py, run in its own process: cache-dit patches the pipeline class
(``WanPipeline.__call__``) and diffusers' attention registry, which must not leak into other tests.

Writes a JSON of what it saw: outputs against references, removal in both orders, the refused order.
"""

import json
import logging
import sys

import cache_dit
import torch

import vidaccel
from tiny_models import wan_pipeline

logging.disable(logging.WARNING)  # cache-dit's statistics tables
KW = dict(prompt="a red circle", height=32, width=48, num_frames=5, num_inference_steps=8, output_type="pt")
SPARSE = vidaccel.WindowAttentionConfig(kernel=(1, 3, 3))


def config():
    # the tiny model has 2 blocks: compute block 0, cache the rest after 2 warm-up steps
    return cache_dit.DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=2,
                                   residual_diff_threshold=0.5)


def run(pipe):
    return pipe(**KW, generator=torch.Generator().manual_seed(0)).frames


def diff(a, b) -> float:
    return float((a - b).abs().max())


def main(out_path: str) -> None:
    pipe = wan_pipeline()
    keys = set(pipe.transformer.__dict__)
    reference = run(pipe)
    vidaccel.accelerate(pipe, SPARSE)
    sparse = run(pipe)
    vidaccel.remove(pipe)
    cache_dit.enable_cache(pipe, cache_config=config())
    cached = run(pipe)
    cached_steps = len(cache_dit.summary(pipe)[0].cached_steps)
    cache_dit.disable_cache(pipe)
    cache_dit_leaves = sorted(set(pipe.transformer.__dict__) - keys)  # what cache-dit alone leaves behind
    result = {"sparse_vs_reference": diff(sparse, reference), "cached_vs_reference": diff(cached, reference),
              "cached_steps": cached_steps, "cache_dit_leaves": cache_dit_leaves,
              "after_cache_dit_alone_equal": bool(torch.equal(run(pipe), reference)), "orders": {}}

    for removal in (("vidaccel", "cache_dit"), ("cache_dit", "vidaccel")):
        cache_dit.enable_cache(pipe, cache_config=config())
        vidaccel.accelerate(pipe, SPARSE)
        both = run(pipe)
        entry = {"finite": bool(torch.isfinite(both).all()), "both_vs_sparse": diff(both, sparse),
                 "attention_path": vidaccel.summary(pipe, print_summary=False)["transformers"][0]["attention_path"],
                 "sparse_calls": vidaccel.summary(pipe, print_summary=False)["transformers"][0]["sparse_calls"],
                 "cached_steps": len(cache_dit.summary(pipe)[0].cached_steps)}
        first, second = removal
        (vidaccel.remove if first == "vidaccel" else cache_dit.disable_cache)(pipe)
        alone = run(pipe)  # the other one alone
        entry["after_first_equals_the_other_alone"] = bool(torch.equal(alone, cached if first == "vidaccel"
                                                                       else sparse))
        (vidaccel.remove if second == "vidaccel" else cache_dit.disable_cache)(pipe)
        entry["after_both_equal_reference"] = bool(torch.equal(run(pipe), reference))
        entry["leaves"] = sorted(set(pipe.transformer.__dict__) - keys)
        result["orders"][f"remove_{first}_first"] = entry

    # the other order: vidaccel first, cache-dit on top: refused at the next call, then both come off
    vidaccel.accelerate(pipe, SPARSE)
    cache_dit.enable_cache(pipe, cache_config=config())
    try:
        run(pipe)
        result["refused"] = None
    except RuntimeError as error:
        result["refused"] = str(error)
    vidaccel.remove(pipe)
    cache_dit.disable_cache(pipe)
    result["after_refusal_equal_reference"] = bool(torch.equal(run(pipe), reference))
    result["after_refusal_leaves"] = sorted(set(pipe.transformer.__dict__) - keys)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
