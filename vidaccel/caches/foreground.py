"""Foreground estimate from the model's own predictions, on the token grid.

ProfilingDiT segments the foreground from the predicted noise but publishes no procedure. Ours:

1. The profiler averages the transformer's prediction (the cond branch) over the later half of
   the denoising steps, where it has stabilised, and arranges it per token: ``(B, N, D)`` with
   ``D`` = channels x patch volume (`prediction_tokens`).
2. A per-token score:
   * ``"pca"`` (default): project every token's feature on the first principal component (over
     all tokens of the clip) and take the distance to the median projection. The background is
     the larger, uniform part of a clip, so it sits near the median; the foreground stands out.
   * ``"motion"``: motion energy, the L2 norm of the feature's change from the previous frame
     (frame 0 takes frame 1's value); moving objects stand out.
3. The score is smoothed over 3x3 spatial neighbours in each frame and thresholded with Otsu's
   method over the clip's tokens: tokens above the threshold are foreground.

Assumption (documented limit): the foreground is the smaller part of the clip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .profile_io import otsu_threshold

METHODS = ("pca", "motion")


def prediction_tokens(prediction: torch.Tensor, layout: str, grid) -> torch.Tensor:
    """The transformer output as per-token features ``(B, T*H*W, D)`` in raster order (float32).

    `layout` is the adapter's ``prediction_layout``: ``"bcfhw"``, ``"bfchw"``, ``"bfhwc"`` (Kandinsky 5) or
    ``"bnc"`` (already tokens).
    """
    T, H, W = grid
    x = prediction.float()
    if layout == "bnc":
        return x
    if layout == "bfchw":
        x = x.transpose(1, 2)
    elif layout == "bfhwc":
        x = x.permute(0, 4, 1, 2, 3)
    B, C, F_, Hp, Wp = x.shape
    pt, ph, pw = F_ // T, Hp // H, Wp // W
    x = x[:, :, : T * pt, : H * ph, : W * pw].reshape(B, C, T, pt, H, ph, W, pw)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(B, T * H * W, C * pt * ph * pw)


def _score(tokens: torch.Tensor, grid, method: str) -> torch.Tensor:
    T, H, W = grid
    if method == "pca":
        x = tokens - tokens.mean(0, keepdim=True)
        cov = x.T @ x / max(x.shape[0] - 1, 1)
        _, vecs = torch.linalg.eigh(cov.double())
        proj = x @ vecs[:, -1].to(x.dtype)
        return (proj - proj.median()).abs()
    if method == "motion":
        x = tokens.reshape(T, H * W, -1)
        if T < 2:
            raise ValueError("The motion foreground estimate needs at least 2 latent frames; use foreground='pca'.")
        energy = (x[1:] - x[:-1]).norm(dim=-1)
        return torch.cat([energy[:1], energy]).reshape(-1)
    raise ValueError(f"Unknown foreground method {method!r}; choose one of {METHODS}.")


def foreground_mask(tokens: torch.Tensor, grid, method: str = "pca") -> torch.Tensor:
    """Boolean foreground mask ``(B, N)`` from per-token prediction features ``(B, N, D)``."""
    T, H, W = grid
    masks = []
    for clip in tokens.float():
        score = _score(clip, grid, method).reshape(T, 1, H, W)
        score = F.avg_pool2d(score, 3, stride=1, padding=1, count_include_pad=False).reshape(-1)
        threshold = otsu_threshold(score)
        masks.append(score > threshold)
    return torch.stack(masks)


def foreground_ratio(received: torch.Tensor, fg: torch.Tensor, grid) -> float:
    """ProfilingDiT's R for one block: ``|high ∩ fg| / |fg|`` averaged over frames and clips.

    `received` ``(B, N)`` is the mean received attention per key token; the high-attention tokens of
    a frame are its top-``|fg|`` tokens, so a block attending uniformly scores about the foreground
    fraction and a foreground-focused block scores 1. Frames with no or only foreground are skipped;
    returns nan when nothing could be measured.
    """
    T, H, W = grid
    a = received.float().reshape(-1, T, H * W)
    m = fg.reshape(-1, T, H * W)
    if m.shape[0] != a.shape[0]:  # e.g. one mask per clip, attention for a CFG batch of several
        m = m.repeat(a.shape[0] // m.shape[0], 1, 1)
    values = []
    for clip_a, clip_m in zip(a, m):
        for frame_a, frame_m in zip(clip_a, clip_m):
            k = int(frame_m.sum())
            if 0 < k < frame_m.numel():
                high = torch.topk(frame_a, k).indices
                values.append(float(frame_m[high].sum()) / k)
    return sum(values) / len(values) if values else float("nan")
