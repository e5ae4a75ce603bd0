"""What the training stages share: resumable CSV logs, checkpoints and RNG states, EMA updates, autocast."""

from __future__ import annotations

import csv
import os
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
