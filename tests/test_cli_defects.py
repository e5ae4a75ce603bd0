"""Regression tests for the CLI defects of issue 20: #5 (the "make a profile" hint runs), #12 (numeric
options checked by the parser), #13 (one-line config syntax errors), #15 (generate --out / --force,
bench's usage error), #16 (--help imports neither torch nor diffusers), #19 (torch.load weights_only).

All parser-level or file-level: no model is loaded and nothing is generated."""

from __future__ import annotations

import ast
import inspect
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from vidaccel import cli
from vidaccel.cli import config_files, loading
from vidaccel.cli.commands import COMMANDS

REPO = Path(__file__).resolve().parents[1]


def _subparser(parser, name):
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices[name]


def _must_not_run(*args, **kwargs):
    raise AssertionError("reached the command body / model loading")


@pytest.fixture
def no_model_load(monkeypatch):
    """The model loader fails the test if reached: the error must come before it."""
    monkeypatch.setattr(loading, "load_pipeline", _must_not_run)


@pytest.fixture
def nothing_runs(monkeypatch, no_model_load):
    """Every command's body fails the test if reached: the parser must reject the arguments."""
    import importlib

    for name in COMMANDS:
        monkeypatch.setattr(importlib.import_module(f"vidaccel.cli.commands.{name}"), "run", _must_not_run)


def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


# ------------------------------------------------------------------- #5: the "make a profile" hint

def _substitute(command: str) -> str:
    numbers = {"<H>": "64", "<W>": "64", "<F>": "9", "<S>": "4"}
    command = re.sub(r"<[HWFS]>", lambda m: numbers[m.group(0)], command)
    return re.sub(r"<[^>]+>", "some-org/some-model", command)  # <pipeline id or folder>, <prompt>


def test_make_one_hint_commands_run_through_the_real_parser():
    import vidaccel
    from vidaccel.caches.profile_io import MAKE_ONE

    commands = re.findall(r"`(vidaccel [^`]+)`", MAKE_ONE)
    assert commands, MAKE_ONE
    parser = cli.build_parser()
    for command in commands:
        argv = shlex.split(_substitute(command))[1:]
        args = parser.parse_args(argv)
        assert args.command == "profile" and args.prompts and args.out == "profile.json"
        assert args.model == "some-org/some-model" and (args.height, args.width, args.frames, args.steps) == (
            64, 64, 9, 4)
        # no option may rely on argparse's prefix matching (--prompt silently meant --prompts-file)
        exact = set(_subparser(parser, argv[0])._option_string_actions)
        assert {a for a in argv if a.startswith("--")} <= exact, command
    # the Python alternative the hint names is a valid call
    calls = re.findall(r"`vidaccel\.profile\(([^`]*)\)`", MAKE_ONE)
    assert calls == ['pipe, prompts, path="profile.json"']
    inspect.signature(vidaccel.profile).bind(object(), ["a prompt"], path="profile.json")


# ---------------------------------------------------- #12: numeric options checked by the parser

POSITIVE, NON_NEGATIVE, FINITE = "positive integer (>= 1)", "non-negative integer (>= 0)", "finite number"
BAD_NUMBERS = [
    (["upscale", "--steps", "0"], "--steps", POSITIVE),
    (["upscale", "--frames", "0"], "--frames", POSITIVE),
    (["upscale", "--frames", "-5"], "--frames", POSITIVE),
    (["upscale", "--fps", "0"], "--fps", POSITIVE),
    (["upscale", "--height", "0"], "--height", POSITIVE),
    (["upscale", "--guidance", "nan"], "--guidance", FINITE),
    (["upscale", "--base-size", "0", "32"], "--base-size", POSITIVE),
    (["generate", "x", "--gpus", "0"], "--gpus", POSITIVE),
    (["generate", "x", "--steps", "0"], "--steps", POSITIVE),
    (["generate", "x", "--guidance", "inf"], "--guidance", FINITE),
    (["compare", "x", "--warmup", "-1"], "--warmup", NON_NEGATIVE),
    (["compare", "x", "--repeats", "0"], "--repeats", POSITIVE),
    (["demo", "--steps", "0"], "--steps", POSITIVE),
    (["bench", "attention", "--heads", "0"], "--heads", POSITIVE),
    (["bench", "attention", "--grid", "5", "0", "8"], "--grid", POSITIVE),
    (["profile", "x", "--out", "p.json", "--query-rows", "0"], "--query-rows", POSITIVE),
    (["upscale", "--steps", "two"], "--steps", POSITIVE),
]


