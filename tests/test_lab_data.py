"""The lab model's data and pixel checks (scripts/lab_data.py, vidaccel.tiny.captions, vidaccel.tiny.check):
captions round-trip through the grammar, held-out prompts are never drawn, textured backgrounds keep their
palette label, and `check_scene` passes rendered ground truth and fails a caption that does not match it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import lab_data  # noqa: E402

from vidaccel.tiny.captions import Group, Scene, format_caption, parse_caption  # noqa: E402
from vidaccel.tiny.check import COLORS, check_scene, components, label_colors  # noqa: E402

SPEC = lab_data.ClipSpec(33, 128, 128)  # the checks are relative to the frame: half size is enough here


def _frames(video: torch.Tensor) -> np.ndarray:
    return ((video.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()


def test_captions_round_trip_and_held_out_prompts_are_never_drawn():
    g = torch.Generator().manual_seed(0)
    scenes = [lab_data.sample_scene(g) for _ in range(3000)]
    caps = {format_caption(s) for s in scenes}
    assert all(parse_caption(format_caption(s)) == s for s in scenes[:500])
    assert not caps & set(lab_data.HELD_OUT)
    assert {s.objects for s in scenes} == {1, 2, 3} and {g.count for s in scenes for g in s.groups} == {1, 2, 3}
    assert {s.texture for s in scenes if s.bg} == {"flat", "striped", "checkered", "shaded"}
    assert {s.pan for s in scenes} == {"none", "left", "right"}
    tokens = set(lab_data.vocabulary())
    assert all(w in tokens for c in caps for w in c.replace(",", " ,").split())


@pytest.mark.parametrize("text", ["a red blob moving right", "two red circle moving up", "a red circle moving sideways",
                                  "four red circles moving up", "two red circles moving up and two blue squares bouncing"])
def test_parse_caption_rejects_text_outside_the_grammar(text):
    with pytest.raises(ValueError, match="caption|objects|singular"):
        parse_caption(text)


@pytest.mark.parametrize("texture", ["striped", "checkered", "shaded"])
def test_textured_backgrounds_keep_their_palette_label(texture):
    g = torch.Generator().manual_seed(1)
    for bg in COLORS:
        scene = Scene((Group("red" if bg != "red" else "blue", "circle", "growing"),), bg, texture)
        frames = _frames(lab_data.render([scene], g, lab_data.ClipSpec(3, 64, 64))[0])
        lab = label_colors(frames[:, :, :8])  # the left strip: background only (the object sits mid-frame)
        assert (lab == COLORS.index(bg)).mean() == 1.0, (bg, texture)


def test_components_counts_separate_regions():
    m = np.zeros((2, 20, 20), bool)
    m[0, 2:6, 2:6] = m[0, 10:15, 10:15] = True
    m[1, 2:6, 2:18] = True
    m[1, 0, 0] = True  # a speck below min_area
    assert components(m, min_area=4).tolist() == [2, 1]


@pytest.mark.parametrize("prompt", lab_data.HELD_OUT)
def test_ground_truth_passes_and_a_wrong_caption_fails(prompt):
    scene = parse_caption(prompt)
    frames = _frames(lab_data.render([scene], torch.Generator().manual_seed(2), SPEC)[0])
    ok, fails, meas = check_scene(frames, scene)
    assert ok, fails
    assert meas["extra_objects"] == 0
    g = scene.groups[0]
    wrong = {"moving right": "moving left", "moving left": "moving right", "moving up": "moving down"}.get(g.motion)
    others = (Group(g.color, g.shape, wrong, g.count) if wrong else Group(g.color, g.shape, "moving up", g.count),)
    assert not check_scene(frames, Scene(others + scene.groups[1:], scene.bg))[0]  # wrong motion
    recount = Group(g.color, g.shape, g.motion, 3 if g.count != 3 else 1)
    assert not check_scene(frames, Scene((recount,) + scene.groups[1:], scene.bg))[0]  # wrong count
    absent = next(c for c in COLORS if c not in (scene.bg, *(x.color for x in scene.groups)))
    assert not check_scene(frames, Scene(scene.groups, absent))[0]  # wrong background


def test_repetition_count_sees_a_duplicated_object():
    scene = parse_caption("a red circle moving right on a blue background")
    twice = Scene((Group("red", "circle", "moving right", 2),), "blue")
    frames = _frames(lab_data.render([twice], torch.Generator().manual_seed(3), SPEC)[0])
    ok, fails, meas = check_scene(frames, scene)
    assert not ok and meas["extra_objects"] == 1 and any("2 red regions" in f for f in fails)
