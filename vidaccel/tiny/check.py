"""Pixel checks for clips of the tiny model: does a clip show the prompt's object colour moving the
asked way on the prompt's background?

Every pixel is labelled with the nearest colour of the training palette (the data in
``scripts/tiny_data.py`` draws flat shapes in exactly these colours). A clip passes when the object
colour forms a region in >= 80 % of frames, its centroid moves >= `MIN_SHIFT` px the asked way
(mean of the first quarter of frames -> mean of the last quarter), and the background colour
covers >= `MIN_BG` of the pixels. Used by the acceptance test (`tests/test_tiny_model.py`) and by
`scripts/eval_tiny_model.py`.
"""

from __future__ import annotations

import re

import numpy as np

from .palette import COLORS, PALETTE

DIRECTIONS = ("left", "right", "up", "down")
MIN_AREA = 6  # pixels of the object colour per frame (a radius-5 circle is ~80)
MIN_SHIFT = 8.0  # pixels the centroid must travel (the training clips move 20-35 px)
MIN_BG = 0.5  # share of pixels with the background colour


def label_colors(frames) -> np.ndarray:
    """Nearest `PALETTE` colour per pixel of uint8 RGB frames ``(..., 3)``: indices into `COLORS`."""
    pal = np.array([PALETTE[c] for c in COLORS], dtype=np.float32)
    return ((np.asarray(frames, dtype=np.float32)[..., None, :] - pal) ** 2).sum(-1).argmin(-1)


def analyse(frames: np.ndarray, obj: str, bg: str) -> dict:
    """Per frame: object-colour area and centroid (x, y); overall background-colour share. Works at any size."""
    lab = label_colors(frames)  # (T, H, W)
    m = lab == COLORS.index(obj)
    area = m.sum((1, 2))
    ys, xs = np.mgrid[: m.shape[1], : m.shape[2]]
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (m * xs).sum((1, 2)) / area
        cy = (m * ys).sum((1, 2)) / area
    return {"area": area, "cx": cx, "cy": cy, "bg_share": float((lab == COLORS.index(bg)).mean())}


