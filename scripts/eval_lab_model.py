"""Pixel checks of a lab-model folder (``assets/lab-wan``): the held-out captions of ``lab_data.HELD_OUT``
(never rendered for training) x seeds, each clip checked from its pixels by `vidaccel.tiny.check.check_scene`
(object colours, counts, directions, leaving and coming back, background colour).

    python scripts/eval_lab_model.py --model assets/lab-wan --out eval.json            # GPU: seconds
    python scripts/eval_lab_model.py --height 128 --width 128 --seeds 2 --steps 12     # CPU, reduced

Prints a markdown table; ``--out`` writes the numbers as JSON, ``--samples`` a contact sheet (PNG).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def generate(pipe, prompt: str, seeds: list[int], height: int, width: int, frames: int, steps: int,
             guidance: float) -> np.ndarray:
    """``(len(seeds), T, H, W, 3)`` uint8; one batch, seed ``s`` as a single-video call with that seed."""
    device = pipe._execution_device
    gens = [torch.Generator(device).manual_seed(s) for s in seeds]
    out = pipe(prompt, height=height, width=width, num_frames=frames, num_inference_steps=steps,
               guidance_scale=guidance, num_videos_per_prompt=len(seeds), generator=gens, output_type="np").frames
    return (np.asarray(out) * 255).round().clip(0, 255).astype(np.uint8)


def main(argv=None):
    import lab_data
    from diffusers import WanPipeline

    from vidaccel.tiny.captions import parse_caption
    from vidaccel.tiny.check import check_scene

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO / "assets" / "lab-wan"))
    ap.add_argument("--seeds", type=int, default=8, help="seeds 0 .. N-1 per prompt")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--out", default=None)
    ap.add_argument("--samples", default=None, help="contact sheet: seed 0 of every prompt, 8 frames")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    pipe = WanPipeline.from_pretrained(args.model, dtype=torch.bfloat16 if cuda else torch.float32)
    pipe.to("cuda" if cuda else "cpu")
    pipe.set_progress_bar_config(disable=True)
    seeds = list(range(args.seeds))
    rows, sheet = [], []
    for prompt in lab_data.HELD_OUT:
        scene = parse_caption(prompt)
        t0 = time.time()
        clips = generate(pipe, prompt, seeds, args.height, args.width, args.frames, args.steps, args.guidance)
        checks = [check_scene(c, scene) for c in clips]
        rows.append({"prompt": prompt, "passed": sum(ok for ok, _, _ in checks), "seeds": len(seeds),
                     "failures": [f for _, f, _ in checks], "measurements": [m for _, _, m in checks],
                     "seconds": round(time.time() - t0, 1)})
        print(f"{prompt}: {rows[-1]['passed']}/{len(seeds)}  {[f for f in rows[-1]['failures'] if f][:3]}", flush=True)
        idx = np.linspace(0, args.frames - 1, 8).round().astype(int)
        sheet.append(np.concatenate(list(clips[0][idx]), axis=1))
    passed, total = sum(r["passed"] for r in rows), sum(r["seeds"] for r in rows)
    print(f"\n{args.model}: {args.height}x{args.width}x{args.frames}, {args.steps} steps, CFG {args.guidance}, "
          f"seeds 0-{args.seeds - 1}: {passed}/{total} clips pass ({100 * passed / total:.0f} %)\n")
    print("| prompt | passed |\n| --- | --- |")
    for r in rows:
        print(f"| {r['prompt']} | {r['passed']}/{r['seeds']} |")
    if args.samples:
        from PIL import Image

        Image.fromarray(np.concatenate(sheet, axis=0)).save(args.samples)
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"model": args.model, "size": [args.frames, args.height, args.width], "steps": args.steps,
             "guidance": args.guidance, "device": torch.cuda.get_device_name() if cuda else "cpu",
             "passed": passed, "clips": total, "rows": rows}, indent=1))
    return 0 if passed >= 0.8 * total else 1


if __name__ == "__main__":
    raise SystemExit(main())
