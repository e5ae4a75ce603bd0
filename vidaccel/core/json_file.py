"""Measured-data files (block profiles, sparsity profiles): checked layout, NaN as null, the model check.

A layout is a dict ``key -> (required, test, wanted)``; `check_keys` raises a one-line ValueError naming
the first unknown, missing or malformed key and how to make a good file (`fix`). JSON has no NaN, so
measurements that could not be taken are written as null (`nan_to_null`) and read back as NaN.
A file measured on one model is refused on another by `check_model_identity`, naming every difference.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .models import config_hash


def is_number(v) -> bool:
    """A JSON number or null (a measurement that could not be taken)."""
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def is_numbers(v) -> bool:
    return isinstance(v, list) and all(is_number(x) for x in v)


def is_grid(v) -> bool:
    return isinstance(v, list) and len(v) == 3 and all(is_count(x) and x > 0 for x in v)


def check_keys(obj: dict, layout: dict, where: str, source: str, fix: str) -> None:
    """Raise ValueError for the first key of `obj` that `layout` does not allow, lacks, or whose value fails."""
    for key in obj:
        if key not in layout:
            raise ValueError(f"{source}: unknown key '{where}{key}'; valid keys there: {', '.join(layout)}. Fix the "
                             f"file or make a new one. {fix}")
    for key, (required, test, wanted) in layout.items():
        if key not in obj:
            if required:
                raise ValueError(f"{source}: missing key '{where}{key}' ({wanted}). Fix the file or make a new "
                                 f"one. {fix}")
        elif not test(obj[key]):
            raise ValueError(f"{source}: key '{where}{key}' is {obj[key]!r}, expected {wanted}. Fix the file or "
                             f"make a new one. {fix}")


def nan_to_null(obj):
    """A copy of `obj` with every NaN float written as None (JSON null)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_null(v) for v in obj]
    return obj


def read_json(path, what: str, fix: str) -> dict:
    """The JSON object in the file at `path`; FileNotFoundError / ValueError name `what` and `fix`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No {what} at {str(path)!r}. {fix}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}). {fix}") from None


def write_json(data: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nan_to_null(data), indent=1) + "\n")
    return path


def check_model_identity(model: torch.nn.Module, recorded: dict, actual: dict, source: str, fix: str,
                         label: str = "profile") -> None:
    """Raise ValueError naming every difference between what a file recorded and this model.

    `recorded` and `actual` map a description ("number of blocks") to a value; the model's class and
    config hash are always compared. `label` names the file's side in each difference.
    """
    have = {"class": type(model).__name__, "config hash": config_hash(model), **actual}
    diff = [f"{k}: {label} {recorded[k]!r}, this model {have[k]!r}" for k in recorded if recorded[k] != have[k]]
    if diff:
        raise ValueError(
            f"{source} was made for another model ({'; '.join(diff)}). It only fits the model it was measured "
            f"on. {fix}"
        )
