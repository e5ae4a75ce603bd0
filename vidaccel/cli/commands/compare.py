"""`vidaccel compare`: a dense baseline and N configurations, same prompts and seeds, into a report folder."""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

from ..measures import CHECK_MODES
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
  vidaccel compare --prompts-file lab_captions.txt --model assets/lab-wan --height 256 --width 256 \\
      --frames 33 --accel lab_sweep.yaml --check lab --out lab/                       # quality lab

A config file may hold several configurations:
  configs:
    - {name: radial-fast, type: radial, dense_steps: 4}
    - {name: window-small, type: window, kernel: [9, 15, 15]}
    - {name: radial-reuse, type: radial, block_reuse: {profile: wan_480p.json}}
    - {name: fbc-0.1, diffusers_cache: first_block, threshold: 0.1}      # diffusers' own caches
    - {name: mag, diffusers_cache: mag, threshold: 0.06, calibrate: true}  # ratios: one untimed run
    - {name: taylor, diffusers_cache: taylorseer, cache_interval: 4, use_lite_mode: true}
    - {name: pab, diffusers_cache: pab, spatial_attention_block_skip_range: 2}
    - {name: refine, upscale: refine, strength: 0.7}        # 2x the size: base run, upsample, refine
    - {name: freeswim-c2, upscale: freeswim, cache_steps: 2}
    - {name: freeswim-radial, upscale: freeswim, full_attention: radial, cache_steps: 5}
Rows at another size (upscale entries: 2x by default; size: [H, W] on any entry) are compared with a
dense run at that size, which compare adds as baseline-HxW (direct generation there).

The folder gets report.html (videos side by side, speed-vs-quality plot, tables), results.json and
results.md, rewritten after every timed run: an interrupted comparison keeps what finished.

Columns: time per clip and per step, speed-up, peak memory, token density, attention FLOPs (attended
pairs of the self-attention that ran, over the baseline's), PSNR, SSIM, flicker, LPIPS; with --check
(auto: when every prompt is a lab caption) the clips passing the pixel check and the extra objects.

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
            "steps": result.steps_run, "peak_memory_bytes": result.peak_memory.get("bytes")}


def _check_line(check: dict | None) -> str:
    if check is None:
        return ""
    return f", check {'passed' if check['passed'] else 'failed'} ({check['extra_objects']} extra objects)"


