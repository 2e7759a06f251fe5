"""Tiny base models of the real classes: what ``StableDiffusionPipeline`` (SD1.5-style),
``StableDiffusionXLPipeline`` (SDXL-style: two CLIP encoders, micro-conditioned UNet) and
``StableDiffusion3Pipeline`` (SD3-style MMDiT, no T5) load, at sizes a CPU trains in about an hour.

Every builder returns a stock diffusers / transformers module built from a typed config, so a pipeline assembled
here is saved with ``save_pretrained`` and loaded anywhere with ``from_pretrained``. The text encoders see prompts
through :mod:`humantune.models.tokenizer`'s caption-grammar vocabulary.

Prompt encoding used for training is :func:`encode_prompt_sd` / :func:`encode_prompt_sdxl` /
:func:`encode_prompt_sd3`, which compute exactly
what the pipelines' own ``encode_prompt`` computes (tested), batched over token ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import torch

from humantune.config import option

if TYPE_CHECKING:  # diffusers and transformers load in the builders: importing a recipe's config stays fast
    from diffusers import (
        AutoencoderKL, DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
        StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer


@dataclass
class VaeConfig:
    """``AutoencoderKL``: one level per entry of block_out_channels; each level after the first halves the size."""

    block_out_channels: list[int] = option([16, 32, 64, 64], "channels per level (4 levels: 8× downsampling)")
    layers_per_block: int = option(1, "ResNet blocks per level")
    latent_channels: int = option(4, "latent channels")
    norm_num_groups: int = option(8, "GroupNorm groups (divides every channel count)")
    mid_block_attention: bool = option(False, "self-attention in the mid block (off: fully convolutional, so "
                                              "training on crops matches use on whole images)")


@dataclass
class TextEncoderConfig:
    """``CLIPTextModel`` (SD) / two ``CLIPTextModelWithProjection`` (SD3) over the caption-grammar vocabulary."""

    hidden_size: int = option(128, "width (SD: the UNet's cross_attention_dim)")
    num_hidden_layers: int = option(2, "transformer layers")
    num_attention_heads: int = option(4, "attention heads")
    intermediate_size: int = option(512, "MLP width")
    projection_dim: int = option(64, "pooled projection width (SD3: each encoder's pooled output)")
    max_length: int = option(32, "tokens per prompt (tokenizer model_max_length)")


@dataclass
class UNetConfig:
    """``UNet2DConditionModel``; the first level has no attention, the others cross-attend to the text."""

    block_out_channels: list[int] = option([64, 128, 192], "channels per level")
    layers_per_block: int = option(1, "ResNet(+attention) blocks per level")
    attention_heads: int = option(8, "attention heads (diffusers' attention_head_dim, as in SD1.5)")
    norm_num_groups: int = option(16, "GroupNorm groups")


@dataclass
class TransformerConfig:
    """``SD3Transformer2DModel`` (MMDiT with joint text-image attention)."""

    num_layers: int = option(4, "joint transformer blocks")
    num_attention_heads: int = option(4, "attention heads")
    attention_head_dim: int = option(32, "width per head")
    patch_size: int = option(2, "latent patch size")
    pos_embed_max_size: int = option(32, "largest latent grid / patch_size supported")
    max_sequence_length: int = option(8, "T5 slots the pipeline fills with zeros when text_encoder_3 is None; "
                                         "generate with the same max_sequence_length")


def build_vae(cfg: VaeConfig, scaling_factor: float = 1.0, shift_factor: float | None = None) -> AutoencoderKL:
    from diffusers import AutoencoderKL

    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups, scaling_factor=scaling_factor, shift_factor=shift_factor,
        mid_block_add_attention=cfg.mid_block_attention,
    )


def _clip_config(cfg: TextEncoderConfig, tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        max_position_embeddings=cfg.max_length, projection_dim=cfg.projection_dim,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_act="quick_gelu", attention_dropout=0.0, dropout=0.0,
    )


def build_text_encoder(cfg: TextEncoderConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    from transformers import CLIPTextModel

    return CLIPTextModel(_clip_config(cfg, tokenizer))


def build_text_encoder_with_projection(cfg: TextEncoderConfig, tokenizer: CLIPTokenizer) -> CLIPTextModelWithProjection:
    from transformers import CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(_clip_config(cfg, tokenizer))


def build_unet(cfg: UNetConfig, latent_channels: int, latent_size: int, cross_attention_dim: int,
               **extra) -> UNet2DConditionModel:
    """The SD1.5 UNet layout; ``extra``: further ``UNet2DConditionModel`` arguments (:func:`build_unet_sdxl`)."""
    from diffusers import UNet2DConditionModel

    n = len(cfg.block_out_channels)
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels,
        layers_per_block=cfg.layers_per_block, block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=cross_attention_dim, attention_head_dim=cfg.attention_heads,
        norm_num_groups=cfg.norm_num_groups, **extra,
    )


def build_unet_sdxl(cfg: UNetConfig, latent_channels: int, latent_size: int, text: TextEncoderConfig,
                    addition_time_embed_dim: int = 8) -> UNet2DConditionModel:
    """The SDXL UNet layout: cross-attention to both CLIP encoders' hidden states concatenated (2 × hidden_size),
    linear attention projections, and the ``text_time`` added embedding of text_encoder_2's pooled projection plus
    the 6 size/crop ``time_ids`` (each embedded in ``addition_time_embed_dim``)."""
    return build_unet(cfg, latent_channels, latent_size, 2 * text.hidden_size, use_linear_projection=True,
                      addition_embed_type="text_time", addition_time_embed_dim=addition_time_embed_dim,
                      projection_class_embeddings_input_dim=6 * addition_time_embed_dim + text.projection_dim)


def build_transformer(cfg: TransformerConfig, latent_channels: int, latent_size: int, text: TextEncoderConfig) -> SD3Transformer2DModel:
    from diffusers import SD3Transformer2DModel

    # The pipeline concatenates the two CLIP encoders' hidden states (feature axis) and pooled outputs.
    return SD3Transformer2DModel(
        sample_size=latent_size, patch_size=cfg.patch_size, in_channels=latent_channels, out_channels=latent_channels,
        num_layers=cfg.num_layers, attention_head_dim=cfg.attention_head_dim,
        num_attention_heads=cfg.num_attention_heads, joint_attention_dim=2 * text.hidden_size,
        caption_projection_dim=cfg.num_attention_heads * cfg.attention_head_dim,
        pooled_projection_dim=2 * text.projection_dim, pos_embed_max_size=cfg.pos_embed_max_size,
    )


def ddpm_schedulers() -> tuple[DDPMScheduler, DDIMScheduler]:
    """SD1.5's noise schedule (scaled-linear β 0.00085 → 0.012, 1000 steps, ε-prediction): the DDPM scheduler for
    training and the DDIM scheduler the saved pipeline samples with."""
    from diffusers import DDIMScheduler, DDPMScheduler

    kw = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
              prediction_type="epsilon", clip_sample=False)
    return DDPMScheduler(**kw), DDIMScheduler(**kw, set_alpha_to_one=False, steps_offset=1)


def assemble_sd(vae, text_encoder, tokenizer, unet, scheduler) -> StableDiffusionPipeline:
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def assemble_sdxl(vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2, unet,
                  scheduler) -> StableDiffusionXLPipeline:
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                     text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, unet=unet,
                                     scheduler=scheduler, add_watermarker=False)


def assemble_sd3(vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2, transformer,
                 scheduler: FlowMatchEulerDiscreteScheduler) -> StableDiffusion3Pipeline:
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                                    tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                                    text_encoder_3=None, tokenizer_3=None)


def encode_prompt_sd(text_encoder: CLIPTextModel, input_ids: torch.Tensor) -> torch.Tensor:
    """SD1.5 conditioning: the text encoder's last hidden state (after the final layer norm)."""
    return text_encoder(input_ids)[0]


