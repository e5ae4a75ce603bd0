"""`vidaccel bench --family`: the names come from `vidaccel.supported_models()`, attention mode takes the family's
radial defaults, and `bench pipeline --model tiny-random --family NAME` builds that family's tiny random-weight
pipeline (`vidaccel.tiny.families`) and times it dense and accelerated."""

from __future__ import annotations

import json

import pytest

import vidaccel
from vidaccel import cli
from vidaccel.cli.commands._options import family_names
from vidaccel.cli.commands.bench import radial_family
from vidaccel.tiny.families import tiny_pipeline

ROWS = vidaccel.supported_models()
FAMILIES = sorted({r["family"] for r in ROWS})
BUILDS = [f for f in FAMILIES if not tiny_pipeline(f).requires]  # cosmos needs NVIDIA's safety checker


def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_family_names_are_the_supported_models():
    families, classes = family_names()
    assert families == FAMILIES and len(families) >= 10 and classes == [r["class"] for r in ROWS]
    parser = cli.build_parser()
    for name in families + classes:
        assert parser.parse_args(["bench", "attention", "--family", name]).family == name


def test_an_unknown_family_is_a_usage_error_listing_them(capsys):
    code, _, err = _main(capsys, "bench", "attention", "--family", "wan2")
    assert code == 2 and "unknown family 'wan2'" in err
    assert all(name in err for name in FAMILIES + ["WanVACETransformer3DModel", "LTX2VideoTransformer3DModel"])


def test_attention_mode_takes_the_radial_defaults_of_the_family_or_class(capsys, tmp_path):
    config = tmp_path / "radial.yaml"  # decay left to the family's defaults; 8-token bands so that it shows at 8x8x8
    config.write_text("{name: radial-8, type: radial, block_size: 8}\n")
    densities = {}
    for name in ("wan", "hunyuan", "HunyuanVideo15Transformer3DModel", "mochi"):
        out = tmp_path / f"{name}.json"
        code, _, err = _main(capsys, "bench", "attention", "--grid", "8", "8", "8", "--heads", "1", "--head-dim", "8",
                             "--repeats", "1", "--accel", config, "--family", name, "--out", out)
        assert code == 0, err
        data = json.loads(out.read_text())
        assert data["setup"]["family"] == name
        densities[name] = next(r["density"] for r in data["rows"] if r["config"] == "radial-8")
    assert radial_family("HunyuanVideo15Transformer3DModel") == "hunyuan" and radial_family("mochi") == "wan"
    assert densities["hunyuan"] == densities["HunyuanVideo15Transformer3DModel"] != densities["wan"]
    assert densities["mochi"] == densities["wan"]  # Mochi has no radial defaults of its own: Wan's


DEFAULT = {"wan", "mochi", "WanVACETransformer3DModel", "LTX2VideoTransformer3DModel"}  # the rest: -m slow (CLI
# runs of 4 generations with VAE decoding each, 1-12 s apiece on 2 shared cores)


@pytest.mark.parametrize("family", [f if f in DEFAULT else pytest.param(f, marks=pytest.mark.slow)
                                    for f in BUILDS + ["WanVACETransformer3DModel", "LTX2VideoTransformer3DModel"]])
def test_pipeline_mode_builds_the_tiny_pipeline_of_the_family(capsys, tmp_path, family):
    spec = tiny_pipeline(family)
    out = tmp_path / "bench.json"
    code, stdout, err = _main(capsys, "bench", "pipeline", "a red circle", "--model", "tiny-random", "--family",
                              family, "--repeats", "1", "--accel", "window", "--device", "cpu", "--out", out)
    assert code == 0, err
    assert f"tiny-random ({spec.pipeline})" in stdout
    data = json.loads(out.read_text())
    assert data["setup"]["transformer"] == spec.transformer and data["setup"]["pipeline"] == spec.pipeline
    assert [r["config"] for r in data["rows"]] == ["baseline", "window"]
    assert all(r["median_s"] > 0 for r in data["rows"])


def test_tiny_random_errors_name_the_reason(capsys):
    code, _, err = _main(capsys, "bench", "pipeline", "x", "--model", "tiny-random", "--family", "cosmos")
    assert code == 2 and "cosmos_guardrail" in err and "Benchmark another family" in err
    code, _, err = _main(capsys, "bench", "attention", "--model", "tiny-random")
    assert code == 2 and "attention mode builds no model" in err
