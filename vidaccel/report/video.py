"""MP4 files browsers play: H.264, yuv420p, even frame sizes, moov atom first (imageio-ffmpeg's ffmpeg)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def to_uint8(frames) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 from uint8 or [0, 1] float frames (a leading batch of 1 is dropped)."""
    arr = np.asarray(frames)
    if arr.ndim == 5 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be (T, H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr


def write_mp4(path, frames, fps: int = 8) -> Path:
    """Write frames as an H.264/yuv420p MP4 (odd sizes are padded by one edge pixel: yuv420p needs even)."""
    import imageio_ffmpeg

    arr = to_uint8(frames)
    t, h, w, _ = arr.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)  # a killed run never leaves a half file
    writer = imageio_ffmpeg.write_frames(
        str(tmp), (arr.shape[2], arr.shape[1]), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
        macro_block_size=1, quality=None, ffmpeg_log_level="error",
        output_params=["-crf", "12", "-movflags", "+faststart"],
    )
    writer.send(None)
    for frame in arr:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    os.replace(tmp, path)
    return path


def read_mp4(path) -> np.ndarray:
    """Decode an MP4 into ``(T, H, W, 3)`` uint8 (used by tests and to inspect reports)."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    frames = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in gen]
    if not frames:
        raise ValueError(f"{path} has no decodable frames")
    return np.stack(frames)
