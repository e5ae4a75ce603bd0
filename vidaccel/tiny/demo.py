"""`vidaccel demo`: a tiny random-weight Wan pipeline on CPU, with and without acceleration.

Runs in seconds without any download; it shows the one-line API, the timings and the largest
output difference. Random weights have no learned attention structure, so the difference says
nothing about quality - only that the sparse path runs and changes the computation.
"""

from __future__ import annotations

import time

import torch


def tiny_random_wan_pipeline(seed: int = 0, layers: int = 2):
    """A small WanPipeline with random weights (real diffusers classes, tiny configs)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    words = "a red blue green yellow circle square triangle moving left right up down on the background".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    text_encoder = UMT5EncoderModel(T5Config(vocab_size=len(vocab), d_model=32, d_kv=16, d_ff=64, num_layers=1,
                                             num_heads=2, relative_attention_num_buckets=8)).eval()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=128, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
    )
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae.eval(),
                       transformer=transformer.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_demo(config="radial", height=128, width=128, num_frames=17, steps=4, seed=0, out=print) -> dict:
    """Generate once dense and once accelerated; return timings and the max output difference."""
    import vidaccel

    pipe = tiny_random_wan_pipeline(seed)
    kwargs = dict(prompt="a red circle moving right on a blue background", negative_prompt="",
                  height=height, width=width, num_frames=num_frames, num_inference_steps=steps,
                  guidance_scale=5.0, output_type="pt")

    def generate():
        start = time.perf_counter()
        frames = pipe(**kwargs, generator=torch.Generator().manual_seed(seed)).frames
        return frames, time.perf_counter() - start

    dense, dense_s = generate()
    if isinstance(config, str) and config == "radial":
        # the tiny grid is far below radial's default 128-token band: scale it to the demo grid
        config = vidaccel.RadialAttentionConfig(block_size=8, dense_steps=1, dense_layers=0)
    vidaccel.accelerate(pipe, config)
    sparse, sparse_s = generate()
    info = vidaccel.summary(pipe, print_summary=False)
    vidaccel.remove(pipe)
    restored, _ = generate()
    result = {
        "dense_seconds": dense_s, "accelerated_seconds": sparse_s,
        "max_abs_difference": float((sparse - dense).abs().max()),
        "restored_bit_identical": bool(torch.equal(restored, dense)),
        "summary": info,
    }
    out(str(info))
    out(f"dense: {dense_s:.2f} s   accelerated: {sparse_s:.2f} s   "
        f"max |difference| {result['max_abs_difference']:.4f}   remove() exact: {result['restored_bit_identical']}")
    return result
