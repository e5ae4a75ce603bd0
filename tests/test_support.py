"""supported_models(), the README support table, and registering an adapter for a new architecture."""

from __future__ import annotations

import pathlib

import pytest
import torch

import vidaccel
from tiny_models import family_inputs
from vidaccel.core import adapters
from vidaccel.core.features import FEATURES
from vidaccel.support import support_table_markdown

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_supported_models_rows_come_from_the_adapters():
    rows = vidaccel.supported_models()
    assert len(rows) >= 12 and [r["class"] for r in rows] == sorted(adapters.ADAPTERS)
    keys = {f.key for f in FEATURES} | {"profiler", "context_parallel"}
    for r in rows:
        assert set(r["features"]) == keys and r["features"]["sparse_attention"] and r["pipelines"], r
    wan = next(r for r in rows if r["class"] == "WanTransformer3DModel")
    assert all(wan["features"].values())
    assert set(vidaccel.unsupported_models()) == set(adapters.UNSUPPORTED)


def test_readme_table_matches_supported_models():
    """Regenerate with `python scripts/support_table.py --write`."""
    assert support_table_markdown() in README.read_text()


def _my_model_class():
    from diffusers import WanTransformer3DModel

    class MyVideoTransformer3DModel(WanTransformer3DModel):  # "a new architecture" vidaccel has never seen
        pass

    return MyVideoTransformer3DModel


def _adapter(**kw):
    from vidaccel.core.adapters import attention_in_blocks, grid_from_latents

    fields = dict(
        family="myvideo", class_name="MyVideoTransformer3DModel", text_position="none",
        grid=grid_from_latents(2), self_attention=attention_in_blocks("blocks", attr="attn1"), timestep_position=1,
        cross_attention=attention_in_blocks("blocks", attr="attn2"), text_inputs=(("encoder_hidden_states", 2),),
        pipelines=("MyVideoPipeline",))
    return vidaccel.ModelAdapter(**{**fields, **kw})


def test_register_adapter_makes_a_new_class_work_and_keeps_the_builtin_table():
    builtin = dict(adapters.ADAPTERS)
    torch.manual_seed(0)
    model = _my_model_class()(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                              out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
                              rope_max_seq_len=32).eval()
    inputs = family_inputs("wan", grid=(3, 4, 6), batch=2)
    with torch.no_grad():
        dense = model(**inputs)[0]
    with pytest.raises(TypeError, match="register_adapter"):
        vidaccel.accelerate(model, "window")
    vidaccel.register_adapter(_adapter())
    try:
        assert any(r["class"] == "MyVideoTransformer3DModel" and not r["builtin"] for r in vidaccel.supported_models())
        assert "MyVideoTransformer3DModel" not in support_table_markdown()  # the README lists built-in ones
        vidaccel.accelerate(model, vidaccel.WindowAttentionConfig(kernel=(99, 99, 99)))
        with torch.no_grad():
            whole = model(**inputs)[0]
        vidaccel.remove(model)
        assert (whole - dense).abs().max() <= 1e-5 * dense.abs().max()
        vidaccel.accelerate(model, vidaccel.WindowAttentionConfig(kernel=(1, 3, 3)))
        with torch.no_grad():
            assert (model(**inputs)[0] - dense).abs().max() > 1e-4
        vidaccel.remove(model)
        vidaccel.enable_kv_cache(model)
        vidaccel.disable_kv_cache(model)
        with torch.no_grad():
            assert torch.equal(model(**inputs)[0], dense)
        # duplicates are refused with the fix; replace=True replaces a registered one
        with pytest.raises(ValueError, match="replace=True"):
            vidaccel.register_adapter(_adapter())
        vidaccel.register_adapter(_adapter(notes="v2"), replace=True)
        assert adapters.ADAPTERS["MyVideoTransformer3DModel"].notes == "v2"
    finally:
        vidaccel.unregister_adapter("MyVideoTransformer3DModel")
    assert adapters.ADAPTERS == builtin


def test_register_adapter_refuses_builtin_classes_and_bad_adapters():
    builtin = dict(adapters.ADAPTERS)
    wan = adapters.ADAPTERS["WanTransformer3DModel"]
    with pytest.raises(ValueError, match="built-in adapter.*subclass"):
        vidaccel.register_adapter(wan, replace=True)
    with pytest.raises(ValueError, match="radial_defaults"):
        vidaccel.register_adapter(_adapter(radial_defaults="myvideo"))
    with pytest.raises(TypeError, match="ModelAdapter"):
        vidaccel.register_adapter({"class_name": "X"})
    with pytest.raises(ValueError, match="text_position"):
        _adapter(text_position="middle")
    with pytest.raises(ValueError, match="cannot be removed"):
        vidaccel.unregister_adapter("WanTransformer3DModel")
    assert adapters.ADAPTERS == builtin
