"""Validate once: the value and output-path checks every config, API call and command shares.

Each check returns the value in its canonical type or raises a one-line ValueError that names the
argument, the value given and what to pass instead. Checks refuse what they would otherwise have to
guess: a bool where a number is meant (``True`` is not 1), a float where an int is meant (``2.9`` is
not 2), a string (``"8"``), an unordered set where the order of ``(t, h, w)`` matters. Integers of
other libraries (``numpy.int64``) are accepted: they implement ``__index__``.

Output paths are checked before any expensive work (`output_file`), and a result that cannot be
written where asked is written elsewhere rather than lost (`save_or_keep`).
"""

from __future__ import annotations

import math
import numbers
import operator
import os
import tempfile
from pathlib import Path


def _is_int(value) -> bool:
    return not isinstance(value, bool) and not isinstance(value, float) and hasattr(type(value), "__index__")


def _bounds(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" between {minimum} and {maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    return f" <= {maximum}" if maximum is not None else ""


def integer(name: str, value, *, minimum: int | None = None, maximum: int | None = None,
            optional: bool = False, hint: str = "") -> int | None:
    """`value` as an int in ``[minimum, maximum]``; None passes when `optional`."""
    if value is None and optional:
        return None
    expected = f"an int{_bounds(minimum, maximum)}" + (" or None" if optional else "")
    if not _is_int(value):
        raise ValueError(f"{name} must be {expected}, got {name}={value!r} ({type(value).__name__}){hint}.")
    value = operator.index(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {expected}, got {name}={value!r}{hint}.")
    return value


def steps_or_fraction(name: str, value, *, optional: bool = False, hint: str = "") -> int | float | None:
    """A step count (an int >= 0) or a fraction of the schedule (a float in [0, 1]); None passes when `optional`."""
    if value is None and optional:
        return None
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a step count (an int >= 0) or a fraction of the schedule (a float in "
                             f"[0, 1]), got {name}={value!r}{hint}; for {value:g} steps pass an int.")
        return value
    return integer(name, value, minimum=0, optional=optional,
                   hint=f"{hint}; or a float in [0, 1] for a fraction of the schedule")


def number(name: str, value, *, above: float | None = None, minimum: float | None = None,
           maximum: float | None = None, optional: bool = False, hint: str = "") -> float | None:
    """`value` as a finite float, ``> above``, ``>= minimum`` and ``<= maximum`` when given; None passes when
    `optional`."""
    if value is None and optional:
        return None
    expected = "a finite number" + (f" > {above}" if above is not None else "") + (
        f" >= {minimum}" if minimum is not None else "") + (f" <= {maximum}" if maximum is not None else "") + (
        " or None" if optional else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {expected}, got {name}={value!r} ({type(value).__name__}){hint}.")
    value = float(value)
    if not math.isfinite(value) or (above is not None and not value > above) or (
            minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {expected}, got {name}={value!r}{hint}.")
    return value


def flag(name: str, value) -> bool:
    """`value` as a bool: only True or False (``"no"`` is not False)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {name}={value!r} ({type(value).__name__}).")
    return value


def ints(name: str, value, length: int, *, labels: str, minimum: int | None = 1, scalar: bool = True,
         optional: bool = False) -> tuple | None:
    """`length` ints in order (`labels` names them, e.g. ``"(t, h, w)"``); one int for all when `scalar`."""
    if value is None and optional:
        return None
    count = {2: "two", 3: "three"}.get(length, str(length))
    expected = (f"an int or {count} ints {labels}" if scalar else f"{count} ints {labels}") + (
        f", each{_bounds(minimum, None)}" if minimum is not None else "")
    if scalar and _is_int(value):
        value = (value,) * length
    if isinstance(value, (set, frozenset)):
        raise ValueError(f"{name} must be {expected} in order, got the set {name}={value!r}: a set has no "
                         f"order; pass a tuple.")
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be {expected}, got {name}={value!r} ({type(value).__name__}).")
    items = tuple(value)
    if len(items) != length or not all(_is_int(v) for v in items):
        raise ValueError(f"{name} must be {expected}, got {name}={value!r}.")
    items = tuple(operator.index(v) for v in items)
    if minimum is not None and min(items) < minimum:
        raise ValueError(f"{name} must be {expected}, got {name}={value!r}.")
    return items


# ------------------------------------------------------------------------------------- output files


def output_file(path, what: str, suffix: str | None = None) -> Path:
    """Check, before any work, that a file can be written at `path` (`what` names the option in messages):
    not a directory, a parent that is (or can be made) a folder, and a folder that accepts files."""
    path = Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        raise ValueError(f"{what} {str(path)!r} must end in {suffix}")
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder: give a file path such as "
                         f"{str(path / ('out' + (suffix or '.json')))!r}")
    folder = path.parent
    while not folder.exists():  # the nearest existing ancestor must be a writable folder
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{what} {str(path)!r} cannot be written: {str(folder)!r} is a file, not a folder; "
                         f"choose another path")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(f"{what} {str(path)!r} cannot be written: folder {str(folder)!r} does not accept new "
                         f"files ({exc.strerror or exc}); choose another path") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{what} {str(path)!r} exists and is read-only; choose another path")
    return path


def save_or_keep(write, path) -> Path:
    """``write(path)``; if that fails, write to a fresh temporary folder instead and raise an OSError
    that says where the result is, so a finished result is never lost."""
    path = Path(path)
    try:
        return write(path)
    except OSError as exc:
        kept = Path(tempfile.mkdtemp(prefix="vidaccel-")) / path.name
        write(kept)
        raise OSError(f"could not write {path} ({exc.strerror or exc}); the result was saved to {kept} "
                      f"instead") from exc
