"""Prompt-following table of a tiny-model folder (CPU): object colour, background colour and direction
checked from pixels (`vidaccel.tiny.check.check_clip`) for several prompts and seeds, plus
`direction_gap` (flow-matching loss with the flipped direction word, relative to the true caption).

    python scripts/eval_tiny_model.py --model outputs/tiny-wan --seeds 8 --out results.json

Writes a markdown table to stdout and, with ``--out``, the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

PROMPTS = [
    "a red circle moving right on a blue background",
    "a yellow square moving left on a black background",
    "a green triangle moving up on a white background",
    "a white circle moving down on a purple background",
]


def main(argv=None):
    from tiny_training.evaluation import direction_gap

    from vidaccel.tiny import generate_tiny, load_tiny
    from vidaccel.tiny.check import centroid_shift, check_clip, parse_prompt

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="pipeline folder (default: the shipped one)")
    ap.add_argument("--seeds", type=int, default=8, help="seeds 0 .. N-1 per prompt")
    ap.add_argument("--steps", type=int, default=20, help="denoising steps (the acceptance test uses 20)")
    ap.add_argument("--gap-clips", type=int, default=64, help="held-out clips for direction_gap (0: skip)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    pipe = load_tiny(path=args.model)
    seeds = list(range(args.seeds))
    rows = []
    for prompt in PROMPTS:
        obj, bg, direction = parse_prompt(prompt)
        t0 = time.time()
        frames = generate_tiny(prompt, seeds, pipe=pipe, num_inference_steps=args.steps)
        checks = [check_clip(f, obj, bg, direction) for f in frames]
        shifts = [round(centroid_shift(f, obj, bg, direction)[0], 1) for f in frames]
        rows.append({"prompt": prompt, "passed": sum(ok for ok, _ in checks), "seeds": len(seeds),
                     "shift_px": shifts, "reasons": [msg for _, msg in checks], "seconds": round(time.time() - t0, 1)})
        print(f"{prompt}: {rows[-1]['passed']}/{len(seeds)}", flush=True)
    gap = None
    if args.gap_clips:
        gap = direction_gap(pipe.text_encoder, pipe.tokenizer, pipe.transformer, pipe.vae, torch.device("cpu"),
                            n=args.gap_clips)
    print(f"\nModel: {args.model or 'shipped'}; {args.steps} steps, seeds 0-{args.seeds - 1}\n")
    print("| prompt | passed | centroid shift the asked way (px), per seed |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r['prompt']} | {r['passed']}/{r['seeds']} | {', '.join(map(str, r['shift_px']))} |")
    if gap is not None:
        print(f"\ndirection_gap ({args.gap_clips} clips): {gap}")
    if args.out:
        Path(args.out).write_text(json.dumps({"model": args.model, "steps": args.steps, "rows": rows,
                                              "direction_gap": gap}, indent=1))


if __name__ == "__main__":
    main()
