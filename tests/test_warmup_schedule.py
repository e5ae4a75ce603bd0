"""Dense warm-up as a step count or a fraction of the schedule, and the warning when it covers every step."""

import logging

import pytest
import torch

import vidaccel
from tiny_models import TRANSFORMERS, wan_pipeline
from vidaccel.core.context import warmup_steps

PIPE_KW = dict(prompt="a cat", negative_prompt="", height=64, width=96, num_frames=9, guidance_scale=5.0,
               output_type="pt")


def _radial(dense_steps):
    return vidaccel.RadialAttentionConfig(decay_factor=0.5, dense_steps=dense_steps, dense_layers=0, block_size=4)


def _window(dense_steps):  # a 1x3x3 window on the 3x4x6 grid: sparse steps change the output
    return vidaccel.WindowAttentionConfig(kernel=(1, 3, 3), dense_steps=dense_steps)


def _run(pipe, steps):
    return pipe(**PIPE_KW, num_inference_steps=steps, generator=torch.Generator().manual_seed(0)).frames


@pytest.mark.parametrize("value, steps, expected", [(0.25, 4, 1), (0.25, 50, 13), (0.25, 48, 12), (0.5, 3, 2),
                                                    (0.0, 10, 0), (1.0, 7, 7), (3, 50, 3), (None, 5, 0)])
def test_warmup_steps_rounds_a_fraction_half_up_and_keeps_counts(value, steps, expected):
    assert warmup_steps(value, steps) == expected


def test_a_fraction_without_a_schedule_names_the_fix():
    with pytest.raises(ValueError, match="accelerate the pipeline"):
        warmup_steps(0.25, None)


@pytest.mark.parametrize("bad, match", [(1.5, "fraction of the schedule"), (-0.1, "fraction of the schedule"),
                                        (-1, "int >= 0"), ("2", "int >= 0"), (True, "int >= 0")])
def test_bad_warmups_are_refused_at_construction(bad, match):
    with pytest.raises(ValueError, match=match):
        vidaccel.RadialAttentionConfig(dense_steps=bad)
    with pytest.raises(ValueError, match=match):
        vidaccel.WindowAttentionConfig(dense_steps=bad)


def test_fraction_warmup_follows_the_schedule_and_equals_the_same_step_count():
    pipe = wan_pipeline()
    dense = _run(pipe, 4)
    vidaccel.accelerate(pipe, _window(0.5))
    by_fraction = _run(pipe, 4)
    state = pipe.transformer._vidaccel_sparse_attention
    # 2 of 4 steps dense, x2 for CFG, on both layers; then 2 sparse steps
    assert state.dense_calls == {0: 4, 1: 4} and state.sparse_calls == {0: 4, 1: 4}
    info = vidaccel.summary(pipe, print_summary=False)["transformers"][0]
    assert info["last_warmup"] == [2, 4]
    assert "first 0.5 of the steps (2 of 4 in the last run)" in str(vidaccel.summary(pipe, print_summary=False))
    _run(pipe, 2)  # a shorter schedule in the same pipeline: 1 of 2 steps dense
    assert vidaccel.summary(pipe, print_summary=False)["transformers"][0]["last_warmup"] == [1, 2]
    vidaccel.remove(pipe)
    vidaccel.accelerate(pipe, _window(2))
    assert torch.equal(_run(pipe, 4), by_fraction)
    vidaccel.remove(pipe)
    vidaccel.accelerate(pipe, _window(0))
    all_sparse = _run(pipe, 4)
    vidaccel.remove(pipe)
    # the warm-up mattered: neither all-dense nor all-sparse
    assert (by_fraction - dense).abs().max() > 1e-4 and (by_fraction - all_sparse).abs().max() > 1e-4


def test_a_warmup_covering_the_whole_schedule_warns_once_and_summary_says_so(caplog):
    pipe = wan_pipeline()
    vidaccel.accelerate(pipe, _radial(12))  # radial's default count, on a 3-step (distilled-style) run
    with caplog.at_level(logging.WARNING, logger="vidaccel"):
        _run(pipe, 3)
        _run(pipe, 3)
    warnings = [r for r in caplog.records if "covers all 3 steps" in r.getMessage()]
    assert len(warnings) == 1 and "dense_steps=0.25" in warnings[0].getMessage()
    state = pipe.transformer._vidaccel_sparse_attention
    assert state.sparse_calls == {} and sum(state.dense_calls.values()) == 2 * 2 * 3 * 2
    assert "WARNING: the warm-up covered all 3 steps of the last run" in str(vidaccel.summary(pipe, print_summary=False))
    vidaccel.remove(pipe)
    caplog.clear()
    vidaccel.accelerate(pipe, _radial(1))
    with caplog.at_level(logging.WARNING, logger="vidaccel"):
        _run(pipe, 3)
    assert not [r for r in caplog.records if "covers all" in r.getMessage()]
    assert "WARNING" not in str(vidaccel.summary(pipe, print_summary=False))
    vidaccel.remove(pipe)


def test_a_fraction_on_a_bare_transformer_is_refused_before_anything_changes():
    model = TRANSFORMERS["wan"]()
    with pytest.raises(ValueError, match="accelerate the pipeline instead"):
        vidaccel.accelerate(model, _radial(0.25))
    assert not hasattr(model, "_vidaccel_sparse_attention") and not hasattr(model, "_diffusers_hook")
    vidaccel.accelerate(model, _radial(2))  # a step count works on a bare transformer
    vidaccel.remove(model)


def test_freeswim_full_branch_fraction_needs_the_pipeline():
    model = TRANSFORMERS["wan"]()
    config = vidaccel.FreeSwimConfig(full_attention=vidaccel.RadialAttentionConfig(dense_steps=0.25))
    with pytest.raises(ValueError, match="enable FreeSwim on the pipeline instead"):
        vidaccel.enable_freeswim(model, config)
    assert not hasattr(model, "_diffusers_hook")


def test_each_kind_of_dense_warm_up_is_logged_once(caplog):
    """The per-call decision logs the layer warm-up and the step warm-up once each, however many calls follow."""
    from tiny_models import family_inputs

    model = TRANSFORMERS["wan"]()
    vidaccel.accelerate(model, vidaccel.WindowAttentionConfig(kernel=(1, 3, 3), dense_steps=1, dense_layers=1))
    inputs = family_inputs("wan", grid=(3, 4, 6))
    with caplog.at_level(logging.INFO, logger="vidaccel"), torch.no_grad():
        for t in (900.0, 800.0, 700.0):
            model(**{**inputs, "timestep": torch.full((2,), t)})
    lines = [r.getMessage() for r in caplog.records if "dense attention by configuration" in r.getMessage()]
    assert sorted(line.split("(")[1].split(" ")[0] for line in lines) == ["layer", "step"]
    vidaccel.remove(model)
