"""vidaccel.tune: recall against a brute-force softmax mass, the budget choices against exhaustive search, the
sparsity profile's round trip and refusals, candidate specs and their move to another grid."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from tiny_models import wan_pipeline, wan_transformer
from vidaccel.sparse import candidates as cand
from vidaccel.sparse.tuned import SparsityProfile, TunedAttentionConfig
from vidaccel.tuning import choose, tune

SIZE = dict(height=64, width=96, num_frames=9)  # latent 3x8x12, token grid (3, 4, 6): 72 tokens
GRID = (3, 4, 6)
SPECS = [{"kind": "window", "kernel": [1, 3, 3]}, {"kind": "window", "kernel": [3, 3, 5]},
         {"kind": "radial", "decay_factor": 0.2}]


@pytest.fixture(scope="module")
def pipe():
    return wan_pipeline()


@pytest.fixture(scope="module")
def profile(pipe):
    return tune(pipe, "a red ball", candidates=SPECS, num_inference_steps=3, query_rows=72, **SIZE)


class _SelfAttentionCalls(TorchFunctionMode):
    """q, k of each SDPA call made while a self-attention module (attn1) runs, per layer: an independent capture."""

    def __init__(self):
        super().__init__()
        self.layer, self.calls = None, {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and self.layer is not None:
            named = dict(zip(("query", "key"), args), **kwargs)
            self.calls.setdefault(self.layer, []).append((named["query"].detach().clone(),
                                                          named["key"].detach().clone(), named.get("scale")))
        return func(*args, **kwargs)


def _capture_attention(pipe, steps=3):
    capture, hooks = _SelfAttentionCalls(), []
    for layer, block in enumerate(pipe.transformer.blocks):
        hooks += [block.attn1.register_forward_pre_hook(lambda m, a, layer=layer: setattr(capture, "layer", layer)),
                  block.attn1.register_forward_hook(lambda m, a, o: setattr(capture, "layer", None))]
    try:
        with capture:
            pipe("a red ball", num_inference_steps=steps, output_type="latent",
                 generator=torch.Generator().manual_seed(0), **SIZE)
    finally:
        for h in hooks:
            h.remove()
    return capture.calls


def test_recall_equals_brute_force_softmax_mass(pipe, profile):
    """Every row scored (query_rows >= tokens): the profile's recall per layer, head and candidate is the mean
    over calls and rows of the dense softmax mass inside the pattern's full mask."""
    calls = _capture_attention(pipe)
    m = profile.model("transformer")
    assert m.grid == list(GRID) and m.num_heads == 2
    for spec in SPECS + [{"kind": "dense"}]:
        p = cand.pattern(spec)
        mask = torch.ones(72, 72, dtype=torch.bool) if p is None else p.dense_mask(GRID)
        for layer, captured in calls.items():
            total = torch.zeros(2, dtype=torch.float64)
            rows = 0
            for q, k, scale in captured:
                probs = torch.softmax((q.double() @ k.double().transpose(-1, -2)) * (scale or q.shape[-1] ** -0.5), -1)
                total += (probs * mask).sum(-1).sum((0, 2))
                rows += q.shape[0] * q.shape[2]
            expected = (total / rows).tolist()
            got = m.layers[layer].recall[cand.name(spec)]
            assert got == pytest.approx(expected, abs=2e-6), (spec, layer)
    # the recall is a real measurement: the narrow window keeps less than the wide one, both less than dense
    narrow, wide = (m.layers[0].recall[cand.name(s)] for s in SPECS[:2])
    assert all(a < b < 1.0 for a, b in zip(narrow, wide))


def test_recall_budget_picks_the_cheapest_candidate_meeting_it(profile):
    costs = {c["name"]: c["cost"] for c in profile.candidates}
    for m in profile.models:
        for layer in m.layers:
            for head, name in enumerate(layer.choice):
                r = {n: v[head] for n, v in layer.recall.items()}
                ok = [n for n in r if r[n] >= 0.95 or n == "dense"]
                assert name in ok and costs[name] == min(costs[n] for n in ok)


def test_speedup_budget_is_within_one_step_of_the_exhaustive_optimum():
    torch.manual_seed(0)
    cost = torch.tensor([0.1, 0.25, 0.5, 1.0], dtype=torch.float64)
    for trial in range(6):
        recall = torch.rand(5, 4, dtype=torch.float64).sort(1).values
        recall[:, 3] = 1.0
        for speedup in (1.3, 2.0, 3.0, 6.0):
            budget = 5 / speedup
            pick = choose.by_speedup(recall, cost, speedup)
            assert float(cost[pick].sum()) <= budget + 1e-9
            ours = float(sum(recall[u, c] for u, c in enumerate(pick)))
            best = max(float(sum(recall[u, c] for u, c in enumerate(a)))
                       for a in itertools.product(range(4), repeat=5) if float(cost[list(a)].sum()) <= budget + 1e-9)
            uniform = max(float(recall[:, c].sum()) for c in range(4) if float(cost[c]) * 5 <= budget + 1e-9)
            largest_step = float((recall.max(1).values - recall.min(1).values).max())
            assert uniform - 1e-9 <= ours and best - ours <= largest_step + 1e-9