def centroid_shift(frames: np.ndarray, obj: str, bg: str, direction: str,
                   min_area: float = MIN_AREA) -> tuple[float, dict]:
    """Pixels the object's centroid travels in `direction` (negative: the other way), over the frames
    with at least `min_area` object pixels, and `analyse`."""
    a = analyse(frames, obj, bg)
    present = a["area"] >= min_area
    axis = "cx" if direction in ("left", "right") else "cy"
    sign = 1 if direction in ("right", "down") else -1
    c = a[axis][present]
    if len(c) == 0:
        return float("nan"), a
    k = max(1, len(c) // 4)
    return float(sign * (np.mean(c[-k:]) - np.mean(c[:k]))), a


def check_clip(frames: np.ndarray, obj: str, bg: str, direction: str) -> tuple[bool, str]:
    """(passed, reason) for one ``(T, H, W, 3)`` uint8 clip."""
    shift, a = centroid_shift(frames, obj, bg, direction)
    present = a["area"] >= MIN_AREA
    if present.mean() < 0.8:
        return False, f"{obj} region missing in {int((~present).sum())} of {len(present)} frames"
    if shift < MIN_SHIFT:
        return False, f"centroid moved {shift:.1f} px {direction} (< {MIN_SHIFT})"
    if a["bg_share"] < MIN_BG:
        return False, f"{bg} background share {a['bg_share']:.2f} (< {MIN_BG})"
    return True, f"ok: moved {shift:.1f} px, background {a['bg_share']:.2f}"


_PROMPT = re.compile(r"^an? (\w+) (\w+) moving (\w+) on an? (\w+) background$")


def parse_prompt(prompt: str) -> tuple[str, str, str]:
    """``"a red circle moving right on a blue background"`` -> ``("red", "blue", "right")``."""
    m = _PROMPT.match(prompt.strip().lower())
    if not m or m[1] not in PALETTE or m[4] not in PALETTE or m[3] not in DIRECTIONS:
        raise ValueError(f"expected 'a <colour> <shape> moving <left|right|up|down> on a <colour> background' with "
                         f"colours from {COLORS}, got {prompt!r}")
    return m[1], m[4], m[3]


# Scene checks for the full caption grammar (`vidaccel.tiny.captions`): the lab model's prompts.
MIN_AREA_SHARE = 0.0015  # share of a frame's pixels an object needs to count as present (~100 px at 256x256)
MIN_SHIFT_SHARE = 0.1  # share of the frame a straight move must carry the centroid (data: >= ~25 %)
MIN_PRESENT = 0.8  # share of frames an object group must be present in


def components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Connected regions (8-neighbour) of at least ``min_area`` pixels per frame of a ``(T, H, W)``
    boolean mask: their count per frame."""
    import torch
    import torch.nn.functional as F

    m = torch.from_numpy(np.ascontiguousarray(mask))
    T, H, W = m.shape
    ids = torch.arange(1, H * W + 1, dtype=torch.float32).view(1, H, W).expand(T, H, W).clone()
    lab = torch.where(m, ids, torch.zeros(()))
    while True:  # flood fill: every pixel takes its neighbourhood's largest id until nothing changes
        grown = torch.where(m, F.max_pool2d(lab[:, None], 3, 1, 1)[:, 0], torch.zeros(()))
        if torch.equal(grown, lab):
            break
        lab = grown
    counts = []
    for f in lab.long():
        sizes = torch.bincount(f.flatten())[1:]
        counts.append(int((sizes >= min_area).sum()))
    return np.array(counts)


def check_scene(frames: np.ndarray, scene) -> tuple[bool, list[str], dict]:
    """Check a ``(T, H, W, 3)`` uint8 clip against a parsed caption (`captions.Scene`).

    Per group of the caption, on the pixels labelled with its colour: present in >= 80 % of frames
    (returns: in the first and last quarters, absent somewhere in the middle half), the number of
    separate regions (median over frames where present) equals the count, straight moves carry the
    centroid >= 10 % of the frame the asked way, growing/shrinking change the area >= 1.5x. A named
    background colour covers >= 50 % of the pixels. Returns ``(passed, failures, measurements)``;
    ``measurements["extra_objects"]`` is the largest surplus of regions over a group's count (the
    repetition count of high-resolution output, where duplicated objects are the failure mode).
    """
    from .captions import RETURNS, STRAIGHT

    T, H, W = frames.shape[:3]
    lab = label_colors(frames)
    min_area = max(MIN_AREA, int(MIN_AREA_SHARE * H * W))
    fails, meas = [], {"groups": []}
    extra = 0
    for g in scene.groups:
        m = lab == COLORS.index(g.color)
        area = m.sum((1, 2))
        present = area >= min_area
        n_regions = components(m, min_area)
        regions = int(np.median(n_regions[present])) if present.any() else 0
        extra = max(extra, regions - g.count)
        q = max(1, T // 4)
        gm = {"color": g.color, "present": round(float(present.mean()), 3), "regions": regions}
        if g.motion in RETURNS:
            middle = present[T // 4: T - T // 4]
            ok = present[:q].mean() >= MIN_PRESENT and present[-q:].mean() >= MIN_PRESENT and not middle.all()
            if not ok:
                fails.append(f"{g.color} {g.shape} does not leave and come back (present {present.astype(int).tolist()})")
        elif present.mean() < MIN_PRESENT:
            fails.append(f"{g.color} region missing in {int((~present).sum())} of {T} frames")
        if present.any() and regions != g.count:
            fails.append(f"{regions} {g.color} regions, caption says {g.count}")
        if g.motion in STRAIGHT and present.sum() >= 2:
            direction = g.motion.split()[-1]
            ys, xs = np.mgrid[:H, :W]
            with np.errstate(invalid="ignore", divide="ignore"):
                c = ((m * (xs if direction in ("left", "right") else ys)).sum((1, 2)) / area)[present]
            k = max(1, len(c) // 4)
            sign = 1 if direction in ("right", "down") else -1
            extent = W if direction in ("left", "right") else H
            shift = float(sign * (c[-k:].mean() - c[:k].mean()) / extent)
            gm["shift"] = round(shift, 3)
            if shift < MIN_SHIFT_SHARE:
                fails.append(f"{g.color} moved {shift:.2f} of the frame {direction} (< {MIN_SHIFT_SHARE})")
        if g.motion in ("growing", "shrinking") and present.sum() >= 2:
            k = max(1, T // 4)
            ratio = float((area[-k:].mean() + 1) / (area[:k].mean() + 1))
            gm["area_ratio"] = round(ratio, 2)
            if (ratio if g.motion == "growing" else 1 / ratio) < 1.5:
                fails.append(f"{g.color} area changed {ratio:.2f}x, caption says {g.motion}")
        meas["groups"].append(gm)
    if scene.bg is not None:
        share = float((lab == COLORS.index(scene.bg)).mean())
        meas["bg_share"] = round(share, 3)
        if share < MIN_BG:
            fails.append(f"{scene.bg} background share {share:.2f} (< {MIN_BG})")
    meas["extra_objects"] = extra
    return not fails, fails, meas
