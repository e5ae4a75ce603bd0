"""vidaccel's attention backend in diffusers' dispatcher: the private symbols it uses, registration, per-processor
setting, exact removal, errors, and the routing of each family."""

from __future__ import annotations

import inspect

import pytest
import torch
from diffusers.models import attention_dispatch

import vidaccel
from tiny_families import FAMILIES
from tiny_models import family_inputs, wan_pipeline, wan_transformer
from vidaccel.core import attention_backend
from vidaccel.core.adapters import adapter_for
from vidaccel.core.routing import choose_path

SMALL = vidaccel.WindowAttentionConfig(kernel=(1, 3, 3))
GRID = (3, 4, 6)


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs)[0]


def test_the_private_diffusers_symbols_vidaccel_uses_exist():
    """A diffusers release that renames any of these fails here, not silently in a user's pipeline."""
    names, registry = attention_dispatch.AttentionBackendName, attention_dispatch._AttentionBackendRegistry
    for attr in ("_value2member_map_", "_member_map_", "_member_names_"):  # how the member is added
        assert hasattr(names, attr), attr
    assert names.NATIVE.value == "native"
    for attr in ("_backends", "_constraints", "_supported_arg_names", "_supports_context_parallel",
                 "_active_backend", "register", "_is_context_parallel_available"):
        assert hasattr(registry, attr), attr
    dispatch = inspect.signature(attention_dispatch.dispatch_attention_fn).parameters
    assert {"query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa", "backend",
            "parallel_config"} <= set(dispatch)
    templated = inspect.signature(attention_dispatch._templated_context_parallel_attention).parameters
    assert list(templated)[:9] == ["query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale",
                                   "enable_gqa", "return_lse"]
    assert {"forward_op", "backward_op", "_parallel_config"} <= set(templated)
    model = wan_transformer()
    processor = model.blocks[0].attn1.processor
    assert hasattr(type(processor), "_attention_backend") and hasattr(type(processor), "_parallel_config")
    assert hasattr(model, "_parallel_config")  # where enable_parallelism records the config


def test_register_is_idempotent_and_visible_to_diffusers():
    member = attention_backend.register()
    assert attention_backend.register() is member
    assert attention_dispatch.AttentionBackendName("vidaccel") is member
    assert member in attention_dispatch.AttentionBackendName.__members__.values()
    registry = attention_dispatch._AttentionBackendRegistry
    assert registry._backends[member] is attention_backend.vidaccel_attention
    assert registry._is_context_parallel_available(member)  # Ulysses hands it the whole sequence
    assert "_parallel_config" in registry._supported_arg_names[member]


def test_backend_is_set_per_self_attention_processor_and_removed_exactly():
    model = wan_transformer()
    inputs = family_inputs("wan", grid=GRID)
    dense = _run(model, inputs)
    processors = {name: dict(m.processor.__dict__) for name, m in model.named_modules() if hasattr(m, "processor")}
    active = attention_dispatch._AttentionBackendRegistry._active_backend
    vidaccel.accelerate(model, SMALL)
    _run(model, inputs)
    member = attention_backend.register()
    assert all(block.attn1.processor._attention_backend is member for block in model.blocks)
    assert all(block.attn2.processor._attention_backend is None for block in model.blocks)  # cross-attention: untouched
    assert attention_dispatch._AttentionBackendRegistry._active_backend is active  # no process-wide change
    vidaccel.remove(model)
    assert {name: dict(m.processor.__dict__) for name, m in model.named_modules()
            if hasattr(m, "processor")} == processors
    assert attention_backend.CHANNEL.route is None
    assert torch.equal(_run(model, inputs), dense)


