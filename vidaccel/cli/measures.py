"""What `vidaccel compare` measures besides time and `vidaccel.metrics`: the lab pixel check and attention work.

- `check_scenes` / `lab_check`: prompts in the lab caption grammar (`vidaccel.tiny.captions`) are
  checked from the pixels of every clip with `vidaccel.tiny.check.check_scene` (colours, counts,
  directions, re-entry, background, and the repetition count ``extra_objects``).
- `AttentionWork` counts the self-attention computations a generation runs (a torch forward
  pre-hook on each self-attention module's query projection, removed afterwards: nothing of the
  model changes) by batch and token count; `attended_pairs` turns those counts and the run's
  `vidaccel.summary` into attended query-key pairs: every computation at ``batch x tokens^2``, the
  ones sparse attention ran at its pattern's token density, FreeSwim's window branch at the
  window's and its full branch at its own. A configuration's attention-FLOP fraction is its pairs
  over those of the dense run of the same prompt and seed (score and value FLOPs are both
  proportional to the pairs). Skipped computations (block reuse, diffusers' caches) are simply
  not counted; text tokens of joint-attention models are left out (the query projection sees the
  video tokens).
"""

from __future__ import annotations

import math
from collections import Counter

CHECK_MODES = ("auto", "lab", "none")


def check_scenes(prompts: list[str], mode: str):
    """``(scenes, reason)``: one parsed `Scene` per prompt when the check is on, else None; ``lab`` raises
    naming the first prompt outside the grammar, ``auto`` turns the check off then (reason says why)."""
    from ..tiny.captions import parse_caption

    if mode not in CHECK_MODES:
        raise ValueError(f"--check {mode!r}: use one of {', '.join(CHECK_MODES)}")
    if mode == "none":
        return None, "off (--check none)"
    scenes = []
    for i, prompt in enumerate(prompts):
        try:
            scenes.append(parse_caption(prompt))
        except ValueError as exc:
            if mode == "lab":
                raise ValueError(f"--check lab: prompt {i} {prompt!r} is not a lab caption ({exc})") from None
            return None, f"off: prompt {i} is not a lab caption (--check auto)"
    return scenes, "lab caption grammar (vidaccel.tiny.check.check_scene)"


def lab_check(frames, scene) -> dict:
    """`check_scene` on one clip: ``{"passed", "failures", "extra_objects"}``."""
    from ..tiny import check

    passed, failures, meas = check.check_scene(frames, scene)
    return {"passed": bool(passed), "failures": list(failures), "extra_objects": int(meas["extra_objects"])}


class AttentionWork:
    """Counts self-attention computations during a ``with`` block: ``calls[(transformer, batch, tokens)]``.

    The hooks are torch forward pre-hooks on each self-attention module's query projection (``to_q``,
    or ``to_qkv`` once diffusers fused the projections), so a computation that a cache skips is not
    counted; ``complete`` is False when some module had neither.
    """

    def __init__(self, pipe):
        self.pipe, self.calls, self.complete = pipe, Counter(), True
        self._handles = []

    def __enter__(self) -> "AttentionWork":
        from ..core.adapters import adapter_for
        from ..core.models import transformers

        try:
            for index, model in enumerate(transformers(self.pipe)):
                for _, attn in adapter_for(model).self_attention(model):
                    proj = getattr(attn, "to_qkv" if getattr(attn, "fused_projections", False) else "to_q", None)
                    if proj is None:
                        self.complete = False
                        continue
                    self._handles.append(proj.register_forward_pre_hook(self._counter(index)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def _counter(self, index: int):
        def count(module, args):
            if args and hasattr(args[0], "shape") and args[0].dim() >= 2:
                x = args[0]
                self.calls[(index, math.prod(x.shape[:-2]), int(x.shape[-2]))] += 1

        return count

    def __exit__(self, *exc) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return False


def attended_pairs(work: AttentionWork, summary: dict | None) -> dict:
    """``{"pairs", "dense_pairs", "calls"}`` of one run: attended query-key pairs (see the module docstring),
    the same with every computation dense, and the number of computations; None values when incomplete."""
    calls = work.calls
    dense = sum(n * b * s * s for (_, b, s), n in calls.items())
    out = {"calls": sum(calls.values()), "dense_pairs": float(dense), "pairs": float(dense)}
    if not work.complete:
        return {**out, "pairs": None, "dense_pairs": None}
    summary = summary or {}
    saved = 0.0
    for index, t in enumerate(summary.get("transformers") or []):  # sparse attention: one report per transformer
        if t.get("grid") and t["sparse_calls"]:
            saved += t["sparse_calls"] * (1.0 - t["grid"]["density"]) * _pairs_at(calls, index, t["grid"]["tokens"])
    for index, f in enumerate(summary.get("freeswim") or []):  # FreeSwim: window branch and full branch
        if not f.get("grid"):
            continue
        tokens = math.prod(f["grid"])
        per_call = _pairs_at(calls, index, tokens)
        at_grid = sum(n for (k, _, s), n in calls.items() if k == index and s == tokens)
        full = f["counts"]["full_attention_sparse"] + f["counts"]["full_attention_dense"]
        saved += (at_grid - full) * (1.0 - f["window_token_density"]) * per_call
        saved += f["counts"]["full_attention_sparse"] * (1.0 - f["full_token_density"]) * per_call
    out["pairs"] = dense - saved
    return out


def _pairs_at(calls: Counter, index: int, tokens: int) -> float:
    """Pairs of one computation of transformer `index` at `tokens` tokens (its batch from the counts)."""
    batches = [b for (k, b, s) in calls if k == index and s == tokens]
    return float(max(batches, default=1) * tokens * tokens)


def flop_fraction(run_pairs, reference_pairs) -> float | None:
    if run_pairs is None or not reference_pairs:
        return None
    return float(run_pairs) / float(reference_pairs)
