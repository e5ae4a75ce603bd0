"""What the training stages share: resumable CSV logs, checkpoints and RNG states, EMA updates, autocast,
span timing, the noise-level shift."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import torch


class Logger:
    """Append-only CSV of (step, seconds, loss, ...) that survives resumption."""

    def __init__(self, path: Path, fields: list[str], start_step: int):
        self.path, self.fields = path, fields
        rows = []
        if path.exists() and start_step > 0:
            with open(path) as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fields)
            w.writeheader()
            w.writerows(rows)

    def log(self, **row):
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)


def ema_update(ema: dict, model: torch.nn.Module, decay: float):
    with torch.no_grad():
        sd = model.state_dict()
        keys = [k for k, v in sd.items() if v.dtype == torch.float32]
        torch._foreach_lerp_([ema[k] for k in keys], [sd[k] for k in keys], 1 - decay)


def save_ckpt(path: Path, **state):
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def rng_state(gen: torch.Generator, dev_gen: torch.Generator):
    return {"data": gen.get_state(), "noise": dev_gen.get_state()}


def autocast(device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """Flow-matching noise levels moved towards 1 as Wan's scheduler does at inference (``flow_shift``):
    ``shift * s / (1 + (shift - 1) * s)``; 1 leaves them unchanged."""
    return shift * sigma / (1 + (shift - 1) * sigma)


class SpanTimer:
    """Seconds spent inside ``start()``/``stop()`` spans without a synchronisation per span: on CUDA the spans
    are event pairs on the device's timeline, read (one synchronisation) by ``pop_seconds``."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events, self.cpu_seconds, self._t = [], 0.0, 0.0

    def start(self):
        if self.cuda:
            self.events.append([torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)])
            self.events[-1][0].record()
        else:
            self._t = time.perf_counter()

    def stop(self):
        if self.cuda:
            self.events[-1][1].record()
        else:
            self.cpu_seconds += time.perf_counter() - self._t

    def pop_seconds(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            total = sum(a.elapsed_time(b) for a, b in self.events) / 1000
            self.events = []
            return total
        total, self.cpu_seconds = self.cpu_seconds, 0.0
        return total
