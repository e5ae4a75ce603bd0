"""diffusers' caches as config-file entries (vidaccel/cli/diffusers_caches.py): parsing, errors, the
feature table's refusals at parse time, and exact apply/remove on a tiny random Wan pipeline."""

import numpy as np
import pytest
import torch

import vidaccel
from tiny_models import wan_pipeline
from vidaccel.cli import config_files
from vidaccel.core import features
from vidaccel.core.features import FeatureConflictError

STEPS = 3


def _parse(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return config_files.accel_configs([str(path)])


@pytest.fixture(scope="module")
def pipe():
    p = wan_pipeline(seed=0)
    p.set_progress_bar_config(disable=True)
    return p


def _run(pipe, runner=None):
    """Float frames (not uint8: a small change must not round away), through what `applied` yields."""
    return (runner or pipe)("a red circle", height=32, width=32, num_frames=5, num_inference_steps=STEPS,
                            guidance_scale=5.0, generator=torch.Generator().manual_seed(0), output_type="np").frames


def _attributes(model):
    return {name: set(m.__dict__) for name, m in model.named_modules()}


def test_entries_map_onto_diffusers_config_classes(tmp_path, pipe):
    from diffusers.hooks import (FirstBlockCacheConfig, MagCacheConfig, PyramidAttentionBroadcastConfig,
                                 TaylorSeerCacheConfig)

    fbc, mag, taylor, pab = _parse(tmp_path, """configs:
  - {name: fbc-0.1, diffusers_cache: first_block, threshold: 0.1}
  - {name: mag, diffusers_cache: mag, threshold: 0.04, max_skip_steps: 2, retention_ratio: 0.3, mag_ratios: [1.0, 0.9]}
  - {name: taylor, diffusers_cache: taylorseer, cache_interval: 4, disable_cache_before_step: 2, max_order: 2,
     use_lite_mode: true}
  - {name: pab, diffusers_cache: pab, spatial_attention_block_skip_range: 3, spatial_attention_timestep_skip_range: [50, 900]}
""")
    model = pipe.transformer
    c = fbc.diffusers_cache.config(pipe, model, STEPS)
    assert isinstance(c, FirstBlockCacheConfig) and c.threshold == 0.1 and fbc.is_baseline is False
    c = mag.diffusers_cache.config(pipe, model, STEPS)
    assert isinstance(c, MagCacheConfig) and (c.threshold, c.max_skip_steps, c.retention_ratio) == (0.04, 2, 0.3)
    assert c.num_inference_steps == STEPS and len(c.mag_ratios) == STEPS and not c.calibrate  # interpolated to 3
    c = taylor.diffusers_cache.config(pipe, model, STEPS)
    assert isinstance(c, TaylorSeerCacheConfig) and (c.cache_interval, c.disable_cache_before_step, c.max_order) == (4, 2, 2)
    assert c.use_lite_mode and c.taylor_factors_dtype == model.dtype  # default: the transformer's dtype
    c = pab.diffusers_cache.config(pipe, model, STEPS)
    assert isinstance(c, PyramidAttentionBroadcastConfig) and c.spatial_attention_block_skip_range == 3
    assert c.spatial_attention_timestep_skip_range == (50.0, 900.0) and c.cross_attention_block_skip_range is None
    assert c.current_timestep_callback() == 0  # the pipeline's current_timestep, 0 outside a call
    assert pab.describe()["diffusers_cache"] == {"kind": "pab", "spatial_attention_block_skip_range": 3,
                                                  "spatial_attention_timestep_skip_range": [50.0, 900.0]}


@pytest.mark.parametrize("text, expected", [
    ("{diffusers_cache: fbc}", ["'diffusers_cache' is 'fbc'", "first_block, mag, pab, taylorseer"]),
    ("{diffusers_cache: first_block, treshold: 0.1}", ["unknown key 'treshold'", "valid keys", "threshold"]),
    ("{diffusers_cache: first_block, threshold: -1}", ["key 'threshold' = -1", ">= 0.0"]),
    ("{diffusers_cache: first_block, threshold: yes}", ["key 'threshold' = True"]),
    ("{diffusers_cache: mag, threshold: 0.06}", ["needs calibrated magnitude ratios", "calibrate: true", "mag_ratios"]),
    ("{diffusers_cache: mag, calibrate: true, mag_ratios: [1.0]}", ["not both"]),
    ("{diffusers_cache: mag, mag_ratios: []}", ["key 'mag_ratios'", "non-empty list"]),
    ("{diffusers_cache: mag, calibrate: true, num_inference_steps: 9}", ["'num_inference_steps' is not taken", "--steps"]),
    ("{diffusers_cache: taylorseer, cache_interval: 2.5}", ["key 'cache_interval' = 2.5", "an int >= 1"]),
    ("{diffusers_cache: taylorseer, taylor_factors_dtype: int8}", ["'taylor_factors_dtype'", "float32, bfloat16"]),
    ("{diffusers_cache: taylorseer, cache_identifiers: ['blocks.(']}", ["'cache_identifiers'", "regular expression"]),
    ("{diffusers_cache: pab}", ["pab needs at least one of", "spatial_attention_block_skip_range"]),
    ("{diffusers_cache: pab, spatial_attention_block_skip_range: 2, spatial_attention_timestep_skip_range: [800, 100]}",
     ["'spatial_attention_timestep_skip_range'", "low < high"]),
    ("{type: radial, threshold: 0.1}", ["unknown key 'threshold' for type radial", "diffusers_cache"]),
])
def test_invalid_entries_name_the_key_and_what_is_allowed(tmp_path, text, expected):
    with pytest.raises(ValueError) as err:
        _parse(tmp_path, text + "\n")
    assert all(e in str(err.value) for e in expected), str(err.value)
    assert "c.yaml" in str(err.value)


@pytest.mark.parametrize("text, pair", [
    ("{type: radial, diffusers_cache: pab, spatial_attention_block_skip_range: 2}",
     {"sparse_attention", "diffusers_attention_cache"}),
    ("{type: window, diffusers_cache: taylorseer, use_lite_mode: true}", {"sparse_attention", "diffusers_attention_cache"}),
    ("{block_reuse: {background_blocks: [1]}, diffusers_cache: first_block}", {"block_reuse", "diffusers_cache"}),
    ("{block_reuse: {background_blocks: [1]}, diffusers_cache: mag, calibrate: true}", {"block_reuse", "diffusers_cache"}),
    ("{block_reuse: {background_blocks: [1]}, diffusers_cache: pab, cross_attention_block_skip_range: 2}",
     {"block_reuse", "diffusers_attention_cache"}),
])
def test_combinations_the_feature_table_refuses_fail_at_parse_time(tmp_path, text, pair):
    with pytest.raises(FeatureConflictError) as err:
        _parse(tmp_path, text + "\n")
    assert features.CONFLICTS[frozenset(pair)] in str(err.value) and "c.yaml" in str(err.value)


def test_allowed_combinations_parse(tmp_path):
    (named,) = _parse(tmp_path, "{type: radial, block_size: 8, kv_cache: true, diffusers_cache: first_block}\n")
    assert named.config.block_size == 8 and named.kv_cache == {} and named.diffusers_cache.cache == "FirstBlockCache"


CACHES = {
    "first_block": "{name: fbc, diffusers_cache: first_block, threshold: 0.5}",
    "mag": "{name: mag, diffusers_cache: mag, threshold: 0.5, retention_ratio: 0.0, calibrate: true}",
    "taylorseer": "{name: taylor, diffusers_cache: taylorseer, cache_interval: 2, disable_cache_before_step: 1, "
                  "use_lite_mode: true}",
    "pab": "{name: pab, diffusers_cache: pab, spatial_attention_block_skip_range: 2, "
           "spatial_attention_timestep_skip_range: [0, 1000]}",
    "radial+first_block": "{name: stacked, type: radial, block_size: 8, dense_steps: 0, dense_layers: 0, kv_cache: true, "
                          "diffusers_cache: first_block, threshold: 0.5}",
}


@pytest.mark.parametrize("kind", sorted(CACHES))
def test_apply_changes_the_output_and_removal_is_exact(tmp_path, pipe, kind):
    (named,) = _parse(tmp_path, CACHES[kind] + "\n")
    reference = _run(pipe)  # after a first call: diffusers' cache_context has made the root's registry
    before = _attributes(pipe.transformer)
    named = config_files.calibrated(pipe, named, STEPS, lambda runner: _run(pipe, runner))
    assert _attributes(pipe.transformer) == before  # the calibration run is removed exactly too
    with config_files.applied(pipe, named, steps=STEPS) as runner:
        hooked = [n for n, m in pipe.transformer.named_modules() if getattr(m, "_diffusers_hook", None) and
                  any(not k.startswith("vidaccel") for k in m._diffusers_hook.hooks)]
        cached = _run(pipe, runner)
    assert hooked and not np.array_equal(cached, reference)  # it skipped or approximated something
    assert _attributes(pipe.transformer) == before and "_cache_config" not in pipe.transformer.__dict__
    assert pipe.transformer._cache_config is None
    assert np.array_equal(_run(pipe), reference)


def test_magcache_calibration_reads_one_ratio_per_step(tmp_path, pipe):
    (named,) = _parse(tmp_path, CACHES["mag"] + "\n")
    assert named.diffusers_cache.needs_calibration
    with pytest.raises(RuntimeError, match="calibration run first"):
        named.diffusers_cache.config(pipe, pipe.transformer, STEPS)
    done = config_files.calibrated(pipe, named, STEPS, lambda runner: _run(pipe, runner))
    ratios = done.diffusers_cache.calibrated
    assert len(ratios) == STEPS and ratios[0] == 1.0 and all(r > 0 for r in ratios[1:])
    assert not done.diffusers_cache.needs_calibration
    assert list(done.diffusers_cache.config(pipe, pipe.transformer, STEPS).mag_ratios) == pytest.approx(ratios)
    assert "calibrated on this model" in done.diffusers_cache.summary_line()


def test_taylorseer_patterns_matching_nothing_are_refused_and_nothing_stays(tmp_path, pipe):
    (named,) = _parse(tmp_path, "{diffusers_cache: taylorseer}\n")
    _run(pipe)
    before = _attributes(pipe.transformer)
    with pytest.raises(ValueError, match="hooks no module of WanTransformer3DModel.*use_lite_mode"):
        with config_files.applied(pipe, named, steps=STEPS):
            pass
    assert _attributes(pipe.transformer) == before and pipe.transformer._cache_config is None


def test_refused_at_enable_time_too_when_vidaccel_is_installed(pipe):
    """The runtime guard still holds for a combination built without a config file."""
    from vidaccel.cli.diffusers_caches import DiffusersCache

    named = config_files.NamedConfig("x", vidaccel.RadialAttentionConfig(block_size=8), "test",
                                     diffusers_cache=DiffusersCache("pab", {"spatial_attention_block_skip_range": 2}))
    before = _attributes(pipe.transformer)
    with pytest.raises(FeatureConflictError, match="PyramidAttentionBroadcast"):
        with config_files.applied(pipe, named, steps=STEPS):
            pass
    assert _attributes(pipe.transformer) == before


def test_generate_calibrates_magcache_then_applies_it(capsys, tmp_path, pipe):
    from vidaccel import cli
    from vidaccel.report.video import read_mp4

    pipe.save_pretrained(tmp_path / "model")
    config = tmp_path / "mag.yaml"
    config.write_text("{name: mag, diffusers_cache: mag, calibrate: true, threshold: 0.5, retention_ratio: 0.0}\n")
    out = tmp_path / "mag.mp4"
    assert cli.main(["generate", "a red circle", "--model", str(tmp_path / "model"), "--height", "32", "--width", "32",
                     "--frames", "5", "--steps", "3", "--no-progress", "--accel", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "acceleration: mag" in printed and "MagCacheConfig" in printed and "calibrated on this model" in printed
    assert read_mp4(out).shape == (5, 32, 32, 3)
