"""Issue 20 #18: `vidaccel compare` times configurations interleaved, repeats them, and reports the
spread and whether each speed-up is significant (its min-max over paired rounds excludes 1.0).

Synthetic timings check the statistics and every view (results.json, results.md, report.html, the
CLI table); one small real comparison on a tiny random-weight pipeline checks the interleaved order
and the per-round record. No assertion depends on a real timing.
"""

import json

import pytest

from tiny_models import wan_pipeline
from vidaccel import cli
from vidaccel.report import Results
from vidaccel.report import timing
from vidaccel.report.html import render_html
from vidaccel.report.markdown import render_markdown

SMALL = ["--height", "32", "--width", "32", "--frames", "5", "--steps", "2", "--no-progress"]
RADIAL_TINY = "{name: radial-tiny, type: radial, block_size: 8, dense_steps: 1, dense_layers: 0}\n"


# ------------------------------------------------------------------------------- the schedule

def test_schedule_interleaves_configurations_round_by_round():
    order = timing.schedule(["baseline", "a", "b"], [(0, 0), (0, 1)], rounds=2)
    assert [c for *_, c in order] == ["baseline", "a", "b"] * 4
    assert [(r, i, s) for r, i, s, _ in order[:6]] == [(0, 0, 0)] * 3 + [(0, 0, 1)] * 3
    assert {r for r, *_ in order[6:]} == {1}  # round 2 starts only after every clip of round 1


def test_schedule_leaves_out_recorded_rounds_for_resume():
    done = {("baseline", 0, 0, 0), ("a", 0, 0, 0)}
    order = timing.schedule(["baseline", "a", "b"], [(0, 0)], rounds=2, done=done)
    assert order == [(0, 0, 0, "b"), (1, 0, 0, "baseline"), (1, 0, 0, "a"), (1, 0, 0, "b")]


def test_auto_rounds_rule():
    assert timing.auto_rounds({"baseline": 20.0, "radial": 60.0, "window": 20.0}) == 3  # tiny model on a CPU
    assert timing.auto_rounds({"baseline": 80.0, "radial": 80.0}) == 2
    assert timing.auto_rounds({"baseline": 600.0, "radial": 300.0}) == 1  # a real model: one round
    assert timing.auto_rounds({"baseline": 0.5}) == timing.AUTO_MAX_ROUNDS


def test_help_constants_match_the_rule():
    from vidaccel.cli.commands import compare

    assert (compare.AUTO_MAX_ROUNDS, compare.AUTO_BUDGET_S) == (timing.AUTO_MAX_ROUNDS, timing.AUTO_BUDGET_S)
    parser = cli.build_parser()
    assert parser.parse_args(["compare", "x"]).repeats == "auto"
    assert parser.parse_args(["compare", "x", "--repeats", "4"]).repeats == 4


# ------------------------------------------------------------------- significance, synthetic

def test_paired_speedup_verdicts():
    noise = timing.paired_speedup([(10.0, 9.0), (10.0, 11.0), (10.0, 9.5)])
    assert noise["speedup_verdict"] == timing.NOT_SIGNIFICANT and noise["significant"] is False
    assert noise["speedup_min"] < 1.0 < noise["speedup_max"]
    clear = timing.paired_speedup([(10.0, 5.0), (11.0, 5.2), (9.8, 5.1)])
    assert clear["speedup_verdict"] == timing.FASTER and clear["significant"] is True
    assert clear["speedup"] == pytest.approx(10.0 / 5.0)
    slow = timing.paired_speedup([(5.0, 10.0), (5.2, 11.0)])
    assert slow["speedup_verdict"] == timing.SLOWER and slow["significant"] is True
    single = timing.paired_speedup([(20.47, 5.57)])  # the report: one run, 3.67x
    assert single["speedup_verdict"] == timing.NOT_TESTED and single["significant"] is None