def encode_prompt_sd3(text_encoder, text_encoder_2, input_ids: torch.Tensor, input_ids_2: torch.Tensor,
                      joint_attention_dim: int, max_sequence_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SD3 conditioning without T5, as ``StableDiffusion3Pipeline.encode_prompt`` builds it: each CLIP encoder's
    penultimate hidden state, concatenated on the feature axis and zero-padded to ``joint_attention_dim``, then
    ``max_sequence_length`` all-zero T5 slots appended on the sequence axis; pooled = both projections
    concatenated. Returns ``(prompt_embeds, pooled_prompt_embeds)``."""
    out1 = text_encoder(input_ids, output_hidden_states=True)
    out2 = text_encoder_2(input_ids_2, output_hidden_states=True)
    clip = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
    clip = torch.nn.functional.pad(clip, (0, joint_attention_dim - clip.shape[-1]))
    t5 = clip.new_zeros(clip.shape[0], max_sequence_length, joint_attention_dim)
    pooled = torch.cat([out1[0], out2[0]], dim=-1)
    return torch.cat([clip, t5], dim=-2), pooled


def encode_prompt_sdxl(text_encoder, text_encoder_2, input_ids: torch.Tensor, input_ids_2: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL conditioning, as ``StableDiffusionXLPipeline.encode_prompt`` builds it (clip_skip None): the
    penultimate hidden state of ``text_encoder`` (CLIPTextModel) and of ``text_encoder_2``
    (CLIPTextModelWithProjection), concatenated on the feature axis; pooled = ``text_encoder_2``'s projected
    output (the pipeline's "pooled output of the final text encoder"). Returns ``(prompt_embeds,
    pooled_prompt_embeds)``."""
    out1 = text_encoder(input_ids, output_hidden_states=True)
    out2 = text_encoder_2(input_ids_2, output_hidden_states=True)
    return torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1), out2[0]
