"""Per-layer and per-head patterns measured by `vidaccel.tune`: the sparsity profile and its config.

A sparsity profile records, for each transformer of a pipeline, the model identity (class, config hash,
number of layers and heads), the token grid it was measured at, and per self-attention layer the measured
recall of every candidate pattern per head (the share of dense softmax mass the pattern keeps) and the
pattern chosen for each head. `TunedAttentionConfig` runs those choices: heads that share a pattern share
one sparse-attention call, heads whose choice is dense run SDPA.

Layout (``format: vidaccel-sparsity-profile``, ``version: 1``)::

    {"format", "version", "created", "versions": {...}, "run": {...},
     "budget": {"recall": r} or {"speedup": s}, "granularity": "head" or "layer", "dense_steps": n,
     "candidates": [{"name", "spec", "cost", "density"}],
     "models": [{"attribute", "model_class", "config_hash", "num_layers", "num_heads", "grid",
                 "recall": r, "cost": c,
                 "layers": [{"index", "name", "choice": [candidate name per head],
                             "recall": {candidate name: [recall per head]}}]}]}

``cost`` of a candidate is the share of the dense attention work its plan visits at the grid (the
kernel's block count, partial blocks included); a model's ``cost`` is the mean over its layers and heads
of the chosen candidates' costs, ``recall`` the mean of their recalls.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..core.json_file import (check_keys, check_model_identity, is_count, is_grid, is_number, read_json,
                              write_json)
from . import candidates as cand
from .config import AttentionConfigBase, check_common_fields

FORMAT, VERSION = "vidaccel-sparsity-profile", 1
MAKE_ONE = ('Make one with `vidaccel tune "<prompt>" --model <pipeline id or folder> --out sparsity.json` or '
            '`vidaccel.tune(pipe, prompts, path="sparsity.json")`.')


@dataclass
class LayerTuning:
    index: int
    name: str
    choice: list  # candidate name per head
    recall: dict  # candidate name -> [recall per head]


@dataclass
class ModelTuning:
    attribute: str
    model_class: str
    config_hash: str
    num_layers: int
    num_heads: int
    grid: list
    recall: float
    cost: float
    layers: list = field(default_factory=list)

    def check(self, model: torch.nn.Module, num_layers: int, source: str = "the sparsity profile") -> None:
        """Raise ValueError naming every difference if this profile was measured on another model."""
        check_model_identity(model, {"class": self.model_class, "config hash": self.config_hash,
                                     "number of layers": self.num_layers},
                             {"number of layers": num_layers}, source, MAKE_ONE, label="sparsity profile")

    def head_groups(self, layer: int) -> dict:
        """Candidate name -> the heads of `layer` that run it, in head order."""
        groups: dict = {}
        for head, choice in enumerate(self.layers[layer].choice):
            groups.setdefault(choice, []).append(head)
        return groups


@dataclass
class SparsityProfile:
    run: dict
    budget: dict
    granularity: str
    dense_steps: int
    candidates: list  # [{"name", "spec", "cost", "density"}]
    models: list
    created: str = ""
    versions: dict = field(default_factory=dict)

    def model(self, attribute: str) -> ModelTuning:
        for m in self.models:
            if m.attribute == attribute:
                return m
        raise ValueError(f"The sparsity profile has no entry for pipe.{attribute} (it has "
                         f"{[m.attribute for m in self.models]}). {MAKE_ONE}")

    def spec(self, candidate_name: str) -> dict:
        for c in self.candidates:
            if c["name"] == candidate_name:
                return c["spec"]
        raise ValueError(f"The sparsity profile chooses {candidate_name!r}, which is not among its candidates.")

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "created": self.created, "versions": self.versions,
                "run": self.run, "budget": self.budget, "granularity": self.granularity,
                "dense_steps": self.dense_steps, "candidates": self.candidates,
                "models": [asdict(m) for m in self.models]}

    @classmethod
    def from_dict(cls, data: dict, source: str = "sparsity profile") -> "SparsityProfile":
        """The profile in `data`, checked whole first: a wrong shape names the key and the fix."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = f"format={data.get('format')!r}" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
            raise ValueError(f"{source} is not a vidaccel sparsity profile ({found}). {MAKE_ONE}")
        _check_layout(data, source)
        models = [ModelTuning(**{**m, "layers": [LayerTuning(**layer) for layer in m["layers"]]})
                  for m in data["models"]]
        return cls(data["run"], data["budget"], data["granularity"], data["dense_steps"], data["candidates"],
                   models, data.get("created", ""), data.get("versions", {}))

    def save(self, path) -> Path:
        return write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path) -> "SparsityProfile":
        return cls.from_dict(read_json(path, "sparsity profile", MAKE_ONE), source=str(path))


def _is_str(v) -> bool:
    return isinstance(v, str)


_TOP = {"format": (True, lambda v: v == FORMAT, repr(FORMAT)), "version": (True, lambda v: v == VERSION, str(VERSION)),
        "created": (False, _is_str, "a string"), "versions": (False, lambda v: isinstance(v, dict), "an object"),
        "run": (True, lambda v: isinstance(v, dict), "an object"),
        "budget": (True, lambda v: isinstance(v, dict) and len(v) == 1 and set(v) <= {"recall", "speedup"}
                   and all(is_number(x) for x in v.values()), "{\"recall\": r} or {\"speedup\": s}"),
        "granularity": (True, lambda v: v in ("head", "layer"), "'head' or 'layer'"),
        "dense_steps": (True, is_count, "an int >= 0"),
        "candidates": (True, lambda v: isinstance(v, list) and v and all(isinstance(c, dict) for c in v),
                       "a non-empty list of objects"),
        "models": (True, lambda v: isinstance(v, list) and v and all(isinstance(m, dict) for m in v),
                   "a non-empty list of objects")}
