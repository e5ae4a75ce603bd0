"""Procedural clips of coloured shapes with captions, for the shipped tiny Wan model.

Everything is rendered with batched torch ops, so a batch of clips is made on the training
device (GPU or CPU) in milliseconds and the data set is unbounded and reproducible from a seed.

A clip is ``(3, T, H, W)`` in ``[-1, 1]`` (the layout ``AutoencoderKLWan`` takes). Each clip holds
one to three objects (circle, square, triangle) of one colour each over a flat background of a
different colour; each object moves left/right/up/down, bounces around, grows or shrinks. The
caption comes from a small grammar::

    a red circle moving right on a blue background
    a green square bouncing and a white triangle growing on a black background
    a yellow circle moving up                       # background phrase dropped (20 %)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# The palette lives with the pixel checks that classify generated clips against it.
from vidaccel.tiny.check import COLORS, PALETTE

SHAPES = ["circle", "square", "triangle"]
MOTIONS = ["moving left", "moving right", "moving up", "moving down", "bouncing", "growing", "shrinking"]
SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in T5/UMT5


def vocabulary() -> list[str]:
    """Every word the caption grammar can produce, after the special tokens (stable order)."""
    words = ["a", "an", "and", "on", "background", ","] + COLORS + SHAPES
    for m in MOTIONS:
        for w in m.split():
            if w not in words:
                words.append(w)
    return SPECIAL_TOKENS + words


@dataclass
class ClipSpec:
    """Sizes of the rendered clips (defaults: the shipped model's base resolution)."""

    frames: int = 17
    height: int = 64
    width: int = 64
    max_objects: int = 3


def _caption(objs: list[tuple[int, int, int]], bg: int, with_bg: bool) -> str:
    art = lambda w: "an" if w[0] in "aeiou" else "a"  # noqa: E731
    parts = [f"{art(COLORS[c])} {COLORS[c]} {SHAPES[s]} {MOTIONS[m]}" for c, s, m in objs]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if with_bg:
        text += f" on {art(COLORS[bg])} {COLORS[bg]} background"
    return text


def _triangle_wave(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Reflect positions into [lo, hi] (bouncing off the walls)."""
    span = (hi - lo).clamp_min(1e-3)
    y = torch.remainder(x - lo, 2 * span)
    return lo + torch.where(y > span, 2 * span - y, y)


def sample_batch(
    n: int,
    generator: torch.Generator,
    spec: ClipSpec = ClipSpec(),
    device: torch.device | str = "cpu",
    p_objects: tuple[float, ...] = (0.6, 0.3, 0.1),
    p_bg_phrase: float = 0.8,
    return_meta: bool = False,
    p_motions: tuple[float, ...] | None = None,
):
    """Render ``n`` clips; returns ``(video (n, 3, T, H, W) in [-1, 1], captions)``.

    With ``return_meta`` a third item holds the caption's parse as class indices (first object's
    ``color``/``shape``/``motion``, ``bg`` = background colour or ``len(COLORS)`` when the caption
    does not name it), for auxiliary text-encoder objectives. It draws no extra random numbers.

    ``p_motions`` weighs the entries of ``MOTIONS`` (default: uniform, drawn as in the first data set).
    The random draws use ``generator`` (a CPU generator) so a seed fixes the batch on any device.
    """
    g = generator
    T, H, W, K = spec.frames, spec.height, spec.width, spec.max_objects
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    n_obj = torch.multinomial(torch.tensor(p_objects), n, replacement=True, generator=g) + 1
    bg = torch.randint(0, len(COLORS), (n,), generator=g)
    # object colours differ from the background (offset 1..len-1 mod len)
    col = (bg[:, None] + torch.randint(1, len(COLORS), (n, K), generator=g)) % len(COLORS)
    shp = torch.randint(0, len(SHAPES), (n, K), generator=g)
    if p_motions is None:
        mot = torch.randint(0, len(MOTIONS), (n, K), generator=g)
    else:
        mot = torch.multinomial(torch.tensor(p_motions, dtype=torch.float), n * K, replacement=True, generator=g).view(n, K)
    active = torch.arange(K)[None, :] < n_obj[:, None]
    with_bg = u(n) < p_bg_phrase

    # trajectories in pixels: centre (x, y) and radius r per frame, shape (n, K, T)
    t = torch.linspace(0, 1, T)[None, None, :]
    r0 = 5.0 + 4.0 * u(n, K)
    lo_x, hi_x = r0 + 1, W - r0 - 1
    lo_y, hi_y = r0 + 1, H - r0 - 1
    # straight moves: start in the first 40 % of the axis, travel 45-60 % of it
    dist = (0.45 + 0.15 * u(n, K))
    start = 0.05 + 0.3 * u(n, K)
    along = lambda lo, hi, a, b: lo + (hi - lo) * (a + (b - a) * t)  # noqa: E731
    fwd_x = along(lo_x[..., None], hi_x[..., None], start[..., None], (start + dist)[..., None])
    fwd_y = along(lo_y[..., None], hi_y[..., None], start[..., None], (start + dist)[..., None])
    rev_x = W - fwd_x
    rev_y = H - fwd_y
    still_x = (lo_x + (hi_x - lo_x) * u(n, K))[..., None].expand(-1, -1, T)
    still_y = (lo_y + (hi_y - lo_y) * u(n, K))[..., None].expand(-1, -1, T)
    ang = 2 * math.pi * u(n, K)
    speed = 2.0 + 1.5 * u(n, K)  # px / frame
    bx = _triangle_wave(still_x + (speed * torch.cos(ang))[..., None] * t * (T - 1), lo_x[..., None], hi_x[..., None])
    by = _triangle_wave(still_y + (speed * torch.sin(ang))[..., None] * t * (T - 1), lo_y[..., None], hi_y[..., None])
    r_const = r0[..., None].expand(-1, -1, T)
    r_grow = 3.0 + (10.0 + 3.0 * u(n, K))[..., None] * t
    r_shrink = r_grow.flip(-1)
    m = mot[..., None]
    cx = torch.where(m == 0, rev_x, torch.where(m == 1, fwd_x, torch.where(m == 4, bx, still_x)))
    cy = torch.where(m == 2, rev_y, torch.where(m == 3, fwd_y, torch.where(m == 4, by, still_y)))
    # growing/shrinking shapes sit where the largest one fits
    big = (m >= 5)
    cx = torch.where(big, cx.clamp(17, W - 17), cx)
    cy = torch.where(big, cy.clamp(17, H - 17), cy)
    r = torch.where(m == 5, r_grow, torch.where(m == 6, r_shrink, r_const))

    # signed distances on the pixel grid, (n, K, T, H, W)
    cx, cy, r = (v.to(device) for v in (cx, cy, r))
    ys = torch.arange(H, device=device, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(W, device=device, dtype=torch.float32)[None, :] + 0.5
    dx = xs - cx[..., None, None]
    dy = ys - cy[..., None, None]
    rr = r[..., None, None]
    d_circle = torch.sqrt(dx * dx + dy * dy) - rr
    d_square = torch.maximum(dx.abs(), dy.abs()) - 0.85 * rr
    s3 = math.sqrt(3) / 2
    d_tri = torch.maximum(torch.maximum(dy, -0.5 * dy + s3 * dx), -0.5 * dy - s3 * dx) - 0.6 * rr
    s = shp.to(device)[..., None, None, None]
    d = torch.where(s == 0, d_circle, torch.where(s == 1, d_square, d_tri))
    alpha = (0.5 - d).clamp(0, 1) * active.to(device)[..., None, None, None]

    pal = torch.tensor([PALETTE[c] for c in COLORS], dtype=torch.float32, device=device) / 127.5 - 1
    video = pal[bg.to(device)][:, :, None, None, None].expand(n, 3, T, H, W).clone()
    for k in range(K):  # paint in order, later objects on top
        a = alpha[:, k][:, None]
        video = video * (1 - a) + pal[col[:, k].to(device)][:, :, None, None, None] * a

    caps = []
    for i in range(n):
        objs = [(int(col[i, k]), int(shp[i, k]), int(mot[i, k])) for k in range(int(n_obj[i]))]
        caps.append(_caption(objs, int(bg[i]), bool(with_bg[i])))
    if return_meta:
        meta = {"color": col[:, 0], "shape": shp[:, 0], "motion": mot[:, 0],
                "bg": torch.where(with_bg, bg, torch.full_like(bg, len(COLORS)))}
        return video, caps, meta
    return video, caps


META_FIELDS = {"color": len(COLORS), "shape": len(SHAPES), "motion": len(MOTIONS), "bg": len(COLORS) + 1}
STRAIGHT = ("moving left", "moving right", "moving up", "moving down")
_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def object_weights(video: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel VAE loss weights: 1 on the (flat) background, 1 + weight on objects.

    Objects cover a few percent of the pixels; unweighted, the VAE learns the backgrounds first and
    smears small objects away, which no diffusion model on its latents can undo.
    """
    bg = video.flatten(2).median(-1).values[..., None, None, None]  # background = the median colour
    obj = ((video - bg).abs().sum(1, keepdim=True) > 0.1).float()
    return 1 + weight * obj


def vae_batch(n: int, generator: torch.Generator, spec: ClipSpec, device, obj_weight: float):
    """``(video, per-pixel loss weights)`` for the VAE stage (default data mix)."""
    video, _ = sample_batch(n, generator, spec, device)
    return video, object_weights(video, obj_weight)


def captions_batch(n: int, generator: torch.Generator):
    """``(captions, meta)`` without rendering (the captions-only text stage)."""
    _, caps, meta = sample_batch(n, generator, ClipSpec(frames=1, height=16, width=16), "cpu", return_meta=True)
    return caps, meta


def flip_direction(caption: str) -> str:
    """The caption with every direction word after "moving" flipped (right <-> left, up <-> down)."""
    words = caption.split()
    return " ".join(_OPPOSITE.get(w, w) if i and words[i - 1] == "moving" else w for i, w in enumerate(words))


def direction_probe(n: int, generator: torch.Generator, device, spec: ClipSpec = ClipSpec()):
    """One-object clips moving left/right/up/down: ``(video, captions, flipped captions)``."""
    p_motions = [1.0 if m in STRAIGHT else 0.0 for m in MOTIONS]
    video, caps = sample_batch(n, generator, spec, device, p_objects=(1.0, 0.0, 0.0), p_motions=p_motions)
    return video, caps, [flip_direction(c) for c in caps]


def save_preview(video: torch.Tensor, path: str, frames: int = 6) -> None:
    """Write a contact sheet (rows: clips, columns: evenly spaced frames) as PNG."""
    from PIL import Image

    v = ((video.float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu()  # (n, 3, T, H, W)
    n, _, T, H, W = v.shape
    idx = torch.linspace(0, T - 1, frames).round().long()
    sheet = v[:, :, idx].permute(0, 3, 2, 4, 1).reshape(n * H, frames * W, 3)
    Image.fromarray(sheet.numpy()).save(path)


if __name__ == "__main__":
    gen = torch.Generator().manual_seed(0)
    vid, caps = sample_batch(8, gen)
    save_preview(vid, "/tmp/tiny_data_preview.png")
    print("\n".join(caps))
