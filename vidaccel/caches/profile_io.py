"""The block profile: what `vidaccel.profile` measured, as data that round-trips through JSON.

A profile file holds, for each transformer of the pipeline (``transformer``, and ``transformer_2``
for Wan2.2), the model identity (class, config hash, number of blocks) and per block: mean
foreground ratio ``R``, ``R`` per step, relative L1 change of the block's residual between
consecutive steps, received-attention entropy per step, and the classification (``R >= tau``
-> foreground, else background). The run settings (resolution, frames, steps, prompts, seeds),
the foreground estimate and how ``tau`` was chosen are recorded next to them.

Layout (``format: vidaccel-profile``, ``version: 1``)::

    {"format", "version", "created", "versions": {...}, "run": {...}, "foreground": {...},
     "tau": {"value", "method", "detail"},
     "models": [{"attribute", "model_class", "config_hash", "num_blocks", "grid",
                 "blocks": [{"index", "name", "kind", "R", "R_per_step",
                             "residual_change_per_step", "attention_entropy_per_step"}]}]}
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..core.json_file import (check_keys, check_model_identity, is_count, is_grid, is_number, is_numbers, read_json,
                              nan_to_null, write_json)

FORMAT, VERSION = "vidaccel-profile", 1
MAKE_ONE = (
    "Make one with `vidaccel profile \"<prompt>\" --model <pipeline id or folder> --height <H> --width <W> "
    "--frames <F> --steps <S> --out profile.json` or `vidaccel.profile(pipe, prompts, path=\"profile.json\")`."
)


@dataclass
class BlockStats:
    index: int
    name: str
    kind: str  # "foreground" or "background"
    R: float  # mean foreground ratio over profiled steps (nan when no step could be measured)
    R_per_step: list = field(default_factory=list)
    residual_change_per_step: list = field(default_factory=list)  # relative L1 vs the previous step (first: nan)
    attention_entropy_per_step: list = field(default_factory=list)  # of received attention, in [0, 1]


@dataclass
class ModelProfile:
    attribute: str  # pipeline attribute: "transformer" or "transformer_2"
    model_class: str
    config_hash: str
    num_blocks: int
    grid: list | None
    blocks: list = field(default_factory=list)

    @property
    def background_blocks(self) -> list[int]:
        return [b.index for b in self.blocks if b.kind == "background"]

    def check(self, model: torch.nn.Module, num_blocks: int, source: str = "the profile") -> None:
        """Raise ValueError naming every difference if this profile was made for another model."""
        check_model_identity(model, {"class": self.model_class, "config hash": self.config_hash,
                                     "number of blocks": self.num_blocks},
                             {"number of blocks": num_blocks}, source, MAKE_ONE)


@dataclass
class Profile:
    run: dict
    foreground: dict
    tau: dict
    models: list
    created: str = ""
    versions: dict = field(default_factory=dict)

    def model(self, attribute: str) -> ModelProfile:
        for m in self.models:
            if m.attribute == attribute:
                return m
        have = [m.attribute for m in self.models]
        raise ValueError(f"The profile has no entry for pipe.{attribute} (it has {have}). {MAKE_ONE}")

    def reclassified(self, tau) -> "Profile":
        """A copy with every block classified again from its stored R; ``tau`` as in `choose_tau`
        (a number, "otsu", "median" or "background:F")."""
        info = choose_tau([b.R for m in self.models for b in m.blocks], tau)
        models = [
            ModelProfile(m.attribute, m.model_class, m.config_hash, m.num_blocks, m.grid,
                         [BlockStats(**{**asdict(b), "kind": classify(b.R, info["value"])}) for b in m.blocks])
            for m in self.models
        ]
        return Profile(self.run, self.foreground, info, models, self.created, self.versions)

    def to_dict(self) -> dict:
        return nan_to_null({"format": FORMAT, "version": VERSION, "created": self.created, "versions": self.versions,
                            "run": self.run, "foreground": self.foreground, "tau": self.tau,
                            "models": [asdict(m) for m in self.models]})

    @classmethod
    def from_dict(cls, data: dict, source: str = "profile") -> "Profile":
        """The profile in `data`, checked whole first (`check_layout`): a wrong shape names the key."""
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            found = (f"format={data.get('format')!r}, version={data.get('version')!r}" if isinstance(data, dict)
                     else f"a JSON {type(data).__name__}, not an object")
            raise ValueError(f"{source} is not a vidaccel profile of version {VERSION} ({found}). {MAKE_ONE}")
        check_layout(data, source)
        models = []
        for m in data["models"]:
            blocks = [BlockStats(**_nan(b)) for b in m["blocks"]]
            models.append(ModelProfile(m["attribute"], m["model_class"], m["config_hash"], m["num_blocks"],
                                       m.get("grid"), blocks))
        tau = {**data["tau"], "value": _nan(data["tau"].get("value"))}
        return cls(data["run"], data["foreground"], tau, models, data.get("created", ""),
                   data.get("versions", {}))

    def save(self, path) -> Path:
        return write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path) -> "Profile":
        return cls.from_dict(read_json(path, "block profile", MAKE_ONE), source=str(path))


# ------------------------------------------------------------------------------ the file's layout

# key -> (required, test, what the test wants); the layout in the module docstring
_TOP = {"format": (True, lambda v: v == FORMAT, repr(FORMAT)), "version": (True, lambda v: v == VERSION, str(VERSION)),
        "created": (False, lambda v: isinstance(v, str), "a string"),
        "versions": (False, lambda v: isinstance(v, dict), "an object"),
        "run": (True, lambda v: isinstance(v, dict), "an object"),
        "foreground": (True, lambda v: isinstance(v, dict), "an object"),
        "tau": (True, lambda v: isinstance(v, dict) and is_number(v.get("value")) and "value" in v,
                "an object with a numeric 'value'"),
        "models": (True, lambda v: isinstance(v, list) and v and all(isinstance(m, dict) for m in v),
                   "a non-empty list of objects")}
_MODEL = {"attribute": (True, lambda v: isinstance(v, str), "a string such as 'transformer'"),
          "model_class": (True, lambda v: isinstance(v, str), "a string"),
          "config_hash": (True, lambda v: isinstance(v, str), "a string"),
          "num_blocks": (True, is_count, "an int >= 0"),
          "grid": (False, lambda v: v is None or is_grid(v),
                   "null or three ints [T, H, W]"),
          "blocks": (True, lambda v: isinstance(v, list) and all(isinstance(b, dict) for b in v), "a list of objects")}
_BLOCK = {"index": (True, is_count, "an int >= 0"), "name": (True, lambda v: isinstance(v, str), "a string"),
          "kind": (True, lambda v: v in ("foreground", "background"), "'foreground' or 'background'"),
          "R": (True, is_number, "a number or null"),
          **{k: (False, is_numbers, "a list of numbers or nulls")
             for k in ("R_per_step", "residual_change_per_step", "attention_entropy_per_step")}}


def check_layout(data: dict, source: str = "profile") -> None:
    """Raise ValueError naming the first key of `data` that does not fit the profile layout (and the fix)."""
    check_keys(data, _TOP, "", source, MAKE_ONE)
    for i, m in enumerate(data["models"]):
        check_keys(m, _MODEL, f"models[{i}].", source, MAKE_ONE)
        for j, b in enumerate(m["blocks"]):
            check_keys(b, _BLOCK, f"models[{i}].blocks[{j}].", source, MAKE_ONE)


def classify(R: float, tau: float) -> str:
    """``R >= tau`` -> "foreground"; a block whose R could not be measured (nan) stays foreground (always computed)."""
    return "background" if (not math.isnan(R) and R < tau) else "foreground"


def otsu_threshold(values) -> float:
    """Threshold maximising the between-class variance of a 1D sample (exact over all splits).

    Returns the midpoint between the two classes' neighbouring values; for fewer than two
    distinct values it returns their mean.
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    v = v[~torch.isnan(v)].sort().values
    if v.numel() == 0:
        return float("nan")
    if v[0] == v[-1]:
        return float(v.mean())
    n = v.numel()
    csum = torch.cumsum(v, 0)
    k = torch.arange(1, n, dtype=torch.float64, device=v.device)  # size of the lower class for split after index k-1
    m0 = csum[:-1] / k
    m1 = (csum[-1] - csum[:-1]) / (n - k)
    between = k * (n - k) * (m0 - m1) ** 2
    between[v[1:] == v[:-1]] = -1  # a split must fall between distinct values
    i = int(torch.argmax(between))
    return float((v[i] + v[i + 1]) / 2)


