"""Tiny random-weight diffusers models and pipelines for CPU tests (as diffusers' own tests do)."""

from __future__ import annotations

import torch


def wan_transformer(seed: int = 0, layers: int = 2, image_dim: int | None = None):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=image_dim,
    ).eval()


def hunyuan_transformer(seed: int = 0):
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(seed)
    return HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
    ).eval()


def cogvideox_transformer(seed: int = 0):
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    return CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=16, num_layers=2, sample_width=16, sample_height=16, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=8,
    ).eval()


def ltx_transformer(seed: int = 0):
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    return LTXVideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
        attention_head_dim=8, cross_attention_dim=16, num_layers=2, caption_channels=16,
    ).eval()


def family_inputs(family: str, grid=(3, 4, 6), batch: int = 2, seed: int = 0, timestep: float = 500.0):
    """Forward kwargs that give token grid `grid` for each family's tiny model above."""
    g = torch.Generator().manual_seed(seed)
    T, H, W = grid
    t = torch.full((batch,), timestep)
    if family == "wan":
        return dict(hidden_states=torch.randn(batch, 4, T, 2 * H, 2 * W, generator=g),
                    encoder_hidden_states=torch.randn(batch, 5, 16, generator=g), timestep=t, return_dict=False)
    if family == "hunyuan":
        return dict(hidden_states=torch.randn(batch, 4, T, H, W, generator=g),
                    encoder_hidden_states=torch.randn(batch, 6, 16, generator=g),
                    encoder_attention_mask=torch.tensor([[1] * 6, [1] * 4 + [0] * 2])[:batch].to(torch.long),
                    pooled_projections=torch.randn(batch, 8, generator=g), timestep=t.long(),
                    guidance=torch.full((batch,), 6000.0), return_dict=False)
    if family == "cogvideox":
        return dict(hidden_states=torch.randn(batch, T, 4, 2 * H, 2 * W, generator=g),
                    encoder_hidden_states=torch.randn(batch, 8, 16, generator=g), timestep=t.long(),
                    return_dict=False)
    if family == "ltx":
        return dict(hidden_states=torch.randn(batch, T * H * W, 4, generator=g),
                    encoder_hidden_states=torch.randn(batch, 5, 16, generator=g), timestep=t.long(),
                    encoder_attention_mask=torch.ones(batch, 5, dtype=torch.long), num_frames=T, height=H,
                    width=W, return_dict=False)
    raise ValueError(family)


TRANSFORMERS = {"wan": wan_transformer, "hunyuan": hunyuan_transformer, "cogvideox": cogvideox_transformer,
                "ltx": ltx_transformer}


def wan_pipeline(seed: int = 0, two_transformers: bool = False):
    """A tiny random-weight WanPipeline (Wan2.2-style with `transformer_2` when asked)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline
    from transformers import T5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * 4,
                           latents_std=[1.0] * 4).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    text_encoder = UMT5EncoderModel(T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                             num_heads=2, relative_attention_num_buckets=8)).eval()
    tokenizer = _tiny_tokenizer()
    transformer = wan_transformer(seed, layers=2)
    extra = {}
    if two_transformers:
        extra = dict(transformer_2=wan_transformer(seed + 1, layers=2), boundary_ratio=0.5)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                       scheduler=scheduler, **extra)


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for i, word in enumerate("a red blue green circle square moving left right up down on the background".split()):
        vocab[word] = i + 3
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
