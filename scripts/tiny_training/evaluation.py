"""Checks of what the text encoder and transformer learned: `direction_gap` (are the direction words
used?) and `swap_sensitivity` (does the encoder mix context into each token?)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidaccel.tiny.palette import COLORS

from .builders import encode_text
from .common import autocast


@torch.no_grad()
def swap_sensitivity(te, tok, device) -> dict:
    """How much context the encoder mixes in: swap the object and background colour words of a caption
    and compare outputs at the *other* tokens (context only) with those at the swapped tokens."""
    colors = COLORS
    pairs = [(a, b) for a in colors for b in colors if a != b]
    caps = [f"a {a} circle moving right on a {b} background" for a, b in pairs]
    swapped = [f"a {b} circle moving right on a {a} background" for a, b in pairs]
    _, h1, mask = encode_text(te, tok, caps, device, return_tokens=True)
    _, h2, _ = encode_text(te, tok, swapped, device, return_tokens=True)
    diff = (h1 - h2).float().norm(dim=-1)[:, : mask.shape[1]]
    colour_pos = [1, 7]  # "a <c1> circle moving right on a <c2> background </s>"
    other = [i for i in range(int(mask[0].sum())) if i not in colour_pos]
    return {"context_change": diff[:, other].mean().item(), "swapped_token_change": diff[:, colour_pos].mean().item(),
            "token_norm": h1[:, other].float().norm(dim=-1).mean().item()}


@torch.no_grad()
def direction_gap(te, tok, tr, vae, device, n: int = 64, sigmas=(0.85, 0.7, 0.5), data=None, spec=None) -> dict:
    """Does the transformer use the direction words? Flow-matching loss on held-out one-object clips
    moving left/right/up/down with the true caption vs the same caption with the direction flipped
    ("right" <-> "left", "up" <-> "down"), same noise; gap = (flipped - true) / true per noise level.

    ~0 means the direction words are ignored (the motion is left to the noise); colour and shape
    words make the empty prompt's loss far higher, so this isolates direction. Fixed seed: the
    numbers of two checkpoints compare directly. ``data``: the data module (default ``tiny_data``),
    whose ``direction_probe`` draws the clips (of ``spec``: default the data module's probe size).
    """
    if data is None:
        import tiny_data as data
    video, caps, flipped = data.direction_probe(n, torch.Generator().manual_seed(12345), device,
                                                **({"spec": spec} if spec is not None else {}))
    was_training = (te.training, tr.training)
    te.eval(), tr.eval()
    z = vae.config.z_dim
    lat_mean = torch.tensor(vae.config.latents_mean, device=device).view(1, z, 1, 1, 1)
    lat_std = torch.tensor(vae.config.latents_std, device=device).view(1, z, 1, 1, 1)
    with autocast(device):
        x0 = (vae.encode(video).latent_dist.mode().float() - lat_mean) / lat_std
        ctx_true, ctx_flip = encode_text(te, tok, caps, device), encode_text(te, tok, flipped, device)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(54321)).to(device)
    gaps = {}
    for sig in sigmas:
        xt, target = (1 - sig) * x0 + sig * noise, noise - x0
        t = torch.full((n,), sig * 1000.0, device=device)
        loss = {}
        for name, ctx in (("true", ctx_true), ("flipped", ctx_flip)):
            with autocast(device):
                pred = tr(hidden_states=xt, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
            loss[name] = F.mse_loss(pred.float(), target).item()
        gaps[f"sigma_{sig}"] = round((loss["flipped"] - loss["true"]) / loss["true"], 5)
    te.train(was_training[0]), tr.train(was_training[1])
    return {"mean": round(sum(gaps.values()) / len(gaps), 5), **gaps}
