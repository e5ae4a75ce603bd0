"""`vidaccel compare`: a dense baseline and N configurations, same prompts and seeds, into a report folder."""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

from ._options import (add_accel_option, add_generation_options, add_model_options, formatter,
                       non_negative_int, positive_int, print_table)

# the automatic rule's constants, for --help, without importing vidaccel.report (and numpy) to build the parser;
# tests/test_compare_timing.py checks that they equal vidaccel.report.timing's
AUTO_MAX_ROUNDS, AUTO_BUDGET_S = 3, 180.0


def repeats_arg(text: str) -> int | str:
    """argparse type of --repeats: ``auto`` or an integer >= 1."""
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a {str(exc).removeprefix('expected a ')}") from None


EXAMPLES = """examples:
  vidaccel compare "a red circle moving right on a blue background" --out report/      # tiny model
  vidaccel compare --prompts-file prompts.txt --seed 0 1 2 --accel radial --accel window \\
      --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --height 720 --width 1280 --frames 81 --out wan720/
  vidaccel compare --prompts-file prompts.txt --accel sweep.yaml --out sweep/ --resume   # continue

A config file may hold several configurations:
  configs:
    - {name: radial-fast, type: radial, dense_steps: 4}
    - {name: window-small, type: window, kernel: [9, 15, 15]}

The folder gets report.html (videos side by side, speed-vs-quality plot, tables), results.json and
results.md, rewritten after every timed run: an interrupted comparison keeps what finished.

Timing: one untimed warm-up per configuration, then interleaved rounds (baseline, A, B, baseline, A,
B, ...). Each configuration gets its median time per clip with the min-max, and its speed-up from
paired rounds (median, min-max); a speed-up whose min-max includes 1.00x is marked "not significant"."""


def _pipeline_defaults(pipe) -> dict:
    params = inspect.signature(pipe.__call__).parameters

    def default(name):
        p = params.get(name)
        return None if p is None or p.default is inspect.Parameter.empty else p.default

    return dict(height=default("height"), width=default("width"), num_frames=default("num_frames"),
                steps=default("num_inference_steps"), guidance_scale=default("guidance_scale"))


def _settings(args, prompts, info, pipe) -> dict:
    from .. import loading

    base = {k: v for k, v in loading.default_settings(args.model).items() if v is not None}
    resolved = {**_pipeline_defaults(pipe), **base}
    chosen = dict(height=args.height, width=args.width, num_frames=args.frames, steps=args.steps,
                  guidance_scale=args.guidance)
    resolved.update({k: v for k, v in chosen.items() if v is not None})
    return {"model": info["model"], "pipeline": info["pipeline"], "transformer": info["transformer"],
            "prompts": prompts, "seeds": list(args.seeds), **resolved, "negative_prompt": args.negative_prompt,
            "device": info["device"], "dtype": info["dtype"], "offload": info["offload"], "fps": args.fps,
            "warmup": args.warmup, "repeats": args.repeats}


def _density(summary) -> float | None:
    for t in (summary or {}).get("transformers", []):
        if t.get("grid"):
            return t["grid"]["density"]
    return None


def _video_name(config: str, prompt_index: int, seed: int) -> str:
    return f"videos/{re.sub(r'[^A-Za-z0-9_.-]', '_', config)}_p{prompt_index}_s{seed}.mp4"


def _round(r, result, order: int) -> dict:
    return {"round": r, "order": order, "wall_s": result.wall_s, "step_s": result.step_s,
            "peak_memory_bytes": result.peak_memory.get("bytes")}


