"""Video quality against a reference video: PSNR, SSIM, temporal flicker and (when available) LPIPS.

Videos are arrays ``(T, H, W, C)`` (or ``(T, H, W)``) of the same shape: uint8 in ``[0, 255]`` or
floats on the scale given by ``data_range`` (default: 255 for uint8, 1.0 for floats). Every metric
is computed per frame and averaged over frames, the convention of the papers vidaccel reproduces (docs/methods.md section 7).

- `psnr`: ``10 log10(range^2 / MSE)`` per frame, averaged; ``inf`` when the videos are identical
  (one identical frame makes the mean ``inf`` too: use `psnr_per_frame` to see which).
- `ssim`: Wang et al. 2004 (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, valid region),
  averaged over channels, pixels and frames; 1 for identical videos. Frames smaller than 11 px
  use a ``min(11, H, W)`` window with sigma scaled alike.
- `flicker`: mean absolute change between consecutive frames, in 0-255 units; `temporal_error`
  is the mean absolute difference between the two videos' frame-to-frame changes.
- `lpips`: only when the ``lpips`` package and its backbone weights are already on disk
  (`lpips_status`); nothing is downloaded and no number is made up when they are missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def _as_tensor(video, data_range) -> tuple[torch.Tensor, float]:
    """float64 ``(T, C, H, W)`` and the data range."""
    arr = np.asarray(video)
    if data_range is None:
        data_range = 255.0 if arr.dtype == np.uint8 else 1.0
    x = torch.from_numpy(arr.astype(np.float64, copy=False))
    if x.ndim == 3:
        x = x.unsqueeze(-1)
    if x.ndim != 4:
        raise ValueError(f"a video must be (T, H, W) or (T, H, W, C), got shape {tuple(arr.shape)}")
    return x.permute(0, 3, 1, 2), float(data_range)


def _pair(a, b, data_range):
    x, r = _as_tensor(a, data_range)
    y, _ = _as_tensor(b, r)
    if x.shape != y.shape:
        raise ValueError(f"videos differ in shape: {tuple(np.shape(a))} vs {tuple(np.shape(b))}; "
                         f"compare outputs generated with the same resolution and frame count")
    return x, y, r


def psnr_per_frame(a, b, data_range: float | None = None) -> np.ndarray:
    """PSNR of each frame in dB (``inf`` for identical frames)."""
    x, y, r = _pair(a, b, data_range)
    mse = ((x - y) ** 2).flatten(1).mean(1)
    with np.errstate(divide="ignore"):
        return (10 * np.log10(r * r / mse.numpy())).astype(np.float64)


def psnr(a, b, data_range: float | None = None) -> float:
    """Mean over frames of the per-frame PSNR in dB; ``inf`` if any frame is identical."""
    return float(np.mean(psnr_per_frame(a, b, data_range)))


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma * sigma))
    return g / g.sum()


def ssim_per_frame(a, b, data_range: float | None = None) -> np.ndarray:
    """SSIM of each frame (mean over channels and the valid-window region)."""
    x, y, r = _pair(a, b, data_range)
    t, c, h, w = x.shape
    size = min(SSIM_WINDOW, h, w)  # tiny frames: shrink the window rather than refuse
    g = _gaussian_window(size, SSIM_SIGMA * size / SSIM_WINDOW)
    x, y = x.reshape(t * c, 1, h, w), y.reshape(t * c, 1, h, w)

    def blur(z):  # separable Gaussian filter, valid region only
        z = F.conv2d(z, g.view(1, 1, size, 1))
        return F.conv2d(z, g.view(1, 1, 1, size))

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (SSIM_K1 * r) ** 2, (SSIM_K2 * r) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(t, -1).mean(1).numpy()


def ssim(a, b, data_range: float | None = None) -> float:
    """Mean over frames of the per-frame SSIM (1 for identical videos)."""
    return float(np.mean(ssim_per_frame(a, b, data_range)))


def _frame_changes(video, data_range) -> torch.Tensor:
    x, r = _as_tensor(video, data_range)
    if x.shape[0] < 2:
        raise ValueError("temporal metrics need at least 2 frames")
    return (x[1:] - x[:-1]) * (255.0 / r)


def flicker(video, data_range: float | None = None) -> float:
    """Mean absolute frame-to-frame change in 0-255 units (0 for a still video)."""
    return float(_frame_changes(video, data_range).abs().mean())


def temporal_error(a, b, data_range: float | None = None) -> float:
    """Mean absolute difference of the two videos' frame-to-frame changes, in 0-255 units."""
    _pair(a, b, data_range)
    return float((_frame_changes(a, data_range) - _frame_changes(b, data_range)).abs().mean())


def lpips_status() -> tuple[bool, str]:
    """``(available, reason)``: LPIPS needs the ``lpips`` package and its AlexNet weights on disk."""
    try:
        import lpips  # noqa: F401
    except ImportError as exc:
        return False, f"cannot import the lpips package ({exc}); pip install lpips, with its AlexNet weights cached"
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    if not any(hub.glob("alexnet-*.pth")):
        return False, f"AlexNet weights for LPIPS are not in {hub} (vidaccel never downloads them during a run)"
    return True, "lpips (AlexNet) with locally cached weights"


_LPIPS_MODEL = None


def lpips(a, b, data_range: float | None = None) -> float:
    """Mean over frames of LPIPS (AlexNet); raises RuntimeError with the reason when unavailable."""
    global _LPIPS_MODEL
    ok, reason = lpips_status()
    if not ok:
        raise RuntimeError(f"LPIPS unavailable: {reason}")
    import lpips as lpips_pkg

    x, y, r = _pair(a, b, data_range)
    if _LPIPS_MODEL is None:
        _LPIPS_MODEL = lpips_pkg.LPIPS(net="alex", verbose=False).eval()
    with torch.no_grad():
        d = _LPIPS_MODEL(x.float() / r * 2 - 1, y.float() / r * 2 - 1)  # expects [-1, 1]
    return float(d.mean())


def compare_videos(reference, video, data_range: float | None = None) -> dict:
    """All quality metrics of `video` against `reference` as a JSON-ready dict.

    ``lpips`` is None with ``lpips_note`` saying why when unavailable; ``flicker_delta`` is the
    video's flicker minus the reference's (positive: more flicker than the reference) and
    ``flicker_ratio`` the video's over the reference's (None for a still reference).
    """
    out = {"psnr": psnr(reference, video, data_range), "ssim": ssim(reference, video, data_range)}
    if np.shape(video)[0] >= 2:
        f_ref, f_vid = flicker(reference, data_range), flicker(video, data_range)
        out.update(flicker=f_vid, flicker_delta=f_vid - f_ref, flicker_ratio=f_vid / f_ref if f_ref > 0 else None,
                   temporal_error=temporal_error(reference, video, data_range))
    ok, reason = lpips_status()
    out["lpips"] = lpips(reference, video, data_range) if ok else None
    out["lpips_note"] = reason
    return out