def test_dense_layers_keep_the_backend_the_processor_had():
    """A processor that had its own backend: dense layers (the warm-up) dispatch to it, and remove restores it."""
    model = wan_transformer()
    inputs = family_inputs("wan", grid=GRID)
    math = attention_dispatch.AttentionBackendName._NATIVE_MATH
    for block in model.blocks:
        block.attn1.processor._attention_backend = math
    dense = _run(model, inputs)
    seen = []
    real = attention_dispatch._AttentionBackendRegistry._backends[math]

    def spy(*args, **kwargs):
        seen.append(1)
        return real(*args, **kwargs)

    attention_dispatch._AttentionBackendRegistry._backends[math] = spy
    try:
        vidaccel.accelerate(model, vidaccel.WindowAttentionConfig(kernel=(1, 3, 3), dense_layers=1))
        out = _run(model, inputs)
        assert len(seen) == 1  # layer 0 (dense) on its own backend, layer 1 on vidaccel's
        assert not torch.equal(out, dense)
        vidaccel.remove(model)
    finally:
        attention_dispatch._AttentionBackendRegistry._backends[math] = real
    assert all(block.attn1.processor.__dict__ == {"_attention_backend": math} for block in model.blocks)
    assert torch.equal(_run(model, inputs), dense)


def test_an_error_inside_attention_leaves_the_pipeline_working(monkeypatch):
    pipe = wan_pipeline()
    kw = dict(prompt="a red circle", height=32, width=48, num_frames=5, num_inference_steps=2, output_type="pt")
    reference = pipe(**kw, generator=torch.Generator().manual_seed(0)).frames
    vidaccel.accelerate(pipe, vidaccel.WindowAttentionConfig(kernel=(1, 3, 3)))
    sparse = pipe(**kw, generator=torch.Generator().manual_seed(0)).frames
    from vidaccel.sparse import route

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(route, "sparse_attention", broken)
        with pytest.raises(RuntimeError, match="simulated"):
            pipe(**kw, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pipe(**kw, generator=torch.Generator().manual_seed(0)).frames, sparse)  # still accelerated
    vidaccel.remove(pipe)
    assert torch.equal(pipe(**kw, generator=torch.Generator().manual_seed(0)).frames, reference)
    assert all(block.attn1.processor.__dict__ == {} for block in pipe.transformer.blocks)


def test_a_processor_outside_its_transformer_runs_dense():
    """The backend without a route from a transformer call (a processor called directly) is native attention."""
    q, k, v = (torch.randn(1, 6, 2, 8) for _ in range(3))
    attention_backend.CHANNEL.route = None
    out = attention_backend.vidaccel_attention(q, k, v)
    expected = torch.nn.functional.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v))).transpose(1, 2)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_adapters_record_which_path_each_family_takes(name):
    """`ModelAdapter.attention_dispatch` agrees with what the processors really do, and summary reports it."""
    model = FAMILIES[name].build(0)
    adapter = adapter_for(model)
    path = choose_path(model, adapter, adapter.self_attention(model), "sparse_attention")
    assert (path.name == "backend") == adapter.attention_dispatch, path.reason
    vidaccel.accelerate(model, SMALL)
    report = vidaccel.summary(model, print_summary=False)["transformers"][0]
    assert report["attention_path"] == path.name
    assert "attention path: " + ("vidaccel attention backend" if adapter.attention_dispatch else "SDPA swap") \
        in str(vidaccel.summary(model, print_summary=False))
    vidaccel.remove(model)


def test_observers_and_shared_processors_take_the_sdpa_swap():
    model = wan_transformer()
    adapter = adapter_for(model)
    modules = adapter.self_attention(model)
    assert choose_path(model, adapter, modules, "profiler").name == "sdpa_swap"
    assert choose_path(model, adapter, modules, "freeswim").name == "sdpa_swap"
    model.set_attn_processor(type(model.blocks[0].attn1.processor)())  # one instance for self- and cross-attention
    path = choose_path(model, adapter, modules, "sparse_attention")
    assert path.name == "sdpa_swap" and "shared" in path.reason
    inputs = family_inputs("wan", grid=GRID)
    dense = _run(model, inputs)
    vidaccel.accelerate(model, SMALL)
    assert not torch.equal(_run(model, inputs), dense)  # still sparse, through the swap
    vidaccel.remove(model)
    assert torch.equal(_run(model, inputs), dense)
