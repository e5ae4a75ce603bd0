"""`FreeSwimConfig`: the settings of FreeSwim's dual path, and its entropy-aware attention scale.

The method is defined in docs/methods.md section 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.validate import flag, integer, ints
from ..sparse.attention import check_backend
from ..sparse.config import RadialAttentionConfig
from ..sparse.plan import check_tile_size


@dataclass(frozen=True)
class FreeSwimConfig:
    """FreeSwim dual path (docs/methods.md section 2).

    Args:
        base_size: the model's base (training) resolution in pixels ``(height, width)``; the window
            is its token extent. Default ``(480, 832)`` (Wan2.1).
        window: ``(k_h, k_w)`` in tokens, overriding the size derived from `base_size`
            (``base / (VAE factor x patch)``, e.g. 480x832 -> 30x52). The window spans all frames.
        cache_steps: the full branch runs every `cache_steps` denoising steps (guide steps) and its
            cross-attention outputs are reused in between. 1 = every step (no reuse). Default 2.
        override: replace the window branch's cross-attention with the full branch's (conditional
            pass). ``False`` leaves only the window attention (no full branch at all).
        entropy_scaling: scale self-attention logits by ``sqrt(log N_attended / log N_train)``.
            Default True (the reference code scales too, with constants for 2x).
        offload_cache: keep the cached outputs in pinned CPU memory, copied asynchronously
            (CUDA only; a no-op on CPU). Default False.
        full_attention: the full branch's self-attention. ``"dense"`` (default) is the method as
            defined: dense over the whole grid. ``"radial"`` or a `RadialAttentionConfig` runs radial
            attention instead (the sparse kernel on CUDA), an approximation beyond FreeSwim's
            definition: each token still sees its whole frame, the neighbouring frames and frame 0,
            farther frames in bands that narrow with distance, at O(n log n) cost (a guide step at
            1088x1920x81 on an H100: 18.4 -> 11.5 s; quality checked only on the shipped tiny model,
            where it matches the dense full branch - check it on yours). ``"radial"`` takes the Wan
            defaults (decay 0.2; the first 12 steps and block 0 dense); the config's ``dense_steps``
            count the refinement steps of the hi-res call.
        backend, tile_size: window attention performance knobs (see `WindowAttentionConfig`).
    """

    base_size: tuple[int, int] = (480, 832)
    window: tuple[int, int] | None = None
    cache_steps: int = 2
    override: bool = True
    entropy_scaling: bool = True
    offload_cache: bool = False
    full_attention: str | RadialAttentionConfig = "dense"
    backend: str = "auto"
    tile_size: int | str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "base_size",
                           ints("base_size", self.base_size, 2, labels="(height, width) in pixels", scalar=False))
        object.__setattr__(self, "window",
                           ints("window", self.window, 2, labels="(k_h, k_w) in tokens", scalar=False, optional=True))
        integer("cache_steps", self.cache_steps, minimum=1, hint=" (1 = full branch every step)")
        for name in ("override", "entropy_scaling", "offload_cache"):
            flag(name, getattr(self, name))
        check_backend(self.backend)
        check_tile_size(self.tile_size)
        if not (self.full_attention in ("dense", "radial") or isinstance(self.full_attention, RadialAttentionConfig)):
            raise ValueError(
                f"full_attention must be 'dense', 'radial' or a vidaccel.RadialAttentionConfig (the full branch keeps "
                f"a whole-frame receptive field; a window there would defeat it), got {self.full_attention!r}."
            )

    def full_attention_config(self) -> RadialAttentionConfig | None:
        """The full branch's sparse attention config with Wan's defaults filled in; None = dense."""
        if self.full_attention == "dense":
            return None
        config = RadialAttentionConfig() if self.full_attention == "radial" else self.full_attention
        return config.resolved("wan")

    def window_tokens(self, spatial_factor: int) -> tuple[int, int]:
        """``(k_h, k_w)``: the explicit `window`, or `base_size` divided by `spatial_factor` (VAE x patch)."""
        if self.window is not None:
            return tuple(self.window)
        return (max(1, self.base_size[0] // spatial_factor), max(1, self.base_size[1] // spatial_factor))


def entropy_scale(n_attended: int, n_train: int, head_dim: int) -> float | None:
    """``sqrt(log n_attended / log n_train) / sqrt(head_dim)``; None (SDPA's default) when the ratio is 1."""
    if n_attended == n_train or n_train <= 1 or n_attended <= 1:
        return None
    return math.sqrt(math.log(n_attended) / math.log(n_train)) / math.sqrt(head_dim)
