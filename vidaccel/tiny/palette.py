"""The training palette of the shipped models: saturated, well separated sRGB colours. Data
render objects and backgrounds in exactly these; pixel checks label pixels by the nearest one."""

from __future__ import annotations

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
