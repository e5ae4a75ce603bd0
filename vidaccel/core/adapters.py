"""Model adapters: the only model-specific knowledge in vidaccel.

An adapter says, for one diffusers transformer class, where the self-attention modules are, how
the token grid follows from the transformer's inputs, and where non-grid tokens (text in joint
attention, history frames) sit inside self-attention. Everything else is model-agnostic.

`ADAPTERS` holds the built-in adapters (one per supported class, `_BUILTIN`), `UNSUPPORTED` the
video transformers of diffusers that vidaccel declines, each with the reason `adapter_for` raises.
`register_adapter` adds an adapter for a class vidaccel does not know (docs/adapters.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


def forward_argument(args, kwargs, name: str, position: int):
    """A forward argument passed by name or at `position`; None when absent."""
    if name in kwargs:
        return kwargs[name]
    if len(args) > position:
        return args[position]
    return None


# ------------------------------------------------------------------------------------ token grids


def _patch(model) -> tuple[int, int, int]:
    """(pt, ph, pw) from the config: a ``patch_size`` tuple, or ``patch_size`` + ``patch_size_t``."""
    p = model.config.patch_size
    if isinstance(p, (tuple, list)):
        return tuple(int(x) for x in p)
    return (int(getattr(model.config, "patch_size_t", None) or 1), int(p), int(p))


def grid_from_latents(frames_dim: int = 2, argument: str = "hidden_states", position: int = 0,
                      channels_last: bool = False) -> Callable:
    """A `ModelAdapter.grid` for transformers that take 5D latents: frames at `frames_dim` (2 for
    (B, C, F, H, W), 1 for (B, F, C, H, W)), height and width last (or before the channels when
    `channels_last`), divided by the config's patch size."""

    def grid(model, args, kwargs):
        x = forward_argument(args, kwargs, argument, position)
        if not isinstance(x, torch.Tensor) or x.dim() != 5:
            raise ValueError(f"{type(model).__name__} expects 5D latents as `{argument}`, got "
                             f"{type(x).__name__ if not isinstance(x, torch.Tensor) else tuple(x.shape)}.")
        pt, ph, pw = _patch(model)
        h, w = (x.shape[-3], x.shape[-2]) if channels_last else (x.shape[-2], x.shape[-1])
        return (x.shape[frames_dim] // pt, h // ph, w // pw)

    return grid


def _grid_from_keywords(model, args, kwargs):
    """LTX-Video and LTX-2 take patchified tokens; the pipelines pass the latent sizes as keywords."""
    pt, p, _ = _patch(model)
    frames, height, width = (kwargs.get(k) for k in ("num_frames", "height", "width"))
    if None in (frames, height, width):
        raise ValueError(f"{type(model).__name__} must be called with num_frames, height and width keywords "
                         f"(the latent sizes) for vidaccel to know the token grid; its diffusers pipelines pass them.")
    return (frames // pt, height // p, width // p)


_wan_grid = grid_from_latents(2)


def _kandinsky5_grid(model, args, kwargs):
    if kwargs.get("sparse_params") is not None:
        raise ValueError(
            "Kandinsky 5 is running its own NABLA sparse attention (sparse_params), which reorders the tokens into "
            "8x8 tiles, so they are no longer a raster 3D grid. Use the transformer's regular attention "
            "(attention_type='regular' in its config) with vidaccel, or leave vidaccel off.")
    return grid_from_latents(1, channels_last=True)(model, args, kwargs)


# ------------------------------------------------------------------------------ module discovery


def attention_in_blocks(*names: str, attr: str) -> Callable:
    """A `ModelAdapter.self_attention` (or ``cross_attention``): ``<list>.<i>.<attr>`` for each block list in
    `names`, in execution order. `attr` may be dotted (``video_dec_block.self_attention``)."""

    def find(model):
        found = []
        for blocks_name in names:
            for i, block in enumerate(getattr(model, blocks_name, None) or []):
                module = block
                for part in attr.split("."):
                    module = getattr(module, part, None)
                if module is not None:
                    found.append((f"{blocks_name}.{i}.{attr}", module))
        return found

    return find


_blocks = attention_in_blocks  # the short name the table below uses


def block_of(module_name: str) -> str:
    """The qualified name of the block holding an attention module or block: ``blocks.3.attn1`` -> ``blocks.3``,
    ``visual_transformer_blocks.0.video_dec_block.self_attention`` -> ``visual_transformer_blocks.0`` (up to the
    last index in the name)."""
    parts = module_name.split(".")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].isdigit():
            return ".".join(parts[: i + 1])
    return module_name.rsplit(".", 1)[0]


@dataclass(frozen=True)
class BlockStreams:
    """How a block's hidden states flow, for blocks that diffusers' `TransformerBlockRegistry` does not know.

    ``hidden``: the argument name (and position) of the carried hidden states; ``second``: the argument
    of a second carried stream (the text stream in joint attention, the audio stream in LTX-2), or None;
    ``returns``: the output indices of (hidden, second); a block returning a tensor has ``(0, None)``.
    """

    hidden: str = "hidden_states"
    second: str | None = None
    returns: tuple = (0, None)


_TENSOR_BLOCK = BlockStreams()
_JOINT_BLOCK = BlockStreams(second="encoder_hidden_states", returns=(0, 1))


@dataclass(frozen=True)
class ModelAdapter:
    """Everything vidaccel knows about one transformer class (see docs/adapters.md).

    Attributes:
        family: a short name (the summary's label; Wan-derived classes say ``"wan"``).
        class_name: the transformer class's ``__name__``.
        text_position: where the non-grid tokens sit in each self-attention sequence: ``"none"`` (only grid
            tokens), ``"prefix"`` (before them: CogVideoX's text, Helios' history frames) or ``"suffix"``
            (after them: HunyuanVideo's text). Those tokens attend and are attended densely.
        grid: ``(model, args, kwargs) -> (T, H, W)``, the token grid after patchify.
        self_attention: ``model -> [(qualified name, attention module)]`` in execution order.
        timestep_position: positional index of ``timestep`` in forward (pipelines pass it by name).
        cross_attention: separate text cross-attention modules, or None (joint attention).
        text_inputs: the forward arguments ``(name, position)`` that alone determine the cross-attention
            K/V; empty when they also depend on the latents or the timestep (no exact K/V cache).
        prediction_layout: the transformer output: ``"bcfhw"``, ``"bfchw"``, ``"bfhwc"`` or tokens ``"bnc"``.
        pipelines: the diffusers pipeline classes whose ``transformer`` this is (documentation and the
            support table).
        block_attention: the self-attention modules of the blocks that block reuse and the profiler treat
            (default: `self_attention`); VACE's control blocks, which return two streams, are left out.
        block_io: the block I/O for block classes missing from diffusers' block registry.
        run_breaks: ``model -> block indices`` after which the model adds something before the next block
            (VACE's control hints, Wan-Animate's face adapter): a reused run of blocks ends there.
        radial_defaults: the family whose radial-attention defaults (decay, warm-up) apply
            (`vidaccel.sparse.config.RADIAL_DEFAULTS`).
        freeswim: FreeSwim's dual path runs on this class (tested: a window covering the grid reproduces dense).
        freeswim_reason: why `enable_freeswim` refuses this class, where `freeswim` is False (`freeswim_refusal`
            words the common cases when this is empty).
        attention_dispatch: its self-attention processors call diffusers' ``dispatch_attention_fn`` with a backend
            per processor (``_attention_backend``), so sparse attention runs as vidaccel's attention backend there
            (`vidaccel.core.routing`: compiles without graph breaks); False where they call PyTorch SDPA directly
            (the SDPA swap). A processor without ``_attention_backend`` takes the swap either way.
        notes: one line for the support table (what is special, what is refused).
    """

    family: str
    class_name: str
    text_position: str
    grid: Callable
    self_attention: Callable
    timestep_position: int
    cross_attention: Callable | None = None
    text_inputs: tuple = ()
    prediction_layout: str = "bcfhw"
    pipelines: tuple = ()
    block_attention: Callable | None = None
    block_io: BlockStreams = _TENSOR_BLOCK
    run_breaks: Callable | None = None
    radial_defaults: str = "wan"
    freeswim: bool = False
    attention_dispatch: bool = True
    freeswim_reason: str = ""
    notes: str = ""

    def __post_init__(self):
        if self.text_position not in ("none", "prefix", "suffix"):
            raise ValueError(f"text_position must be 'none', 'prefix' or 'suffix', got {self.text_position!r}.")
        if self.prediction_layout not in ("bcfhw", "bfchw", "bfhwc", "bnc"):
            raise ValueError(f"prediction_layout must be 'bcfhw', 'bfchw', 'bfhwc' or 'bnc', got "
                             f"{self.prediction_layout!r}.")
        for name in ("grid", "self_attention"):
            if not callable(getattr(self, name)):
                raise TypeError(f"ModelAdapter.{name} must be callable, got {type(getattr(self, name)).__name__}.")

    def timestep(self, args, kwargs):
        return forward_argument(args, kwargs, "timestep", self.timestep_position)

    def blocks(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """The transformer blocks block reuse and the profiler treat, in execution order."""
        return [(name, model.get_submodule(name)) for name, _ in self.block_attention_modules(model)]

    def block_attention_modules(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """[(block name, its self-attention module)] for each block of `blocks`."""
        return [(block_of(name), attn) for name, attn in (self.block_attention or self.self_attention)(model)]

    def breaks(self, model: torch.nn.Module) -> set:
        return set(self.run_breaks(model)) if self.run_breaks is not None else set()

    def freeswim_refusal(self) -> str:
        """Why FreeSwim's dual path does not apply to this class ('' where it does)."""
        if self.freeswim:
            return ""
        if self.freeswim_reason:
            return self.freeswim_reason
        if self.cross_attention is None and self.text_position != "none":
            return ("its text is attended jointly in self-attention, so there is no separate cross-attention output "
                    "for FreeSwim's full branch to hand to the window branch")
        return ("it is not Wan-like (vidaccel implements FreeSwim only for Wan-like flow-matching transformers: blocks "
                "of self- and cross-attention over a Wan VAE's latent grid)")

    @property
    def kv_cache(self) -> bool:
        return self.cross_attention is not None and bool(self.text_inputs)

    def context_parallel(self) -> bool:
        """diffusers ships a context-parallel plan (``_cp_plan``) for this class."""
        import diffusers

        return bool(getattr(getattr(diffusers, self.class_name, None), "_cp_plan", None))


# ----------------------------------------------------------------------------------- the table


def _every(attr_list: str, step_attr: str):
    """Block indices after which the model adds something: VACE's ``vace_layers``, Wan-Animate's face adapter."""

    def breaks(model):
        if attr_list == "vace_layers":
            return set(model.config.vace_layers)
        step = getattr(model.config, step_attr)
        return {i for i in range(len(model.blocks)) if i % step == 0}

    return breaks


def _motif_decoder_start(model):
    """Motif-Video's decoder layers swap the streams (the video tokens become the context): a run ends before."""
    n = len(model.transformer_blocks) + len(model.single_transformer_blocks) - model.config.num_decoder_layers
    return {n - 1} if model.config.num_decoder_layers else set()


_WAN_TEXT = (("encoder_hidden_states", 2), ("encoder_hidden_states_image", 3))
_wan_self, _wan_cross = _blocks("blocks", attr="attn1"), _blocks("blocks", attr="attn2")


def _wan_like(class_name, pipelines, notes="", *, cross=_wan_cross, text_inputs=_WAN_TEXT, **kw):
    return ModelAdapter("wan", class_name, "none", kw.pop("grid", _wan_grid), kw.pop("self_attention", _wan_self), 1,
                        cross_attention=cross, text_inputs=text_inputs, pipelines=pipelines, notes=notes, **kw)


_BUILTIN = (
    _wan_like("WanTransformer3DModel", ("WanPipeline", "WanImageToVideoPipeline", "WanVideoToVideoPipeline",
                                        "LucyEditPipeline"), freeswim=True),
    ModelAdapter("hunyuan", "HunyuanVideoTransformer3DModel", "suffix", grid_from_latents(2),
                 _blocks("transformer_blocks", "single_transformer_blocks", attr="attn"), 1,
                 pipelines=("HunyuanVideoPipeline", "HunyuanVideoImageToVideoPipeline",
                            "HunyuanSkyreelsImageToVideoPipeline"), radial_defaults="hunyuan",
                 notes="text appended in joint attention"),
    ModelAdapter("cogvideox", "CogVideoXTransformer3DModel", "prefix", grid_from_latents(1),
                 _blocks("transformer_blocks", attr="attn1"), 2, prediction_layout="bfchw",
                 pipelines=("CogVideoXPipeline", "CogVideoXImageToVideoPipeline", "CogVideoXVideoToVideoPipeline",
                            "CogVideoXFunControlPipeline"), radial_defaults="cogvideox",
                 attention_dispatch=False,
                 notes="text prepended in joint attention"),
    ModelAdapter("ltx", "LTXVideoTransformer3DModel", "none", _grid_from_keywords,
                 _blocks("transformer_blocks", attr="attn1"), 2,
                 cross_attention=_blocks("transformer_blocks", attr="attn2"),
                 text_inputs=(("encoder_hidden_states", 1),), prediction_layout="bnc",
                 pipelines=("LTXPipeline", "LTXImageToVideoPipeline"), radial_defaults="ltx",
                 notes="grid from the num_frames/height/width keywords; LTXConditionPipeline's extra condition "
                       "tokens are refused by the sequence check"),
    _wan_like("WanVACETransformer3DModel", ("WanVACEPipeline",),
              "control blocks (`vace_blocks`) get sparse attention too; block reuse covers the main blocks, and a "
              "reused run ends at each control-hint layer",
              self_attention=_blocks("vace_blocks", "blocks", attr="attn1"),
              cross=_blocks("vace_blocks", "blocks", attr="attn2"), block_attention=_wan_self,
              run_breaks=_every("vace_layers", ""), freeswim=True),
    _wan_like("WanAnimateTransformer3DModel", ("WanAnimatePipeline",),
              "the reference frame is latent frame 0 of the grid; a reused run ends at each face-adapter block",
              run_breaks=_every("blocks", "inject_face_latents_blocks"),
              freeswim_reason="its face adapter adds, after every few blocks, an attention output computed from the "
                              "hidden states themselves, which FreeSwim's full branch (run block by block beside the "
                              "window branch) would need a pass of its own for"),
    _wan_like("SkyReelsV2Transformer3DModel", ("SkyReelsV2Pipeline", "SkyReelsV2ImageToVideoPipeline",
                                               "SkyReelsV2DiffusionForcingPipeline",
                                               "SkyReelsV2DiffusionForcingImageToVideoPipeline",
                                               "SkyReelsV2DiffusionForcingVideoToVideoPipeline"),
              "diffusion forcing's causal frame-block mask is combined with the sparse pattern", freeswim=True),
    _wan_like("ChronoEditTransformer3DModel", ("ChronoEditPipeline",), freeswim=True),
    ModelAdapter("wan", "AnyFlowTransformer3DModel", "none", grid_from_latents(1), _wan_self, 1,
                 cross_attention=_wan_cross,
                 text_inputs=(("encoder_hidden_states", 3), ("encoder_hidden_states_image", 4)),
                 prediction_layout="bfchw", pipelines=("AnyFlowPipeline",),
                 notes="latents as (B, F, C, H, W); AnyFlowFARTransformer3DModel (causal) is not supported",
                 freeswim_reason="it is a flow-map model: each step jumps between two noise levels (timestep and "
                                 "r_timestep), while FreeSwim's refinement re-noises along a flow-matching path and its "
                                 "cache reuses the full branch across neighbouring steps of one"),
    ModelAdapter("wan", "HeliosTransformer3DModel", "prefix", _wan_grid, _wan_self, 1, cross_attention=_wan_cross,
                 text_inputs=(("encoder_hidden_states", 2),), pipelines=("HeliosPipeline", "HeliosPyramidPipeline"),
                 notes="the history tokens (short/mid/long memory) are a dense prefix of self-attention; the grid is "
                       "the frames being denoised",
                 freeswim_reason="its self-attention also attends the history tokens (a prefix outside the grid), for "
                                 "which FreeSwim's window branch has no rule"),
    ModelAdapter("hunyuan", "HunyuanVideo15Transformer3DModel", "suffix", grid_from_latents(2),
                 _blocks("transformer_blocks", attr="attn"), 1, block_io=_JOINT_BLOCK,
                 pipelines=("HunyuanVideo15Pipeline", "HunyuanVideo15ImageToVideoPipeline"),
                 radial_defaults="hunyuan", notes="text (LLM, ByT5, image tokens) appended in joint attention"),
    ModelAdapter("mochi", "MochiTransformer3DModel", "suffix", grid_from_latents(2),
                 _blocks("transformer_blocks", attr="attn1"), 2, pipelines=("MochiPipeline",),
                 attention_dispatch=False,
                 notes="text appended in joint attention; each prompt's padding is dropped (one attention call per "
                       "batch item)"),
    ModelAdapter("cosmos", "CosmosTransformer3DModel", "none", _wan_grid, _blocks("transformer_blocks", attr="attn1"), 1,
                 cross_attention=_blocks("transformer_blocks", attr="attn2"),
                 text_inputs=(("encoder_hidden_states", 2),),
                 pipelines=("CosmosTextToWorldPipeline", "CosmosVideoToWorldPipeline", "Cosmos2VideoToWorldPipeline",
                            "Cosmos2TextToImagePipeline", "Cosmos2_5_PredictBasePipeline",
                            "Cosmos2_5_TransferPipeline"),
                 attention_dispatch=False,
                 notes="Cosmos 1.0, 2 and 2.5; the K/V cache steps aside for Cosmos 2.5's (text, image) context"),
    ModelAdapter("allegro", "AllegroTransformer3DModel", "none", grid_from_latents(2),
                 _blocks("transformer_blocks", attr="attn1"), 2,
                 cross_attention=_blocks("transformer_blocks", attr="attn2"),
                 text_inputs=(("encoder_hidden_states", 1),), pipelines=("AllegroPipeline",),
                 attention_dispatch=False,
                 notes="a float self-attention mask (padded frames) is refused with its fix"),
    ModelAdapter("easyanimate", "EasyAnimateTransformer3DModel", "prefix", grid_from_latents(2),
                 _blocks("transformer_blocks", attr="attn1"), 1, block_io=_JOINT_BLOCK,
                 pipelines=("EasyAnimatePipeline", "EasyAnimateInpaintPipeline", "EasyAnimateControlPipeline"),
                 attention_dispatch=False,
                 notes="text prepended in joint attention"),
    ModelAdapter("motif", "MotifVideoTransformer3DModel", "suffix", grid_from_latents(2),
                 _blocks("transformer_blocks", "single_transformer_blocks", attr="attn"), 1,
                 run_breaks=_motif_decoder_start,
                 pipelines=("MotifVideoPipeline", "MotifVideoImage2VideoPipeline"),
                 notes="text appended in joint attention; in the decoder layers the encoder's video tokens take the "
                       "text's place (dense)"),
    ModelAdapter("kandinsky", "Kandinsky5Transformer3DModel", "none", _kandinsky5_grid,
                 _blocks("visual_transformer_blocks", attr="self_attention"), 2,
                 cross_attention=_blocks("visual_transformer_blocks", attr="cross_attention"),
                 prediction_layout="bfhwc", pipelines=("Kandinsky5T2VPipeline", "Kandinsky5I2VPipeline"),
                 notes="regular attention only (its NABLA mode reorders tokens: refused); no K/V cache, since the text "
                       "runs through timestep-conditioned text blocks"),
    ModelAdapter("ltx", "LTX2VideoTransformer3DModel", "none", _grid_from_keywords,
                 _blocks("transformer_blocks", attr="attn1"), 4,
                 block_io=BlockStreams(second="audio_hidden_states", returns=(0, 1)), prediction_layout="bnc",
                 pipelines=("LTX2Pipeline", "LTX2ImageToVideoPipeline"), radial_defaults="ltx",
                 notes="video self-attention only (audio runs in its own stream); no K/V cache (cross-attention AdaLN "
                       "can modulate the text by the timestep); pipelines that append keyframe or reference tokens "
                       "are refused by the sequence check"),
)

# The video transformers of diffusers 0.42 that vidaccel declines, and why (`adapter_for` raises with this).
UNSUPPORTED = {
    "HunyuanVideoFramepackTransformer3DModel":
        "its self-attention packs clean history latents at three resolutions (1x, 2x, 4x downsampled) before the "
        "video tokens and the text after them, so the sequence is not one 3D grid with a single text span",
    "WanAnimate2Transformer3DModel":
        "it attends through PyTorch flex attention with its own streaming K/V cache over lists of chunks, not one "
        "SDPA call over a 3D grid",
    "AnyFlowFARTransformer3DModel":
        "its frame-autoregressive (causal) attention reads keys from a K/V cache of earlier chunks, so queries and "
        "keys are different token sets",
    "SanaVideoTransformer3DModel":
        "its self-attention is linear attention (no softmax), so there is no attention matrix to sparsify",
    "Kandinsky6Transformer3DModel":
        "its fused video-audio blocks carry two streams through arguments vidaccel has no block I/O for yet; the "
        "video self-attention itself has a 3D grid (a candidate for a registered adapter)",
    "Kandinsky6SRTransformer3DModel":
        "its processor needs PyTorch flex attention with a block mask of its own, not an SDPA call vidaccel can route",
    "Cosmos3OmniTransformer":
        "a multimodal mixture-of-transformers decoder: text, vision and sound tokens share one sequence",
}

ADAPTERS: dict[str, ModelAdapter] = {a.class_name: a for a in _BUILTIN}
BUILTIN_CLASSES = frozenset(ADAPTERS)


def register(adapter: ModelAdapter, replace: bool = False) -> ModelAdapter:
    """Add `adapter` to `ADAPTERS` (the public entry point is `vidaccel.register_adapter`, which validates more).

    Raises ValueError for a class that already has an adapter, naming the fix: built-in adapters cannot be
    replaced; a registered one only with ``replace=True``.
    """
    if not isinstance(adapter, ModelAdapter):
        raise TypeError(f"register_adapter takes a vidaccel ModelAdapter, got {type(adapter).__name__}.")
    name = adapter.class_name
    if name in BUILTIN_CLASSES:
        raise ValueError(f"{name} already has vidaccel's built-in adapter, which cannot be replaced. Register your "
                         f"adapter for a subclass instead (class_name = your subclass's __name__).")
    if name in ADAPTERS and not replace:
        raise ValueError(f"An adapter for {name} is already registered. Pass replace=True to replace it, or call "
                         f"vidaccel.unregister_adapter({name!r}) first.")
    ADAPTERS[name] = adapter
    return adapter


def unregister(class_name: str) -> None:
    """Remove a registered (not built-in) adapter."""
    if class_name in BUILTIN_CLASSES:
        raise ValueError(f"{class_name} has vidaccel's built-in adapter, which cannot be removed.")
    if class_name not in ADAPTERS:
        raise ValueError(f"No adapter is registered for {class_name}.")
    del ADAPTERS[class_name]


def adapter_for(model: torch.nn.Module) -> ModelAdapter:
    """The adapter of `model`'s class, or a TypeError that says why the class is unsupported and what is."""
    name = type(model).__name__
    if name in ADAPTERS:
        return ADAPTERS[name]
    if name in UNSUPPORTED:
        raise TypeError(f"vidaccel does not support {name}: {UNSUPPORTED[name]}. See vidaccel.supported_models() "
                        f"for the supported classes.")
    raise TypeError(
        f"vidaccel does not support {name}. Supported transformers: {', '.join(sorted(ADAPTERS))} "
        f"(vidaccel.supported_models() lists their pipelines). For another architecture, describe it with a "
        f"ModelAdapter and vidaccel.register_adapter (docs/adapters.md)."
    )
