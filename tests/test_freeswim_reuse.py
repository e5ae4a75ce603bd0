"""FreeSwim's dual path stacked with block reuse (CPU): exact at interval 1 in either enable order, the blocks
each branch runs per step, per-branch state, exact removal in every order, and the errors."""

from __future__ import annotations

import itertools

import pytest
import torch

import vidaccel
from tiny_models import family_inputs, wan_pipeline, wan_transformer
from vidaccel import BlockReuseConfig, FreeSwimConfig
from vidaccel.caches.api import format_cache_summary
from vidaccel.pipelines import FreeSwimPipeline

GRID = (3, 4, 6)
STEPS = 6


def _model():
    return wan_transformer(layers=4)


def _calls(model, inputs, steps=STEPS, probe=None):
    """The transformer's outputs over `steps` steps x (cond, uncond), as a pipeline makes them."""
    outs = []
    with torch.no_grad():
        for step in range(steps):
            for branch in ("cond", "uncond"):
                if probe is not None:
                    probe["at"] = (step, branch)
                with model.cache_context(branch, step_index=step):
                    outs.append(model(**inputs)[0])
    return outs


def _enable(model, order, fs_config, reuse_config):
    for what in order:
        if what == "freeswim":
            vidaccel.enable_freeswim(model, fs_config)
        else:
            vidaccel.enable_block_reuse(model, reuse_config)


FS = FreeSwimConfig(window=(2, 3), cache_steps=2)


@pytest.mark.parametrize("order", [("freeswim", "reuse"), ("reuse", "freeswim")])
def test_interval_1_equals_the_unstacked_dual_path_in_either_order(order):
    model = _model()
    inputs = family_inputs("wan", grid=GRID, batch=1)
    vidaccel.enable_freeswim(model, FS)
    alone = _calls(model, inputs)
    vidaccel.disable_freeswim(model)
    _enable(model, order, FS, BlockReuseConfig(background_blocks=[1, 2], warmup_steps=0, interval=1))
    stacked = _calls(model, inputs)
    assert all(torch.equal(a, b) for a, b in zip(alone, stacked))
    vidaccel.disable_block_reuse(model)
    vidaccel.disable_freeswim(model)


def _expected_compute(steps, warmup, interval):
    """Independent of `vidaccel.caches.schedule`: steps <= warm-up compute, then once `interval` steps passed."""
    out, last = {}, None
    for s in steps:
        compute = last is None or s <= warmup or s - last >= interval
        out[s] = compute
        last = s if compute else last
    return out


@pytest.mark.parametrize("branches", [("window", "full"), ("window",)])
@pytest.mark.parametrize("order", [("freeswim", "reuse"), ("reuse", "freeswim")])
def test_blocks_run_per_branch_and_step_as_scheduled(order, branches):
    model = _model()
    inputs = family_inputs("wan", grid=GRID, batch=1)
    warmup, interval = 1, 3
    _enable(model, order, FS, BlockReuseConfig(background_blocks=[1, 2], warmup_steps=warmup, interval=interval,
                                               freeswim_branches=branches))
    tracker = model.__dict__["_vidaccel_step_tracker"]
    ran, probe = {}, {}
    handles = [block.ffn.register_forward_hook(  # plain torch hooks: a block's MLP runs only if the block does
        lambda *a, i=i: ran.setdefault((*probe["at"], tracker.path), []).append(i))
        for i, block in enumerate(model.blocks)]
    _calls(model, inputs, probe=probe)
    for h in handles:
        h.remove()

    guide_steps = [s for s in range(STEPS) if s % FS.cache_steps == 0]
    every = _expected_compute(range(STEPS), warmup, interval)
    full = _expected_compute(guide_steps, warmup, interval) if "full" in branches else dict.fromkeys(guide_steps, True)
    expected = {}
    for s in range(STEPS):
        for cfg in ("cond", "uncond"):
            expected[(s, cfg, "window")] = [0, 1, 2, 3] if every[s] else [0, 3]
        if s in full:
            expected[(s, "cond", "full")] = [0, 1, 2, 3] if full[s] else [0, 3]
    assert ran == expected
    assert any(v == [0, 3] for v in expected.values())  # the schedule does reuse somewhere

    entries = vidaccel.cache_summary(model)
    counted = entries[0]["block_reuse"]["freeswim_branches"]
    for path in ("window",) + (("full",) if "full" in branches else ()):
        runs = [v for k, v in expected.items() if k[2] == path]
        assert counted[path] == {"computed": runs.count([0, 1, 2, 3]), "reused": runs.count([0, 3])}
    assert ("full" in counted) == ("full" in branches)  # a branch left out never decides
    text = "\n".join(format_cache_summary(entries))
    assert f"FreeSwim window branch: {counted['window']['computed']} calls computed" in text
    vidaccel.disable_freeswim(model)
    vidaccel.disable_block_reuse(model)