def run(args) -> int:
    import numpy as np

    from .. import config_files, generation, loading
    from ...metrics import compare_videos
    from ...report import Results, environment, write_mp4
    from ...report import format as fmt
    from ...report.timing import auto_rounds, schedule

    prompts = generation.read_prompts(args.prompts, args.prompts_file)
    configs = config_files.accel_configs(args.accel or sorted(config_files._presets()))
    baseline = config_files.NamedConfig(config_files.BASELINE, None, "dense attention")
    confs = [baseline, *configs]
    Results.check_folder(args.out, args.resume, args.force)  # before the (slow) model load
    loading.quiet_libraries()
    pipe, info = loading.load_pipeline(args.model, args.device, args.dtype, args.offload)
    settings = _settings(args, prompts, info, pipe)
    gen = {k: settings[k] for k in ("height", "width", "num_frames", "steps", "guidance_scale", "negative_prompt")}
    folder = Path(args.out)
    results = Results.open(folder, settings, [c.describe() for c in confs],
                           environment(info["device"]), resume=args.resume, force=args.force)
    if args.repeats != "auto":
        results.data["rounds_planned"] = args.repeats
    else:
        results.data.setdefault("rounds_planned", None)  # chosen once the first round has finished
    results.save()
    clips = [(i, s) for i in range(len(prompts)) for s in args.seeds]
    names = [c.name for c in confs]
    by_name = {c.name: c for c in confs}

    def todo():
        planned = results.data["rounds_planned"]
        return schedule(names, clips, planned or 1, results.done_rounds())

    done = len(results.done_rounds())
    print(f"comparing {len(configs)} configuration(s) with the dense baseline on {info['model']} "
          f"({info['device']}, {info['dtype']}), interleaved rounds: {done} timed run(s) already recorded")
    frames_dir = folder / "frames"
    frames_dir.mkdir(exist_ok=True)
    reference = {}  # (prompt_index, seed) -> baseline frames, kept losslessly for the metrics

    def baseline_frames(i, s):
        if (i, s) not in reference:
            path = frames_dir / f"baseline_p{i}_s{s}.npy"
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing, so quality cannot be measured against the baseline: "
                                        f"rerun with --force to start over")
            reference[(i, s)] = np.load(path)
        return reference[(i, s)]

    def first_run(conf, i, s, r, result, order) -> dict:
        """The run's record from its first timed round: video, quality, what ran (taken while applied)."""
        video = _video_name(conf.name, i, s)
        write_mp4(folder / video, result.frames, fps=args.fps)
        run = {"config": conf.name, "prompt_index": i, "prompt": prompts[i], "seed": s, "video": video,
               "peak_memory": {"kind": result.peak_memory["kind"], "bytes": None},
               "rounds": [_round(r, result, order)], "quality": None}
        if conf.is_baseline:
            np.save(frames_dir / f"baseline_p{i}_s{s}.npy", result.frames)
            reference[(i, s)] = result.frames
            return run
        import vidaccel

        run["quality"] = compare_videos(baseline_frames(i, s), result.frames)
        summary = vidaccel.summary(pipe, print_summary=False)
        run["density"] = _density(summary)
        run["summary"] = str(summary)  # resolved settings (family defaults filled in), counters
        if conf.config is not None and summary.get("transformers") and not any(
                t["sparse_calls"] for t in summary["transformers"]):
            run["note"] = ("no sparse attention call in this run (dense warm-up covers every step or "
                           "layer): same computation as dense")
        elif run["density"] == 1.0:
            run["note"] = "the pattern covers the whole token grid at this size: same computation as dense"
        return run

    from tqdm.auto import tqdm

    pending = todo()
    bar = tqdm(total=len(pending), desc="timed runs", unit="run", disable=None if args.progress is None else not args.progress)
    try:
        if pending and args.warmup:  # untimed: first-call costs (kernels, allocator) stay out of the timings
            for conf in confs:
                i, s = clips[0]
                with config_files.applied(pipe, conf, steps=gen["steps"]) as runner:
                    for _ in range(args.warmup):
                        generation.generate(pipe, prompts[i], s, offload=args.offload, progress=args.progress,
                                            desc=f"{conf.name} warm-up", runner=runner, **gen)
        while pending:
            for r, i, s, name in pending:
                conf = by_name[name]
                # every run installs its configuration anew: interleaved
                with config_files.applied(pipe, conf, steps=gen["steps"]) as runner:
                    result = generation.generate(pipe, prompts[i], s, offload=args.offload, progress=args.progress,
                                                 desc=f"{name} round {r + 1} p{i} s{s}", runner=runner, **gen)
                    order = results.next_order()
                    if results.find(name, i, s) is None:
                        results.add_run(first_run(conf, i, s, r, result, order))
                    else:
                        results.add_round(name, i, s, _round(r, result, order))
                bar.update(1)
                run = results.find(name, i, s)
                q = run["quality"] if r == run["rounds"][0]["round"] else None
                quality = "" if q is None else f", PSNR {fmt.db(q['psnr'])}, SSIM {fmt.plain(q['ssim'])}"
                note = f" [{run['note']}]" if run.get("note") and q is not None else ""
                planned = results.data["rounds_planned"] or "?"
                bar.write(f"{name} round {r + 1}/{planned} prompt {i} seed {s}: {result.wall_s:.2f} s{quality}{note}")
            if results.data["rounds_planned"] is None:  # --repeats auto: decide from the first round
                first = {c: sum(x["wall_s"] for run in results.data["runs"] if run["config"] == c
                                for x in run["rounds"] if x["round"] == 0) for c in names}
                results.data["rounds_planned"] = auto_rounds(first)
                results.save()
                bar.write(f"--repeats auto: {results.data['rounds_planned']} timed round(s) (first round "
                          f"{sum(first.values()) / len(first):.1f} s per configuration; rule: README, compare)")
            pending = todo()
            bar.total = bar.n + len(pending)
            bar.refresh()
    except loading.OutOfMemory as exc:
        bar.close()
        raise loading.OutOfMemory(f"{exc}. {len(results.data['runs'])} finished run(s) are kept in {folder}: rerun with "
                                 f"the same options and --resume, or with smaller settings and a new --out") from exc
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: {len(results.done_rounds())} finished timed run(s) kept in {folder}; rerun the same "
              f"command with --resume to continue")
        return 130
    bar.close()
    results.save()
    _print_table(results.data)
    print(f"report: {folder / 'report.html'}  data: {folder / 'results.json'}, {folder / 'results.md'}")
    return 0


