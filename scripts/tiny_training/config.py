"""The recipe's sizes, steps and time limits: `FULL` (the shipped model) and `QUICK` (CPU smoke test)."""

from __future__ import annotations

import time

PROCESS_START = time.time()  # --call-time-limit counts from here
CALL_RESERVE_SECONDS = 40  # a last direction gap, checkpoint and export after the dit stage stops
MAX_SEQ_LEN = 512  # WanPipeline pads prompt embeddings to max_sequence_length (default 512)

FULL = dict(
    vae=dict(base_dim=32, z_dim=8, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[],
             temperal_downsample=[True, True], scale_factor_spatial=4, scale_factor_temporal=4),
    te=dict(d_model=256, d_kv=64, d_ff=768, num_layers=2, num_heads=4),
    dit=dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=64, text_dim=256,
             freq_dim=256, ffn_dim=1024, num_layers=8, cross_attn_norm=True,
             qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
    vae_steps=100000, vae_batch=32, vae_lr=5e-4, vae_seconds=270.0,
    text_parse_steps=400,
    dit_steps=100000, dit_batch=128, dit_lr=3e-4,
    time_budget=1500.0,  # seconds of training, all stages: the recipe fits 25 minutes on one H100
)
QUICK = dict(
    vae=dict(FULL["vae"], base_dim=8),
    te=dict(FULL["te"], d_model=32, d_kv=8, d_ff=64, num_layers=1),
    dit=dict(FULL["dit"], num_attention_heads=2, attention_head_dim=24, text_dim=32, freq_dim=32,
             ffn_dim=64, num_layers=1),
    vae_steps=8, vae_batch=2, vae_lr=5e-4, vae_seconds=float("inf"),
    text_parse_steps=3,
    dit_steps=8, dit_batch=2, dit_lr=3e-4,
    time_budget=float("inf"),
)
