"""The pipeline's components, built new (tokenizer, VAE, text encoder, transformer, scheduler), the text
embeddings as WanPipeline makes them, and the caption-parse probes trained on the text encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import MAX_SEQ_LEN


def build_tokenizer(data):
    """Word-level tokenizer over the data module's caption vocabulary, T5 special-token ids."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(data.vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=MAX_SEQ_LEN, padding_side="right",
    )


def build_vae(cfg):
    from diffusers import AutoencoderKLWan

    z = cfg["z_dim"]
    return AutoencoderKLWan(**cfg, latents_mean=[0.0] * z, latents_std=[1.0] * z)


REL_BIAS_STD = 1.0  # T5's relative-position bias init (std ~0.06) leaves attention position-blind for long


def build_text_encoder(cfg, vocab_size):
    """A small UMT5 encoder. T5 has no absolute positions: only the relative-position bias tells "the
    colour before 'background'" from "the colour before 'circle'", and at T5's init scale a short run
    never learns it (attention stays a bag-of-words mean). A bias init of std ``REL_BIAS_STD`` makes
    the caption parse learnable in a few hundred steps."""
    from transformers import UMT5Config, UMT5EncoderModel

    conf = UMT5Config(
        vocab_size=vocab_size, feed_forward_proj="gated-gelu", dropout_rate=0.0,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False, **cfg,
    )
    te = UMT5EncoderModel(conf)
    with torch.no_grad():
        for block in te.encoder.block:
            block.layer[0].SelfAttention.relative_attention_bias.weight.normal_(0.0, REL_BIAS_STD)
    return te


def build_transformer(cfg, z_dim):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(in_channels=z_dim, out_channels=z_dim, **cfg)


def build_scheduler():
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
    )


def encode_text(te, tok, captions, device, return_tokens=False):
    """Embeddings exactly as WanPipeline builds them: valid tokens, then zeros to 512.

    With ``return_tokens`` also the unpadded ``(hidden, mask)`` for the caption-parse loss.
    """
    enc = tok(captions, padding="longest", truncation=True, max_length=MAX_SEQ_LEN,
              add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    ids, mask = enc.input_ids.to(device), enc.attention_mask.to(device)
    h = te(ids, mask).last_hidden_state * mask[..., None].to(torch.float32)
    ctx = F.pad(h, (0, 0, 0, MAX_SEQ_LEN - h.shape[1]))
    return (ctx, h, mask) if return_tokens else ctx


class CaptionParseHead(torch.nn.Module):
    """Auxiliary probes: every valid token of a caption predicts the caption's parse (the data module's
    ``META_FIELDS``: first object's colour, shape and motion, the background colour or "none", ...).

    Wan's cross-attention is order-blind, so "a red circle on a blue background" and "a blue circle
    on a red background" differ for the transformer only through context the text encoder mixes into
    each token. A T5 trained jointly on the diffusion loss alone learned almost none (see
    `build_text_encoder`); this loss makes each token carry its role. Thrown away at export.
    """

    def __init__(self, d_model: int, fields: dict[str, int]):
        super().__init__()
        self.heads = torch.nn.ModuleDict({k: torch.nn.Linear(d_model, n) for k, n in fields.items()})

    def forward(self, hidden, mask, meta, keep=None):
        """Mean cross-entropy over valid tokens of kept captions, and per-field token accuracy."""
        valid = mask.bool()
        if keep is not None:
            valid = valid & keep.to(valid.device)[:, None]
        rows = valid.nonzero()[:, 0]
        h = hidden[valid].float()
        loss, acc = 0.0, {}
        for k, head in self.heads.items():
            logits = head(h)
            target = meta[k].to(h.device)[rows]
            loss = loss + F.cross_entropy(logits, target)
            acc[k] = (logits.argmax(-1) == target).float().mean().item()
        return loss / len(self.heads), acc
