"""The caption grammar of the shipped models' training data, both ways: `format_caption` writes a
`Scene` as text, `parse_caption` reads the text back, so pixel checks know what a prompt asks for.

    a red circle moving right on a blue background                    # tiny-wan's whole grammar
    two green squares moving up on a striped black background
    a white triangle leaving to the left and coming back and an orange circle growing
    a red square bouncing on a checkered yellow background, the camera panning left

A scene is one to three groups of identical objects (count, colour, shape, motion), an optional
background phrase (colour and texture) and an optional camera pan. Captions are lower case, words
separated by single spaces; the only punctuation is the comma before a pan or between groups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .palette import COLORS

SHAPES = ("circle", "square", "triangle")
PLURALS = {s: s + "s" for s in SHAPES}
COUNT_WORDS = {2: "two", 3: "three"}
STRAIGHT = ("moving left", "moving right", "moving up", "moving down")
RETURNS = ("leaving to the left and coming back", "leaving to the right and coming back")
MOTIONS = STRAIGHT + ("bouncing", "growing", "shrinking") + RETURNS
TEXTURES = ("flat", "striped", "checkered", "shaded")  # "flat" is not written
PANS = ("none", "left", "right")


@dataclass(frozen=True)
class Group:
    """``count`` identical objects: same colour, shape and motion, at different places."""

    color: str
    shape: str
    motion: str
    count: int = 1


@dataclass(frozen=True)
class Scene:
    """What a caption says. ``bg`` is None when the caption does not name the background."""

    groups: tuple[Group, ...]
    bg: str | None = None
    texture: str = "flat"
    pan: str = "none"

    @property
    def objects(self) -> int:
        return sum(g.count for g in self.groups)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _group_text(g: Group) -> str:
    if g.count == 1:
        return f"{_article(g.color)} {g.color} {g.shape} {g.motion}"
    return f"{COUNT_WORDS[g.count]} {g.color} {PLURALS[g.shape]} {g.motion}"


def format_caption(scene: Scene) -> str:
    """The caption of ``scene`` (inverse of `parse_caption`)."""
    parts = [_group_text(g) for g in scene.groups]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if scene.bg is not None:
        words = ([] if scene.texture == "flat" else [scene.texture]) + [scene.bg]
        text += f" on {_article(words[0])} {' '.join(words)} background"
    if scene.pan != "none":
        text += f", the camera panning {scene.pan}"
    return text


def vocabulary() -> list[str]:
    """Every word the grammar can write, in a stable order (tokenizers index it)."""
    words = ["a", "an", "and", "on", "background", ",", "the", "camera", "panning"]
    words += list(COLORS) + list(SHAPES) + list(PLURALS.values()) + list(COUNT_WORDS.values())
    words += [t for t in TEXTURES if t != "flat"]
    for m in MOTIONS:
        words += [w for w in m.split() if w not in words]
    return list(dict.fromkeys(words))


_COLOR = "|".join(COLORS)
_SHAPE = "|".join(SHAPES + tuple(PLURALS.values()))
_MOTION = "|".join(re.escape(m) for m in sorted(MOTIONS, key=len, reverse=True))
_GROUP = re.compile(rf"^(an?|two|three) ({_COLOR}) ({_SHAPE}) ({_MOTION})$")
_TAIL = re.compile(rf"^(.*?)(?: on an? (?:(striped|checkered|shaded) )?({_COLOR}) background)?"
                   r"(?:, the camera panning (left|right))?$")


def parse_caption(text: str) -> Scene:
    """``"two red circles moving up on a blue background"`` -> a `Scene`. Raises ValueError naming
    the grammar when the text is not one of its captions."""
    m = _TAIL.match(" ".join(text.strip().lower().split()))
    body = m[1] if m else ""
    chunks = [c for part in body.split(", ") for c in _split_and(part)]
    groups = []
    for chunk in chunks:
        g = _GROUP.match(chunk)
        if g is None:
            raise ValueError(
                f"cannot read {chunk!r} in {text!r}: a caption is '<a|two|three> <colour> <shape(s)> <motion>' "
                f"groups joined by 'and', then optionally 'on a [striped|checkered|shaded] <colour> background'; "
                f"colours {list(COLORS)}, motions {list(MOTIONS)}")
        count = {"a": 1, "an": 1, "two": 2, "three": 3}[g[1]]
        shape = g[3][:-1] if g[3] in PLURALS.values() else g[3]
        if (count == 1) != (g[3] in SHAPES):
            raise ValueError(f"{chunk!r}: use the singular shape with 'a', the plural with two/three")
        groups.append(Group(g[2], shape, g[4], count))
    if not 1 <= sum(g.count for g in groups) <= 3:
        raise ValueError(f"{text!r}: a scene has 1 to 3 objects")
    return Scene(tuple(groups), m[3], m[2] or "flat", m[4] or "none")


def _split_and(part: str) -> list[str]:
    """Split on ' and ' between groups, not inside 'leaving ... and coming back'."""
    out, words = [], part.split(" and ")
    for w in words:
        if out and w.startswith("coming back"):
            out[-1] += " and " + w
        else:
            out.append(w)
    return out
