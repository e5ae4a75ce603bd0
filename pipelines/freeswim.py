"""FreeSwim ultra-high-resolution generation and video upscaling around a diffusers Wan pipeline.

    from diffusers import WanPipeline
    from vidaccel.pipelines import FreeSwimPipeline

    pipe = WanPipeline.from_pretrained("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", torch_dtype=torch.bfloat16).to("cuda")
    fs = FreeSwimPipeline(pipe)                       # base (training) size 480x832, cache_steps=2
    video = fs("a fox in the snow", height=1088, width=1920, num_frames=81).frames[0]
    video = fs("", video=frames, height=1088, width=1920).frames[0]   # upscale an existing clip

Stages (docs/methods.md section 2):
1. generate at the base resolution with the wrapped pipeline (skipped when `video` is given);
2. upsample the frames in pixel space (bicubic) to the target size, VAE-encode them and re-noise
   to `strength` along the flow-matching path: ``x = (1 - sigma) * z + sigma * noise`` with
   ``sigma`` the schedule's value at step ``N - int(N * strength)`` (0.7 of 50 -> step 15);
3. denoise the remaining steps at the target size with the dual path
   (`vidaccel.freeswim`), by calling the wrapped pipeline with those latents and a private
   copy of its scheduler whose schedule starts at that step.

Works with the pipelines of the transformer classes FreeSwim runs on (`vidaccel.supported_models()`, feature
``freeswim``), with a flow-matching scheduler: tested on `WanPipeline` (Wan2.1, and Wan2.2 with both
transformers), `WanImageToVideoPipeline` (pass ``image=`` as usual), `SkyReelsV2Pipeline` and `WanVACEPipeline`.
Extra keyword arguments go to the wrapped pipeline in both stages; `WanVACEPipeline`'s control ``video`` cannot
(``video`` here is the clip to upscale): for controlled generation call `vidaccel.enable_freeswim` on the VACE
pipeline and drive the stages yourself.
The prompt is encoded once with the pipeline's own `encode_prompt`.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F

from vidaccel.freeswim import (
    FreeSwimConfig,
    disable_freeswim,
    enable_freeswim,
    format_freeswim_report,
    freeswim_report,
    freeswim_states,
    set_freeswim_active,
)

from .video_io import frames_to_tensor

logger = logging.getLogger(__name__)

MAX_TESTED_AREA_RATIO = 4.0  # larger targets work but their quality has not been evaluated


def _nearest(value: int, multiple: int) -> tuple[int, int]:
    lo = max(multiple, value // multiple * multiple)
    return lo, lo + multiple


def check_sizes(height: int, width: int, base: tuple[int, int], multiple: int) -> None:
    """Raise for sizes the VAE/patching cannot take or below the base; warn beyond 4x the base area."""
    for name, value in (("height", height), ("width", width), ("base height", base[0]), ("base width", base[1])):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int in pixels, got {value!r}.")
        if value % multiple:
            lo, hi = _nearest(value, multiple)
            raise ValueError(
                f"{name}={value} is not a multiple of {multiple} (VAE factor x patch size); the nearest valid "
                f"values are {lo} and {hi}."
            )
    if height < base[0] or width < base[1]:
        raise ValueError(
            f"Target {height}x{width} is smaller than the base resolution {base[0]}x{base[1]} along at least one "
            f"side. FreeSwim generates above the base size: use at least {base[0]}x{base[1]}, or a smaller base_size."
        )
    ratio = height * width / (base[0] * base[1])
    if ratio > MAX_TESTED_AREA_RATIO:
        warnings.warn(
            f"Target {height}x{width} is {ratio:.1f}x the base area ({base[0]}x{base[1]}); FreeSwim's quality has "
            f"been evaluated up to {MAX_TESTED_AREA_RATIO:.0f}x, so this is untested.",
            stacklevel=3,
        )


def _is_flow_matching(scheduler) -> bool:
    config = scheduler.config
    return ("FlowMatch" in type(scheduler).__name__ or bool(config.get("use_flow_sigmas", False))
            or config.get("prediction_type") == "flow_prediction")


def refinement_start(num_inference_steps: int, strength: float) -> int:
    """Index of the first refinement step: ``N - int(N * strength)`` (img2img convention)."""
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}.")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1] (the noise level to refine from), got {strength!r}.")
    steps = int(num_inference_steps * strength)
    if steps < 1:
        raise ValueError(
            f"strength={strength} of num_inference_steps={num_inference_steps} leaves no refinement step; raise "
            f"strength or num_inference_steps (need num_inference_steps * strength >= 1)."
        )
    return num_inference_steps - steps


def refinement_scheduler(scheduler, start: int, flow_shift: float | None = None):
    """A private copy of `scheduler` whose ``set_timesteps(N)`` keeps only steps ``start..N-1``.

    The pipeline's own scheduler is left untouched. `flow_shift` overrides the schedule's shift.
    """
    if not _is_flow_matching(scheduler):
        raise TypeError(
            f"FreeSwim re-noises along the flow-matching path, but the pipeline's scheduler is "
            f"{type(scheduler).__name__}. Use a flow-matching scheduler (FlowMatchEulerDiscreteScheduler, or "
            f"UniPCMultistepScheduler with use_flow_sigmas=True as Wan ships)."
        )
    overrides = {}
    if flow_shift is not None:
        overrides["flow_shift" if "flow_shift" in scheduler.config else "shift"] = float(flow_shift)
    copy = type(scheduler).from_config(scheduler.config, **overrides)
    full_schedule = copy.set_timesteps

    def set_timesteps(*args, **kwargs):
        full_schedule(*args, **kwargs)
        if start >= len(copy.timesteps):
            raise ValueError(f"Refinement start step {start} is beyond the {len(copy.timesteps)}-step schedule.")
        copy.timesteps = copy.timesteps[start:]
        copy.sigmas = copy.sigmas[start:]

    copy.set_timesteps = set_timesteps  # instance attribute on our own copy only
    return copy


class FreeSwimPipeline:
    """FreeSwim around a diffusers Wan-like pipeline: base generation (or a user's clip) -> hi-res refinement.

    Args:
        pipe: a `WanPipeline` or `WanImageToVideoPipeline` (Wan2.1 or Wan2.2), `SkyReelsV2Pipeline`, `WanVACEPipeline`
            (see the module docstring), or another pipeline of a class with FreeSwim and a flow-matching scheduler.
        config: `vidaccel.FreeSwimConfig`; ``base_size`` is both the stage-1 resolution and the
            window's source (default 480x832, Wan2.1's training size).

    The dual-path hooks stay installed (inactive outside stage 3) until `remove()`.
    """

    def __init__(self, pipe, config: FreeSwimConfig | None = None):
        self.pipe = pipe
        self.config = config or FreeSwimConfig()
        enable_freeswim(pipe, self.config)
        set_freeswim_active(pipe, False)

    @property
    def size_multiple(self) -> int:
        model = self.pipe.transformer if self.pipe.transformer is not None else self.pipe.transformer_2
        return int(self.pipe.vae_scale_factor_spatial) * int(model.config.patch_size[1])

    def remove(self) -> None:
        """Remove the hooks and cache: the wrapped pipeline is exactly as before."""
        disable_freeswim(self.pipe)

    def summary(self, print_summary: bool = True) -> list[dict]:
        report = freeswim_report(self.pipe)
        if print_summary:
            print(format_freeswim_report(report))
        return report

    # -- stages --------------------------------------------------------------------------------
    def _encode_prompt(self, prompt, negative_prompt, guidance_scale, kwargs):
        if kwargs.get("prompt_embeds") is not None:
            return kwargs.pop("prompt_embeds"), kwargs.pop("negative_prompt_embeds", None)
        guidance_2 = kwargs.get("guidance_scale_2")
        cfg = guidance_scale > 1.0 or (guidance_2 is not None and guidance_2 > 1.0)
        return self.pipe.encode_prompt(
            prompt=prompt, negative_prompt=negative_prompt, do_classifier_free_guidance=cfg,
            max_sequence_length=kwargs.get("max_sequence_length", 512), device=self.pipe._execution_device,
        )

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Stage 2a: frames ``(B, F, 3, h, w)`` in [0, 1] -> normalized latents of the target size."""
        vae, device = self.pipe.vae, self.pipe._execution_device
        batch, num_frames = frames.shape[:2]
        x = frames.flatten(0, 1).to(device=device, dtype=torch.float32)
        # antialias only acts when a side shrinks (an input clip larger than the target)
        x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        x = x.unflatten(0, (batch, num_frames)).permute(0, 2, 1, 3, 4) * 2.0 - 1.0  # (B, 3, F, H, W)
        z = vae.encode(x.to(vae.dtype)).latent_dist.mode()
        mean = torch.tensor(vae.config.latents_mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
        return ((z - mean) / std).float()

    @staticmethod
    def renoise(latents: torch.Tensor, sigma: float, generator=None) -> torch.Tensor:
        """Stage 2b: the flow-matching forward process ``(1 - sigma) * x0 + sigma * noise``."""
        from diffusers.utils.torch_utils import randn_tensor

        noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=torch.float32)
        return (1.0 - sigma) * latents + sigma * noise

    def _input_frames(self, video) -> torch.Tensor:
        frames = frames_to_tensor(video)
        t = int(self.pipe.vae_scale_factor_temporal)
        usable = (frames.shape[1] - 1) // t * t + 1
        if frames.shape[1] < 1:
            raise ValueError("The input video has no frames.")
        if usable != frames.shape[1]:
            logger.warning("Wan needs 4k+1 frames: using the first %d of the video's %d frames.", usable,
                           frames.shape[1])
            frames = frames[:, :usable]
        return frames

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        *,
        video=None,
        height: int = 1088,
        width: int = 1920,
        num_frames: int = 81,
        num_inference_steps: int = 50,
        base_num_inference_steps: int | None = None,
        strength: float = 0.7,
        guidance_scale: float = 5.0,
        negative_prompt: str | list[str] | None = None,
        flow_shift: float | None = None,
        generator: torch.Generator | None = None,
        dual_path: bool = True,
        output_type: str = "np",
        return_dict: bool = True,
        **pipe_kwargs,
    ):
        """Generate (or upscale `video`) at ``height x width``.

        Args:
            prompt: text prompt (may be empty when upscaling a video).
            video: optional input clip (``(F, H, W, 3)`` uint8/float frames, a ``(1, F, 3, H, W)``
                tensor in [0, 1] or PIL images); replaces stage 1. Frames are trimmed to 4k+1.
            height, width: target size in pixels, multiples of 16 for Wan, at least the base size.
            num_frames: frames to generate in stage 1 (ignored with `video`).
            num_inference_steps: schedule length; stage 3 runs its last ``int(N * strength)`` steps.
            base_num_inference_steps: stage-1 steps (default `num_inference_steps`).
            strength: noise level to refine from, in (0, 1]. Default 0.7 (reference).
            flow_shift: schedule shift for stage 3 (None = the pipeline scheduler's; the reference
                uses 9.0 at 1080p).
            dual_path: False runs stage 3 without FreeSwim (plain pipeline at the target size), for
                comparisons.
            Other keyword arguments (``image=`` for image-to-video, ``max_sequence_length``, ...) go
            to the wrapped pipeline.

        Returns the wrapped pipeline's output for stage 3 (``.frames``).
        """
        pipe = self.pipe
        if pipe_kwargs.get("num_videos_per_prompt", 1) != 1:
            raise ValueError("FreeSwimPipeline makes one video per prompt: repeat the prompt in a list instead of "
                             "num_videos_per_prompt.")
        if not freeswim_states(pipe):
            raise RuntimeError("This FreeSwimPipeline was removed; create a new FreeSwimPipeline(pipe).")
        base = tuple(self.config.base_size)
        check_sizes(height, width, base, self.size_multiple)
        start = refinement_start(num_inference_steps, strength)
        scheduler = refinement_scheduler(pipe.scheduler, start, flow_shift)
        device = pipe._execution_device
        scheduler.set_timesteps(num_inference_steps, device=device)
        sigma = float(scheduler.sigmas[0])
        frames = self._input_frames(video) if video is not None else None
        if frames is not None and isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError(f"An input video takes one prompt, got {len(prompt)}.")
        prompt = "" if prompt is None and frames is not None else prompt
        if prompt is None and pipe_kwargs.get("prompt_embeds") is None:
            raise ValueError("Pass a prompt (or prompt_embeds); an empty prompt is allowed when upscaling a video.")

        prompt_embeds, negative_embeds = self._encode_prompt(prompt, negative_prompt, guidance_scale, pipe_kwargs)
        common = dict(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds,
                      guidance_scale=guidance_scale, generator=generator, **pipe_kwargs)
        if frames is None:  # stage 1: base resolution, hooks inactive
            frames = pipe(height=base[0], width=base[1], num_frames=num_frames,
                          num_inference_steps=base_num_inference_steps or num_inference_steps,
                          output_type="pt", **common).frames
        latents = self.renoise(self.encode_video(frames, height, width), sigma, generator)  # stage 2

        original = pipe.scheduler
        pipe.scheduler = scheduler
        set_freeswim_active(pipe, dual_path)
        try:  # stage 3
            return pipe(height=height, width=width, num_frames=frames.shape[1], num_inference_steps=num_inference_steps,
                        latents=latents, output_type=output_type, return_dict=return_dict, **common)
        finally:
            set_freeswim_active(pipe, False)
            pipe.scheduler = original


__all__ = ["FreeSwimPipeline", "check_sizes", "refinement_start", "refinement_scheduler"]
