"""Tiny random pipelines of both families (stock classes), saved like a shipped base, for tests that need a whole
model in seconds: 32² images, a VAE with 2× downsampling, a caption-grammar tokenizer, 2 sampling steps."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from humantune.data.mannequin.appearance import (
    ACTION_PHRASES, BACKGROUND_PHRASES, BOTTOMS, CLOTH_COLORS, PERSON_TYPES, TOPS,
)
from humantune.models import tiny
from humantune.models.tokenizer import build_clip_tokenizer, caption_words

SIZE = 32
TEXT = tiny.TextEncoderConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              projection_dim=16, max_length=32)
VAE = tiny.VaeConfig(block_out_channels=[8, 16], norm_num_groups=4)
UNET = tiny.UNetConfig(block_out_channels=[16, 32], attention_heads=2, norm_num_groups=4)
TRANSFORMER = tiny.TransformerConfig(num_layers=2, num_attention_heads=2, attention_head_dim=8, pos_embed_max_size=8,
                                     max_sequence_length=4)
GRAMMAR = ["a an in and blue jeans"] + list(PERSON_TYPES) + list(TOPS) + list(BOTTOMS) + list(CLOTH_COLORS) \
    + list(ACTION_PHRASES.values()) + list(BACKGROUND_PHRASES.values())


def build_pipeline(family: str, seed: int = 0, tokenizer_dir: Path | None = None):
    """A random tiny ``StableDiffusionPipeline`` (``sd``) or T5-less ``StableDiffusion3Pipeline`` (``sd3``)."""
    import tempfile

    tok_dir = tokenizer_dir or Path(tempfile.mkdtemp(prefix="tok"))
    # Longest words first: a word's merges then outrank those of shorter words inside it ("man" vs "an").
    words = sorted(caption_words(GRAMMAR), key=len, reverse=True)
    tokenizer = build_clip_tokenizer(words, tok_dir, TEXT.max_length)
    torch.manual_seed(seed)
    latent = SIZE // 2
    if family == "sd":
        _, ddim = tiny.ddpm_schedulers()
        return tiny.assemble_sd(tiny.build_vae(VAE), tiny.build_text_encoder(TEXT, tokenizer), tokenizer,
                                tiny.build_unet(UNET, 4, latent, TEXT.hidden_size), ddim)
    return tiny.assemble_sd3(
        tiny.build_vae(VAE, shift_factor=0.0), tiny.build_text_encoder_with_projection(TEXT, tokenizer), tokenizer,
        tiny.build_text_encoder_with_projection(TEXT, tokenizer), tokenizer,
        tiny.build_transformer(TRANSFORMER, 4, latent, TEXT), FlowMatchEulerDiscreteScheduler(shift=1.0))


def save_pipeline(family: str, out_dir: Path, seed: int = 0) -> Path:
    """Build and save a tiny pipeline with a ``humantune.json`` (2 steps, guidance 2, 32², T5 slots 4)."""
    pipe = build_pipeline(family, seed, out_dir.parent / f"{out_dir.name}_tokenizer")
    pipe.save_pretrained(out_dir, safe_serialization=True)
    generation = {"num_inference_steps": 2, "guidance_scale": 2.0, "height": SIZE, "width": SIZE}
    if family == "sd3":
        generation["max_sequence_length"] = TRANSFORMER.max_sequence_length
    (out_dir / "humantune.json").write_text(json.dumps({"name": f"test-{family}", "family": family,
                                                        "generation": generation}))
    return out_dir


def build_sdxl_pipeline(seed: int = 0, tokenizer_dir: Path | None = None):
    """A random tiny ``StableDiffusionXLPipeline``: CLIPTextModel + CLIPTextModelWithProjection over the caption
    grammar, an SDXL-layout UNet (text_time added embedding), the DDIM scheduler of the sd family."""
    import tempfile

    tok_dir = tokenizer_dir or Path(tempfile.mkdtemp(prefix="tok"))
    tokenizer = build_clip_tokenizer(sorted(caption_words(GRAMMAR), key=len, reverse=True), tok_dir, TEXT.max_length)
    torch.manual_seed(seed)
    _, ddim = tiny.ddpm_schedulers()
    return tiny.assemble_sdxl(tiny.build_vae(VAE), tiny.build_text_encoder(TEXT, tokenizer), tokenizer,
                              tiny.build_text_encoder_with_projection(TEXT, tokenizer), tokenizer,
                              tiny.build_unet_sdxl(UNET, 4, SIZE // 2, TEXT), ddim)


def save_sdxl_pipeline(out_dir: Path, seed: int = 0) -> Path:
    """Build and save a tiny SDXL pipeline with a ``humantune.json`` (2 steps, guidance 2, 32²)."""
    pipe = build_sdxl_pipeline(seed, out_dir.parent / f"{out_dir.name}_tokenizer")
    pipe.save_pretrained(out_dir, safe_serialization=True)
    generation = {"num_inference_steps": 2, "guidance_scale": 2.0, "height": SIZE, "width": SIZE}
    (out_dir / "humantune.json").write_text(json.dumps({"name": "test-sdxl", "family": "sdxl",
                                                        "generation": generation}))
    return out_dir


def denoiser_output(pipe, family: str, prompt: str, seed: int = 5, t: int = 400) -> torch.Tensor:
    """The denoiser's output for ``prompt`` on a fixed noisy latent (1, 4, 16, 16) at timestep ``t``: the UNet for
    ``family`` sd, the SD3 transformer (timestep as a float, T5-less prompt encoding) for sd3. Compares a stock
    pipeline with a LoRA loaded against the recipe's own weights."""
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        if family == "sd":
            cond, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
            return pipe.unet(x, torch.tensor([t]), cond).sample
        cond, _, pooled, _ = pipe.encode_prompt(prompt, None, None, do_classifier_free_guidance=False,
                                                max_sequence_length=TRANSFORMER.max_sequence_length)
        return pipe.transformer(hidden_states=x, encoder_hidden_states=cond, pooled_projections=pooled,
                                timestep=torch.tensor([float(t)])).sample
