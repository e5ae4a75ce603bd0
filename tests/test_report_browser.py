"""`vidaccel compare` on a tiny saved pipeline, then report.html opened in headless Chromium.

Checks what a reader would see: every video decodes and plays in the browser (DOM: readyState and
duration after a virtual-time budget; pixels: the video boxes are not blank), the speed-vs-quality
plot has a marker per configuration, and the summary table has a row per configuration.
Chromium comes from the OS packages (`.ci/run` installs it when missing).
"""

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import imageio.v3 as iio
import numpy as np
import pytest

from tiny_models import wan_pipeline
from vidaccel.report.video import read_mp4

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1280, 2000)
CONFIGS = "configs:\n  - {name: radial-tiny, type: radial, block_size: 8, dense_steps: 1, dense_layers: 0}\n" \
          "  - {name: window-small, type: window, kernel: [3, 3, 3]}\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    wan_pipeline(seed=0).save_pretrained(root / "model")
    (root / "configs.yaml").write_text(CONFIGS)
    args = ["compare", "a red circle moving right", "--model", root / "model", "--height", "32", "--width", "48",
            "--frames", "9", "--steps", "3", "--warmup", "0", "--no-progress", "--accel", root / "configs.yaml",
            "--out", root / "report"]
    result = subprocess.run([sys.executable, "-m", "vidaccel.cli", *map(str, args)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return root / "report"


def test_compare_writes_report_json_and_markdown_with_metrics(report):
    assert {p.name for p in report.iterdir()} >= {"report.html", "results.json", "results.md", "videos"}
    data = json.loads((report / "results.json").read_text())
    assert data["complete"] and [c["name"] for c in data["configurations"]] == ["baseline", "radial-tiny", "window-small"]
    rows = {r["config"]: r for r in data["per_configuration"]}
    for name in ("radial-tiny", "window-small"):
        row = rows[name]
        assert row["wall_s"] > 0 and row["step_s"] > 0 and row["speedup"] > 0 and row["runs"] == 1
        assert row["peak_memory_kind"] in ("cpu_peak_rss_delta", "n/a")
        assert -1 <= row["ssim"] <= 1 and row["temporal_error"] >= 0 and isinstance(row["flicker_delta"], float)
        assert row["psnr"] == "inf" or row["psnr"] > 0
        assert (row["lpips"] is None) == bool(row["lpips_note"]) or isinstance(row["lpips"], float)
    # the 3x3x3 window covers this whole token grid: the same computation as dense, so identical output
    assert rows["window-small"]["token_density"] == 1.0 and rows["window-small"]["psnr"] == "inf"
    assert rows["radial-tiny"]["token_density"] < 1.0
    for run in data["runs"]:
        assert read_mp4(report / run["video"]).shape == (9, 32, 48, 3)
    md = (report / "results.md").read_text()
    assert "| radial-tiny |" in md and "| window-small |" in md and "inf (identical)" in md
    assert data["environment"]["torch"] and data["environment"]["device"] == "cpu"


class _Elements(HTMLParser):
    """Attributes of every start tag, with the id of the enclosing table for rows."""

    def __init__(self):
        super().__init__()
        self.tags, self._table = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
        self.tags.append((tag, attrs, self._table))


def _chromium(tmp_path, *args):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--autoplay-policy=no-user-gesture-required",
           "--hide-scrollbars", "--force-device-scale-factor=1", f"--window-size={WINDOW[0]},{WINDOW[1]}",
           "--virtual-time-budget=8000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _rect(attrs):
    x, y, w, h = (int(v) for v in attrs["data-rect"].split(","))
    return x, y, w, h


def _near(pixels, color, tol=12):
    return int((np.abs(pixels[..., :3].astype(int) - np.array(color)).max(-1) <= tol).sum())


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium from the OS packages (.ci/run installs it)")
def test_report_renders_videos_plot_and_table_in_headless_chromium(report, tmp_path):
    url = (report / "report.html").as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0 and "<video" in dom.stdout, dom.stderr[-2000:]
    parser = _Elements()
    parser.feed(dom.stdout)
    videos = [a for t, a, _ in parser.tags if t == "video"]
    assert len(videos) == 3
    for v in videos:  # decoded by the browser: frame data available and a real duration
        assert "data-error" not in v and int(v["data-ready-state"]) >= 2, v
        assert float(v["data-duration"]) == pytest.approx(9 / 8, abs=0.2)
    circles = [a for t, a, _ in parser.tags if t == "circle"]
    assert sorted(c["data-config"] for c in circles) == ["radial-tiny", "window-small"]
    assert len([1 for t, _, table in parser.tags if t == "tr" and table == "summary"]) == 1 + 3  # header + rows
    plot = next(a for t, a, _ in parser.tags if a.get("id") == "speed-quality-plot")
    table = next(a for t, a, _ in parser.tags if a.get("id") == "summary")

    shot = tmp_path / "report.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", url)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    png = iio.imread(shot)[..., :3]
    assert png.shape[:2] == (WINDOW[1], WINDOW[0])

    def crop(rect):
        x, y, w, h = rect
        assert y + h <= png.shape[0], f"{rect} is below the screenshot"
        return png[y:y + h, x:x + w]

    for v in videos:  # the box shows one of the video's own frames (playback position varies)
        box = crop(_rect(v)).astype(float)
        frames = read_mp4(report / v["src"]).astype(float)
        t, h, w, _ = frames.shape
        rows = ((np.arange(h) + 0.5) * box.shape[0] / h).astype(int)  # pixel centres (image-rendering: pixelated)
        cols = ((np.arange(w) + 0.5) * box.shape[1] / w).astype(int)
        top = h // 2  # the player's controls may be drawn over the lower part
        shown = box[rows[:top]][:, cols]
        error = min(np.abs(frames[i, :top] - shown).mean() for i in range(t))
        assert box.std((0, 1)).max() > 2 and error < 12, (v["data-config"], error)
    plot_px = crop(_rect(plot))
    assert _near(plot_px, (31, 119, 180)) > 50 and _near(plot_px, (214, 39, 40)) > 50  # the two markers
    table_px = crop(_rect(table))
    assert _near(table_px, (240, 240, 240), 3) > 500  # header background
    assert (table_px.max(-1) < 80).sum() > 500  # text drawn in the cells