def _run(config, walls, quality=None, prompt_index=0, seed=0, first_order=0, step=None):
    rounds = [{"round": k, "order": first_order + 3 * k, "wall_s": w, "step_s": step or w / 10,
               "peak_memory_bytes": 1 << 20} for k, w in enumerate(walls)]
    return {"config": config, "prompt_index": prompt_index, "prompt": "p", "seed": seed,
            "video": f"videos/{config}_p0_s0.mp4", "quality": quality, "density": None if quality is None else 0.5,
            "rounds": rounds, "peak_memory": {"kind": "cpu_peak_rss_delta", "bytes": None}}


QUALITY = {"psnr": 30.0, "ssim": 0.9, "flicker_delta": 0.1, "temporal_error": 1.0, "lpips": None,
           "lpips_note": "weights not on disk"}


@pytest.fixture
def synthetic(tmp_path):
    """Baseline ~10 s; 'noisy' the same within noise; 'clear' twice as fast; saved through Results."""
    settings = {"model": "m", "pipeline": "P", "prompts": ["p"], "seeds": [0], "height": 32, "width": 32,
                "num_frames": 5, "steps": 2, "warmup": 1, "repeats": 3}
    confs = [{"name": "baseline", "type": "dense"}, {"name": "noisy", "type": "window"},
             {"name": "clear", "type": "radial"}]
    results = Results.open(tmp_path, settings, confs, {"device": "cpu"}, resume=False, force=False)
    results.data["rounds_planned"] = 3
    base = [10.0, 10.5, 9.8]
    for name, walls in (("baseline", base), ("noisy", [9.0, 11.0, 10.2]), ("clear", [5.0, 5.3, 4.8])):
        run = _run(name, walls[:1], None if name == "baseline" else QUALITY)
        results.add_run(run)
    for k in (1, 2):
        for name, walls in (("baseline", base), ("noisy", [9.0, 11.0, 10.2]), ("clear", [5.0, 5.3, 4.8])):
            results.add_round(name, 0, 0, {"round": k, "order": 3 * k, "wall_s": walls[k], "step_s": walls[k] / 10,
                                           "peak_memory_bytes": 1 << 20})
    return tmp_path


def test_results_json_records_every_round_and_the_verdicts(synthetic):
    data = json.loads((synthetic / "results.json").read_text())
    assert data["complete"] is True
    runs = {r["config"]: r for r in data["runs"]}
    assert runs["noisy"]["wall_s_samples"] == [9.0, 11.0, 10.2] and len(runs["noisy"]["rounds"]) == 3
    assert runs["noisy"]["wall_s"] == 10.2  # median over rounds
    rows = {r["config"]: r for r in data["per_configuration"]}
    assert rows["noisy"]["speedup_verdict"] == "not significant" and rows["noisy"]["significant"] is False
    assert rows["clear"]["speedup_verdict"] == "faster" and rows["clear"]["significant"] is True
    assert rows["clear"]["speedup_pairs"] == 3 and rows["clear"]["timed"] == 3
    assert rows["clear"]["speedup_min"] == pytest.approx(10.5 / 5.3) and rows["clear"]["speedup_max"] == pytest.approx(9.8 / 4.8)
    assert (rows["clear"]["wall_s_min"], rows["clear"]["wall_s"], rows["clear"]["wall_s_max"]) == (4.8, 5.0, 5.3)
    assert rows["baseline"]["speedup"] == 1.0 and rows["baseline"]["speedup_verdict"] is None


def test_views_show_spread_and_mark_not_significant(synthetic, capsys):
    md = (synthetic / "results.md").read_text()
    noisy = next(line for line in md.splitlines() if line.startswith("| noisy |"))
    clear = next(line for line in md.splitlines() if line.startswith("| clear |"))
    assert "not significant" in noisy and "not significant" not in clear
    assert "(9.00-11.00 s)" in noisy and "(4.80-5.30 s)" in clear  # time spread per clip
    assert "(1.98-2.04x)" in clear  # speed-up interval from the paired rounds
    assert "9.00 s, 11.00 s, 10.20 s" in md  # every round's time, in order
    html = (synthetic / "report.html").read_text()
    assert "data-significance='not significant' class='not-significant'" in html
    assert "data-significance='faster'" in html and "(9.00-11.00 s)" in html
    assert 'class="range" data-config="clear"' in html and "noisy (not significant)" in html

    from vidaccel.cli.commands.compare import _print_table

    _print_table(json.loads((synthetic / "results.json").read_text()))
    out = capsys.readouterr().out
    table = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert "not significant" in table["noisy"] and "not significant" not in table["clear"]
    assert "(4.80-5.30 s)" in table["clear"] and "Timed rounds: 3" in out


