"""``results.md``: the comparison as Markdown tables."""

from __future__ import annotations

import json

from . import format as fmt


def _table(header, rows) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def render_markdown(data: dict) -> str:
    s, env = data["settings"], data["environment"]
    done = len(data["runs"])
    total = len(data["configurations"]) * len(s["prompts"]) * len(s["seeds"])
    lines = ["# vidaccel comparison", "",
             f"Model `{s['model']}` ({s.get('pipeline', '')}), {s['width']}x{s['height']}, {s['num_frames']} frames, "
             f"{s['steps']} steps, seeds {s['seeds']}, {len(s['prompts'])} prompt(s). "
             f"Runs finished: {done}/{total}{'' if data.get('complete') else ' (incomplete: `--resume` continues)'}.",
             "", "## Per configuration", ""]
    lines += _table(*fmt.summary_rows(data))
    lines += ["", fmt.timing_note(data), "", "Quality metrics come from each run's first round (same seed, same output) and "
              "are means over runs against the baseline output. " + fmt.COLUMNS_NOTE + " " + fmt.memory_note(data), ""]
    if fmt.references_note(data):
        lines += [fmt.references_note(data), ""]
    lpips_notes = {r.get("lpips_note") for r in data["per_configuration"] if r.get("lpips") is None and r.get("lpips_note")}
    for note in sorted(lpips_notes):
        lines.append(f"LPIPS unavailable: {note}.")
    lines += ["", "## Runs", ""]
    header = ["configuration", "prompt", "seed", "wall time (median)", "every round, in order", "time/step", "PSNR",
              "SSIM", "attention FLOPs", "check", "video", "note"]
    rows = []
    for r in data["runs"]:
        q = r.get("quality") or {}
        every = ", ".join(fmt.seconds(w) for w in r.get("wall_s_samples") or [r["wall_s"]])
        check = r.get("check")
        check = fmt.NA if not check else ("passed" if check["passed"] else "failed: " + "; ".join(check["failures"]))
        rows.append([r["config"], r["prompt"], str(r["seed"]), fmt.seconds(r["wall_s"]), every, fmt.seconds(r["step_s"]),
                     fmt.db(q.get("psnr")) if q else "reference", fmt.plain(q.get("ssim")) if q else "reference",
                     fmt.percent(r.get("attention_flop_fraction")), check,
                     f"[{r['video']}]({r['video']})", r.get("note", "")])
    lines += _table(header, rows)
    lines += ["", "## Configurations", ""]
    lines += [f"- `{c['name']}`: `{json.dumps({k: v for k, v in c.items() if k != 'name'})}`" for c in data["configurations"]]
    lines += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in env.items()]
    return "\n".join(lines) + "\n"
