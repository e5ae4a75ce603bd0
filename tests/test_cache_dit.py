"""cache-dit (``cache_dit.enable_cache``, block caching) stacked with vidaccel's sparse attention on a tiny Wan
pipeline, in a separate process (`cache_dit_worker.py`: cache-dit patches the pipeline class). Skipped without
cache-dit (``pip install "vidaccel[cache-dit]"``).

cache-dit first, then vidaccel: both run (cache-dit caches steps, vidaccel's attention is sparse in the blocks it
computes) and either removal order is exact. vidaccel first, then cache-dit: cache-dit wraps the hooked forward,
which it cannot unwrap; vidaccel refuses the next call with the order that works, and removing both still
restores the pipeline.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

TESTS = pathlib.Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(importlib.util.find_spec("cache_dit") is None,
                                reason="cache-dit is not installed (pip install 'vidaccel[cache-dit]')")


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache_dit") / "result.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(TESTS / "cache_dit_worker.py"), str(out)], capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def test_each_alone_changes_the_output(seen):
    assert seen["sparse_vs_reference"] > 1e-3 and seen["cached_vs_reference"] > 1e-3
    assert seen["cached_steps"] > 0 and seen["after_cache_dit_alone_equal"]


@pytest.mark.parametrize("removal", ["remove_vidaccel_first", "remove_cache_dit_first"])
def test_cache_dit_then_vidaccel_runs_and_removes_exactly_in_either_order(seen, removal):
    entry = seen["orders"][removal]
    assert entry["finite"] and entry["cached_steps"] > 0
    assert entry["attention_path"] == "backend" and entry["sparse_calls"] > 0
    assert entry["both_vs_sparse"] < 1.0  # cache-dit's approximation on top of sparse attention: still an image
    assert entry["after_first_equals_the_other_alone"] and entry["after_both_equal_reference"]
    assert entry["leaves"] == seen["cache_dit_leaves"]  # nothing of vidaccel's left (cache-dit's own leftovers)


def test_vidaccel_then_cache_dit_is_refused_with_the_order_that_works(seen):
    assert seen["refused"] is not None and "Enable cache-dit first" in seen["refused"]
    assert "vidaccel.remove(pipe), then cache_dit.disable_cache(pipe)" in seen["refused"]
    assert seen["after_refusal_equal_reference"] and seen["after_refusal_leaves"] == seen["cache_dit_leaves"]
