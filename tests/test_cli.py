"""The console script through its real entry point."""

import pathlib
import subprocess
import sys



def _vidaccel(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "vidaccel.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_subcommands():
    result = _vidaccel("--help")
    assert result.returncode == 0 and "demo" in result.stdout


def test_demo_runs_on_cpu_and_remove_is_exact():
    result = _vidaccel("demo", "--height", "64", "--width", "64", "--frames", "9", "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert "remove() exact: True" in result.stdout and "radial" in result.stdout


def test_bad_choice_exits_nonzero():
    result = _vidaccel("demo", "--accel", "nope")
    assert result.returncode != 0 and "invalid choice" in result.stderr


def test_diffusers_imports_from_the_repository_root():
    """From a checkout's root `import kernels` finds our folder; transformers probes it at import time."""
    code = "import diffusers; from diffusers import WanTransformer3DModel; print('ok')"
    root = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
