"""Issue 20's probe of bad input, kept as a suite: API, runtime, CLI and files.

Every case asserts the exception type, that the one-line message names the fix, and that the model
afterwards gives the same output as before; where a feature was on, turning it off restores the
dense output bit-identically. Fixtures build the tiny random-weight models of `tiny_models`.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import vidaccel
from tiny_models import family_inputs, wan_transformer

GRID = (3, 4, 6)


@pytest.fixture(scope="module")
def tiny():
    """(model, inputs, dense output) of a tiny Wan transformer."""
    model = wan_transformer()
    inputs = family_inputs("wan", grid=GRID)
    return model, inputs, _run(model, inputs)


def _run(model, inputs, step=0):
    with torch.no_grad(), model.cache_context("cond", step_index=step):
        return model(**inputs)[0]


def _same(model, inputs, expected):
    assert torch.equal(_run(model, inputs), expected)


# --------------------------------------------------------- #1 / #7: copying and pickling a hooked model

FEATURES = {
    "sparse_attention": (lambda m: vidaccel.accelerate(m, vidaccel.WindowAttentionConfig(kernel=(1, 3, 3))),
                         vidaccel.remove, "vidaccel.remove"),
    "freeswim": (lambda m: vidaccel.enable_freeswim(m, vidaccel.FreeSwimConfig(window=(2, 3))),
                 vidaccel.disable_freeswim, "vidaccel.disable_freeswim"),
    "kv_cache": (vidaccel.enable_kv_cache, vidaccel.disable_kv_cache, "vidaccel.disable_kv_cache"),
    "block_reuse": (lambda m: vidaccel.enable_block_reuse(m, vidaccel.BlockReuseConfig(background_blocks=[1])),
                    vidaccel.disable_block_reuse, "vidaccel.disable_block_reuse"),
}


@pytest.mark.parametrize("operation", [copy.deepcopy, pickle.dumps], ids=["deepcopy", "pickle"])
@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_copy_or_pickle_of_a_hooked_model_is_refused(tiny, feature, operation):
    model, inputs, dense = tiny
    enable, disable, fix = FEATURES[feature]
    enable(model)
    try:
        on = _run(model, inputs)
        with pytest.raises(TypeError, match=rf"Call {fix}\(pipe\).*before copying, then enable it again"):
            operation(model)
        _same(model, inputs, on)
    finally:
        disable(model)
    _same(model, inputs, dense)
    pickle.loads(pickle.dumps(model))  # plain again: copies and pickles as usual
    _same(copy.deepcopy(model), inputs, dense)


# ----------------------------------------------------------------- #2: a torch.compile'd transformer

@pytest.mark.parametrize("order", ["accelerate_then_compile", "compile_then_accelerate"])
def test_compiled_transformer_is_accelerated_and_removed_exactly(tiny, order):
    model, inputs, dense = tiny
    config = vidaccel.WindowAttentionConfig(kernel=(1, 3, 3))
    vidaccel.accelerate(model, config)
    sparse = _run(model, inputs)
    vidaccel.remove(model)
    if order == "accelerate_then_compile":
        vidaccel.accelerate(model, config)
        compiled = torch.compile(model, backend="eager")
    else:
        compiled = torch.compile(model, backend="eager")
        assert torch.equal(_run(compiled, inputs), dense)
        vidaccel.accelerate(compiled, config)  # was: "does not support OptimizedModule"
    assert torch.equal(_run(compiled, inputs), sparse) and vidaccel.summary(compiled, print_summary=False)["accelerated"]
    vidaccel.remove(compiled)  # was a silent no-op (the state lives on _orig_mod)
    assert not hasattr(model, "_vidaccel_sparse_attention")
    assert torch.equal(_run(compiled, inputs), dense)
    _same(model, inputs, dense)
