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

# Saturated, well separated colours (sRGB 0..255): the training data's palette.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 215),
    "yellow": (240, 215, 40),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
    "purple": (140, 50, 180),
    "orange": (245, 140, 30),
}
COLORS = list(PALETTE)
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