def run(args) -> int:
    import dataclasses

    import numpy as np

    from .. import config_files, generation, loading, measures
    from ...metrics import compare_videos
    from ...report import Results, environment, write_mp4
    from ...report import format as fmt
    from ...report.timing import auto_rounds, schedule

    prompts = generation.read_prompts(args.prompts, args.prompts_file)
    scenes, check_how = measures.check_scenes(prompts, args.check)  # --check lab fails here, before the model loads
    configs = config_files.accel_configs(args.accel or sorted(config_files._presets()))
    Results.check_folder(args.out, args.resume, args.force)  # before the (slow) model load
    loading.quiet_libraries()
    pipe, info = loading.load_pipeline(args.model, args.device, args.dtype, args.offload)
    settings = _settings(args, prompts, info, pipe)
    if scenes is not None:
        settings["check"] = "lab"
    base_size = (settings["height"], settings["width"])
    confs = config_files.with_baselines(configs, *base_size)
    sizes = {c.name: c.target_size(*base_size) for c in confs}
    for c in confs:  # sizes FreeSwim cannot take fail now, not after the baseline runs
        if c.upscale is not None:
            c.upscale.check(pipe, base_size, sizes[c.name])
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

    def settings_of(conf) -> dict:
        h, w = sizes[conf.name]
        return {**gen, "height": h, "width": w}

    def todo():
        planned = results.data["rounds_planned"]
        return schedule(names, clips, planned or 1, results.done_rounds())

    done = len(results.done_rounds())
    extra = sorted({s for s in sizes.values()} - {base_size})
    print(f"comparing {len(configs)} configuration(s) with the dense baseline on {info['model']} "
          f"({info['device']}, {info['dtype']}), interleaved rounds: {done} timed run(s) already recorded"
          + "".join(f"; rows at {h}x{w} against the dense run at {h}x{w}" for h, w in extra)
          + f"; pixel check: {check_how}")
    frames_dir = folder / "frames"
    frames_dir.mkdir(exist_ok=True)
    reference = {}  # (baseline name, prompt_index, seed) -> its frames, kept losslessly for the metrics

    def baseline_frames(base, i, s):
        if (base, i, s) not in reference:
            path = frames_dir / f"{base}_p{i}_s{s}.npy"
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing, so quality cannot be measured against the baseline: "
                                        f"rerun with --force to start over")
            reference[(base, i, s)] = np.load(path)
        return reference[(base, i, s)]

    def first_run(conf, i, s, r, result, order, work) -> dict:
        """The run's record from its first timed round: video, quality, check, what ran (taken while applied)."""
        video = _video_name(conf.name, i, s)
        write_mp4(folder / video, result.frames, fps=args.fps)
        run = {"config": conf.name, "prompt_index": i, "prompt": prompts[i], "seed": s, "video": video,
               "size": list(sizes[conf.name]), "steps_run": result.steps_run,
               "peak_memory": {"kind": result.peak_memory["kind"], "bytes": None},
               "rounds": [_round(r, result, order)], "quality": None}
        if scenes is not None:
            run["check"] = measures.lab_check(result.frames, scenes[i])
        if conf.is_baseline:
            np.save(frames_dir / f"{conf.name}_p{i}_s{s}.npy", result.frames)
            reference[(conf.name, i, s)] = result.frames
            run["attention"] = measures.attended_pairs(work, None)
            run["attention_flop_fraction"] = 1.0 if run["attention"]["pairs"] else None
            return run
        import vidaccel

        base = conf.reference or config_files.BASELINE
        run["quality"] = compare_videos(baseline_frames(base, i, s), result.frames)
        summary = vidaccel.summary(pipe, print_summary=False)
        run["attention"] = measures.attended_pairs(work, summary)
        base_run = results.find(base, i, s) or {}
        run["attention_flop_fraction"] = measures.flop_fraction(run["attention"]["pairs"],
                                                                (base_run.get("attention") or {}).get("pairs"))
        run["density"] = _density(summary)
        run["summary"] = str(summary)  # resolved settings (family defaults filled in), counters
        if conf.diffusers_cache is not None:
            run["summary"] += "\n" + conf.diffusers_cache.summary_line()
        if conf.config is not None and summary.get("transformers") and not any(
                t["sparse_calls"] for t in summary["transformers"]):
            run["note"] = ("no sparse attention call in this run (dense warm-up covers every step or "
                           "layer): same computation as dense")
        elif run["density"] == 1.0:
            run["note"] = "the pattern covers the whole token grid at this size: same computation as dense"
        return run

    def calibrate(conf):
        """MagCache's ``calibrate: true``: one untimed calibration run (recorded, and reused by --resume)."""
        cache = conf.diffusers_cache
        if cache is None or not cache.needs_calibration:
            return conf
        recorded = results.data.setdefault("calibrations", {})
        if conf.name in recorded:
            return dataclasses.replace(conf, diffusers_cache=cache.with_ratios(recorded[conf.name]))
        i, s = clips[0]
        conf = config_files.calibrated(pipe, conf, gen["steps"], lambda runner: generation.generate(
            pipe, prompts[i], s, offload=args.offload, progress=args.progress, desc=f"{conf.name} calibration",
            runner=runner, **settings_of(conf)))
        recorded[conf.name] = list(conf.diffusers_cache.calibrated)
        results.save()
        print(f"{conf.name}: MagCache ratios calibrated on prompt {i}, seed {s} (untimed run)")
        return conf

    def applied(conf):
        return config_files.applied(pipe, conf, steps=gen["steps"], base_size=base_size)

    from tqdm.auto import tqdm

    pending = todo()
    bar = tqdm(total=len(pending), desc="timed runs", unit="run", disable=None if args.progress is None else not args.progress)
    try:
        if pending:
            waiting = {name for *_, name in pending}
            for k, conf in enumerate(confs):
                if conf.name in waiting:
                    confs[k] = by_name[conf.name] = calibrate(conf)
        if pending and args.warmup:  # untimed: first-call costs (kernels, allocator) stay out of the timings
            for conf in confs:
                i, s = clips[0]
                with applied(conf) as runner:
                    for _ in range(args.warmup):
                        generation.generate(pipe, prompts[i], s, offload=args.offload, progress=args.progress,
                                            desc=f"{conf.name} warm-up", runner=runner, **settings_of(conf))
        while pending:
            for r, i, s, name in pending:
                conf = by_name[name]
                with applied(conf) as runner:  # every run installs its configuration anew: interleaved
                    with measures.AttentionWork(pipe) as work:
                        result = generation.generate(pipe, prompts[i], s, offload=args.offload, progress=args.progress,
                                                     desc=f"{name} round {r + 1} p{i} s{s}", runner=runner,
                                                     **settings_of(conf))
                    order = results.next_order()
                    if results.find(name, i, s) is None:
                        results.add_run(first_run(conf, i, s, r, result, order, work))
                    else:
                        results.add_round(name, i, s, _round(r, result, order))
                bar.update(1)
                run = results.find(name, i, s)
                first = r == run["rounds"][0]["round"]
                q = run["quality"] if first else None
                quality = "" if q is None else f", PSNR {fmt.db(q['psnr'])}, SSIM {fmt.plain(q['ssim'])}"
                quality += _check_line(run.get("check")) if first else ""
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


