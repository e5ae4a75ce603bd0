"""`vidaccel generate | compare | bench` through the real entry point on a tiny saved Wan pipeline.

The pipeline is random-weight (tests/tiny_models.py), written with ``save_pretrained`` and loaded
back through ``--model PATH`` exactly as a user's folder would be. Sizes are the smallest the Wan
VAE accepts so the whole file stays within a few tens of seconds on 2 cores.
"""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tiny_models import wan_pipeline
from vidaccel import cli
from vidaccel.report.video import read_mp4

SMALL = ["--height", "32", "--width", "32", "--frames", "5", "--steps", "2", "--no-progress"]
RADIAL_TINY = "{name: radial-tiny, type: radial, block_size: 8, dense_steps: 1, dense_layers: 0}\n"


def _vidaccel(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "vidaccel.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-wan-random")
    wan_pipeline(seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def radial_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("configs") / "radial-tiny.yaml"
    path.write_text(RADIAL_TINY)
    return path


def test_generate_writes_playable_mp4s_with_a_config_file(model_dir, radial_file, tmp_path):
    out = tmp_path / "clips" / "out.mp4"
    result = _vidaccel("generate", "a red circle moving right", "--model", model_dir, *SMALL, "--seed", "0", "1",
                       "--accel", radial_file, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "acceleration: radial-tiny" in result.stdout and "radial" in result.stdout  # summary printed
    paths = [out.with_name("out_00_s0.mp4"), out.with_name("out_00_s1.mp4")]
    videos = [read_mp4(p) for p in paths]
    assert all(v.shape == (5, 32, 32, 3) for v in videos)
    assert not np.array_equal(videos[0], videos[1])  # different seeds, different clips


def _main(capsys, *args):
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


def _wait_for_runs(path, count, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(json.loads(path.read_text())["runs"]) >= count:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    return False


def test_compare_interrupted_keeps_finished_runs_and_resume_completes(capsys, model_dir, radial_file, tmp_path):
    out = tmp_path / "report"
    # more steps than elsewhere so the interrupt lands inside a run, not after the last one
    args = ["compare", "a red circle moving right", "--model", model_dir, "--height", "32", "--width", "32",
            "--frames", "5", "--steps", "6", "--no-progress", "--warmup", "0", "--accel", radial_file,
            "--accel", "window", "--out", out]
    # default SIGINT in the child: a test run started in the background (`cmd &` in a script) inherits
    # SIGINT ignored, Python then never raises KeyboardInterrupt, and the comparison finishes (exit 0)
    proc = subprocess.Popen([sys.executable, "-m", "vidaccel.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert _wait_for_runs(out / "results.json", 1, proc), "the baseline run was never recorded"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (stdout, stderr)
    assert "--resume" in stdout and "Traceback" not in stderr
    partial = json.loads((out / "results.json").read_text())
    assert 1 <= len(partial["runs"]) < 3 and partial["complete"] is False
    assert (out / "report.html").is_file() and "incomplete" in (out / "results.md").read_text()

    again = _main(capsys, *args)  # without --resume the recorded comparison is protected
    assert again[0] == 2 and "--resume" in again[1]

    resumed = _vidaccel(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    data = json.loads((out / "results.json").read_text())
    assert data["complete"] is True and len(data["runs"]) == 3
    key = lambda r: (r["config"], r["prompt_index"], r["seed"])  # noqa: E731
    for old in partial["runs"]:  # finished runs and their timed rounds kept, not redone
        new = next(r for r in data["runs"] if key(r) == key(old))
        assert new["rounds"][: len(old["rounds"])] == old["rounds"]
        assert (new["video"], new["quality"]) == (old["video"], old["quality"])
    assert data["rounds_planned"] >= 1 and all(len(r["rounds"]) == data["rounds_planned"] for r in data["runs"])
    orders = sorted(x["order"] for r in data["runs"] for x in r["rounds"])
    assert orders == list(range(len(orders)))  # one sequence across the interrupted and the resumed process
    rows = {r["config"]: r for r in data["per_configuration"]}
    assert set(rows) == {"baseline", "radial-tiny", "window"}
    for name in ("radial-tiny", "window"):
        assert rows[name]["speedup"] > 0 and rows[name]["ssim"] <= 1.0
        assert rows[name]["psnr"] == "inf" or rows[name]["psnr"] > 0
    changed = _main(capsys, *args, "--resume", "--seed", "3")
    assert changed[0] == 2 and "'seeds' differs" in changed[1]


def test_bench_attention_and_pipeline(capsys, model_dir, radial_file, tmp_path):
    out = tmp_path / "bench.json"
    result = _vidaccel("bench", "attention", "--grid", "3", "4", "4", "--heads", "2", "--head-dim", "16",
                       "--repeats", "1", "--accel", radial_file, "--accel", "window", "--out", out)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["config"] for r in rows] == ["dense SDPA", "radial-tiny", "window"]
    assert all(r["median_ms"] > 0 and 0 < r["density"] <= 1 for r in rows)
    code = cli.main(["bench", "pipeline", "a red circle", "--model", str(model_dir), *SMALL, "--repeats", "1",
                     "--accel", str(radial_file)])
    stdout = capsys.readouterr().out
    assert code == 0 and "baseline" in stdout and "radial-tiny" in stdout


def test_help_has_examples_for_every_command():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("generate", "compare", "bench"):
        text = sub.choices[name].format_help()
        assert "examples:" in text and f"vidaccel {name}" in text and "--device" in text


# ------------------------------------------------------------------------------------------- errors


def test_missing_model_is_one_clear_line_and_debug_shows_the_traceback(tmp_path):
    missing = tmp_path / "nope"
    result = _vidaccel("generate", "a red circle", "--model", missing)
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(FileNotFoundError, match="does not exist"):  # --debug: the exception propagates
        cli.main(["generate", "a red circle", "--model", str(missing), "--debug"])


def test_folder_that_is_not_a_pipeline(capsys, tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    code, err = _main(capsys, "generate", "x", "--model", tmp_path)
    assert code == 2 and "no model_index.json" in err


def test_pipeline_without_a_supported_transformer(capsys, tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8,), layers_per_block=1,
                       down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=4)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path)
    code, err = _main(capsys, "generate", "x", "--model", tmp_path)
    assert code == 2 and "DDPMPipeline" in err and "WanTransformer3DModel" in err


def test_unknown_preset_lists_the_presets(capsys):
    code, err = _main(capsys, "compare", "x", "--accel", "turbo")
    assert code == 2 and "unknown preset 'turbo'" in err and "radial, tile_window, window" in err


@pytest.mark.parametrize("text, key", [
    ("{type: radial, dense_stepz: 2}\n", "'dense_stepz'"),
    ("{type: window, kernel: [3, -1, 3]}\n", "'kernel'"),
    ("{type: radial, dense_steps: -2}\n", "'dense_steps'"),
    ("configs:\n  - {type: radial}\n  - {type: sparse}\n", "configs[1]"),
    ("{decay_factor: 0.2}\n", "'type'"),
    ("{type: radial, kv_cache: maybe}\n", "'kv_cache'"),
    ("{block_reuse: {profile: missing.json}}\n", "'block_reuse.profile'"),
    ("{block_reuse: {background_blocks: [1], intervall: 2}}\n", "'block_reuse.intervall'"),
])
def test_invalid_config_file_names_the_key(capsys, tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, err = _main(capsys, "generate", "x", "--accel", path)
    assert code == 2 and key in err and "bad.yaml" in err, err


def test_json_config_file_and_unique_names(capsys, tmp_path):
    from vidaccel.cli import config_files

    path = tmp_path / "w.json"
    path.write_text(json.dumps({"type": "window", "kernel": [3, 5, 5], "dense_steps": 1}))
    (config,) = config_files.parse_accel(str(path))
    assert config.name == "w" and config.config.kernel == (3, 5, 5) and config.config.dense_steps == 1
    code, err = _main(capsys, "compare", "x", "--accel", path, "--accel", path)
    assert code == 2 and "used twice" in err


def test_out_of_memory_suggests_smaller_sizes_or_offload(capsys, model_dir, monkeypatch, tmp_path):
    from diffusers import WanPipeline

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(WanPipeline, "__call__", oom)
    code, err = _main(capsys, "generate", "x", "--model", model_dir, *SMALL, "--out", tmp_path / "o.mp4")
    assert code == 2 and "out of memory" in err
    assert "--height/--width" in err and "--frames" in err and "--offload model" in err and "Traceback" not in err


def test_kv_cache_configuration_is_exact_through_generate(capsys, model_dir, tmp_path):
    """A caches-only configuration file: the K/V cache is exact, so the video equals the dense one."""
    path = tmp_path / "kv.yaml"
    path.write_text("{name: kv, kv_cache: {max_prompts: 2}}\n")
    dense, cached = tmp_path / "dense.mp4", tmp_path / "kv.mp4"
    assert cli.main(["generate", "a red circle", "--model", str(model_dir), *SMALL, "--out", str(dense)]) == 0
    assert cli.main(["generate", "a red circle", "--model", str(model_dir), *SMALL, "--out", str(cached),
                     "--accel", str(path)]) == 0
    out = capsys.readouterr().out
    assert "acceleration: kv" in out and "K/V cache" in out
    assert np.array_equal(read_mp4(dense), read_mp4(cached))


def test_config_file_combining_attention_and_block_reuse(tmp_path):
    from vidaccel.cli import config_files

    path = tmp_path / "combo.yaml"
    path.write_text("configs:\n  - {name: combo, type: radial, block_size: 8, kv_cache: true,\n"
                    "     block_reuse: {background_blocks: [1], warmup_steps: 1, interval: 2}}\n")
    (named,) = config_files.accel_configs([str(path)])
    assert named.config.block_size == 8 and named.kv_cache == {} and named.block_reuse.background_blocks == (1,)
    described = json.loads(json.dumps(named.describe()))  # goes into results.json as is
    assert described["block_reuse"]["interval"] == 2 and described["kv_cache"] == {}
    assert not named.is_baseline


def test_default_model_is_the_tiny_model_folder(capsys, model_dir, monkeypatch, tmp_path):
    """Without --model the shipped tiny model is used (found through VIDACCEL_TINY_MODEL here)."""
    monkeypatch.setenv("VIDACCEL_TINY_MODEL", str(model_dir))
    out = tmp_path / "default.mp4"
    assert cli.main(["generate", "a red circle", *SMALL, "--out", str(out)]) == 0
    assert f"model {model_dir} " in capsys.readouterr().out and read_mp4(out).shape == (5, 32, 32, 3)
    monkeypatch.setenv("VIDACCEL_TINY_MODEL", str(tmp_path / "absent"))
    code, err = _main(capsys, "generate", "a red circle", *SMALL)
    assert code == 2 and "no --model given" in err and "--model PATH" in err


def test_device_and_offload_options_are_checked_before_loading(capsys, model_dir):
    code, err = _main(capsys, "generate", "x", "--model", model_dir, "--offload", "model", "--device", "cpu")
    assert code == 2 and "needs --device cuda" in err
    if not torch.cuda.is_available():
        code, err = _main(capsys, "generate", "x", "--model", model_dir, "--device", "cuda")
        assert code == 2 and "CUDA is not available" in err
    code, err = _main(capsys, "generate", "x", "--model", model_dir, "--frames", "0")
    assert code == 2 and "argument --frames: expected a positive integer" in err
