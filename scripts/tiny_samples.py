#!/usr/bin/env python3
"""Sample sheet of the shipped tiny model (assets/tiny-wan/samples.png): one row per prompt, seed 0,
five evenly spaced frames of the 17, with the prompt as caption. CPU, about 20 s.

    python scripts/tiny_samples.py --out assets/tiny-wan/samples.png
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

PROMPTS = [
    "a red circle moving right on a blue background",
    "a yellow square moving left on a black background",
    "a green triangle moving up on a white background",
    "a white circle growing on a purple background",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="assets/tiny-wan/samples.png")
    ap.add_argument("--model", default=None, help="pipeline folder (default: the shipped one)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from vidaccel.tiny import generate_tiny, load_tiny

    pipe = load_tiny(path=args.model)
    clips = generate_tiny(PROMPTS, args.seed, pipe=pipe)  # (P, T, H, W, 3) uint8
    _, t, h, w, _ = clips.shape
    picks = np.linspace(0, t - 1, 5).round().astype(int)
    caption_h = 14
    sheet = Image.new("RGB", (5 * w, len(PROMPTS) * (h + caption_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (prompt, clip) in enumerate(zip(PROMPTS, clips)):
        y = row * (h + caption_h)
        draw.text((2, y + 1), f"{prompt} (seed {args.seed})", fill="black")
        for col, f in enumerate(picks):
            sheet.paste(Image.fromarray(clip[f]), (col * w, y + caption_h))
    sheet.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