def choose_tau(mean_R: list[float], tau) -> dict:
    """``tau`` as a number, or chosen from the blocks' mean R: "otsu" (two-class split), "median", or
    "background:F" - a speed budget: the fraction F (0..1) of blocks with the lowest R become background
    (ties at the cut stay foreground, so at most that many; blocks without an R always stay foreground)."""
    if isinstance(tau, str) and tau.startswith("background:"):
        try:
            fraction = float(tau.split(":", 1)[1])
        except ValueError:
            fraction = -1.0
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"tau {tau!r}: 'background:F' needs a fraction F between 0 and 1, e.g. 'background:0.7'.")
        finite = sorted(r for r in mean_R if not math.isnan(r))
        k = min(len(finite), round(fraction * len(mean_R)))  # blocks to reuse
        if k == 0:
            value = finite[0] if finite else float("nan")  # R < min(R): none
        elif k == len(finite):
            value = math.nextafter(finite[-1], math.inf)  # every measured block
        else:
            value = (finite[k - 1] + finite[k]) / 2 if finite[k - 1] < finite[k] else finite[k - 1]
        return {"value": value, "method": f"background:{fraction:g}",
                "detail": f"{k} of {len(mean_R)} blocks with the lowest mean R reused (a speed budget, not a split "
                          f"the data suggests)"}
    if isinstance(tau, (int, float)):
        return {"value": float(tau), "method": "given", "detail": "set by the user"}
    if tau == "otsu":
        return {"value": otsu_threshold(mean_R), "method": "otsu",
                "detail": f"threshold maximising the between-class variance of the mean R of {len(mean_R)} blocks"}
    if tau == "median":
        finite = torch.tensor([r for r in mean_R if not math.isnan(r)], dtype=torch.float64)
        return {"value": float(finite.median()) if finite.numel() else float("nan"), "method": "median",
                "detail": "median of the blocks' mean R (about half the blocks become background)"}
    raise ValueError(f"tau must be a number, 'otsu', 'median' or 'background:F' (0 <= F <= 1), not {tau!r}.")


def _nan(obj):
    if obj is None:
        return float("nan")
    if isinstance(obj, dict):
        return {k: (v if k in ("name", "kind", "index") else _nan(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan(v) for v in obj]
    return obj
