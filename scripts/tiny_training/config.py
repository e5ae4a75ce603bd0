"""The recipes' sizes, steps and time limits: ``RECIPES[name]["full"]`` (the shipped model) and
``["quick"]`` (the CPU smoke test) for ``tiny`` (``assets/tiny-wan``) and ``lab`` (``assets/lab-wan``)."""

from __future__ import annotations

import time

PROCESS_START = time.time()  # --call-time-limit counts from here
CALL_RESERVE_SECONDS = 40  # a last direction gap, checkpoint and export after the dit stage stops
MAX_SEQ_LEN = 512  # WanPipeline pads prompt embeddings to max_sequence_length (default 512)

TINY = dict(
    data="tiny_data",
    vae=dict(base_dim=32, z_dim=8, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[],
             temperal_downsample=[True, True], scale_factor_spatial=4, scale_factor_temporal=4),
    te=dict(d_model=256, d_kv=64, d_ff=768, num_layers=2, num_heads=4),
    dit=dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=64, text_dim=256,
             freq_dim=256, ffn_dim=1024, num_layers=8, cross_attn_norm=True,
             qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
    vae_specs=[[17, 64, 64]], vae_steps=100000, vae_batch=32, vae_lr=5e-4, vae_seconds=270.0,
    text_parse_steps=400,
    # dit phases: until a share of the stage's time, clips of (frames, height, width) in batches of `batch`
    dit_phases=[dict(until=1.0, spec=[17, 64, 64], batch=128)],
    dit_objects=[0.8, 0.15, 0.05], dit_straight=0.7,  # a motion-heavy mix makes direction words matter
    dit_steps=100000, dit_lr=3e-4, latent_reuse=1, vae_dtype="float32",
    time_budget=1500.0,  # seconds of training, all stages: the recipe fits 25 minutes on one H100
)
LAB = dict(
    data="lab_data",
    # 8x spatial (2x2 pixel patches, then two 2x downsamples), 4x temporal: 33x256x256 -> 9x32x32 latents
    # is_residual: Wan 2.2's parameter-free average-down / duplicate-up shortcuts around each resolution
    # stage; with lr 1e-3 they halve the held-out L1 reached in the same 40 s (vae_sweep.md)
    vae=dict(base_dim=16, decoder_base_dim=32, z_dim=16, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[],
             temperal_downsample=[True, True], in_channels=12, out_channels=12, patch_size=2,
             scale_factor_spatial=8, scale_factor_temporal=4, is_residual=True),
    te=dict(d_model=256, d_kv=64, d_ff=768, num_layers=2, num_heads=4),
    dit=dict(patch_size=(1, 2, 2), num_attention_heads=6, attention_head_dim=64, text_dim=256,
             freq_dim=256, ffn_dim=1536, num_layers=8, cross_attn_norm=True,
             qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
    # the VAE sees both sizes the transformer trains at, always 33 frames: its causal convolutions carry
    # context across the whole clip, so a VAE trained on 17 frames decodes the last latent frames of a
    # 33-frame clip out of distribution (the first lab model's colours drifted there)
    vae_specs=[[33, 128, 128], [33, 256, 256]], vae_steps=100000, vae_batch=32, vae_lr=2e-3, vae_warmup=30,
    # batch 32 costs about what batch 8 did per step (the VAE's chunked loops are launch-bound) and halves the
    # held-out L1 in 40 s; lr 2e-3 is on par with 1e-3 there (vae_sweep_c.md)
    vae_seconds=200.0,
    text_parse_steps=400,
    # most of the time at half size (9x8x8 tokens: semantics, motion), then the native 9x16x16 grid. ``shift``
    # moves the training noise levels towards 1 as the sampler's flow shift (3.0) does, scaled to the grid
    # (SD3's sqrt(tokens) rule: 1.5 at a quarter of the tokens): the third lab model, trained with unshifted
    # levels, predicted barely better than a flat background at sigma 0.95-0.98 (worse above 0.9 at 128 px),
    # its captions changed nothing below 0.95 (lab_wan_attempt3/diagnose_*.md), and it sampled flat backgrounds
    # The half-size phase draws the tiny model's motion-heavy mix (one object moving left/right/up/down in
    # most clips: the tiny model's direction words were learned only with it), the native phase the full
    # mix. With the full mix throughout, the fourth lab model's direction gap stayed ~0 for 7461 steps
    # and its objects moved in random directions (lab_wan_attempt4/)
    dit_phases=[dict(until=0.7, spec=[33, 128, 128], batch=96, shift=1.5, objects=[0.8, 0.15, 0.05], straight=0.7),
                dict(until=1.0, spec=[33, 256, 256], batch=32, shift=3.0)],
    dit_objects=[0.5, 0.3, 0.2], dit_straight=0.6,  # phases without a mix of their own
    dit_steps=100000, dit_lr=5e-4, latent_reuse=4, vae_dtype="float16",
    dit_compile=True,  # the transformer blocks, regional torch.compile on CUDA (falls back to eager on failure)
    time_budget=1250.0,  # 21 minutes of training on one H200, all stages: three <=10-minute calls and the evaluation
)


def quick(recipe: dict) -> dict:
    """Toy sizes and a few steps of ``recipe``: the CPU smoke test of the same code paths."""
    return dict(
        recipe,
        vae=dict(recipe["vae"], base_dim=8, **({"decoder_base_dim": 8} if "decoder_base_dim" in recipe["vae"] else {})),
        te=dict(recipe["te"], d_model=32, d_kv=8, d_ff=64, num_layers=1),
        dit=dict(recipe["dit"], num_attention_heads=2, attention_head_dim=24, text_dim=32, freq_dim=32,
                 ffn_dim=64, num_layers=1),
        vae_specs=[[5, s[1] // 2, s[2] // 2] for s in recipe["vae_specs"]],
        vae_steps=8, vae_batch=2, vae_seconds=float("inf"), text_parse_steps=3,
        dit_phases=[dict(p, spec=[5, p["spec"][1] // 2, p["spec"][2] // 2], batch=2) for p in recipe["dit_phases"]],
        dit_steps=8, time_budget=float("inf"),
    )


RECIPES = {"tiny": TINY, "lab": LAB}
FULL, QUICK = TINY, quick(TINY)  # the names the tiny recipe had
