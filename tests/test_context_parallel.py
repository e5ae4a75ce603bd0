"""Sparse attention under diffusers' Ulysses context parallelism: 2 processes, gloo on CPU."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import vidaccel
from vidaccel.distributed import check_context_parallel, shard
from tiny_models import hunyuan_transformer

TESTS = pathlib.Path(__file__).resolve().parent


def test_ulysses_two_processes_match_single_process(tmp_path):
    out = tmp_path / "result"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           str(TESTS / "cp_worker.py"), str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        r = json.loads((tmp_path / f"result.{rank}").read_text())
        assert r["world"] == 2 and r["sparse_calls"] == 4  # 2 layers x (single + parallel run)
        assert r["max_abs_diff"] <= 1e-5 * max(1.0, r["ref_scale"])
        # K/V cache + block reuse (steps 0-1 compute, step 2 reuses blocks 1-2) keep their results under Ulysses
        assert r["caches_max_abs_diff"] <= 1e-5 * max(1.0, r["caches_ref_scale"])
        assert r["reused_block_calls"] == 4  # 2 blocks on step 2, single-process run and parallel run


def test_ring_attention_is_refused_with_the_fix():
    from diffusers import ContextParallelConfig

    with pytest.raises(ValueError, match="Use Ulysses instead"):
        check_context_parallel(ContextParallelConfig(ring_degree=2), "Wan")
    check_context_parallel(ContextParallelConfig(ulysses_degree=2), "Wan")  # fine


def test_models_without_a_context_parallel_plan_are_refused():
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29518", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="no context-parallel plan for HunyuanVideoTransformer3DModel. Context parallelism works for: "
                                             ".*LTXVideoTransformer3DModel, WanTransformer3DModel"):
            vidaccel.distributed.enable_context_parallel(hunyuan_transformer(), ulysses_degree=1)
    finally:
        dist.destroy_process_group()


def test_prompt_sharding_covers_every_prompt_once():
    prompts = [f"p{i}" for i in range(7)]
    shards = [shard(prompts, r, 3) for r in range(3)]
    assert sorted(sum(shards, [])) == sorted(prompts) and shards[0] == ["p0", "p3", "p6"]


def test_generate_gpus_spreads_prompts_over_processes(tmp_path):
    """`vidaccel generate --gpus 2` with two prompts: torchrun, one process per device (gloo on CPU),
    each writes its share; the videos equal a single-process run."""
    from tiny_models import wan_pipeline
    from vidaccel.report.video import read_mp4

    model = tmp_path / "model"
    wan_pipeline(seed=0).save_pretrained(model)
    small = ["--model", str(model), "--height", "32", "--width", "32", "--frames", "5", "--steps", "2",
             "--no-progress", "--device", "cpu", "--seed", "3"]

    def generate(out, *extra):
        cmd = [sys.executable, "-m", "vidaccel.cli", "generate", "a red circle", "a blue square", *small,
               "--out", str(out), *extra]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        return [read_mp4(out.with_name(f"{out.stem}_{i:02d}_s3.mp4")) for i in range(2)]

    parallel = generate(tmp_path / "two" / "v.mp4", "--gpus", "2")
    single = generate(tmp_path / "one" / "v.mp4")
    assert all((p == s).all() for p, s in zip(parallel, single))


def test_freeswim_and_context_parallelism_refuse_each_other():
    import torch.distributed as dist

    from tiny_models import wan_transformer

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29519", rank=0, world_size=1)
    try:
        model = wan_transformer()
        vidaccel.enable_freeswim(model)
        with pytest.raises(ValueError, match="FreeSwim does not run under context parallelism"):
            vidaccel.distributed.enable_context_parallel(model, ulysses_degree=2)
        vidaccel.disable_freeswim(model)
        model._parallel_config = object()  # what enable_parallelism leaves on the model
        with pytest.raises(RuntimeError, match="FreeSwim does not run under context parallelism"):
            vidaccel.enable_freeswim(model)
    finally:
        dist.destroy_process_group()
