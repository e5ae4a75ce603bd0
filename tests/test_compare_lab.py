"""`vidaccel compare` as the quality lab drives it: diffusers' caches, rows at 2x the model's size
(direct, upsample + refine, FreeSwim) and the columns pixel check, flicker, clip time per step and
attention-FLOP fraction, on the shipped tiny model (2 steps, 5 frames, 32x32 -> 64x64)."""

import contextlib
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest

from vidaccel import cli
from vidaccel.cli import config_files
from vidaccel.report.video import read_mp4

PROMPT = "a red circle moving right on a blue background"
SWEEP = """configs:
  - {name: window-small, type: window, kernel: [1, 3, 3]}
  - {name: fbc, diffusers_cache: first_block, threshold: 100.0}
  - {name: mag, diffusers_cache: mag, calibrate: true, threshold: 0.5, retention_ratio: 0.0}
  - {name: refine, upscale: refine}
  - {name: freeswim, upscale: freeswim, cache_steps: 2}
"""
STEPS, LAYERS = 2, 8  # the tiny model has 8 blocks


def _parse(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return config_files.accel_configs([str(path)])


# ------------------------------------------------------------------------------ parsing, no model


def test_upscale_entries_and_their_baselines(tmp_path):
    window, refine, fs, radial2x = _parse(tmp_path, """configs:
  - {name: w, type: window, kernel: [3, 3, 3]}
  - {name: refine, upscale: refine, strength: 0.6, base_steps: 4}
  - {name: fs, upscale: freeswim, cache_steps: 5, full_attention: {dense_steps: 0}, kv_cache: true}
  - {name: radial-2x, type: radial, size: [128, 128]}
""")
    assert refine.upscale.mode == "refine" and refine.upscale.strength == 0.6 and refine.upscale.base_steps == 4
    config = fs.upscale.config((64, 64))
    assert config.base_size == (64, 64) and config.cache_steps == 5 and config.full_attention.dense_steps == 0
    assert fs.kv_cache == {} and fs.describe()["upscale"]["full_attention"] == {"dense_steps": 0}
    confs = config_files.with_baselines([window, refine, fs, radial2x], 64, 64)
    assert [c.name for c in confs] == ["baseline", "w", "baseline-128x128", "refine", "fs", "radial-2x"]
    assert [c.reference for c in confs] == [None, "baseline", None, "baseline-128x128", "baseline-128x128",
                                            "baseline-128x128"]
    assert confs[2].is_baseline and confs[2].describe()["baseline"] is True and confs[2].size == (128, 128)
    assert "size" not in confs[1].describe() and confs[3].describe()["size"] == [128, 128]  # upscale: 2x by default
    assert confs[0].describe() == {"name": "baseline", "type": "dense", "source": "dense attention"}
    with pytest.raises(ValueError, match="'baseline-128x128'.*compare adds"):
        config_files.with_baselines([dataclass_named("baseline-128x128", window), refine], 64, 64)


def dataclass_named(name, named):
    import dataclasses

    return dataclasses.replace(named, name=name)


def test_block_reuse_budgets_from_one_profile(tmp_path):
    from vidaccel.caches.profile_io import BlockStats, ModelProfile, Profile

    blocks = [BlockStats(i, f"blocks.{i}", "foreground", r) for i, r in enumerate([0.4, 0.1, 0.3, 0.2])]
    Profile(run={}, foreground={}, tau={"value": 0.0, "method": "otsu", "detail": ""},
            models=[ModelProfile("transformer", "WanTransformer3DModel", "0" * 16, 4, [2, 2, 2], blocks)]
            ).save(tmp_path / "lab.json")
    half, most = _parse(tmp_path, """configs:
  - {name: reuse-0.5, block_reuse: {profile: lab.json, tau: "background:0.5"}}
  - {name: radial-reuse-0.75, type: radial, block_reuse: {profile: lab.json, tau: "background:0.75"}}
""")
    assert half.block_reuse.profile.models[0].background_blocks == [1, 3]  # the two lowest R
    assert most.block_reuse.profile.models[0].background_blocks == [1, 2, 3] and most.config is not None
    assert half.describe()["block_reuse"]["tau"] == "background:0.5"
    with pytest.raises(ValueError, match="'block_reuse.tau' = 'background:2'"):
        _parse(tmp_path, "{block_reuse: {profile: lab.json, tau: 'background:2'}}\n")
    with pytest.raises(ValueError, match="'block_reuse.tau' classifies a profile's blocks"):
        _parse(tmp_path, "{block_reuse: {background_blocks: [1], tau: otsu}}\n")


@pytest.mark.parametrize("text, expected", [
    ("{upscale: upsample}", ["'upscale' is 'upsample'", "refine, freeswim"]),
    ("{upscale: refine, cache_steps: 2}", ["'cache_steps' is a FreeSwim setting", "upscale: freeswim"]),
    ("{upscale: freeswim, strength: 1.5}", ["key 'strength' = 1.5", "(0, 1]"]),
    ("{upscale: freeswim, cache_steps: 0}", ["key 'cache_steps' = 0", "cache_steps"]),
    ("{upscale: freeswim, full_attention: window}", ["key 'full_attention'", "'dense', 'radial'"]),
    ("{upscale: freeswim, full_attention: {decay: 0.5}}", ["'decay' is none of them", "decay_factor"]),
    ("{upscale: freeswim, cache_step: 2}", ["unknown key 'cache_step' for upscale freeswim", "cache_steps"]),
    ("{name: r, type: radial, size: 512}", ["key 'size' = 512", "[height, width]"]),
    ("{size: [512, 512]}", ["missing key 'type'", "baseline there"]),
    ("{upscale: freeswim, diffusers_cache: first_block}", ["'upscale' and 'diffusers_cache' do not combine"]),
])
def test_invalid_upscale_entries_name_the_key(tmp_path, text, expected):
    with pytest.raises(ValueError) as err:
        _parse(tmp_path, text + "\n")
    assert all(e in str(err.value) for e in expected), str(err.value)


@pytest.mark.parametrize("text, pair", [
    ("{upscale: freeswim, type: radial}", {"sparse_attention", "freeswim"}),
    ("{upscale: refine, type: window}", {"sparse_attention", "freeswim"}),
])
def test_upscale_combinations_the_feature_table_refuses_fail_at_parse_time(tmp_path, text, pair):
    from vidaccel.core import features

    with pytest.raises(features.FeatureConflictError) as err:
        _parse(tmp_path, text + "\n")
    assert features.CONFLICTS[frozenset(pair)] in str(err.value)


def test_freeswim_with_block_reuse_parses_as_one_stacked_entry(tmp_path):
    (entry,) = _parse(tmp_path, "{name: fs-reuse, upscale: freeswim, cache_steps: 2, "
                                "block_reuse: {background_blocks: [1], interval: 3}}\n")
    assert entry.upscale.mode == "freeswim" and entry.block_reuse.background_blocks == (1,)
    assert entry.block_reuse.interval == 3


def test_commands_that_run_at_one_size_refuse_upscale_entries_before_loading(capsys, tmp_path):
    path = tmp_path / "up.yaml"
    path.write_text("{name: fs, upscale: freeswim}\n")
    for command in (["generate", "x"], ["bench", "pipeline"]):
        assert cli.main([*command, "--model", str(tmp_path / "absent"), "--accel", str(path)]) == 2
        err = capsys.readouterr().err
        assert "'upscale' or 'size'" in err and "vidaccel compare" in err and "does not exist" not in err


def test_check_lab_refuses_prompts_outside_the_grammar_before_loading(capsys, tmp_path):
    assert cli.main(["compare", "a fox in the snow", "--check", "lab", "--model", str(tmp_path / "absent"),
                     "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--check lab: prompt 0 'a fox in the snow' is not a lab caption" in err and "does not exist" not in err


# ------------------------------------------------------------------ one comparison on the tiny model


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from vidaccel.tiny import check, tiny_model_path

    root = tmp_path_factory.mktemp("lab")
    (root / "sweep.yaml").write_text(SWEEP)
    seen, real = [], check.check_scene

    def spy(frames, scene):  # what compare handed to the pixel check, and what it said
        result = real(frames, scene)
        seen.append(np.array(frames, copy=True))
        return result

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(check, "check_scene", spy)
        code = cli.main(["compare", PROMPT, "--model", str(tiny_model_path()), "--height", "32", "--width", "32",
                         "--frames", "5", "--steps", str(STEPS), "--warmup", "0", "--repeats", "1", "--no-progress",
                         "--accel", str(root / "sweep.yaml"), "--out", str(root / "report")])
    assert code == 0, printed.getvalue()
    out = root / "report"
    data = json.loads((out / "results.json").read_text())
    runs = {r["config"]: r for r in data["runs"]}
    rows = {r["config"]: r for r in data["per_configuration"]}
    return SimpleNamespace(out=out, data=data, runs=runs, rows=rows, seen=seen, printed=printed.getvalue())


def test_rows_at_twice_the_size_are_compared_with_direct_generation_there(lab):
    assert [c["name"] for c in lab.data["configurations"]] == [
        "baseline", "window-small", "fbc", "mag", "baseline-64x64", "refine", "freeswim"]
    for name in ("baseline", "window-small", "fbc", "mag"):
        assert lab.rows[name]["reference"] == "baseline" and lab.runs[name]["size"] == [32, 32]
        assert read_mp4(lab.out / lab.runs[name]["video"]).shape == (5, 32, 32, 3)
    for name in ("baseline-64x64", "refine", "freeswim"):
        assert lab.rows[name]["reference"] == "baseline-64x64" and lab.runs[name]["size"] == [64, 64]
        assert read_mp4(lab.out / lab.runs[name]["video"]).shape == (5, 64, 64, 3)
    assert lab.rows["baseline-64x64"]["baseline"] and lab.rows["baseline-64x64"]["speedup"] == 1.0
    direct = np.load(lab.out / "frames" / "baseline-64x64_p0_s0.npy")
    assert direct.shape == (5, 64, 64, 3)
    for name in ("refine", "freeswim"):  # quality and speed-up against the direct 2x run, not the 32x32 one
        row, run = lab.rows[name], lab.runs[name]
        assert run["quality"]["psnr"] < 60 and 0 < row["speedup"] and row["speedup_pairs"] == 1
        pair = lab.runs["baseline-64x64"]["rounds"][0]["wall_s"] / run["rounds"][0]["wall_s"]
        assert row["speedup"] == pytest.approx(pair)
        assert run["steps_run"] == STEPS + int(STEPS * 0.7)  # base generation + refinement (strength 0.7)
    assert "FreeSwim on WanTransformer3DModel" in lab.runs["freeswim"]["summary"]
    assert "rows at 64x64 against the dense run at 64x64" in lab.printed


def test_check_column_is_check_scene_on_each_clip(lab):
    from vidaccel.tiny.captions import parse_caption
    from vidaccel.tiny.check import check_scene

    scene = parse_caption(PROMPT)
    assert lab.data["settings"]["check"] == "lab" and len(lab.seen) == len(lab.data["runs"])
    for frames, run in zip(lab.seen, lab.data["runs"]):  # one check per run, in the order the runs finished
        passed, failures, meas = check_scene(frames, scene)
        assert run["check"] == {"passed": passed, "failures": failures, "extra_objects": meas["extra_objects"]}
        row = lab.rows[run["config"]]
        assert (row["check_passed"], row["check_total"], row["extra_objects"]) == (int(passed), 1,
                                                                                   meas["extra_objects"])
    for name, frames in zip(("baseline", "baseline-64x64"), (lab.seen[0], lab.seen[4])):  # the clips themselves
        assert np.array_equal(frames, np.load(lab.out / "frames" / f"{name}_p0_s0.npy"))
    md = (lab.out / "results.md").read_text()
    cell = f"| {lab.rows['fbc']['check_passed']}/1 |"
    assert "| check | extra objects |" in md and cell in md and "check_scene" in md
    assert f">{lab.rows['fbc']['check_passed']}/1<" in (lab.out / "report.html").read_text()


def test_attention_flop_fraction_counts_what_ran(lab):
    r = {name: run["attention_flop_fraction"] for name, run in lab.runs.items()}
    assert r["baseline"] == 1.0 and r["baseline-64x64"] == 1.0
    # the window runs at its token density in every call (no dense warm-up steps)
    assert 0 < lab.runs["window-small"]["density"] < 1 and r["window-small"] == pytest.approx(
        lab.runs["window-small"]["density"])
    # FirstBlockCache with a huge threshold: step 1 runs block 0 only, per branch (8 + 1) of 2 x 8
    assert r["fbc"] == pytest.approx((LAYERS + 1) / (2 * LAYERS))
    # MagCache, no retention, a huge threshold: step 1 skips every block
    assert r["mag"] == pytest.approx(0.5)
    # per call at 32x32 a quarter of the tokens of 64x64, so 1/16 of the pairs; the dense run at 64x64 makes
    # STEPS x 2 branches x LAYERS calls. refine: every base-size call, then 1 refinement step at 64x64
    dense = 2 * STEPS * LAYERS
    assert r["refine"] == pytest.approx((dense / 16 + 2 * LAYERS) / dense)
    # FreeSwim: the same base stage; in the refinement step the window branch (cond + uncond) at the window's
    # token density (a 2x2-token window of the 4x4-token frame), the full branch (cond, a guide step) dense
    window = 0.25
    assert "window token density 25.0%" in lab.runs["freeswim"]["summary"]
    assert r["freeswim"] == pytest.approx((dense / 16 + 2 * LAYERS * window + LAYERS) / dense)
    assert lab.rows["mag"]["attention_flop_fraction"] == pytest.approx(0.5)
    assert "attention FLOPs" in lab.printed and "50.0%" in lab.printed


def test_time_per_step_and_flicker(lab):
    from vidaccel.metrics import flicker

    for name, run in lab.runs.items():
        x = run["rounds"][0]
        assert x["steps"] == run["steps_run"] and lab.rows[name]["clip_step_s"] == pytest.approx(x["wall_s"] / x["steps"])
    base = {"baseline": np.load(lab.out / "frames" / "baseline_p0_s0.npy"),
            "baseline-64x64": np.load(lab.out / "frames" / "baseline-64x64_p0_s0.npy")}
    for name in ("window-small", "fbc", "refine"):
        q = lab.runs[name]["quality"]
        reference = base[lab.rows[name]["reference"]]
        assert q["flicker_ratio"] == pytest.approx(q["flicker"] / flicker(reference))
        assert q["flicker_delta"] == pytest.approx(q["flicker"] - flicker(reference))
    assert "clip ÷ steps" in lab.printed and "flicker Δ (x dense)" in lab.printed


def test_magcache_ratios_are_calibrated_once_and_recorded(lab):
    ratios = lab.data["calibrations"]["mag"]
    assert len(ratios) == STEPS and ratios[0] == 1.0
    assert "mag: MagCache ratios calibrated on prompt 0, seed 0" in lab.printed
    assert "calibrated on this model" in lab.runs["mag"]["summary"]
    assert lab.data["configurations"][3]["diffusers_cache"] == {"kind": "mag", "calibrate": True, "threshold": 0.5,
                                                                "retention_ratio": 0.0}


def test_the_lab_sweep_file_parses_into_every_row(tmp_path):
    """benchmarks/configs/lab_sweep.yaml (a stand-in profile where the real one will be)."""
    import shutil
    from pathlib import Path

    from vidaccel.caches.profile_io import BlockStats, ModelProfile, Profile

    sweep = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "lab_sweep.yaml"
    shutil.copy(sweep, tmp_path / "lab_sweep.yaml")
    blocks = [BlockStats(i, f"blocks.{i}", "foreground", 0.1 * i) for i in range(8)]
    Profile(run={}, foreground={}, tau={"value": 0.0, "method": "otsu", "detail": ""},
            models=[ModelProfile("transformer", "WanTransformer3DModel", "0" * 16, 8, [9, 16, 16], blocks)]
            ).save(tmp_path / "lab_wan_256.json")
    confs = config_files.with_baselines(config_files.accel_configs([str(tmp_path / "lab_sweep.yaml")]), 256, 256)
    kinds = {c.name: c for c in confs}
    assert kinds["baseline-512x512"].is_baseline and kinds["baseline-512x512"].size == (512, 512)
    upscale = [c for c in confs if c.upscale is not None]
    assert len(upscale) == 7 and all(c.reference == "baseline-512x512" for c in upscale)
    assert {c.diffusers_cache.kind for c in confs if c.diffusers_cache} == {"first_block", "mag", "taylorseer", "pab"}
    stacked = kinds["radial-reuse-0.75"]
    assert stacked.config is not None and stacked.kv_cache == {} and stacked.block_reuse.profile.tau["method"] == \
        "background:0.75"
    assert all(c.reference == "baseline" for c in confs if c.size is None and not c.is_baseline)
