"""User-facing configurations for sparse self-attention, and the named presets.

A config says *what* to compute (pattern + dense warm-up); `backend` and `tile_size` are
performance knobs that never change results beyond floating-point rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType

from ..core.context import warmup_steps
from ..core.validate import integer, steps_or_fraction
from .attention import check_backend
import math

from .patterns import Pattern, RadialPattern, TileAlignedWindowPattern, WindowPattern
from .patterns.window import odd_multiple
from .plan import check_tile_size


class AttentionConfigBase:
    """What every sparse-attention config is (`resolve_config` accepts these): ``resolved(family)`` fills family
    defaults, ``build_pattern()`` gives the one pattern (None when each layer has its own), and the fields
    ``dense_steps``, ``dense_layers``, ``backend``, ``tile_size``."""


def check_common_fields(dense_steps, dense_layers, backend, tile_size, *, dense_layers_optional: bool = True):
    """The fields every attention config has: warm-up (steps, layers) and the performance knobs."""
    steps_or_fraction("dense_steps", dense_steps, optional=True,
                      hint=" (the first N steps, or that share of them, stay dense)")
    integer("dense_layers", dense_layers, minimum=0, optional=dense_layers_optional,
            hint=" (the first N layers stay dense)")
    check_backend(backend)
    check_tile_size(tile_size)


@dataclass(frozen=True)
class WindowAttentionConfig(AttentionConfigBase):
    """3D inward sliding-window attention (NATTEN semantics).

    Args:
        kernel: window size in tokens ``(kt, kh, kw)`` (or one int for all three). A size >= the
            grid dimension means the whole dimension. Default ``(9, 15, 15)``.
        dilation, stride: per dimension (int or three ints), NATTEN semantics. Default 1.
        dense_steps: the first N denoising steps use dense attention (an int), or that fraction of the
            schedule (a float in [0, 1], rounded half up per run: ``0.25`` is 1 of 4 steps, 13 of 50; needs the
            pipeline, not a bare transformer). Default 0.
        dense_layers: the first N transformer blocks use dense attention. Default 0.
        backend: ``"auto"`` (Triton kernel on CUDA when supported, else reference),
            ``"triton"`` (raise if unsupported) or ``"reference"``.
        tile_size: tokens per kernel tile (performance only): 16, 32, 64, 128, or ``"auto"`` (default:
            the plan search weighs 64- and 128-token tiles by predicted kernel time on CUDA).
    """

    kernel: tuple[int, int, int] | int = (9, 15, 15)
    dilation: tuple[int, int, int] | int = 1
    stride: tuple[int, int, int] | int = 1
    dense_steps: int | float = 0
    dense_layers: int = 0
    backend: str = "auto"
    tile_size: int | str = "auto"

    def __post_init__(self):
        check_common_fields(self.dense_steps, self.dense_layers, self.backend, self.tile_size)
        self.build_pattern()  # validates kernel, dilation, stride

    def build_pattern(self) -> Pattern:
        return WindowPattern(self.kernel, self.dilation, self.stride)

    def resolved(self, family: str) -> "WindowAttentionConfig":
        return self


# tile="auto" candidates: one frame deep (the temporal window stays exact), spatial power-of-two boxes of 64 and
# 128 tokens at least 4 wide (thinner tiles make slow kernel blocks)
_AUTO_TILES = [(1, th, size // th) for size in (128, 64) for th in (4, 8, 16, 32) if size // th >= 4]


def choose_tile(kernel) -> tuple[int, int, int]:
    """The tile for ``tile="auto"``: whose rounded window (odd multiples of the tile, `odd_multiple`) is
    closest in volume to `kernel` (on a log scale); ties go to 128-token tiles, then squarer ones."""
    kernel = WindowPattern(kernel).kernel

    def score(tile):
        rounded = [odd_multiple(k, s) for k, s in zip(kernel, tile)]
        return (round(abs(math.log(math.prod(rounded) / math.prod(kernel))), 9), -math.prod(tile),
                abs(math.log(tile[1] / tile[2])), tile)

    return min(_AUTO_TILES, key=score)


@dataclass(frozen=True)
class TileWindowAttentionConfig(AttentionConfigBase):
    """Tile-aligned window attention (STA / GNA "strided" semantics): the queries of one tile share one window
    made of whole tiles, so the kernel visits full blocks only (where the grid divides by the tile).

    Args:
        kernel: the wanted window in tokens ``(kt, kh, kw)`` (or one int); each dimension is rounded to the
            nearest odd multiple of the tile (``summary`` and ``build_pattern().kernel`` show the result).
            Default ``(9, 15, 15)``, which runs as ``(9, 12, 16)`` with the ``(1, 4, 16)`` tile.
        tile: ``(tt, th, tw)`` tokens, 16 to 128 in all, or ``"auto"`` (default): the 64- or 128-token box
            whose rounded window is closest in volume to `kernel` (`choose_tile`).
        dense_steps, dense_layers, backend: as in `WindowAttentionConfig`.
    """

    kernel: tuple[int, int, int] | int = (9, 15, 15)
    tile: tuple[int, int, int] | str = "auto"
    dense_steps: int | float = 0
    dense_layers: int = 0
    backend: str = "auto"
    tile_size = "auto"  # not a field: the pattern brings its tile (`Pattern.aligned_tile`)

    def __post_init__(self):
        check_common_fields(self.dense_steps, self.dense_layers, self.backend, "auto")
        if self.tile != "auto" and isinstance(self.tile, str):
            raise ValueError(f"tile must be 'auto' or three ints (t, h, w), got tile={self.tile!r}.")
        self.build_pattern()  # validates kernel and tile

    def resolved_tile(self) -> tuple[int, int, int]:
        return choose_tile(self.kernel) if self.tile == "auto" else self.tile

    def build_pattern(self) -> Pattern:
        return TileAlignedWindowPattern(self.kernel, self.resolved_tile())

    def resolved(self, family: str) -> "TileWindowAttentionConfig":
        return self


# Per model family (docs/methods.md section 3): decay factor, dense warm-up steps and layers.
RADIAL_DEFAULTS = {
    "wan": dict(decay_factor=0.2, dense_steps=12, dense_layers=1),
    "hunyuan": dict(decay_factor=0.95, dense_steps=12, dense_layers=0),
    "cogvideox": dict(decay_factor=0.2, dense_steps=12, dense_layers=1),
    "ltx": dict(decay_factor=0.2, dense_steps=12, dense_layers=1),
}


@dataclass(frozen=True)
class RadialAttentionConfig(AttentionConfigBase):
    """Radial attention (O(n log n) spatiotemporal decay).

    Args:
        decay_factor: scales the band width ``2**bitlen(s) / 2**bitlen(d)``. ``None`` = the model
            family's default (Wan 0.2, HunyuanVideo 0.95).
        sink: every query attends frame 0 densely (attention sink). Default True.
        dense_steps: the first N denoising steps are dense, or a fraction of the schedule (a float, see
            `WindowAttentionConfig`). ``None`` = family default (12).
        dense_layers: the first N blocks are dense. ``None`` = family default (Wan 1, Hunyuan 0).
        block_size: minimum band width and the frame-skipping threshold, in tokens. Default 128.
        backend, tile_size: see `WindowAttentionConfig`.
    """

    decay_factor: float | None = None
    sink: bool = True
    dense_steps: int | float | None = None
    dense_layers: int | None = None
    block_size: int = 128
    backend: str = "auto"
    tile_size: int | str = "auto"

    def __post_init__(self):
        check_common_fields(self.dense_steps, self.dense_layers, self.backend, self.tile_size)
        # every field now, even with the family's decay factor still to fill in (a config file's block_size: "8")
        RadialPattern(self.decay_factor if self.decay_factor is not None else 1.0, self.sink, self.block_size)

    def resolved(self, family: str) -> "RadialAttentionConfig":
        """Fill the `None` fields with the family defaults."""
        defaults = RADIAL_DEFAULTS[family]
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def build_pattern(self) -> Pattern:
        if self.decay_factor is None:
            raise ValueError("decay_factor is unresolved: call resolved(family) first.")
        return RadialPattern(self.decay_factor, self.sink, self.block_size)


PRESETS = MappingProxyType({  # read-only: a preset means the same for every caller
    "window": WindowAttentionConfig,
    "radial": RadialAttentionConfig,
    "tile_window": TileWindowAttentionConfig,
})

AttentionConfig = WindowAttentionConfig | RadialAttentionConfig | TileWindowAttentionConfig


def runs_dense(config: AttentionConfig, layer: int, step: int, num_steps: int | None = None) -> bool:
    """The dense warm-up rule: block `layer` at denoising `step` (of `num_steps`, needed for a fractional
    ``dense_steps``) runs dense attention."""
    return layer < (config.dense_layers or 0) or step < warmup_steps(config.dense_steps, num_steps)


def resolve_config(config) -> AttentionConfig:
    """Turn a preset name or a config object into a config object (raising with the choices)."""
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"Unknown preset {config!r}. Available presets: {', '.join(sorted(PRESETS))}.")
        return PRESETS[config]()
    if isinstance(config, AttentionConfigBase):
        return config
    raise TypeError(
        f"config must be a preset name ({', '.join(sorted(PRESETS))}), a WindowAttentionConfig, "
        f"TileWindowAttentionConfig, RadialAttentionConfig or TunedAttentionConfig, got {type(config).__name__}."
    )
