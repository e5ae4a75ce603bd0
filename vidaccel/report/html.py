"""``report.html``: one self-contained page (videos referenced by relative path, plot inline SVG)."""

from __future__ import annotations

import json
from html import escape

from . import format as fmt
from .plot import speed_quality_svg

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f0f0f0;white-space:normal}table{font-size:13px}.scroll{overflow-x:auto}td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:13px}
.row{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:20px}figure{margin:0;text-align:center}
video{width:256px;background:#000;image-rendering:pixelated;display:block}
figcaption{font-size:12px;max-width:256px}.pending{width:256px;height:144px;background:#eee;display:flex;
align-items:center;justify-content:center;color:#777}.status{font-size:11px;color:#777}.status.bad{color:#c00}
#configurations td:last-child{white-space:pre-wrap;font-family:monospace;font-size:11px}
#configurations td,#settings td,#environment td,#configurations th,#settings th{text-align:left;white-space:normal}
tr.not-significant td:nth-child(7){color:#a60;font-style:italic}
pre{background:#f6f6f6;padding:6px;font-size:12px;white-space:pre-wrap}
"""

# Shows under each video whether the browser can play it; records drawn positions as data-rect.
_SCRIPT = """
function mark(el) {  // page coordinates of what was drawn, for the reader's tools and for tests
  const r = el.getBoundingClientRect();
  el.dataset.rect = [r.left + scrollX, r.top + scrollY, r.width, r.height].map(Math.round).join(',');
}
for (const el of document.querySelectorAll('#summary, #speed-quality-plot')) mark(el);
for (const v of document.querySelectorAll('video')) {
  const s = v.parentElement.querySelector('.status');
  const update = () => {
    mark(v); v.dataset.readyState = v.readyState; v.dataset.duration = v.duration;
    if (v.readyState >= 2) s.textContent = 'playable, ' + v.duration.toFixed(2) + ' s';
  };
  v.addEventListener('loadeddata', update); v.addEventListener('canplay', update);
  v.addEventListener('error', () => { v.dataset.error = '1'; s.classList.add('bad');
    s.textContent = 'this browser cannot play the file (H.264 MP4); open it with a video player'; });
  update();
}
"""


def _table(header, rows, table_id="", row_attrs=None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    attrs = row_attrs or [""] * len(rows)
    body = "".join(f"<tr{a}>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>"
                   for a, row in zip(attrs, rows))
    return f'<table{f" id={table_id!r}" if table_id else ""}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _run_time(run: dict) -> str:
    walls = run.get("wall_s_samples") or []
    if len(walls) < 2:
        return fmt.seconds(run["wall_s"])
    return f"{fmt.seconds(run['wall_s'])} (median of {len(walls)}, {fmt.seconds(min(walls))} - {fmt.seconds(max(walls))})"


def _significance(row: dict) -> str:
    """Row attributes of the summary table: the verdict, greyed out and explained when not significant."""
    v = row.get("speedup_verdict")
    if v is None:
        return ""
    cls = " class='not-significant'" if v in ("not significant", "not tested") else ""
    return f" data-significance='{escape(v)}'{cls}"


def _video_rows(data: dict) -> str:
    s = data["settings"]
    runs = {(r["config"], r["prompt_index"], r["seed"]): r for r in data["runs"]}
    # fixed box from the settings, so the layout does not move while videos load
    size = f'width="256" height="{round(256 * s["height"] / s["width"])}"' if s.get("height") and s.get("width") else ""
    out = []
    for pi, prompt in enumerate(s["prompts"]):
        for seed in s["seeds"]:
            cells = []
            for conf in data["configurations"]:
                r = runs.get((conf["name"], pi, seed))
                if r is None:
                    cells.append(f'<figure><div class="pending">pending</div><figcaption>{escape(conf["name"])}'
                                 f'</figcaption></figure>')
                    continue
                q = r.get("quality")
                note = f'<br><i>{escape(r["note"])}</i>' if r.get("note") else ""
                quality = "reference" if not q else f"PSNR {fmt.db(q.get('psnr'))}, SSIM {fmt.plain(q.get('ssim'), 3)}"
                if r.get("size"):
                    quality += f", {r['size'][0]}x{r['size'][1]}"
                if r.get("check"):
                    quality += f", check {'passed' if r['check']['passed'] else 'failed'}"
                cells.append(
                    f'<figure><video src="{escape(r["video"])}" data-config="{escape(conf["name"])}" {size} controls autoplay '
                    f'muted loop playsinline preload="auto"></video><figcaption><b>{escape(conf["name"])}</b> '
                    f'{_run_time(r)}, {quality}{note}<br><span class="status">loading...</span></figcaption>'
                    f'</figure>')
            out.append(f'<h3>"{escape(prompt)}", seed {seed}</h3><div class="row">{"".join(cells)}</div>')
    return "\n".join(out)


def render_html(data: dict) -> str:
    s, env = data["settings"], data["environment"]
    total = len(data["configurations"]) * len(s["prompts"]) * len(s["seeds"])
    state = "complete" if data.get("complete") else "incomplete: rerun with --resume to continue"
    header, rows = fmt.summary_rows(data)
    lpips = sorted({r["lpips_note"] for r in data["per_configuration"] if r.get("lpips") is None and r.get("lpips_note")})
    resolved = {}
    for r in data["runs"]:  # what actually ran: vidaccel.summary of the first run of each configuration
        resolved.setdefault(r["config"], r.get("summary"))
    conf_rows = [[c["name"], json.dumps({k: v for k, v in c.items() if k != "name"}), resolved.get(c["name"]) or ""]
                 for c in data["configurations"]]
    settings_rows = [[k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)] for k, v in s.items()]
    env_rows = [[k, str(v)] for k, v in env.items()]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>vidaccel comparison</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>vidaccel comparison</h1><p id='status'>{escape(s['model'])}: {s['width']}x{s['height']}, "
        f"{s['num_frames']} frames, {s['steps']} steps. Runs finished: {len(data['runs'])}/{total} ({state}).</p>",
        "<h2>Speed and quality</h2><div class='scroll'>",
        _table(header, rows, "summary", [_significance(r) for r in data["per_configuration"]]), "</div>",
        f"<p class='note'>{escape(fmt.timing_note(data))} "
        f"Quality: from each run's first round, means over runs against the baseline output (PSNR/SSIM per frame, "
        f"averaged). {escape(fmt.COLUMNS_NOTE)} {escape(fmt.references_note(data))} {escape(fmt.memory_note(data))} "
        + " ".join(f"LPIPS unavailable: {escape(n)}." for n in lpips) + "</p>",
        speed_quality_svg(data["per_configuration"]),
        "<h2>Videos</h2>", _video_rows(data),
        "<h2>Configurations</h2>", _table(["name", "definition", "as run (vidaccel.summary after the first run)"], conf_rows, "configurations"),
        "<h2>Settings</h2>", _table(["setting", "value"], settings_rows, "settings"),
        "<h2>Environment</h2>", _table(["", ""], env_rows, "environment"),
        f"<p class='note'>Updated {escape(data.get('updated_utc', ''))}. Data: <a href='results.json'>results.json</a>, "
        f"<a href='results.md'>results.md</a>.</p>",
        f"<script>{_SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts) + "\n"