def test_speedup_out_of_reach_names_the_limit():
    with pytest.raises(ValueError, match=r"out of reach.*at most 4.00x"):
        choose.by_speedup(torch.ones(3, 2), torch.tensor([0.25, 1.0]), 5.0)


def test_speedup_budget_end_to_end(pipe):
    prof = tune(pipe, "a red ball", speedup=1.5, candidates=SPECS, num_inference_steps=2, granularity="layer",
                **SIZE)
    m = prof.model("transformer")
    assert prof.budget == {"speedup": 1.5} and m.cost <= 1 / 1.5 + 1e-9
    assert all(len(set(layer.choice)) == 1 for layer in m.layers)  # per layer: every head the same


def test_profile_round_trips_and_is_refused_for_another_model(profile, tmp_path):
    path = profile.save(tmp_path / "sparsity.json")
    again = SparsityProfile.load(path)
    assert again.to_dict() == json.loads(path.read_text()) == json.loads(json.dumps(profile.to_dict()))
    m = again.model("transformer")
    m.check(wan_transformer(layers=2), 2)  # same architecture: accepted
    with pytest.raises(ValueError) as err:
        m.check(wan_transformer(layers=3), 3)
    text = str(err.value)
    assert "config hash" in text and "number of layers: sparsity profile 2, this model 3" in text
    assert "vidaccel tune" in text


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("budget"), "missing key 'budget'"),
    (lambda d: d.update(budget={"recal": 0.9}), "key 'budget'"),
    (lambda d: d["models"][0]["layers"][0].update(choice=["window(9,9,9)", "dense"]), "unknown: ['window(9,9,9)']"),
    (lambda d: d["models"][0]["layers"].pop(), "has 1 layers, num_layers says 2"),
    (lambda d: d["candidates"][0].update(spec={"kind": "window"}), "takes exactly ['kernel']"),
    (lambda d: d.update(format="vidaccel-profile"), "is not a vidaccel sparsity profile"),
])
def test_bad_profile_files_name_the_key(profile, tmp_path, edit, message):
    data = json.loads(json.dumps(profile.to_dict()))
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        SparsityProfile.load(path)
    with pytest.raises(FileNotFoundError, match="vidaccel tune"):
        TunedAttentionConfig(profile=tmp_path / "missing.json")


@pytest.mark.parametrize("kwargs, message", [
    (dict(recall=0.9, speedup=2.0), "Give one budget"),
    (dict(recall=1.5), r"recall must be a finite number >= 0.0 <= 1.0"),
    (dict(speedup=0.5), r"speedup must be"),
    (dict(granularity="block"), "granularity must be 'head' or 'layer'"),
    (dict(candidates=[{"kind": "band"}]), "kind' one of dense, window, tile_window, radial"),
    (dict(query_rows=0), "query_rows"),
    (dict(steps=[5]), "measured no step"),
])
def test_bad_arguments_are_refused_and_leave_the_pipeline_working(pipe, kwargs, message):
    reference = pipe("a red ball", num_inference_steps=1, output_type="latent",
                     generator=torch.Generator().manual_seed(0), **SIZE).frames
    with pytest.raises((ValueError, RuntimeError), match=message):
        tune(pipe, "a red ball", num_inference_steps=1, **SIZE, **kwargs)
    after = pipe("a red ball", num_inference_steps=1, output_type="latent",
                 generator=torch.Generator().manual_seed(0), **SIZE).frames
    assert torch.equal(reference, after)
    assert not any(getattr(m, "_diffusers_hook", None) and m._diffusers_hook.hooks
                   for m in pipe.transformer.modules())


def test_candidates_scale_with_the_grid_and_default_sets_are_sparse():
    window = {"kind": "window", "kernel": [3, 5, 9]}
    assert cand.scaled_spec(window, (9, 16, 16), (21, 45, 80)) == {"kind": "window", "kernel": [7, 15, 45]}
    assert cand.scaled_spec(window, (9, 16, 16), (9, 16, 16)) is window
    assert cand.scaled_spec({"kind": "radial", "decay_factor": 0.2}, (9, 16, 16), (21, 45, 80))["decay_factor"] == 0.2
    whole = {"kind": "window", "kernel": [9, 16, 16]}
    assert cand.scaled_spec(whole, (9, 16, 16), (21, 45, 80))["kernel"] == [21, 45, 80]  # the whole grid stays whole
    for grid in [(9, 16, 16), (21, 45, 80), (3, 4, 6)]:
        specs = cand.default_candidates(grid)
        assert specs[-1] == {"kind": "dense"} and len({cand.name(s) for s in specs}) == len(specs)
        assert all(cand.pattern(s).density(grid) < 1.0 for s in specs[:-1])
    assert math.isclose(cand.pattern({"kind": "window", "kernel": [3, 4, 6]}).density(GRID), 1.0)


