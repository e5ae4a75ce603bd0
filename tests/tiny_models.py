"""Tiny random-weight diffusers models and pipelines for CPU tests (as diffusers' own tests do)."""

from __future__ import annotations

import torch

from vidaccel.tiny.families import tiny_transformer  # the tiny configs, shared with the tiny pipelines


def wan_transformer(seed: int = 0, layers: int = 2, image_dim: int | None = None):
    return tiny_transformer("WanTransformer3DModel", seed, num_layers=layers, image_dim=image_dim)


def hunyuan_transformer(seed: int = 0):
    return tiny_transformer("HunyuanVideoTransformer3DModel", seed)


def cogvideox_transformer(seed: int = 0):
    return tiny_transformer("CogVideoXTransformer3DModel", seed)


def ltx_transformer(seed: int = 0):
    return tiny_transformer("LTXVideoTransformer3DModel", seed)


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
