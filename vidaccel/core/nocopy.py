"""Objects vidaccel installs on a model refuse `copy.deepcopy` and `pickle`, naming the fix.

diffusers keeps every hooked forward as a ``functools.partial`` over the hook objects, so a deep
copy of an accelerated module would share (or half-share) vidaccel's hooks, counters and caches
with the original: running the copy moves the original's state, and removing either confuses the
other. Every hook and per-transformer state of vidaccel is a `NotCopyable`, so copying or
pickling a model with a vidaccel feature on stops at the first of them with a one-line TypeError
that says which feature to turn off first. Without vidaccel's features the model copies as usual.
"""

from __future__ import annotations

from diffusers.hooks import ModelHook

from .features import FEATURES


def copy_refusal(owner: str | None) -> str:
    """The message: the feature whose object was reached (by key), or all of them when unknown."""
    calls = [f.turn_off for f in FEATURES if f.key == owner] or [f.turn_off for f in FEATURES]
    label = next((f.label for f in FEATURES if f.key == owner), "a vidaccel feature")
    label = label[0].lower() + label[1:] if label.split()[0] in ("The", "Block") else label
    return (f"Cannot copy or pickle a model while {label} is on: its hooks and caches belong to the original "
            f"module, so a copy would stay tied to it. Call {' / '.join(calls)} (and turn off any other "
            f"vidaccel feature) before copying, then enable it again on both.")


class NotCopyable:
    """Mixin: `copy.copy`, `copy.deepcopy` and `pickle` raise `copy_refusal(self.owner)`."""

    owner: str | None = None  # key of the feature (core.features) this object belongs to

    def __reduce_ex__(self, protocol):
        raise TypeError(copy_refusal(self.owner))


class VidaccelHook(NotCopyable, ModelHook):
    """Base class of every diffusers hook vidaccel registers (`HookSet.add` sets `owner`)."""
