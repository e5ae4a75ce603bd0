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
    """An index drawn with probabilities proportional to ``weights`` (one uniform draw from ``g``)."""
    x = float(torch.rand((), generator=g)) * sum(weights)
    for i, w in enumerate(weights):
        x -= w
        if x < 0:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)


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


_TEXTURE_IDS = {"flat": 0, "striped": 1, "checkered": 2, "shaded": 3}


def _background_params(scene: Scene, bg: str, g) -> list[float]:
    """``[texture id, period, phase, angle, lo rgb (3), hi rgb (3)]`` of one scene's background (drawn
    from ``g`` in a fixed order; a flat background draws nothing and has lo = hi = its colour)."""
    base = torch.tensor(PALETTE[bg], dtype=torch.float32)
    if scene.texture == "flat":
        return [0.0, 1.0, 0.0, 0.0, *base.tolist(), *base.tolist()]
    period = 0.1 + 0.1 * float(torch.rand((), generator=g))
    phase = float(torch.rand((), generator=g))
    angle = math.pi / 4 * _pick([1, 1, 1, 1], g)
    lo = base * (1 - _DARKEN.get(bg, _DEFAULT_CONTRAST))
    hi = base + (255 - base) * _LIGHTEN.get(bg, _DEFAULT_CONTRAST)
    return [float(_TEXTURE_IDS[scene.texture]), period, phase, angle, *lo.tolist(), *hi.tolist()]


def _render_backgrounds(params: torch.Tensor, shift: torch.Tensor, spec: ClipSpec) -> torch.Tensor:
    """(n, 3, T, H, W) in [0, 255] from `_background_params` rows ``(n, 10)`` and pan offsets ``(n, T)``
    in frame widths (all on the target device): every texture computed for every clip, then selected."""
    T, H, W = spec.frames, spec.height, spec.width
    dev = params.device
    tex, period, phase, angle = (params[:, i].view(-1, 1, 1, 1) for i in range(4))
    lo, hi = params[:, 4:7].view(-1, 3, 1, 1, 1), params[:, 7:10].view(-1, 3, 1, 1, 1)
    ys = ((torch.arange(H, device=dev, dtype=torch.float32) + 0.5) / H).view(1, 1, H, 1)
    xs = ((torch.arange(W, device=dev, dtype=torch.float32) + 0.5) / W).view(1, 1, 1, W)
    x = xs + shift.view(-1, T, 1, 1)  # world coordinates under the pan, (n, T, 1, W)
    proj = x * torch.cos(angle) + ys * torch.sin(angle)  # (n, T, H, W)
    striped = 0.5 + 0.5 * torch.tanh(4 * torch.sin(2 * math.pi * (proj / period + phase)))
    waves = torch.sin(2 * math.pi * x / period + phase) * torch.sin(2 * math.pi * ys / period)
    checkered = 0.5 + 0.5 * torch.tanh(4 * waves)
    p_min, p_max = proj.amin((1, 2, 3), keepdim=True), proj.amax((1, 2, 3), keepdim=True)
    shaded = (proj - p_min) / (p_max - p_min).clamp_min(1e-6)  # a linear ramp along the angle
    s = torch.where(tex == 1, striped, torch.where(tex == 2, checkered, torch.where(tex == 3, shaded, 0.0)))
    return lo + s[:, None] * (hi - lo)


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
    # sizes keep an object >= 2 tokens wide at the native 9x16x16 grid (16 px per token at 256 px)
    r = (0.08 + 0.04 * u()) if c == 1 else (0.06 + 0.02 * u())
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
            r_max = min(0.16, 0.45 / c)
            rr = 0.04 + (r_max - 0.04) * t
            if m == "shrinking":
                rr = rr.flip(0)
            mx, my = r_max * S / W, r_max * S / H
            cx = torch.full((T,), min(max(slot, mx), 1 - mx))
            cy = torch.full((T,), my + (1 - 2 * my) * u())
        out.append((cx, cy, rr))
    return out


MAX_OBJECTS = 3


