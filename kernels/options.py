"""Kernel settings in one place: the switches that select among the kernels' code paths.

Every default chooses automatically; nothing here changes results beyond floating-point rounding.
Tests and sweeps set fields on `OPTIONS`; the environment variables below are documented
overrides for the shell, read at each use (a field that is set wins over its variable).

| field | environment variable | default | what it selects |
| --- | --- | --- | --- |
| ``use_tma`` | - | None: on compute capability >= 9 | K/V (and mask) loads through TMA descriptors |
| ``hopper_kernel`` | - | None: where it applies | False forces the Triton kernel on Hopper |
| ``hopper_box_kv`` | - | None: where the tiles allow | False makes the Gluon kernel gather K/V |
| ``hopper_consumers`` | ``VIDACCEL_HOPPER_CONSUMERS`` | 3 | consumer warpgroups at 64-token tiles (2 or 3) |
| ``hopper_stages`` | ``VIDACCEL_HOPPER_STAGES`` | 2 at 128-token tiles, 3 at 64 | the Gluon kernel's K/V ring depth |
| ``mask_table_max_bytes`` | ``VIDACCEL_MASK_TABLE_MAX_BYTES`` | 6 GiB | largest int8 partial-mask table built |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

CONSUMERS_ENV = "VIDACCEL_HOPPER_CONSUMERS"
STAGES_ENV = "VIDACCEL_HOPPER_STAGES"
MASK_TABLE_ENV = "VIDACCEL_MASK_TABLE_MAX_BYTES"


@dataclass
class KernelOptions:
    """The kernels' code-path switches (None = automatic / the environment variable / the default)."""

    use_tma: Optional[bool] = None
    hopper_kernel: Optional[bool] = None
    hopper_box_kv: Optional[bool] = None
    hopper_consumers: Optional[int] = None
    hopper_stages: Optional[int] = None
    mask_table_max_bytes: Optional[int] = None

    def consumers(self, block: int) -> int:
        """Consumer warpgroups per CTA of the Gluon kernel: the two halves of a 128-token query tile,
        or three 64-token tiles (two to compare)."""
        if block == 128:
            return 2
        value = str(self.hopper_consumers) if self.hopper_consumers is not None else os.environ.get(CONSUMERS_ENV, "3")
        if value not in ("2", "3"):
            raise ValueError(f"{CONSUMERS_ENV} must be 2 or 3 (64-token tiles), got {value!r}; unset it for 3.")
        return int(value)

    def stages(self, block: int) -> int:
        """Ring depth that fits Hopper's 227 KB of shared memory next to the two Q buffers (32 KB at
        head dim 128): a stage holds K + V (2 x block x 128 x 2 bytes) and two 64-row mask slices
        (80 KB at block 128, 40 KB at block 64; 3 and 4 stages tied at block 64, NOTES_kernels.md v6).
        The override (sweeps) takes 2 at block 128 and 2-4 at block 64."""
        forced = str(self.hopper_stages) if self.hopper_stages is not None else os.environ.get(STAGES_ENV)
        if not forced:
            return 2 if block == 128 else 3
        most = 2 if block == 128 else 4
        if not forced.isdigit() or not 2 <= int(forced) <= most:
            raise ValueError(f"{STAGES_ENV} must be an int in 2..{most} at {block}-token tiles (more stages do "
                             f"not fit in shared memory), got {forced!r}; unset it for the default.")
        return int(forced)

    def mask_table_bytes(self) -> int:
        """The largest int8 partial-mask table the plan tables may hold (bytes)."""
        if self.mask_table_max_bytes is not None:
            return int(self.mask_table_max_bytes)
        value = os.environ.get(MASK_TABLE_ENV)
        if value is None:
            return 6 * 2**30
        if not value.isdigit():
            raise ValueError(f"{MASK_TABLE_ENV} must be a number of bytes, got {value!r}; unset it for 6 GiB.")
        return int(value)


OPTIONS = KernelOptions()