def test_single_round_is_not_tested_and_old_records_still_render():
    data = {"settings": {"model": "m", "prompts": ["p"], "seeds": [0], "height": 8, "width": 8, "num_frames": 1,
                         "steps": 1, "repeats": 1},
            "environment": {"device": "cpu"}, "configurations": [{"name": "baseline"}, {"name": "radial"}],
            # a run recorded before rounds existed: wall_s, wall_s_samples, no "rounds"
            "runs": [{"config": "baseline", "prompt_index": 0, "prompt": "p", "seed": 0, "video": "v.mp4",
                      "wall_s": 20.47, "step_s": 0.8, "wall_s_samples": [20.47], "quality": None,
                      "peak_memory": {"kind": "n/a", "bytes": None}},
                     {"config": "radial", "prompt_index": 0, "prompt": "p", "seed": 0, "video": "w.mp4",
                      "wall_s": 5.57, "step_s": 0.2, "wall_s_samples": [5.57], "quality": QUALITY, "density": 0.5,
                      "peak_memory": {"kind": "n/a", "bytes": None}}]}
    from vidaccel.report import aggregate

    data["per_configuration"] = aggregate(data)
    row = data["per_configuration"][1]
    assert row["speedup"] == pytest.approx(20.47 / 5.57) and row["speedup_verdict"] == "not tested"
    assert "3.68x, not tested (1 pair)" in render_markdown(data)
    assert "3.68x, not tested (1 pair)" in render_html(data)


# --------------------------------------------------------------- a real, small comparison

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-wan-random")
    wan_pipeline(seed=0).save_pretrained(path)
    return path


def test_compare_with_two_repeats_records_interleaved_rounds(capsys, model_dir, tmp_path):
    radial = tmp_path / "radial.yaml"
    radial.write_text(RADIAL_TINY)
    out = tmp_path / "report"
    args = ["compare", "a red circle", "--model", model_dir, *SMALL, "--warmup", "1", "--repeats", "2",
            "--accel", radial, "--accel", "window", "--out", out]
    assert cli.main([str(a) for a in args]) == 0
    printed = capsys.readouterr().out
    assert "time per clip" in printed and "Timed rounds: 2 (--repeats)" in printed
    data = json.loads((out / "results.json").read_text())
    assert data["complete"] and data["rounds_planned"] == 2 and data["settings"]["repeats"] == 2
    timed = sorted((x["order"], x["round"], r["config"]) for r in data["runs"] for x in r["rounds"])
    assert [(k, c) for _, k, c in timed] == [(0, "baseline"), (0, "radial-tiny"), (0, "window"),
                                             (1, "baseline"), (1, "radial-tiny"), (1, "window")]
    assert [o for o, *_ in timed] == list(range(6))
    for run in data["runs"]:
        assert len(run["wall_s_samples"]) == 2 and all(x["wall_s"] > 0 for x in run["rounds"])
    rows = {r["config"]: r for r in data["per_configuration"]}
    for name in ("radial-tiny", "window"):
        assert rows[name]["speedup_pairs"] == 2 and rows[name]["timed"] == 2
        assert rows[name]["speedup_min"] <= rows[name]["speedup"] <= rows[name]["speedup_max"]
        assert rows[name]["speedup_verdict"] in ("faster", "slower", "not significant")
    assert rows["radial-tiny"]["psnr"] is not None  # quality once per run, from its first round

    # --resume with another number of rounds is refused; with the same, nothing is redone
    assert cli.main([str(a) for a in args] + ["--resume", "--repeats", "3"]) == 2
    assert "'repeats' differs" in capsys.readouterr().err
    assert cli.main([str(a) for a in args] + ["--resume"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["runs"] == data["runs"]