def render(scenes: list[Scene], g: torch.Generator, spec: ClipSpec = ClipSpec(), device="cpu",
           return_alpha: bool = False):
    """The clips of ``scenes``: ``(n, 3, T, H, W)`` in ``[-1, 1]`` (with ``return_alpha`` also the
    objects' coverage ``(n, 1, T, H, W)`` in [0, 1]). A scene that does not name its background gets a
    random colour (not its objects') and texture.

    Scene parameters are drawn on the CPU scene by scene; the pixels come from a few batched ops over
    all clips and object slots (a per-object loop launched ~100 small kernels per clip on a GPU)."""
    T, H, W = spec.frames, spec.height, spec.width
    S = min(H, W)
    n = len(scenes)
    bg_rows, shifts = [], []
    # objects in drawing order, up to MAX_OBJECTS per clip: (n, K, T) paths, (n, K) shape, (n, K, 3) colour
    cx, cy, rr = (torch.zeros(n, MAX_OBJECTS, T) for _ in range(3))
    shape = torch.zeros(n, MAX_OBJECTS)
    color = torch.zeros(n, MAX_OBJECTS, 3)
    active = torch.zeros(n, MAX_OBJECTS)
    for i, scene in enumerate(scenes):
        bg = scene.bg
        if bg is None:  # the caption leaves the background open: any colour and texture the objects allow
            free = [c for c in COLORS if c not in [gr.color for gr in scene.groups]]
            bg = free[int(torch.randint(len(free), (), generator=g))]
            scene = Scene(scene.groups, bg, TEXTURES[_pick(P_TEXTURES, g)], scene.pan)
        amount = 0.08 + 0.07 * float(torch.rand((), generator=g))
        shift = torch.linspace(0, 1, T) * amount * {"none": 0.0, "left": -1.0, "right": 1.0}[scene.pan]
        shifts.append(shift)
        bg_rows.append(_background_params(scene, bg, g))
        k = 0
        for group in scene.groups:
            for ox, oy, orr in _trajectories(group, spec, g):
                cx[i, k], cy[i, k], rr[i, k] = ox - shift, oy, orr  # the pan moves the view: screen x = world x - shift
                shape[i, k] = SHAPES.index(group.shape)
                color[i, k] = torch.tensor(PALETTE[group.color], dtype=torch.float32)
                active[i, k] = 1.0
                k += 1
    shift_t = torch.stack(shifts).to(device)
    video = _render_backgrounds(torch.tensor(bg_rows, dtype=torch.float32).to(device), shift_t, spec)
    ys = (torch.arange(H, device=device, dtype=torch.float32) + 0.5).view(1, 1, H, 1)
    xs = (torch.arange(W, device=device, dtype=torch.float32) + 0.5).view(1, 1, 1, W)
    px, py, rad = (cx * W).to(device), (cy * H).to(device), (rr * S).to(device)
    shape, color, active = shape.to(device), color.to(device), active.to(device)
    cover = torch.zeros((n, 1, T, H, W), device=device)
    s3 = math.sqrt(3) / 2
    for k in range(MAX_OBJECTS):
        dx = xs - px[:, k, :, None, None]
        dy = ys - py[:, k, :, None, None]
        r = rad[:, k, :, None, None]
        circle = torch.sqrt(dx * dx + dy * dy) - r
        square = torch.maximum(dx.abs(), dy.abs()) - 0.85 * r
        triangle = torch.maximum(torch.maximum(dy, -0.5 * dy + s3 * dx), -0.5 * dy - s3 * dx) - 0.6 * r
        sk = shape[:, k].view(-1, 1, 1, 1)
        d = torch.where(sk == 0, circle, torch.where(sk == 1, square, triangle))
        alpha = ((0.5 - d).clamp(0, 1) * active[:, k].view(-1, 1, 1, 1))[:, None]  # (n, 1, T, H, W), anti-aliased
        video = video * (1 - alpha) + color[:, k].view(-1, 3, 1, 1, 1) * alpha
        cover = torch.maximum(cover, alpha)
    video = video / 127.5 - 1
    return (video, cover) if return_alpha else video


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