@pytest.mark.parametrize("argv,flag,allowed", BAD_NUMBERS, ids=[" ".join(c[0]) for c in BAD_NUMBERS])
def test_bad_numeric_option_is_one_line_naming_flag_and_range(capsys, nothing_runs, argv, flag, allowed):
    code, err = _main(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"argument {flag}" in lines[0] and allowed in lines[0], err


def test_boundary_numbers_are_still_accepted():
    parser = cli.build_parser()
    assert parser.parse_args(["compare", "x", "--warmup", "0"]).warmup == 0
    args = parser.parse_args(["upscale", "--guidance", "0", "--steps", "1", "--frames", "1"])
    assert (args.guidance, args.steps, args.frames) == (0.0, 1, 1)


# --------------------------------------------------------------- #13: config file syntax errors

@pytest.mark.parametrize("name,text,where", [
    ("bad.yaml", "configs:\n  - {name: a, type: radial\n  - x: [1, 2\n", "line 3 column 6"),
    ("tab.yaml", "type: radial\n\tdense_steps: 2\n", "line 2 column 1"),
    ("bad.json", '{"type": "radial",\n "dense_steps": }\n', "line 2 column 17"),
])
def test_config_syntax_error_is_one_line_with_file_line_and_column(capsys, no_model_load, tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        config_files.load_config_file(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and where in message, message
    code, err = _main(capsys, "generate", "x", "--accel", path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and where in err


# ------------------------------------------------------------- #15: generate --out, bench usage

def test_generate_refuses_an_existing_out_file_unless_force(capsys, no_model_load, tmp_path):
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"keep me")
    code, err = _main(capsys, "generate", "x", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{out} already exists" in err and "pass --force" in err and out.read_bytes() == b"keep me"
    # several seeds: the per-seed names are checked too
    (tmp_path / "clip_00_s1.mp4").write_bytes(b"")
    code, err = _main(capsys, "generate", "x", "--seed", "0", "1", "--out", out)
    assert code == 2 and "clip_00_s1.mp4 already exists" in err
    # --force gets past the check (to the model load, which the fixture turns into a failure)
    with pytest.raises(AssertionError, match="model loading"):
        cli.main(["generate", "x", "--out", str(out), "--force"])


def test_generate_and_compare_word_the_existing_output_refusal_alike(tmp_path):
    from vidaccel.report import RESULTS_JSON, Results

    (tmp_path / RESULTS_JSON).write_text("{}")
    with pytest.raises(FileExistsError, match="pass --resume to continue it, --force to start over, or a different"):
        Results.check_folder(tmp_path, resume=False, force=False)
    assert "--force" in _subparser(cli.build_parser(), "generate")._option_string_actions


def test_bench_without_a_mode_names_only_the_mode(capsys, nothing_runs):
    code, err = _main(capsys, "bench")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "required: mode" in err and "PROMPT" not in err
    assert cli.build_parser().parse_args(["bench", "attention"]).prompts == []  # PROMPT stays optional


# --------------------------------------------------------- #16: --help imports no torch/diffusers

HEAVY = ("torch", "diffusers", "transformers")


def test_help_of_every_command_imports_neither_torch_nor_diffusers():
    # what the console script `vidaccel = vidaccel.cli:main` pays: `import vidaccel.cli` imports vidaccel first
    script = (
        "import json, sys\n"
        "from vidaccel.cli import main\n"
        f"codes = [main([*c, '--help']) for c in [[], *[[n] for n in {list(COMMANDS)!r}]]]\n"
        f"print(json.dumps([codes, [m for m in {list(HEAVY)!r} if m in sys.modules]]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    codes, heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert codes == [0] * (len(COMMANDS) + 1) and heavy == []


def test_python_m_vidaccel_cli_help_imports_neither_torch_nor_diffusers():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "vidaccel.cli", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "usage: vidaccel" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_help_preset_names_match_vidaccel_presets_and_the_lazy_facade_works():
    import vidaccel
    from vidaccel.cli.commands._options import PRESET_NAMES

    assert sorted(PRESET_NAMES) == sorted(vidaccel.PRESETS)
    assert all(getattr(vidaccel, name) is not None for name in vidaccel.__all__)
    assert set(vidaccel.__all__) <= set(dir(vidaccel)) and vidaccel.sparse.config.PRESETS is vidaccel.PRESETS
    with pytest.raises(AttributeError):
        vidaccel.no_such_name  # noqa: B018


# ---------------------------------------------------------------- #19: torch.load weights_only

def _unsafe_torch_loads(path: Path) -> list[int]:
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
            kw = {k.arg: k.value for k in node.keywords}
            ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
            if not ok:
                bad.append(node.lineno)
    return bad


def test_every_torch_load_uses_weights_only_true():
    files = [p for d in ("scripts", "vidaccel", "pipelines", "kernels") for p in (REPO / d).rglob("*.py")]
    assert any(p.parent.name == "tiny_training" for p in files)
    bad = {str(p.relative_to(REPO)): lines for p in files if (lines := _unsafe_torch_loads(p))}
    assert not bad, f"torch.load without weights_only=True: {bad}"
