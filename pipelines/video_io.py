"""Input clips for the upscaling pipeline: frames -> tensors, video files -> frames (imageio-ffmpeg).

Frames travel as float tensors ``(B, F, 3, H, W)`` in ``[0, 1]``, the layout diffusers' Wan
pipelines return for ``output_type="pt"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def frames_to_tensor(video) -> torch.Tensor:
    """A clip as ``(1, F, 3, H, W)`` float in ``[0, 1]``.

    Accepts ``(F, H, W, 3)`` arrays/tensors (uint8 0-255 or float 0-1), ``(B, F, 3, H, W)`` float
    tensors (returned as is, clamped) or a list of PIL images.
    """
    if isinstance(video, (list, tuple)):
        video = np.stack([np.asarray(frame.convert("RGB") if hasattr(frame, "convert") else frame) for frame in video])
    x = torch.as_tensor(np.asarray(video) if not isinstance(video, torch.Tensor) else video)
    if x.dim() == 5 and x.shape[2] == 3:
        return x.float().clamp(0, 1)
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(
            f"video must be frames (F, H, W, 3) (uint8 or float in [0, 1]), a (B, F, 3, H, W) tensor or a list of "
            f"PIL images, got shape {tuple(x.shape)}."
        )
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return x.clamp(0, 1).permute(0, 3, 1, 2).unsqueeze(0)


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Frames ``(F, H, W, 3)`` uint8 and frames per second of a video file."""
    import imageio_ffmpeg

    from vidaccel.report.video import read_mp4

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"Input video {str(path)!r} is a folder, not a video file; pass an .mp4 file with "
                                f"--input.")
    if not path.is_file():
        raise FileNotFoundError(f"Input video {str(path)!r} does not exist; pass an existing .mp4 file with --input.")
    try:  # ffmpeg's own error text (its banner, stream dumps) is replaced by one line
        header = imageio_ffmpeg.read_frames(str(path))
        fps = float(next(header).get("fps") or 16.0)  # the header only: frames are decoded by read_mp4
        header.close()
        return read_mp4(path), fps
    except (RuntimeError, OSError, ValueError, StopIteration, KeyError):
        raise ValueError(f"Input video {str(path)!r} is not a readable video (ffmpeg cannot decode it); pass an "
                         f".mp4 file with --input.") from None


__all__ = ["frames_to_tensor", "read_video"]