_CANDIDATE = {"name": (True, _is_str, "a string"), "spec": (True, lambda v: isinstance(v, dict), "an object"),
              "cost": (True, is_number, "a number"), "density": (True, is_number, "a number")}
_MODEL = {"attribute": (True, _is_str, "a string such as 'transformer'"), "model_class": (True, _is_str, "a string"),
          "config_hash": (True, _is_str, "a string"), "num_layers": (True, is_count, "an int >= 0"),
          "num_heads": (True, lambda v: is_count(v) and v > 0, "an int >= 1"),
          "grid": (True, is_grid, "three ints [T, H, W]"), "recall": (True, is_number, "a number"),
          "cost": (True, is_number, "a number"),
          "layers": (True, lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v), "a list of objects")}
_LAYER = {"index": (True, is_count, "an int >= 0"), "name": (True, _is_str, "a string"),
          "choice": (True, lambda v: isinstance(v, list) and v and all(map(_is_str, v)), "a list of candidate names"),
          "recall": (True, lambda v: isinstance(v, dict), "an object: candidate name -> recall per head")}


def _check_layout(data: dict, source: str) -> None:
    check_keys(data, _TOP, "", source, MAKE_ONE)
    names = []
    for i, c in enumerate(data["candidates"]):
        check_keys(c, _CANDIDATE, f"candidates[{i}].", source, MAKE_ONE)
        cand.check_spec(c["spec"], f"{source}: candidates[{i}].spec")
        names.append(c["name"])
    for i, m in enumerate(data["models"]):
        check_keys(m, _MODEL, f"models[{i}].", source, MAKE_ONE)
        if len(m["layers"]) != m["num_layers"]:
            raise ValueError(f"{source}: models[{i}] has {len(m['layers'])} layers, num_layers says "
                             f"{m['num_layers']}. {MAKE_ONE}")
        for j, layer in enumerate(m["layers"]):
            where = f"models[{i}].layers[{j}]."
            check_keys(layer, _LAYER, where, source, MAKE_ONE)
            unknown = sorted(set(layer["choice"]) - set(names))
            if unknown or len(layer["choice"]) != m["num_heads"]:
                raise ValueError(f"{source}: '{where}choice' must name one of the candidates for each of the "
                                 f"{m['num_heads']} heads (unknown: {unknown}). {MAKE_ONE}")


@dataclass(frozen=True, eq=False)  # the profile is mutable data: one config object is one identity
class TunedAttentionConfig(AttentionConfigBase):
    """Sparse attention with the per-layer (and per-head) patterns of a sparsity profile (`vidaccel.tune`).

    Args:
        profile: a `SparsityProfile` or the path of its JSON file. It must have been measured on the same
            model (class, config hash, number of layers: checked when installed). At another token grid
            the window sizes scale with the grid (`candidates.scaled_spec`, logged once per grid).
        dense_steps: the first N denoising steps are dense (or that fraction of the schedule); ``None``
            (default) takes the profile's ``dense_steps`` (the steps `tune` left out of its measurement).
        dense_layers: the first N blocks are dense, on top of the layers the profile made dense. Default 0.
        backend, tile_size: as in `WindowAttentionConfig` (performance only).
    """

    profile: object = None
    dense_steps: int | float | None = None
    dense_layers: int = 0
    backend: str = "auto"
    tile_size: int | str = "auto"

    def __post_init__(self):
        if self.profile is None:
            raise ValueError(f"TunedAttentionConfig needs profile=<sparsity profile or its path>. {MAKE_ONE}")
        if not isinstance(self.profile, SparsityProfile):
            object.__setattr__(self, "profile", SparsityProfile.load(self.profile))
        check_common_fields(self.dense_steps, self.dense_layers, self.backend, self.tile_size,
                            dense_layers_optional=False)

    def resolved(self, family: str) -> "TunedAttentionConfig":
        """The profile's dense warm-up where none was given."""
        return self if self.dense_steps is not None else replace(self, dense_steps=self.profile.dense_steps)

    def __repr__(self) -> str:
        p = self.profile
        where = ", ".join(f"{m.attribute}: {m.num_layers} layers at grid {tuple(m.grid)}" for m in p.models)
        return (f"TunedAttentionConfig(profile=<{p.granularity}s, budget {p.budget}, {where}>, "
                f"dense_steps={self.dense_steps!r}, dense_layers={self.dense_layers}, backend={self.backend!r}, "
                f"tile_size={self.tile_size!r})")

    def build_pattern(self):
        """None: a tuned profile has no one pattern (each layer's groups come from `layer_groups`)."""
        return None

    def layer_groups(self, attribute: str, layer: int, grid) -> list[tuple[dict, list[int]]]:
        """[(spec at `grid`, heads)] for one layer of ``pipe.<attribute>``; dense groups have spec kind dense."""
        m = self.profile.model(attribute)
        return [(cand.scaled_spec(self.profile.spec(name), m.grid, grid), heads)
                for name, heads in m.head_groups(layer).items()]
