#!/usr/bin/env python3
"""FreeSwim quality on the shipped tiny trained model (CPU): does 2x-resolution generation keep one
object and its motion?

The tiny model was trained at 64x64 (8x8 tokens per latent frame). At 128x128 it is asked for a
grid it never saw, which is the situation FreeSwim targets. For one prompt and five seeds:

* ``direct``: the plain pipeline at the target size;
* ``refine``: `FreeSwimPipeline` with ``dual_path=False`` - base-size generation, pixel upsampling,
  re-noising at strength 0.7, plain denoising at the target size (the pipeline without FreeSwim);
* ``freeswim``: the same with the dual path (window branch + full-branch cross-attention,
  ``cache_steps`` 2, entropy scaling), and variants with ``cache_steps`` 1, without scaling and with
  a radial full branch (``full_attention``, no dense warm-up steps).

Read from pixels (nearest training-palette colour, as in `tests/test_tiny_model.py`): the number
of object-colour blobs per frame (>= 6 px at 64x64, scaled by area), a clip counts as
single-object when the median frame has exactly one; the centroid's shift along the asked
direction in 64-px units (the training clips move 20-35 px); the background share. CPU times are
printed but are not a speed claim.

    python scripts/quality_freeswim_tiny.py --out benchmarks/results      # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import benchlib
from vidaccel.report.video import to_uint8
from vidaccel.tiny import GUIDANCE_SCALE, HEIGHT, NUM_FRAMES, NUM_STEPS, WIDTH  # the base size
from vidaccel.tiny.check import COLORS, centroid_shift, label_colors

PROMPT, OBJECT, BACKGROUND = "a red circle moving right on a blue background", "red", "blue"
SEEDS = [0, 1, 2, 3, 4]


def clip_stats(frames: np.ndarray, width: int) -> dict:
    """Blob counts, centroid shift (64-px units, + = right) and background share of one clip."""
    from scipy import ndimage

    min_px = 6 * (width / WIDTH) ** 2  # the pixel checks' minimum object area, scaled to this size
    blobs = []
    for m in label_colors(frames) == COLORS.index(OBJECT):
        labels, n = ndimage.label(m)
        sizes = ndimage.sum(m, labels, range(1, n + 1)) if n else []
        blobs.append(int(sum(s >= min_px for s in sizes)))
    shift, a = centroid_shift(frames, OBJECT, BACKGROUND, "right", min_area=min_px)
    return {"median_blobs": float(np.median(blobs)), "max_blobs": max(blobs),
            "shift_px64": round(shift * WIDTH / width, 2), "background_share": round(a["bg_share"], 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128, help="target height = width in pixels (multiple of 8)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="quality_freeswim_tiny")
    args = ap.parse_args()

    import vidaccel
    from vidaccel.pipelines import FreeSwimPipeline
    from vidaccel.tiny import generate_tiny, load_tiny

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    pipe = load_tiny()
    size = args.size
    runs = {}

    t = time.time()
    direct = generate_tiny(PROMPT, SEEDS, pipe=pipe, height=size, width=size, num_inference_steps=NUM_STEPS,
                           guidance_scale=GUIDANCE_SCALE)
    runs["direct"] = (list(direct), time.time() - t, {})
    variants = {
        "refine": (dict(cache_steps=2), False),
        "freeswim": (dict(cache_steps=2), True),
        "freeswim_cache1": (dict(cache_steps=1), True),
        "freeswim_no_scaling": (dict(cache_steps=2, entropy_scaling=False), True),
        # the approximate full branch (radial: 64 % of the pairs on this 5x8x8 grid) with no dense warm-up steps
        "freeswim_radial_full": (dict(cache_steps=2, full_attention=vidaccel.RadialAttentionConfig(dense_steps=0)), True),
    }
    for name, (cfg, dual) in variants.items():
        fs = FreeSwimPipeline(pipe, vidaccel.FreeSwimConfig(base_size=(HEIGHT, WIDTH), **cfg))
        t, clips = time.time(), []
        for s in SEEDS:
            out = fs(PROMPT, height=size, width=size, num_frames=NUM_FRAMES, num_inference_steps=NUM_STEPS,
                     guidance_scale=GUIDANCE_SCALE, generator=torch.Generator().manual_seed(s), dual_path=dual)
            clips.append(to_uint8(out.frames[0]))
        fs.remove()
        runs[name] = (clips, time.time() - t, {k: repr(v) if k == "full_attention" else v
                                               for k, v in dict(cfg, dual_path=dual).items()})

    rows = []
    for name, (clips, seconds, cfg) in runs.items():
        stats = [clip_stats(c, size) for c in clips]
        row = {"method": name, "settings": cfg, "cpu_seconds": round(seconds, 1),
               "single_object_clips": sum(s["median_blobs"] == 1 for s in stats),
               "moved_right_8px_clips": sum(s["shift_px64"] >= 8 for s in stats), "per_seed": stats}
        rows.append(row)
        print(json.dumps(row), flush=True)

    meta = {"date": benchlib.utc_now(), **benchlib.versions(),
            "model": "assets/tiny-wan", "prompt": PROMPT, "seeds": SEEDS, "size": [size, size], "base": [HEIGHT, WIDTH],
            "frames": NUM_FRAMES, "steps": NUM_STEPS, "guidance": GUIDANCE_SCALE, "strength": 0.7}
    lines = [f"# FreeSwim on the shipped tiny model: {size}x{size} from a {HEIGHT}x{WIDTH} model (CPU)", "",
             f"{benchlib.md_stamp(meta, 'torch', 'diffusers')}. Prompt \"{PROMPT}\", seeds "
             f"{SEEDS}, {NUM_STEPS} steps, CFG {GUIDANCE_SCALE}, {NUM_FRAMES} frames; refine/freeswim: strength 0.7. "
             "CPU seconds are not a speed claim.", "",
             *benchlib.md_table_header("method", "single-object clips", "moved right >= 8 px (64-px units)",
                                       "blobs per clip (median, max)", "shift px", "background")]
    for r in rows:
        ps = r["per_seed"]
        lines.append(f"| {r['method']} | {r['single_object_clips']}/{len(SEEDS)} | {r['moved_right_8px_clips']}/{len(SEEDS)} | "
                     + ", ".join(f"{p['median_blobs']:g}/{p['max_blobs']}" for p in ps) + " | "
                     + ", ".join(f"{p['shift_px64']:.1f}" for p in ps) + " | "
                     + ", ".join(f"{p['background_share']:.2f}" for p in ps) + " |")
    benchlib.write_results(args.out, args.tag, {"meta": meta, "rows": rows}, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