CLI_COLUMNS = ("configuration", "size (HxW)", "time per clip (min-max)", "clip ÷ steps",
               "speedup (min-max of paired rounds)", "peak memory", "attention FLOPs", "PSNR", "SSIM",
               "flicker Δ (x dense)", "check", "extra objects")


def _print_table(data) -> None:
    from ...report.format import rounds_line, summary_rows

    header, rows = summary_rows(data)
    keep = [header.index(h) for h in CLI_COLUMNS if h in header]
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
                    "time per step, peak memory, attention FLOPs and quality against the baseline (PSNR, SSIM, "
                    "flicker, LPIPS when its weights are available locally, the lab pixel check) into a report "
                    "folder. Configurations are vidaccel's sparse attention and caches, diffusers' caches, and "
                    "upsample + refine or FreeSwim at a larger size (against a dense run at that size). They are "
                    "timed in interleaved rounds and each speed-up is reported with its range over paired rounds.",
        epilog=EXAMPLES,
    )
    add_generation_options(p)
    add_model_options(p)
    add_accel_option(p, repeatable=True, what="a configuration to compare, repeat for several (default: every preset)")
    p.add_argument("--out", default="vidaccel-report", help="report folder (default: vidaccel-report)")
    p.add_argument("--resume", action="store_true", help="continue the comparison in --out, skipping finished timed rounds")
    p.add_argument("--force", action="store_true", help="start over in --out, replacing a recorded comparison")
    p.add_argument("--check", choices=CHECK_MODES, default="auto",
                   help="pixel check of every clip against its prompt in the lab caption grammar (vidaccel.tiny: "
                        "colours, counts, motion, background, extra objects): auto = when every prompt is such a "
                        "caption, lab = require it, none = off (default: auto)")
    p.add_argument("--warmup", type=non_negative_int, default=1,
                   help="untimed generations per configuration before its timed runs (default: 1)")
    p.add_argument("--repeats", type=repeats_arg, default="auto", metavar="N|auto",
                   help="timed rounds: every configuration runs once per round, interleaved with the others; "
                        "medians, min-max and paired speed-ups are reported, every time is kept. auto: up to "
                        f"{AUTO_MAX_ROUNDS} rounds, as many as fit about {AUTO_BUDGET_S:.0f} s of timed runs per "
                        "configuration, judged from the first round (default: auto)")
    p.set_defaults(func=run)
