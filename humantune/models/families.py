"""The model families humantune trains, in one table: which diffusers pipeline class, which component is the
denoiser, which text encoders and tokenizers feed it. Models, recipes and studies read it instead of naming
components themselves, and :func:`denoise` is the one place that knows how each family's denoiser is called."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from humantune.errors import HumantuneError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Family:
    """One family: ``name`` (a config value), its ``pipeline`` class name, the ``denoiser`` component, the
    ``text_encoders`` and ``tokenizers`` components (in the order the prompt encoding consumes them) and the
    ``objective`` it is trained with (``ddpm``: ε/v-prediction; ``flow``: rectified flow), and how the denoiser
    receives the pooled text embedding (``pooled``): None (it takes none), ``pooled_projections`` (SD3's MMDiT) or
    ``text_time`` (SDXL's UNet: ``added_cond_kwargs`` text_embeds + size/crop ``time_ids``)."""

    name: str
    pipeline: str
    denoiser: str
    text_encoders: tuple[str, ...]
    tokenizers: tuple[str, ...]
    objective: str
    pooled: str | None = None

    @property
    def trainable(self) -> tuple[str, ...]:
        """The components a from-scratch base trains: the denoiser and the text encoders."""
        return (self.denoiser,) + self.text_encoders


FAMILIES = {
    "sd": Family("sd", "StableDiffusionPipeline", "unet", ("text_encoder",), ("tokenizer",), "ddpm"),
    "sdxl": Family("sdxl", "StableDiffusionXLPipeline", "unet", ("text_encoder", "text_encoder_2"),
                   ("tokenizer", "tokenizer_2"), "ddpm", "text_time"),
    "sd3": Family("sd3", "StableDiffusion3Pipeline", "transformer", ("text_encoder", "text_encoder_2"),
                  ("tokenizer", "tokenizer_2"), "flow", "pooled_projections"),
}
"""SD1.5-style UNet pipelines, SDXL-style UNet pipelines (two CLIP encoders, micro-conditioning) and SD3-style
MMDiT pipelines (T5, when present, is only used to cache embeddings)."""


def family_of(pipe, what: str = "the model") -> Family:
    """The :class:`Family` of a pipeline instance or class; HumantuneError naming ``what`` and the known classes
    otherwise."""
    name = pipe.__name__ if isinstance(pipe, type) else type(pipe).__name__
    for family in FAMILIES.values():
        if family.pipeline == name:
            return family
    raise HumantuneError(f"{what} is a {name}; expected one of {', '.join(f.pipeline for f in FAMILIES.values())}")


def sdxl_time_ids(height: int, width: int, batch: int) -> torch.Tensor:
    """SDXL's micro-conditioning (Podell et al. 2023, §2.2) of a batch: (original_h, original_w, crop_top,
    crop_left, target_h, target_w) = (H, W, 0, 0, H, W) per row, (batch, 6) float32 — what
    ``StableDiffusionXLPipeline.__call__`` builds for an H×W image by default, and what diffusers'
    ``train_diffusion_dpo_sdxl.py`` trains with (images resized and centre-cropped to H×W)."""
    import torch

    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32).repeat(batch, 1)


def denoiser_conditioning(family: Family, embeds: torch.Tensor, pooled: torch.Tensor | None,
                          image_size: tuple[int, int] | None = None) -> dict:
    """The text-conditioning keyword arguments of a denoiser call of ``family``: ``encoder_hidden_states`` (all
    families), plus ``pooled_projections`` (sd3) or ``added_cond_kwargs`` = {``text_embeds``: pooled, ``time_ids``:
    :func:`sdxl_time_ids` of ``image_size`` (H, W) in pixels} (sdxl)."""
    kwargs = {"encoder_hidden_states": embeds}
    if family.pooled is None:
        return kwargs
    if pooled is None:
        raise ValueError(f"the {family.name} denoiser needs the pooled text embedding")
    if family.pooled == "pooled_projections":
        return {**kwargs, "pooled_projections": pooled}
    if image_size is None:
        raise ValueError(f"the {family.name} denoiser needs the image size (its time_ids)")
    time_ids = sdxl_time_ids(*image_size, len(embeds)).to(embeds.device, embeds.dtype)
    return {**kwargs, "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}


def denoise(family: Family, denoiser, noisy: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor,
            pooled: torch.Tensor | None, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """The denoiser's raw output for ``noisy`` latents at ``timesteps`` under the text conditioning
    (:func:`denoiser_conditioning`); ``image_size``: (H, W) in pixels, needed by sdxl."""
    latent_arg = "sample" if family.denoiser == "unet" else "hidden_states"
    return denoiser(**{latent_arg: noisy}, timestep=timesteps,
                    **denoiser_conditioning(family, embeds, pooled, image_size)).sample
