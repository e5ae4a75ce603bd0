"""Install and remove FreeSwim's dual path: `enable_freeswim`, `disable_freeswim`, `set_freeswim_active`.

    vidaccel.enable_freeswim(pipe, vidaccel.FreeSwimConfig(base_size=(480, 832)))
    video = pipe(prompt, height=1088, width=1920, latents=..., ...)   # any hi-res denoising call
    vidaccel.disable_freeswim(pipe)                                    # exact restore

Most users want `vidaccel.pipelines.FreeSwimPipeline`, which adds the base-resolution stage,
the pixel-space upsampling and the re-noising around this.
"""

from __future__ import annotations

import logging

import torch

from ..core.adapters import ADAPTERS, adapter_for
from ..core.context import refuse_fraction_without_pipeline, remember_pipeline
from ..core.features import FREESWIM, refuse_conflicts, state_of
from ..core.models import transformers
from ..core.registry import install_states, remove_state
from .cache import CrossAttentionCache
from .config import FreeSwimConfig
from .hooks import FreeSwimState, blocks, install, uninstall

logger = logging.getLogger(__name__)


def _spatial_factor(pipe_or_transformer, model) -> int:
    vae_factor = getattr(pipe_or_transformer, "vae_scale_factor_spatial", 8)  # Wan's VAE: 8x
    return int(vae_factor) * int(model.config.patch_size[1])


def enable_freeswim(pipe_or_transformer, config: FreeSwimConfig | None = None):
    """Install FreeSwim's dual path on a pipeline (every transformer: Wan2.2's ``transformer_2`` too) or transformer.

    It runs on the classes whose ``freeswim`` feature `vidaccel.supported_models()` reports: the Wan-like
    flow-matching ones (Wan, Wan-VACE, whose control blocks run window attention and whose hints reach both
    branches, SkyReels-V2, whose diffusion-forcing mask applies in both branches, and ChronoEdit). Any other class
    raises a TypeError with its reason (`ModelAdapter.freeswim_refusal`).
    Every later call at any resolution runs the dual path until `disable_freeswim`; toggle it without removing
    the hooks with `set_freeswim_active`. Validation happens before anything is changed. Returns the same object.
    """
    config = config or FreeSwimConfig()
    if not isinstance(config, FreeSwimConfig):
        raise TypeError(f"config must be a vidaccel.FreeSwimConfig, got {type(config).__name__}.")
    models = transformers(pipe_or_transformer)
    for model in models:
        adapter = adapter_for(model)
        if not adapter.freeswim:
            supported = sorted(name for name, a in ADAPTERS.items() if a.freeswim)
            raise TypeError(f"FreeSwim does not run on {type(model).__name__}: {adapter.freeswim_refusal()}. It runs on "
                            f"{', '.join(supported)} (vidaccel.supported_models() lists where each feature applies).")
        refuse_conflicts(model, FREESWIM)
    states = []
    for model in models:
        adapter = adapter_for(model)
        spatial = _spatial_factor(pipe_or_transformer, model)
        full_config = config.full_attention_config()
        states.append(FreeSwimState(config=config, adapter=adapter, window=config.window_tokens(spatial),
                                    num_layers=len(blocks(model, adapter)), breaks=frozenset(adapter.breaks(model)),
                                    full_config=full_config,
                                    full_pattern=full_config.build_pattern() if full_config else None,
                                    cache=CrossAttentionCache(offload=config.offload_cache)))
    full = states[0].full_config if states else None
    if full is not None:
        refuse_fraction_without_pipeline(full.dense_steps, pipe_or_transformer, "full_attention dense_steps",
                                         "enable FreeSwim on the pipeline instead")
    install_states(zip(models, states), FREESWIM.state_attr, install, uninstall)
    remember_pipeline(pipe_or_transformer)
    return pipe_or_transformer


def disable_freeswim(pipe_or_transformer):
    """Remove FreeSwim's hooks and cache, restoring the modules exactly. Returns the same object."""
    if not any([remove_state(m, FREESWIM.state_attr, uninstall) for m in transformers(pipe_or_transformer)]):
        logger.info("vidaccel.disable_freeswim: FreeSwim was not enabled.")
    return pipe_or_transformer


def freeswim_states(pipe_or_transformer) -> list[tuple[torch.nn.Module, FreeSwimState]]:
    """(transformer, state) for every transformer FreeSwim is enabled on."""
    states = [(m, state_of(m, FREESWIM)) for m in transformers(pipe_or_transformer)]
    return [(m, state) for m, state in states if state is not None]


def set_freeswim_active(pipe_or_transformer, active: bool) -> None:
    """Turn the dual path on or off without removing the hooks (off = the model's own computation)."""
    states = freeswim_states(pipe_or_transformer)
    if not states:
        raise RuntimeError("FreeSwim is not enabled: call vidaccel.enable_freeswim(pipe, config) first.")
    for _, state in states:
        state.reset()
        state.active = bool(active)


__all__ = ["enable_freeswim", "disable_freeswim", "set_freeswim_active", "freeswim_states"]