def test_reuse_changes_the_dual_path_output_and_keeps_cfg_passes_apart():
    model = _model()
    inputs = family_inputs("wan", grid=GRID, batch=1)
    vidaccel.enable_freeswim(model, FS)
    alone = _calls(model, inputs)
    vidaccel.enable_block_reuse(model, BlockReuseConfig(background_blocks=[1, 2], warmup_steps=1, interval=3))
    stacked = _calls(model, inputs)
    state = model.__dict__["_vidaccel_block_reuse"]
    # per CFG pass and FreeSwim branch; the unconditional pass has no full branch (a bare transformer keeps
    # them until the next generation; a pipeline call drops them at its end)
    assert set(state.branches) == {("cond", "window"), ("uncond", "window"), ("cond", "full")}
    # warm-up steps are exact, reuse steps differ
    assert all(torch.equal(a, b) for a, b in zip(alone[:4], stacked[:4]))
    assert not torch.equal(alone[4], stacked[4])
    vidaccel.disable_block_reuse(model)
    vidaccel.disable_freeswim(model)


@pytest.mark.parametrize("enable, disable", list(itertools.product(itertools.permutations(("freeswim", "reuse")),
                                                                    repeat=2)))
def test_remove_is_exact_in_every_order(enable, disable):
    model = _model()
    inputs = family_inputs("wan", grid=GRID, batch=1)
    plain = _calls(model, inputs, steps=2)  # cache_context gives the model a hook registry of diffusers' own
    before = dict(model.__dict__)
    block_before = [dict(b.__dict__) for b in model.blocks]
    vidaccel.enable_freeswim(model, FS)
    fs_alone = _calls(model, inputs, steps=2)
    vidaccel.disable_freeswim(model)
    reuse = BlockReuseConfig(background_blocks=[1, 2], warmup_steps=0, interval=1)
    _enable(model, enable, FS, reuse)
    first, second = disable
    (vidaccel.disable_freeswim if first == "freeswim" else vidaccel.disable_block_reuse)(model)
    left = _calls(model, inputs, steps=2)  # the remaining feature alone still runs as it does alone
    assert all(torch.equal(a, b) for a, b in zip(left, plain if first == "freeswim" else fs_alone))
    (vidaccel.disable_freeswim if second == "freeswim" else vidaccel.disable_block_reuse)(model)
    assert set(model.__dict__) == set(before)
    assert [set(b.__dict__) for b in model.blocks] == [set(d) for d in block_before]
    assert all(not getattr(b, "_diffusers_hook", None) or not b._diffusers_hook.hooks for b in model.blocks)
    assert all(torch.equal(a, b) for a, b in zip(_calls(model, inputs, steps=2), plain))


def test_pipeline_with_reuse_at_interval_1_equals_freeswim_alone():
    pipe = wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    args = dict(prompt="a red circle moving right", video=torch.rand(1, 5, 3, 32, 32, generator=torch.Generator()
                                                                       .manual_seed(0)),
                height=64, width=48, num_inference_steps=6, strength=1.0, guidance_scale=5.0, output_type="latent",
                max_sequence_length=16)
    fs = FreeSwimPipeline(pipe, FreeSwimConfig(base_size=(32, 32), cache_steps=2))
    alone = fs(generator=torch.Generator().manual_seed(1), **args).frames
    vidaccel.enable_block_reuse(pipe, BlockReuseConfig(background_blocks=[1], warmup_steps=0, interval=1))
    stacked = fs(generator=torch.Generator().manual_seed(1), **args).frames
    assert torch.equal(alone, stacked)
    vidaccel.disable_block_reuse(pipe)
    vidaccel.enable_block_reuse(pipe, BlockReuseConfig(background_blocks=[1], warmup_steps=1, interval=3))
    reused = fs(generator=torch.Generator().manual_seed(1), **args).frames
    entry = vidaccel.cache_summary(pipe)[0]["block_reuse"]
    assert entry["freeswim_branches"]["window"]["reused"] > 0 and not torch.equal(alone, reused)
    fs.remove()
    vidaccel.disable_block_reuse(pipe)


@pytest.mark.parametrize("bad", ["window", ("window", "dense"), 3])
def test_bad_freeswim_branches_name_the_choices(bad):
    with pytest.raises(ValueError, match=r"freeswim_branches must be a tuple of \['full', 'window'\]"):
        BlockReuseConfig(background_blocks=[1], freeswim_branches=bad)