# ---------------------------------------------------------------------------------------------- running a profile

def _profile_with(profile, choose_layer):
    """A copy of `profile` whose layer l chooses `choose_layer(l, heads)` (a list of candidate names per head)."""
    data = json.loads(json.dumps(profile.to_dict()))
    m = data["models"][0]
    for layer in m["layers"]:
        layer["choice"] = choose_layer(layer["index"], m["num_heads"])
    return SparsityProfile.from_dict(data)


def _latents(pipe, steps=2):
    return pipe("a red ball", num_inference_steps=steps, output_type="latent",
                generator=torch.Generator().manual_seed(0), **SIZE).frames


def test_every_layer_dense_is_bit_identical_and_remove_exact(pipe, profile):
    import vidaccel

    reference = _latents(pipe)
    dense = _profile_with(profile, lambda layer, heads: ["dense"] * heads)
    vidaccel.accelerate(pipe, TunedAttentionConfig(profile=dense))
    try:
        assert torch.equal(_latents(pipe), reference)
        assert vidaccel.summary(pipe)["transformers"][0]["sparse_calls"] == 0
    finally:
        vidaccel.remove(pipe)
    assert torch.equal(_latents(pipe), reference)


def test_one_window_for_every_head_equals_that_window(pipe, profile):
    import vidaccel
    from vidaccel.sparse.config import WindowAttentionConfig

    name = cand.name(SPECS[1])
    same = _profile_with(profile, lambda layer, heads: [name] * heads)
    vidaccel.accelerate(pipe, WindowAttentionConfig(kernel=tuple(SPECS[1]["kernel"])))
    try:
        window = _latents(pipe)
    finally:
        vidaccel.remove(pipe)
    vidaccel.accelerate(pipe, TunedAttentionConfig(profile=same))
    try:
        tuned = _latents(pipe)
        report = vidaccel.summary(pipe)["transformers"][0]
    finally:
        vidaccel.remove(pipe)
    assert torch.equal(tuned, window) and not torch.equal(tuned, _latents(pipe))
    assert report["attention_path"] == "sdpa_swap" and report["sparse_calls"] > 0


def test_head_groups_match_a_brute_force_per_head_mask():
    from vidaccel.sparse.plan import build_plan
    from vidaccel.sparse.route import HeadGroupRoute, PathRecord, SparseRoute

    grid, heads = (3, 4, 6), 4
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, heads, 72, 8) for _ in range(3))
    specs = {0: SPECS[0], 1: None, 2: SPECS[0], 3: SPECS[2]}  # heads 0 and 2 share a window; head 1 dense
    routes = {}
    for spec in (SPECS[0], SPECS[2]):
        plan = build_plan(cand.pattern(spec), grid)
        routes[cand.name(spec)] = SparseRoute(plan, "none", "reference", "test", PathRecord())
    groups = (((0, 2), routes[cand.name(SPECS[0])]), ((1,), None), ((3,), routes[cand.name(SPECS[2])]))
    route = HeadGroupRoute(tuple((h, torch.tensor(h), r) for h, r in groups), heads, "blocks.0")
    out = route.attend(q, k, v, None, None)
    for h, spec in specs.items():
        mask = torch.ones(72, 72, dtype=torch.bool) if spec is None else cand.pattern(spec).dense_mask(grid)
        expected = F.scaled_dot_product_attention(q[:, h], k[:, h], v[:, h], attn_mask=mask)
        torch.testing.assert_close(out[:, h], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="granularity='layer'"):
        route.attend(q[:, :2], k[:, :2], v[:, :2], None, None)  # context parallelism hands a rank fewer heads


def test_a_profile_of_another_model_is_refused_and_nothing_installed(profile):
    import vidaccel
    from tiny_models import wan_pipeline as build

    other = build()
    other.transformer = wan_transformer(layers=3)
    with pytest.raises(ValueError, match="number of layers: sparsity profile 2, this model 3"):
        vidaccel.accelerate(other, TunedAttentionConfig(profile=profile))
    assert not hasattr(other.transformer, "_vidaccel_sparse_attention")
    assert not any(getattr(m, "_diffusers_hook", None) and m._diffusers_hook.hooks for m in other.transformer.modules())
