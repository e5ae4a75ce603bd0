"""The comparison record: ``results.json`` (the data), ``results.md`` and ``report.html`` (views of it).

Layout of ``results.json``::

    {"settings": {...},            # model, prompts, seeds, resolution, frames, steps, device, dtype,
                                   # warmup, repeats ("auto" or N)
     "environment": {...},         # GPU/CPU, versions, date
     "configurations": [{"name": "baseline", "type": "dense"}, {"name": "radial", ...}],
     # a configuration at another size names its baseline: {"name": "refine", "size": [512, 512],
     # "reference": "baseline-512x512", ...}, that baseline {"name": "baseline-512x512", "baseline": true, ...}
     "rounds_planned": int or null,  # timed rounds (null: --repeats auto, first round unfinished)
     "calibrations": {config: [ratio, ...]},  # MagCache ratios measured by compare (calibrate: true)
     "runs": [{"config", "prompt_index", "prompt", "seed", "video", "size": [h, w], "steps_run",
               "quality": {...} or null (baseline), "check": {"passed", "failures", "extra_objects"} (--check),
               "attention": {"pairs", "dense_pairs", "calls"}, "attention_flop_fraction",
               "density", "rounds": [{"round", "order", "wall_s", "step_s", "steps", "peak_memory_bytes"}],
               "wall_s", "step_s", "wall_s_samples",   # medians over the rounds, every round's wall time
               "peak_memory": {"kind", "bytes"}}],     # the largest over the rounds
     "per_configuration": [{"config", "baseline", "reference", "size", "runs", "timed", "wall_s", "wall_s_min",
                            "wall_s_max", "step_s", "clip_step_s", "speedup", "speedup_min", "speedup_max",
                            "speedup_pairs", "speedup_verdict", "significant", "step_speedup",
                            "peak_memory_bytes", "psnr", "ssim", "flicker_delta", "flicker_ratio",
                            "temporal_error", "lpips", "lpips_note", "token_density",
                            "attention_flop_fraction", "check_passed", "check_total", "extra_objects"}],
     "complete": bool}

A run is one configuration, prompt and seed; its video and quality come from its first round (same
seed, same output), and every timed round is kept in ``rounds`` (``order``: its position among all
timed generations of the comparison, so the interleaving can be checked). `aggregate` and
`timing.paired_speedup` turn them into the per-configuration rows.

PSNR of identical outputs is infinite; JSON has no infinity, so it is written as the string
``"inf"``. Every write replaces the three files atomically, after each finished run, so an
interrupted comparison keeps what finished and ``--resume`` continues from it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
from pathlib import Path

from ..version import __version__
from .format import as_float, json_safe
from .timing import paired_speedup, spread

RESULTS_JSON, RESULTS_MD, REPORT_HTML = "results.json", "results.md", "report.html"
BASELINE = "baseline"  # the name of the dense configuration every other one is compared with


def environment(device: str) -> dict:
    """Device name and library versions for the report."""
    import diffusers
    import torch
    import transformers

    env = {"date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "diffusers": diffusers.__version__, "transformers": transformers.__version__,
           "vidaccel": __version__, "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
        try:
            import triton

            env["triton"] = triton.__version__
        except ImportError:
            env["triton"] = "not installed"
    else:
        env["cpu"] = _cpu_name()
        env["cpu_threads"] = torch.get_num_threads()
        if hasattr(os, "getloadavg"):  # other processes on the CPU make timings noisy: say how busy it was
            env["load_average_1min"] = round(os.getloadavg()[0], 2)
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class Results:
    """The comparison folder's record; `save` rewrites results.json, results.md and report.html."""

    def __init__(self, folder: Path, data: dict):
        self.folder, self.data = Path(folder), data

    @classmethod
    def open(cls, folder, settings: dict, configurations: list[dict], environment: dict, resume: bool,
             force: bool) -> "Results":
        """Start a record, or continue the one in `folder` with ``resume`` (settings must match)."""
        folder = Path(folder)
        path = folder / RESULTS_JSON
        cls.check_folder(folder, resume, force)
        if path.exists() and resume:
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"--resume: cannot read {path} ({exc}); pass --force to start over") from exc
            _check_same(data.get("settings", {}), settings)
            recorded = {c["name"]: c for c in data["configurations"]}
            for c in configurations:
                old = recorded.get(c["name"])
                if old is not None and _definition(old) != _definition(c):
                    raise ValueError(f"--resume: configuration {c['name']!r} was recorded with different "
                                     f"parameters; rename it or use a new --out")
                if old is None:
                    data["configurations"].append(c)
            data["environment_resumed"] = environment
        else:
            data = {"settings": settings, "environment": environment, "configurations": configurations,
                    "runs": [], "per_configuration": [], "complete": False}
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder, data)

    @staticmethod
    def check_folder(folder, resume: bool, force: bool) -> None:
        """Refuse to overwrite a recorded comparison unless asked to resume or start over."""
        if (Path(folder) / RESULTS_JSON).exists() and not (resume or force):
            raise FileExistsError(f"{folder} already holds a comparison: pass --resume to continue it, --force to "
                                  f"start over, or a different --out")

    def has_run(self, config: str, prompt_index: int, seed: int) -> bool:
        return self.find(config, prompt_index, seed) is not None

    def find(self, config: str, prompt_index: int, seed: int) -> dict | None:
        for run in self.data["runs"]:
            if (run["config"], run["prompt_index"], run["seed"]) == (config, prompt_index, seed):
                return run
        return None

    def done_rounds(self) -> set[tuple]:
        """``(config, prompt_index, seed, round)`` of every timed round recorded."""
        return {(r["config"], r["prompt_index"], r["seed"], i) for r in self.data["runs"]
                for i in (x["round"] for x in _rounds(r))}

    def next_order(self) -> int:
        """The ``order`` of the next timed generation (continues after a resume)."""
        orders = [x["order"] for r in self.data["runs"] for x in r.get("rounds", []) if x.get("order") is not None]
        return max(orders) + 1 if orders else 0

    def add_run(self, run: dict) -> None:
        """Record a run (its first timed round in ``run["rounds"]``) and save."""
        _refresh(run)
        self.data["runs"].append(json_safe(run))
        self.save()

    def add_round(self, config: str, prompt_index: int, seed: int, entry: dict) -> None:
        """Add a timed round to a recorded run and save."""
        run = self.find(config, prompt_index, seed)
        if run is None:
            raise KeyError(f"no run of {config!r} for prompt {prompt_index}, seed {seed} to add a round to")
        run["rounds"].append(json_safe(entry))
        _refresh(run)
        self.save()

    def expected_runs(self) -> int:
        s = self.data["settings"]
        return len(self.data["configurations"]) * len(s["prompts"]) * len(s["seeds"])

    def is_complete(self) -> bool:
        if len(self.data["runs"]) < self.expected_runs():
            return False
        if "rounds_planned" not in self.data:  # recorded before timed rounds: one entry per run
            return True
        planned = self.data["rounds_planned"]  # None: --repeats auto has not finished its first round
        return planned is not None and all(len(_rounds(r)) >= planned for r in self.data["runs"])

    def save(self) -> None:
        from .html import render_html
        from .markdown import render_markdown

        self.data["complete"] = self.is_complete()
        self.data["per_configuration"] = json_safe(aggregate(self.data))
        self.data["updated_utc"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        _atomic_write(self.folder / RESULTS_JSON, json.dumps(self.data, indent=2) + "\n")
        _atomic_write(self.folder / RESULTS_MD, render_markdown(self.data))
        _atomic_write(self.folder / REPORT_HTML, render_html(self.data))


def _definition(c: dict) -> dict:
    return {k: v for k, v in c.items() if k != "source"}


def _check_same(recorded: dict, now: dict) -> None:
    for key in sorted(set(recorded) | set(now)):
        if recorded.get(key) != now.get(key):
            raise ValueError(f"--resume: setting {key!r} differs from the recorded comparison "
                             f"(recorded {recorded.get(key)!r}, now {now.get(key)!r}); use the same options or a "
                             f"new --out")


def _mean(values):
    values = [as_float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _median(values):
    values = [as_float(v) for v in values if v is not None]
    return statistics.median(values) if values else None


def _rounds(run: dict) -> list[dict]:
    """A run's timed rounds; a run recorded before rounds existed reads as its samples (or its one time)."""
    if "rounds" in run:
        return run["rounds"]
    walls = run.get("wall_s_samples") or [run.get("wall_s")]
    return [{"round": i, "order": None, "wall_s": w, "step_s": run.get("step_s"), "peak_memory_bytes": None}
            for i, w in enumerate(walls)]


def _refresh(run: dict) -> None:
    """A run's summary fields from its rounds: median wall and step time, every wall time, largest peak memory."""
    rounds = run["rounds"]
    run["wall_s"] = _median(x["wall_s"] for x in rounds)
    run["step_s"] = _median(x.get("step_s") for x in rounds)
    run["wall_s_samples"] = [x["wall_s"] for x in rounds]
    mem = [x.get("peak_memory_bytes") for x in rounds]
    run.setdefault("peak_memory", {"kind": "n/a", "bytes": None})
    run["peak_memory"]["bytes"] = max(mem) if mem and None not in mem else None


def is_baseline(conf: dict) -> bool:
    """A dense reference configuration: ``baseline``, or the dense run at another size (``baseline: true``)."""
    return conf["name"] == BASELINE or bool(conf.get("baseline"))


def aggregate(data: dict) -> list[dict]:
    """Per configuration: the median, min and max time per clip over every timed round; the speed-up
    over its baseline (``reference``: the dense run at its size) from paired rounds (same round, prompt
    and seed: `timing.paired_speedup`, with its interval and verdict); means of the quality metrics and
    the attention-FLOP fraction over its runs (each from its first round); the pixel check's passes."""
    by_key = {(r["config"], r["prompt_index"], r["seed"]): r for r in data["runs"]}
    size = [data["settings"].get("height"), data["settings"].get("width")]
    out = []
    for conf in data["configurations"]:
        baseline = is_baseline(conf)
        reference = conf["name"] if baseline else conf.get("reference", BASELINE)
        runs = [r for r in data["runs"] if r["config"] == conf["name"]]
        walls, wall_pairs, step_pairs = [], [], []
        for r in runs:
            mine = {x["round"]: x for x in _rounds(r)}
            walls += [as_float(x["wall_s"]) for x in mine.values()]
            b = by_key.get((reference, r["prompt_index"], r["seed"]))
            theirs = {x["round"]: x for x in _rounds(b)} if b is not None else {}
            for k in sorted(set(mine) & set(theirs)):
                wall_pairs.append((as_float(theirs[k]["wall_s"]), as_float(mine[k]["wall_s"])))
                if theirs[k].get("step_s") and mine[k].get("step_s"):
                    step_pairs.append((as_float(theirs[k]["step_s"]), as_float(mine[k]["step_s"])))
        times = spread(walls)
        mem = [r["peak_memory"]["bytes"] for r in runs]
        checks = [r["check"] for r in runs if r.get("check")]
        row = {
            "config": conf["name"], "baseline": baseline, "reference": reference, "size": conf.get("size") or size,
            "runs": len(runs), "timed": times["n"],
            "wall_s": times["median"], "wall_s_min": times["min"], "wall_s_max": times["max"],
            "step_s": _median(x.get("step_s") for r in runs for x in _rounds(r)),
            "clip_step_s": _median(as_float(x["wall_s"]) / x["steps"] for r in runs for x in _rounds(r)
                                   if x.get("steps")),
            **paired_speedup(wall_pairs),
            "step_speedup": paired_speedup(step_pairs)["speedup"],
            "peak_memory_kind": runs[0]["peak_memory"]["kind"] if runs else None,
            "peak_memory_bytes": max(mem) if mem and None not in mem else None,
            "token_density": _median(r.get("density") for r in runs),
            "attention_flop_fraction": _mean(r.get("attention_flop_fraction") for r in runs),
            "check_passed": sum(c["passed"] for c in checks) if checks else None,
            "check_total": len(checks) if checks else None,
            "extra_objects": _mean(c["extra_objects"] for c in checks),
        }
        if baseline:  # compared with itself: 1.0 by definition, no verdict
            row.update(speedup=1.0 if runs else None, speedup_min=None, speedup_max=None, speedup_verdict=None,
                       significant=None, step_speedup=1.0 if runs else None)
        else:
            q = [r["quality"] for r in runs if r.get("quality")]
            row.update({k: _mean(x.get(k) for x in q)
                        for k in ("psnr", "ssim", "flicker_delta", "flicker_ratio", "temporal_error", "lpips")})
            row["lpips_note"] = q[0].get("lpips_note") if q else None
        out.append(row)
    return out
