"""Where does a trained lab model fall short? Measured on fresh clips (`lab_data`, a fixed seed) without sampling:

- VAE: reconstruction L1 in [-1, 1] units over all pixels and over object pixels (coverage > 0.5).
- Transformer, per noise level sigma (one denoising prediction ``x0_hat = x_t - sigma * v`` from ``x_t = (1 - sigma)
  x0 + sigma eps``, the pipeline's own prompt embeddings):
  ``x0_ratio``: MSE(x0_hat, x0) / MSE(mean guess, x0), where the mean guess is each clip's per-channel mean latent
  (a flat background: what a model that knows the colours but not the layout predicts). < 1: the model knows
  more than the background. ``x0_ratio_objects``: the same on latent positions an object covers, where the
  mean guess is worst. ``text_gain``: (MSE with the empty prompt - MSE with the caption) / MSE with the
  caption, on v: how much the caption helps at that noise level.

Sampling decides the layout at high sigma (Wan's flow shift 3 puts a third of 20 steps above 0.85): a model whose
``x0_ratio`` is ~1 there generates flat backgrounds.

    python scripts/lab_diagnose.py --model assets/lab-wan --size 33 128 128 --clips 4     # CPU, ~1 min
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import lab_data

SIGMAS = (0.3, 0.6, 0.8, 0.9, 0.95, 0.98)


def diagnose(pipe, spec, clips: int, seed: int = 4321, sigmas=SIGMAS) -> dict:
    """The numbers of the module docstring for ``clips`` clips of ``spec`` on ``pipe``'s device."""
    from vidaccel.tiny.captions import format_caption

    vae, tr = pipe.vae, pipe.transformer
    device, dtype = pipe._execution_device, tr.dtype
    g = torch.Generator().manual_seed(seed)
    scenes = [lab_data.sample_scene(g) for _ in range(clips)]
    video, alpha = lab_data.render(scenes, g, spec, device, return_alpha=True)
    out = {"size": [spec.frames, spec.height, spec.width], "clips": clips, "captions": [format_caption(s) for s in scenes]}
    z_dim = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, device=device).view(1, z_dim, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=device).view(1, z_dim, 1, 1, 1)
    with torch.no_grad():
        z = torch.cat([vae.encode(video[i:i + 1].to(vae.dtype)).latent_dist.mode() for i in range(clips)]).float()
        rec = torch.cat([vae.decode(z[i:i + 1].to(vae.dtype)).sample.float().clamp(-1, 1) for i in range(clips)])
        err = (rec - video).abs().mean(1)
        obj = alpha[:, 0] > 0.5
        out["vae_l1"] = round(err.mean().item(), 4)
        out["vae_l1_objects"] = round(err[obj].mean().item(), 4)
        x0 = (z - mean) / std
        # latent positions an object covers: the coverage max-pooled onto the latent grid (causal: frame 0 alone)
        t_lat, h_lat, w_lat = x0.shape[2:]
        cover = torch.cat([F.adaptive_max_pool3d(alpha[:, :, :1], (1, h_lat, w_lat)),
                           F.adaptive_max_pool3d(alpha[:, :, 1:], (t_lat - 1, h_lat, w_lat))], 2)
        obj_lat = (cover > 0.5).expand_as(x0)
        guess = x0.mean((2, 3, 4), keepdim=True).expand_as(x0)
        base, base_obj = ((guess - x0) ** 2).mean(), ((guess - x0) ** 2)[obj_lat].mean()
        ctx, neg = pipe.encode_prompt(out["captions"], negative_prompt=[""] * clips, do_classifier_free_guidance=True,
                                      device=device)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 1)).to(device)
        rows = []
        for sig in sigmas:
            xt = ((1 - sig) * x0 + sig * noise).to(dtype)
            t = torch.full((clips,), sig * 1000.0, device=device)
            v = tr(hidden_states=xt, timestep=t, encoder_hidden_states=ctx.to(dtype), return_dict=False)[0].float()
            v_empty = tr(hidden_states=xt, timestep=t, encoder_hidden_states=neg.to(dtype), return_dict=False)[0].float()
            target = noise - x0
            x0_hat = xt.float() - sig * v
            mse, mse_empty = ((v - target) ** 2).mean(), ((v_empty - target) ** 2).mean()
            rows.append({"sigma": sig, "x0_ratio": round((((x0_hat - x0) ** 2).mean() / base).item(), 4),
                         "x0_ratio_objects": round((((x0_hat - x0) ** 2)[obj_lat].mean() / base_obj).item(), 4),
                         "text_gain": round(((mse_empty - mse) / mse).item(), 4)})
        out["sigmas"] = rows
    return out


def to_markdown(result: dict, model: str) -> str:
    f, h, w = result["size"]
    lines = [f"`{model}` at {f}x{h}x{w}, {result['clips']} fresh clips: VAE L1 {result['vae_l1']} "
             f"(objects {result['vae_l1_objects']})", "",
             "| sigma | x0 error / mean guess | on objects | text gain |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['sigma']} | {r['x0_ratio']} | {r['x0_ratio_objects']} | {r['text_gain']} |" for r in result["sigmas"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    from diffusers import WanPipeline

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "assets" / "lab-wan"))
    ap.add_argument("--size", type=int, nargs=3, default=[33, 256, 256], metavar=("FRAMES", "HEIGHT", "WIDTH"))
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here (and a .md beside it)")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    pipe = WanPipeline.from_pretrained(args.model, dtype=torch.bfloat16 if cuda else torch.float32)
    pipe.to("cuda" if cuda else "cpu")
    result = diagnose(pipe, lab_data.ClipSpec(*args.size), args.clips)
    md = to_markdown(result, args.model)
    print(md)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
        Path(args.out).with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
