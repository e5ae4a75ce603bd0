"""`vidaccel compare`: a dense baseline and N configurations, same prompts and seeds, into a report folder."""

from __future__ import annotations

import inspect
import re
import statistics
from pathlib import Path

from ._options import (add_accel_option, add_generation_options, add_model_options, formatter,
                       non_negative_int, positive_int, print_table)

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
results.md, rewritten after every run: an interrupted comparison keeps what finished."""


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


def _timings(samples) -> dict:
    """Median wall and step time over repeats (all samples kept), the largest peak memory."""
    steps = [x.step_s for x in samples if x.step_s is not None]
    mem = samples[0].peak_memory
    if mem.get("bytes") is not None:
        mem = {**mem, "bytes": max(x.peak_memory["bytes"] for x in samples)}
    return {"wall_s": statistics.median(x.wall_s for x in samples),
            "step_s": statistics.median(steps) if steps else None, "peak_memory": mem,
            "wall_s_samples": [x.wall_s for x in samples]}


def _video_name(config: str, prompt_index: int, seed: int) -> str:
    return f"videos/{re.sub(r'[^A-Za-z0-9_.-]', '_', config)}_p{prompt_index}_s{seed}.mp4"


def run(args) -> int:
    import numpy as np

    from .. import config_files, generation, loading
    from ...metrics import compare_videos
    from ...report import Results, environment, write_mp4

    prompts = generation.read_prompts(args.prompts, args.prompts_file)
    configs = config_files.accel_configs(args.accel or sorted(config_files._presets()))
    baseline = config_files.NamedConfig(config_files.BASELINE, None, "dense attention")
    Results.check_folder(args.out, args.resume, args.force)  # before the (slow) model load
    loading.quiet_libraries()
    pipe, info = loading.load_pipeline(args.model, args.device, args.dtype, args.offload)
    settings = _settings(args, prompts, info, pipe)
    gen = {k: settings[k] for k in ("height", "width", "num_frames", "steps", "guidance_scale", "negative_prompt")}
    folder = Path(args.out)
    results = Results.open(folder, settings, [c.describe() for c in [baseline, *configs]],
                           environment(info["device"]), resume=args.resume, force=args.force)
    results.save()
    jobs = [(c, i, s) for c in [baseline, *configs] for i in range(len(prompts)) for s in args.seeds]
    todo = [j for j in jobs if not results.has_run(j[0].name, j[1], j[2])]
    print(f"comparing {len(configs)} configuration(s) with the dense baseline on {info['model']} "
          f"({info['device']}, {info['dtype']}): {len(jobs) - len(todo)} of {len(jobs)} runs already recorded")
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

    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=None if args.progress is None else not args.progress)
    try:
        for conf in [baseline, *configs]:
            pending = [(i, s) for c, i, s in todo if c is conf]
            if not pending:
                continue
            config_files.apply_config(pipe, conf)
            try:
                for _ in range(args.warmup):  # untimed: first-call costs (kernels, plans) stay out of the timings
                    generation.generate(pipe, prompts[pending[0][0]], pending[0][1], offload=args.offload,
                                    progress=args.progress, desc=f"{conf.name} warm-up", **gen)
                for i, s in pending:
                    samples = [generation.generate(pipe, prompts[i], s, offload=args.offload, progress=args.progress,
                                               desc=f"{conf.name} p{i} s{s}", **gen) for _ in range(args.repeats)]
                    r = samples[0]  # same seed: every repeat generates the same frames
                    video = _video_name(conf.name, i, s)
                    write_mp4(folder / video, r.frames, fps=args.fps)
                    run = {"config": conf.name, "prompt_index": i, "prompt": prompts[i], "seed": s, "video": video,
                           **_timings(samples), "quality": None}
                    if conf.is_baseline:
                        np.save(frames_dir / f"baseline_p{i}_s{s}.npy", r.frames)
                        reference[(i, s)] = r.frames
                    else:
                        import vidaccel

                        run["quality"] = compare_videos(baseline_frames(i, s), r.frames)
                        info = vidaccel.summary(pipe, print_summary=False)
                        run["density"] = _density(info)
                        run["summary"] = str(info)  # resolved settings (family defaults filled in), counters
                        if conf.config is not None and info.get("transformers") and not any(
                                t["sparse_calls"] for t in info["transformers"]):
                            run["note"] = ("no sparse attention call in this run (dense warm-up covers every step or "
                                           "layer): same computation as dense")
                        elif run["density"] == 1.0:
                            run["note"] = "the pattern covers the whole token grid at this size: same computation as dense"
                    results.add_run(run)
                    bar.update(1)
                    q = run["quality"]
                    quality = "" if q is None else f", PSNR {q['psnr']:.2f} dB, SSIM {q['ssim']:.4f}"
                    note = f" [{run['note']}]" if run.get("note") else ""
                    bar.write(f"{conf.name} prompt {i} seed {s}: {run['wall_s']:.2f} s{quality}{note}")
            finally:
                config_files.remove_config(pipe, conf)
    except loading.OutOfMemory as exc:
        bar.close()
        raise loading.OutOfMemory(f"{exc}. {len(results.data['runs'])} finished run(s) are kept in {folder}: rerun with "
                                 f"the same options and --resume, or with smaller settings and a new --out") from exc
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: {len(results.data['runs'])} finished run(s) kept in {folder}; rerun the same command "
              f"with --resume to continue")
        return 130
    bar.close()
    results.save()
    _print_table(results.data)
    print(f"report: {folder / 'report.html'}  data: {folder / 'results.json'}, {folder / 'results.md'}")
    return 0


def _print_table(data) -> None:
    from ...report.format import summary_rows

    header, rows = summary_rows(data)
    keep = [0, 2, 4, 6, 8, 9]  # configuration, wall time, speedup, memory, PSNR, SSIM
    print_table([[header[k] for k in keep]] + [[row[k] for k in keep] for row in rows])


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="baseline vs configurations: speed, memory and quality report", formatter_class=formatter,
        description="Run a dense baseline and each configuration with identical prompts and seeds; record wall time, "
                    "time per step, peak memory and quality against the baseline (PSNR, SSIM, flicker, LPIPS when "
                    "its weights are available locally) into a report folder.",
        epilog=EXAMPLES,
    )
    add_generation_options(p)
    add_model_options(p)
    add_accel_option(p, repeatable=True, what="a configuration to compare, repeat for several (default: every preset)")
    p.add_argument("--out", default="vidaccel-report", help="report folder (default: vidaccel-report)")
    p.add_argument("--resume", action="store_true", help="continue the comparison in --out, skipping finished runs")
    p.add_argument("--force", action="store_true", help="start over in --out, replacing a recorded comparison")
    p.add_argument("--warmup", type=non_negative_int, default=1,
                   help="untimed generations per configuration before its timed runs (default: 1)")
    p.add_argument("--repeats", type=positive_int, default=1,
                   help="timed generations per run; the median is reported, all are kept (default: 1)")
    p.set_defaults(func=run)