def _print_table(data) -> None:
    from ...report.format import rounds_line, summary_rows

    header, rows = summary_rows(data)
    keep = [0, 2, 4, 6, 8, 9]  # configuration, time per clip, speedup, memory, PSNR, SSIM
    print_table([[header[k] for k in keep]] + [[row[k] for k in keep] for row in rows])
    weak = [r["config"] for r in data["per_configuration"] if r.get("speedup_verdict") in ("not significant", "not tested")]
    print(rounds_line(data))
    if weak:
        print(f"not significant: {', '.join(weak)}: the min-max of the paired speed-ups includes 1.00x (or only one "
              f"pair was timed), so these differences are within this machine's run-to-run noise")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="baseline vs configurations: speed, memory and quality report", formatter_class=formatter,
        description="Run a dense baseline and each configuration with identical prompts and seeds; record wall time, "
                    "time per step, peak memory and quality against the baseline (PSNR, SSIM, flicker, LPIPS when "
                    "its weights are available locally) into a report folder. Configurations are timed in "
                    "interleaved rounds and each speed-up is reported with its range over paired rounds.",
        epilog=EXAMPLES,
    )
    add_generation_options(p)
    add_model_options(p)
    add_accel_option(p, repeatable=True, what="a configuration to compare, repeat for several (default: every preset)")
    p.add_argument("--out", default="vidaccel-report", help="report folder (default: vidaccel-report)")
    p.add_argument("--resume", action="store_true", help="continue the comparison in --out, skipping finished timed rounds")
    p.add_argument("--force", action="store_true", help="start over in --out, replacing a recorded comparison")
    p.add_argument("--warmup", type=non_negative_int, default=1,
                   help="untimed generations per configuration before its timed runs (default: 1)")
    p.add_argument("--repeats", type=repeats_arg, default="auto", metavar="N|auto",
                   help="timed rounds: every configuration runs once per round, interleaved with the others; "
                        "medians, min-max and paired speed-ups are reported, every time is kept. auto: up to "
                        f"{AUTO_MAX_ROUNDS} rounds, as many as fit about {AUTO_BUDGET_S:.0f} s of timed runs per "
                        "configuration, judged from the first round (default: auto)")
    p.set_defaults(func=run)
