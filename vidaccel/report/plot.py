"""Speed-vs-quality scatter plot as inline SVG (no plotting library needed)."""

from __future__ import annotations

import math
from html import escape

from .format import as_float

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 360, 64, 24, 24, 52


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(step)) if step > 0 else 1
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= step), default=mag)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def speed_quality_svg(per_configuration: list[dict]) -> str:
    """x: speedup over the baseline (same prompt and seed); y: PSNR against the baseline in dB.

    Configurations whose output equals the baseline (infinite PSNR) sit on the top edge, marked
    "identical". A horizontal bar spans the min-max of the paired speed-ups; a speed-up whose range
    includes 1.0 is drawn hollow and labelled "not significant". Returns an ``<svg>`` element; a note replaces it while nothing is measured yet.
    """
    rows = {r["config"]: r for r in per_configuration}
    points = [(r["config"], as_float(r.get("speedup")), as_float(r.get("psnr")))
              for r in per_configuration if not r.get("baseline", r["config"] == "baseline")]
    points = [(n, x, y) for n, x, y in points if x is not None and y is not None]
    if not points:
        return '<p class="note" id="plot-pending">The plot appears once a configuration has finished a run.</p>'

    def span(name, x):  # min-max of the paired speed-ups (the point itself without one)
        lo, hi = as_float(rows[name].get("speedup_min")), as_float(rows[name].get("speedup_max"))
        return (x, x) if lo is None or hi is None else (lo, hi)

    xs = [v for n, x, _ in points for v in span(n, x)] + [1.0]
    finite = [y for _, _, y in points if math.isfinite(y)]
    x_lo, x_hi = min(xs), max(xs)
    pad = max(0.1, 0.1 * (x_hi - x_lo))
    x_lo, x_hi = max(0.0, x_lo - pad), x_hi + pad
    y_lo, y_hi = (min(finite) - 2, max(finite) + 2) if finite else (0.0, 50.0)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(x):
        return LEFT + (x - x_lo) / (x_hi - x_lo) * pw

    def sy(y):
        return TOP if not math.isfinite(y) else TOP + (y_hi - y) / (y_hi - y_lo) * ph

    out = [f'<svg id="speed-quality-plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
           f'height="{H}" role="img" aria-label="speedup versus PSNR">',
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>']
    for t in _ticks(x_lo, x_hi):
        out.append(f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{TOP}" y2="{TOP + ph}" stroke="#e4e4e4"/>'
                   f'<text x="{sx(t):.1f}" y="{TOP + ph + 16}" font-size="11" text-anchor="middle">{t:g}x</text>')
    for t in _ticks(y_lo, y_hi):
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#e4e4e4"/>'
                   f'<text x="{LEFT - 6}" y="{sy(t) + 4:.1f}" font-size="11" text-anchor="end">{t:g}</text>')
    out.append(f'<line x1="{sx(1):.1f}" x2="{sx(1):.1f}" y1="{TOP}" y2="{TOP + ph}" stroke="#555" '
               f'stroke-dasharray="4 3"/><text x="{sx(1) + 4:.1f}" y="{TOP + 12}" font-size="11">baseline</text>')
    placed: list[tuple[float, float]] = []  # label anchors so far: nearby points get stacked labels
    for i, (name, x, y) in enumerate(points):
        c = COLORS[i % len(COLORS)]
        weak = rows[name].get("speedup_verdict") in ("not significant", "not tested")
        label = escape(name) + ("" if math.isfinite(y) else " (identical)") + \
            (f" ({escape(rows[name]['speedup_verdict'])})" if weak else "")
        lo, hi = span(name, x)
        right = sx(x) > LEFT + 0.6 * pw  # label on the side with room
        ly = sy(y) + (18 if not math.isfinite(y) else 4)
        while any(abs(ly - py) < 14 and abs(sx(x) - px) < 160 for px, py in placed):
            ly += 14
        placed.append((sx(x), ly))
        if hi > lo:
            out.append(f'<line class="range" data-config="{escape(name)}" x1="{sx(lo):.1f}" x2="{sx(hi):.1f}" '
                       f'y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="{c}" stroke-width="2"/>')
        fill = f'fill="#fff" stroke="{c}" stroke-width="3"' if weak else f'fill="{c}"'
        out.append(f'<circle class="point" data-config="{escape(name)}" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="7" '
                   f'{fill}><title>{escape(name)}: {x:.2f}x ({lo:.2f}-{hi:.2f}x), PSNR {y:.2f} dB</title></circle>'
                   f'<text x="{sx(x) + (-10 if right else 10):.1f}" y="{ly:.1f}" '
                   f'font-size="12" text-anchor="{"end" if right else "start"}">{label}</text>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 12}" font-size="12" text-anchor="middle">speedup over baseline '
               f'(paired rounds: median, bar = min-max)</text>'
               f'<text transform="translate(16 {TOP + ph / 2}) rotate(-90)" font-size="12" text-anchor="middle">'
               f'PSNR vs baseline (dB, higher is closer)</text></svg>')
    return "\n".join(out)
