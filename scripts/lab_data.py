"""Procedural clips with captions for the quality-lab model (``assets/lab-wan``): scenes whose
structure sparse attention has to keep.

A scene (`vidaccel.tiny.captions.Scene`) holds one to three objects in groups ("two green squares
moving up"): circles, squares and triangles in the palette's colours that move left/right/up/down
(often across most of the frame), bounce, grow, shrink, or leave the frame and come back; over a
flat, striped, checkered or shaded background, sometimes under a slow camera pan. Long moves and
re-entries need attention between far-apart frames and positions; counts and textures need it
between far-apart places of one frame.

Everything is drawn from a CPU ``torch.Generator`` and rendered with batched torch ops on any device,
in relative units (positions in [0, 1] of the frame, sizes relative to its shorter side), so one
scene looks the same at every resolution. A clip is ``(3, T, H, W)`` in ``[-1, 1]``, the layout
``AutoencoderKLWan`` takes. `HELD_OUT` captions are never produced: the pixel checks use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vidaccel.tiny.captions import (MOTIONS, PANS, RETURNS, SHAPES, STRAIGHT, TEXTURES, Group, Scene, format_caption,
                                    vocabulary as grammar_vocabulary)
from tiny_data import save_preview  # noqa: F401 - the contact sheet both data sets share
from vidaccel.tiny.palette import COLORS, PALETTE

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in T5/UMT5

# The pixel checks' prompts (`scripts/eval_lab_model.py`): never rendered for training.
HELD_OUT = (
    "a red circle moving right on a blue background",
    "two yellow squares moving left on a striped purple background",
    "a white triangle moving up and a green circle moving down on a shaded black background",
    "a green square leaving to the right and coming back on a checkered white background",
)

# Texture contrast per colour: how far a background may darken (s = 0) and lighten (s = 1) while
# every pixel keeps its palette label (measured: `tests/test_lab_data.py` checks it).
_DARKEN = {"yellow": 0.1, "orange": 0.14, "white": 0.16}
_LIGHTEN = {"red": 0.14, "black": 0.14, "orange": 0.14}
_DEFAULT_CONTRAST = 0.18

# Scene mix: objects per scene -> group partitions and their probabilities.
P_OBJECTS = (0.55, 0.27, 0.18)
PARTITIONS = {1: (((1,), 1.0),), 2: (((2,), 0.45), ((1, 1), 0.55)),
              3: (((3,), 0.35), ((2, 1), 0.3), ((1, 1, 1), 0.35))}
P_MOTIONS = {"moving left": 0.15, "moving right": 0.15, "moving up": 0.15, "moving down": 0.15,
             "bouncing": 0.1, "growing": 0.08, "shrinking": 0.08,
             "leaving to the left and coming back": 0.07, "leaving to the right and coming back": 0.07}
P_TEXTURES = (0.4, 0.2, 0.2, 0.2)  # flat, striped, checkered, shaded
P_BG_PHRASE = 0.85
P_PAN = 0.2  # of scenes with a named, textured background


def vocabulary() -> list[str]:
    """Every word of the grammar after the special tokens (stable order)."""
    return SPECIAL_TOKENS + grammar_vocabulary()


@dataclass
class ClipSpec:
    """Size of the rendered clips (defaults: the lab model's native size)."""

    frames: int = 33
    height: int = 256
    width: int = 256


def _pick(weights, g) -> int:
    return int(torch.multinomial(torch.tensor(weights, dtype=torch.float), 1, generator=g))


def sample_scene(g: torch.Generator, p_objects=P_OBJECTS, p_bg_phrase: float = P_BG_PHRASE,
                 p_motions=None) -> Scene:
    """One random scene; group colours differ from each other and from the background. ``p_motions``
    weighs `MOTIONS` (default `P_MOTIONS`)."""
    n = 1 + _pick(p_objects, g)
    parts = PARTITIONS[n]
    counts = parts[_pick([p for _, p in parts], g)][0]
    order = torch.randperm(len(COLORS), generator=g).tolist()
    bg, colors = COLORS[order[0]], [COLORS[i] for i in order[1:]]
    weights = list(p_motions) if p_motions is not None else [P_MOTIONS[m] for m in MOTIONS]
    groups = tuple(Group(colors[i], SHAPES[_pick([1, 1, 1], g)], MOTIONS[_pick(weights, g)], c)
                   for i, c in enumerate(counts))
    named = float(torch.rand((), generator=g)) < p_bg_phrase
    texture = TEXTURES[_pick(P_TEXTURES, g)]
    pan = PANS[1 + _pick([1, 1], g)] if named and texture != "flat" and float(torch.rand((), generator=g)) < P_PAN else "none"
    scene = Scene(groups, bg if named else None, texture if named else "flat", pan)
    if format_caption(scene) in HELD_OUT:  # keep the check prompts unseen: change the background colour
        spare = [c for c in COLORS if c != bg and c not in [gr.color for gr in groups]]
        scene = Scene(groups, spare[0], scene.texture, pan)
    return scene


def _render_background(scene: Scene, bg: str, spec: ClipSpec, g, device, shift: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) in [0, 255]; ``shift`` (T,) is the pan's horizontal offset in frame widths."""
    T, H, W = spec.frames, spec.height, spec.width
    base = torch.tensor(PALETTE[bg], dtype=torch.float32, device=device)
    if scene.texture == "flat":
        return base[:, None, None, None].expand(3, T, H, W)
    ys = (torch.arange(H, device=device, dtype=torch.float32) + 0.5)[:, None] / H
    xs = (torch.arange(W, device=device, dtype=torch.float32) + 0.5)[None, :] / W
    x = xs[None] + shift.to(device)[:, None, None]  # world coordinates under the pan
    y = ys[None].expand(T, H, W)
    period = 0.1 + 0.1 * float(torch.rand((), generator=g))
    phase = float(torch.rand((), generator=g))
    angle = math.pi / 4 * _pick([1, 1, 1, 1], g)
    proj = x * math.cos(angle) + y * math.sin(angle)
    if scene.texture == "striped":
        s = 0.5 + 0.5 * torch.tanh(4 * torch.sin(2 * math.pi * (proj / period + phase)))
    elif scene.texture == "checkered":
        s = 0.5 + 0.5 * torch.tanh(4 * torch.sin(2 * math.pi * x / period + phase) * torch.sin(2 * math.pi * y / period))
    else:  # shaded: a linear ramp along a random direction
        s = (proj - proj.min()) / (proj.max() - proj.min()).clamp_min(1e-6)
    lo = base * (1 - _DARKEN.get(bg, _DEFAULT_CONTRAST))
    hi = base + (255 - base) * _LIGHTEN.get(bg, _DEFAULT_CONTRAST)
    return lo[:, None, None, None] + s[None] * (hi - lo)[:, None, None, None]


def _triangle_wave(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    span = max(hi - lo, 1e-3)
    y = torch.remainder(x - lo, 2 * span)
    return lo + torch.where(y > span, 2 * span - y, y)


def _trajectories(group: Group, spec: ClipSpec, g) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(cx, cy, r) per frame for each object of the group: x, y in frame units, r in shorter-side units."""
    T, H, W = spec.frames, spec.height, spec.width
    S = min(H, W)
    u = lambda: float(torch.rand((), generator=g))  # noqa: E731
    t = torch.linspace(0, 1, T)
    c, m = group.count, group.motion
    r = (0.05 + 0.04 * u()) if c == 1 else (0.045 + 0.025 * u())
    rx, ry = r * S / W, r * S / H
    vertical = m in ("moving up", "moving down")
    lo = ry if vertical else rx
    # members of a group share the path along the motion: start, travel, and for returns the turning point
    start = lo + 0.02 + 0.3 * u()
    travel = (0.4 + 0.6 * u()) * (1 - lo - 0.02 - start)
    peak = 1 + rx + 0.2 + 0.1 * u()
    out = []
    for i in range(c):  # members sit in their own slot across the motion
        slot = (i + 0.5) / c + (u() - 0.5) * 0.3 / c
        if m in ("moving left", "moving right", "moving up", "moving down"):
            along = start + travel * t
            if m in ("moving left", "moving up"):
                along = 1 - along
            across = torch.full((T,), min(max(slot, ry if not vertical else rx), 1 - (ry if not vertical else rx)))
            cx, cy = (across, along) if vertical else (along, across)
            rr = torch.full((T,), r)
        elif m in RETURNS:
            along = start + (peak - start) * (1 - (2 * t - 1).abs())
            if m == RETURNS[0]:
                along = 1 - along
            cx, cy = along, torch.full((T,), min(max(slot, ry), 1 - ry))
            rr = torch.full((T,), r)
        elif m == "bouncing":
            ang = 2 * math.pi * u()
            speed = 0.6 + 0.6 * u()  # frame sizes per clip
            x0, y0 = rx + (1 - 2 * rx) * u(), ry + (1 - 2 * ry) * u()
            cx = _triangle_wave(x0 + speed * math.cos(ang) * t, rx, 1 - rx)
            cy = _triangle_wave(y0 + speed * math.sin(ang) * t, ry, 1 - ry)
            rr = torch.full((T,), r)
        else:  # growing / shrinking, in place
            r_max = min(0.13, 0.45 / c)
            rr = 0.03 + (r_max - 0.03) * t
            if m == "shrinking":
                rr = rr.flip(0)
            mx, my = r_max * S / W, r_max * S / H
            cx = torch.full((T,), min(max(slot, mx), 1 - mx))
            cy = torch.full((T,), my + (1 - 2 * my) * u())
        out.append((cx, cy, rr))
    return out


def render(scenes: list[Scene], g: torch.Generator, spec: ClipSpec = ClipSpec(), device="cpu",
           return_alpha: bool = False):
    """The clips of ``scenes``: ``(n, 3, T, H, W)`` in ``[-1, 1]`` (with ``return_alpha`` also the
    objects' coverage ``(n, 1, T, H, W)`` in [0, 1]). A scene that does not name its background gets a
    random colour (not its objects') and texture."""
    T, H, W = spec.frames, spec.height, spec.width
    S = min(H, W)
    ys = (torch.arange(H, device=device, dtype=torch.float32) + 0.5)[:, None]
    xs = (torch.arange(W, device=device, dtype=torch.float32) + 0.5)[None, :]
    clips, alphas = [], []
    for scene in scenes:
        bg = scene.bg
        if bg is None:  # the caption leaves the background open: any colour and texture the objects allow
            free = [c for c in COLORS if c not in [gr.color for gr in scene.groups]]
            bg = free[int(torch.randint(len(free), (), generator=g))]
            scene = Scene(scene.groups, bg, TEXTURES[_pick(P_TEXTURES, g)], scene.pan)
        amount = 0.08 + 0.07 * float(torch.rand((), generator=g))
        shift = torch.linspace(0, 1, T) * amount * {"none": 0.0, "left": -1.0, "right": 1.0}[scene.pan]
        video = _render_background(scene, bg, spec, g, device, shift).clone()
        cover = torch.zeros((1, T, H, W), device=device)
        for group in scene.groups:
            color = torch.tensor(PALETTE[group.color], dtype=torch.float32, device=device)[:, None, None, None]
            shape = SHAPES.index(group.shape)
            for cx, cy, rr in _trajectories(group, spec, g):
                # the pan moves the view: world x -> screen x - shift
                px = ((cx - shift) * W).to(device)[:, None, None]
                py = (cy * H).to(device)[:, None, None]
                rad = (rr * S).to(device)[:, None, None]
                dx, dy = xs - px, ys - py
                if shape == 0:
                    d = torch.sqrt(dx * dx + dy * dy) - rad
                elif shape == 1:
                    d = torch.maximum(dx.abs(), dy.abs()) - 0.85 * rad
                else:
                    s3 = math.sqrt(3) / 2
                    d = torch.maximum(torch.maximum(dy, -0.5 * dy + s3 * dx), -0.5 * dy - s3 * dx) - 0.6 * rad
                alpha = (0.5 - d).clamp(0, 1)[None]  # (1, T, H, W), anti-aliased edge
                video = video * (1 - alpha) + color * alpha
                cover = torch.maximum(cover, alpha)
        clips.append(video)
        alphas.append(cover)
    video = torch.stack(clips) / 127.5 - 1
    return (video, torch.stack(alphas)) if return_alpha else video


META_FIELDS = {"color": len(COLORS), "shape": len(SHAPES), "motion": len(MOTIONS), "count": 3,
               "bg": len(COLORS) + 1, "texture": len(TEXTURES) + 1, "objects": 3}


def scene_meta(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    """The caption parse as class indices (first group's colour/shape/motion/count, background colour
    and texture or "not named", number of objects), for the text encoder's caption-parse probes."""
    rows = []
    for s in scenes:
        g0 = s.groups[0]
        rows.append([COLORS.index(g0.color), SHAPES.index(g0.shape), MOTIONS.index(g0.motion), g0.count - 1,
                     COLORS.index(s.bg) if s.bg else len(COLORS),
                     TEXTURES.index(s.texture) if s.bg else len(TEXTURES), s.objects - 1])
    cols = torch.tensor(rows, dtype=torch.long).T
    return dict(zip(META_FIELDS, cols))


def sample_batch(n: int, generator: torch.Generator, spec: ClipSpec = ClipSpec(), device="cpu",
                 return_meta: bool = False, p_objects=P_OBJECTS, render_video: bool = True, p_motions=None):
    """``n`` random clips: ``(video (n, 3, T, H, W) in [-1, 1], captions[, meta])``; with
    ``render_video=False`` the video is None (caption-only training)."""
    scenes = [sample_scene(generator, p_objects, p_motions=p_motions) for _ in range(n)]
    video = render(scenes, generator, spec, device) if render_video else None
    caps = [format_caption(s) for s in scenes]
    return (video, caps, scene_meta(scenes)) if return_meta else (video, caps)


def vae_batch(n: int, generator: torch.Generator, spec: ClipSpec, device, obj_weight: float):
    """``(video, per-pixel loss weights)`` for the VAE stage: 1 + ``obj_weight`` on object pixels
    (objects cover a few percent of a frame; unweighted, a VAE smears them into the background)."""
    scenes = [sample_scene(generator) for _ in range(n)]
    video, alpha = render(scenes, generator, spec, device, return_alpha=True)
    return video, 1 + obj_weight * alpha


def captions_batch(n: int, generator: torch.Generator):
    """``(captions, meta)`` without rendering (the captions-only text stage)."""
    _, caps, meta = sample_batch(n, generator, return_meta=True, render_video=False)
    return caps, meta


_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def direction_probe(n: int, generator: torch.Generator, device, spec: ClipSpec = ClipSpec(33, 128, 128)):
    """One-object clips moving left/right/up/down on a named background: ``(video, captions,
    captions with the direction flipped)``."""
    scenes = []
    for i in range(n):
        s = sample_scene(generator, p_objects=(1.0, 0.0, 0.0), p_bg_phrase=1.0)
        g = s.groups[0]
        scenes.append(Scene((Group(g.color, g.shape, STRAIGHT[i % 4]),), s.bg, s.texture))
    flipped = [Scene((Group(s.groups[0].color, s.groups[0].shape,
                            "moving " + _OPPOSITE[s.groups[0].motion.split()[1]]),), s.bg, s.texture) for s in scenes]
    return render(scenes, generator, spec, device), [format_caption(s) for s in scenes], [format_caption(s) for s in flipped]


if __name__ == "__main__":
    gen = torch.Generator().manual_seed(0)
    vid, caps = sample_batch(8, gen, ClipSpec(33, 128, 128))
    save_preview(vid, "/tmp/lab_data_preview.png", frames=8)
    print("\n".join(caps))
