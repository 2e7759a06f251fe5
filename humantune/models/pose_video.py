"""A tiny pose-guided human video denoiser and its generation pipeline, built from stock diffusers classes
(``shared/papers.md`` §3, "their model", in miniature).

Denoiser: diffusers' ``LatteTransformer3DModel`` — per block a spatial transformer block (self-attention over one
frame's patches, cross-attention to conditioning tokens) followed by a temporal one (self-attention over the frames
of one patch position) — so "train only the temporal layers" (the paper's phase 3) is a parameter selection.
Conditioning, with nothing outside the stock class:

- **pose**: the OpenPose-18 skeleton image of every frame (:func:`humantune.data.openpose.draw_openpose`),
  area-downsampled to the latent grid and scaled to [0, 1] (:func:`pose_maps`), concatenated to the noisy latents on
  the channel axis — ``in_channels = latent_channels + 3``, ``out_channels = latent_channels`` (the paper's
  1-layer PixArt ControlNet replaced by an additive input, as WanAnimate does natively);
- **reference image** (the "Siamese ReferenceNet" in miniature, whose point is that reference features reach every
  block spatially aligned): the reference's VAE latent, cut into p × p patches with a fixed 2-D position embedding
  added (:func:`reference_condition`), is the sequence the spatial blocks cross-attend to, through Latte's stock
  ``caption_projection`` (``caption_channels = p²·latent_channels``); and, with ``reference_input`` (default), the
  same latent is concatenated to every frame's input channels as well (``in_channels = 2·latent_channels + 3``),
  the spatially aligned path that copies a static background and the person's look.

Classifier-free guidance drops both conditions (zero reference tokens, all-black pose) and combines
ε = ε_u + s·(ε_c − ε_u) (:func:`guided_noise`). Image phases (1: subject-driven, 2: pose-guided) run the denoiser
with ``enable_temporal_attentions=False``, one frame per sample; the video phase (3) enables the temporal blocks, whose
output projections start at zero (:func:`zero_init_temporal`, as AnimateDiff's motion modules), so each starts as the
identity. Phase 3 does not start from exactly the image model, though: the stock Latte forward adds its fixed
sin-cos frame embedding (``temp_pos_embed``, a non-persistent buffer) to the hidden states before the first temporal
block whenever a clip has more than one frame, and the image phases never saw it; the training loss therefore jumps
at the phase boundary and the temporal blocks learn to use (and undo) it.

On disk: :class:`PoseVideoPipeline` is a ``DiffusionPipeline`` (``transformer``: LatteTransformer3DModel, ``vae``:
AutoencoderKL, ``scheduler``: DDIMScheduler), saved with ``save_pretrained`` plus ``humantune_pose_video.json``
(:class:`ConditioningSettings`); ``PoseVideoPipeline.from_pretrained(DIR)`` loads it back.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline

from humantune.config import option
from humantune.errors import HumantuneError
from humantune.io import write_json_atomic

SETTINGS_NAME = "humantune_pose_video.json"
POSE_CHANNELS = 3
"""The pose input: the RGB OpenPose condition image at latent resolution."""


@dataclass
class DenoiserConfig:
    """Size of a new LatteTransformer3DModel (``norm_type`` ada_norm_single, as Latte's released models)."""

    num_layers: int = option(2, "spatial + temporal block pairs")
    num_attention_heads: int = option(2, "attention heads")
    attention_head_dim: int = option(16, "width per head (inner width = heads × head width)")
    patch_size: int = option(2, "latent patch size of the denoised frames")
    reference_patch_size: int = option(2, "latent patch size of the reference tokens")
    frames: int = option(8, "clip length of the temporal blocks (Latte's video_length; the paper uses 10)")
    reference_input: bool = option(True, "also concatenate the reference latent to every frame's input channels "
                                         "(false: the reference reaches the model through cross-attention only)")

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_attention_heads", "attention_head_dim", "patch_size",
                     "reference_patch_size", "frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class ConditioningSettings:
    """How a pose-video pipeline feeds its conditions (``humantune_pose_video.json`` beside the pipeline)."""

    latent_channels: int
    pose_channels: int
    reference_patch_size: int
    resolution: int
    temporal: bool
    num_inference_steps: int = 30
    guidance_scale: float = 4.0

    @classmethod
    def read(cls, folder: str | os.PathLike) -> ConditioningSettings:
        path = Path(folder) / SETTINGS_NAME
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise HumantuneError(f"{path}: not a pose-video settings file ({type(e).__name__}: "
                                 f"{' '.join(str(e).split())[:160]})") from None

    def write(self, folder: str | os.PathLike) -> None:
        write_json_atomic(Path(folder) / SETTINGS_NAME, asdict(self))


def build_denoiser(cfg: DenoiserConfig, latent_channels: int, latent_size: int):
    """A new LatteTransformer3DModel taking ``latent_channels + 3`` input channels (latents, pose; plus
    ``latent_channels`` for the reference latent with ``reference_input``) and the reference tokens of
    :func:`reference_condition` as its caption sequence."""
    from diffusers import LatteTransformer3DModel

    if latent_size % cfg.patch_size or latent_size % cfg.reference_patch_size:
        raise HumantuneError(f"latent size {latent_size} must be a multiple of patch_size {cfg.patch_size} and "
                             f"reference_patch_size {cfg.reference_patch_size}")
    inner = cfg.num_attention_heads * cfg.attention_head_dim
    return LatteTransformer3DModel(
        num_attention_heads=cfg.num_attention_heads, attention_head_dim=cfg.attention_head_dim,
        in_channels=latent_channels * (2 if cfg.reference_input else 1) + POSE_CHANNELS,
        out_channels=latent_channels, num_layers=cfg.num_layers,
        cross_attention_dim=inner, sample_size=latent_size, patch_size=cfg.patch_size, activation_fn="gelu-approximate",
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
        caption_channels=cfg.reference_patch_size ** 2 * latent_channels, video_length=cfg.frames)


def adapt_latte(source, reference_patch: int, frames: int | None = None, latent_channels: int | None = None,
                reference_input: bool = True):
    """A pose-video denoiser from a pretrained LatteTransformer3DModel (e.g. Latte-1's text-to-video transformer):
    the same blocks and weights, with

    - the pose channels (and, with ``reference_input``, the reference latent's) appended to the patch embedding's
      input, their weights zero (so the adapted model starts as the source on its latents);
    - the output cut to the ε half when the source predicts a learned variance too (out = 2 × latent channels);
    - the caption projection's first layer re-drawn for reference tokens of width p²·C unless the widths match;
    - ``frames`` as its clip length (the temporal position embedding is a fixed sin-cos table of that length)."""
    sc = source.config
    channels = latent_channels or sc.in_channels
    cfg = dict(sc)
    cfg.update(in_channels=channels * (2 if reference_input else 1) + POSE_CHANNELS, out_channels=channels,
               caption_channels=reference_patch ** 2 * channels, video_length=frames or sc.video_length)
    target = type(source).from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
    state, new = source.state_dict(), target.state_dict()
    p, inner = sc.patch_size, source.proj_out.in_features
    out_old = source.proj_out.out_features // (p * p)
    for name, value in new.items():
        old = state.get(name)
        if name == "pos_embed.proj.weight":
            value.zero_()
            value[:, :old.shape[1]] = old[:, :channels]
        elif name == "proj_out.weight":
            value.copy_(old.reshape(p * p, out_old, inner)[:, :channels].reshape(-1, inner))
        elif name == "proj_out.bias":
            value.copy_(old.reshape(p * p, out_old)[:, :channels].reshape(-1))
        elif old is not None and old.shape == value.shape:
            value.copy_(old)
    target.load_state_dict(new)
    return target


def denoiser_blocks(model) -> dict[str, list[str]]:
    """The residual blocks of a LatteTransformer3DModel by kind, as module names in forward order:
    ``{'spatial': ['transformer_blocks.0', …], 'temporal': ['temporal_transformer_blocks.0', …]}``. Block k of each
    list runs as a pair (spatial then temporal); each returns its input's shape, so either can be skipped alone."""
    return {"spatial": [f"transformer_blocks.{i}" for i in range(len(model.transformer_blocks))],
            "temporal": [f"temporal_transformer_blocks.{i}" for i in range(len(model.temporal_transformer_blocks))]}


def zero_init_temporal(model) -> None:
    """Zero the output projections (attention ``to_out`` and feed-forward last linear) of every temporal block, so
    each temporal block is the identity until trained: phase 3 starts from exactly the image model's output."""
    with torch.no_grad():
        for block in model.temporal_transformer_blocks:
            for layer in (block.attn1.to_out[0], block.ff.net[-1]):
                layer.weight.zero_()
                layer.bias.zero_()


def reference_tokens(latents: torch.Tensor, patch: int) -> torch.Tensor:
    """Cut reference latents (B, C, h, w) into non-overlapping p × p patches, row-major:
    tokens[b, i·(w/p) + j] = vec(latents[b, :, i·p:(i+1)·p, j·p:(j+1)·p])  in (c, dy, dx) order → (B, hw/p², C·p²)."""
    b, c, h, w = latents.shape
    if h % patch or w % patch:
        raise ValueError(f"latent size {h}×{w} is not a multiple of the patch size {patch}")
    x = latents.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def reference_condition(latents: torch.Tensor, patch: int) -> torch.Tensor:
    """The reference tokens the denoiser cross-attends to: :func:`reference_tokens` plus a fixed 2-D sin-cos
    position embedding of each patch's grid cell (MAE / DiT's ``get_2d_sincos_pos_embed``, width C·p²), so that
    attention can find *where* in the reference a patch lies, not only what it shows."""
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    tokens = reference_tokens(latents, patch)
    grid = (latents.shape[-2] // patch, latents.shape[-1] // patch)
    if tokens.shape[-1] % 4:
        raise ValueError(f"reference token width {tokens.shape[-1]} (C·p²) must be a multiple of 4 for the "
                         "2-D sin-cos position embedding")
    pos = get_2d_sincos_pos_embed(tokens.shape[-1], grid, base_size=grid[0], output_type="pt")
    return tokens + pos.to(tokens.dtype).to(tokens.device)


def pose_maps(conditions: torch.Tensor, latent_size: int) -> torch.Tensor:
    """OpenPose condition images uint8 (N, 3, H, W) → the pose input (N, 3, s, s) in [0, 1]: x/255, area-averaged
    to the latent grid (s = ``latent_size``). An all-black condition (no pose) maps to zeros."""
    x = conditions.float() / 255.0
    return F.adaptive_avg_pool2d(x, latent_size)


def takes_reference_input(model) -> bool:
    """Whether the denoiser's input channels include the reference latent (2C + 3 rather than C + 3)."""
    return model.config.in_channels == 2 * model.config.out_channels + POSE_CHANNELS


def denoise(model, noisy: torch.Tensor, timesteps: torch.Tensor, pose: torch.Tensor, reference: torch.Tensor,
            temporal: bool, reference_latent: torch.Tensor | None = None) -> torch.Tensor:
    """ε̂ of noisy latents (B, C, T, h, w) at ``timesteps`` (B,), given pose maps (B, 3, T, h, w), reference
    tokens (B, N, D) and — for a model that takes it (:func:`takes_reference_input`) — the reference latent
    (B, C, h, w), repeated over the frames; the temporal blocks run when ``temporal``. Returns (B, C, T, h, w)."""
    parts = [noisy, pose.to(noisy.dtype)]
    if takes_reference_input(model):
        if reference_latent is None:
            raise ValueError("this denoiser takes the reference latent as input channels: pass reference_latent")
        parts.append(reference_latent.to(noisy.dtype).unsqueeze(2).expand(-1, -1, noisy.shape[2], -1, -1))
    x = torch.cat(parts, dim=1)
    return model(x, timestep=timesteps, encoder_hidden_states=reference.to(noisy.dtype),
                 enable_temporal_attentions=temporal, return_dict=False)[0]


def guided_noise(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022):  ε = ε_u + s·(ε_c − ε_u)."""
    return uncond + scale * (cond - uncond)


def frame_windows(num_frames: int, length: int) -> list[list[int]]:
    """Frame indices of the windows a clip of ``num_frames`` is generated in, ``length`` frames each (the temporal
    blocks' clip length): consecutive windows, the last padded by repeating the final frame index."""
    starts = range(0, num_frames, length)
    return [[min(s + j, num_frames - 1) for j in range(length)] for s in starts]


def _uint8_chw(images: Sequence, size: int) -> torch.Tensor:
    """PIL images or uint8 (H, W, 3) arrays → uint8 (N, 3, size, size) (resized with area averaging if needed)."""
    from PIL import Image

    out = []
    for im in images:
        im = im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, np.uint8))
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BOX)
        out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
    return torch.stack(out)


class PoseVideoPipeline(DiffusionPipeline):
    """Reference image + pose sequence → video frames, with a :func:`build_denoiser` transformer, the VAE its
    latents come from and a DDIM (or DDPM) scheduler. ``settings`` (:class:`ConditioningSettings`) is saved beside
    the components as ``humantune_pose_video.json``."""

    model_cpu_offload_seq = "transformer->vae"

    def __init__(self, transformer, vae, scheduler) -> None:
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler)
        self.settings: ConditioningSettings | None = None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> PoseVideoPipeline:
        """Load a saved pipeline folder (components and ``humantune_pose_video.json``)."""
        settings = ConditioningSettings.read(path)
        pipe = super().from_pretrained(path, **kwargs)
        pipe.settings = settings
        return pipe

    def save_pretrained(self, path: str | os.PathLike, **kwargs) -> None:
        if self.settings is None:
            raise HumantuneError("PoseVideoPipeline.settings must be set before saving")
        super().save_pretrained(path, safe_serialization=True, **kwargs)
        self.settings.write(path)

    @property
    def latent_size(self) -> int:
        return self.transformer.config.sample_size

    @torch.no_grad()
    def encode_reference(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, 3, H, W) → (reference tokens (B, N, D), reference latent (B, C, h, w)): the VAE posterior mean,
        scaled; the tokens are its patches with their positions (:func:`reference_condition`)."""
        vae = self.vae
        x = (images.float() / 127.5 - 1.0).to(vae.device, vae.dtype)
        z = (vae.encode(x).latent_dist.mean - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor
        return reference_condition(z.float(), self.settings.reference_patch_size), z.float()

    @torch.no_grad()
    def __call__(self, reference_image, pose_frames: Sequence, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, generator: torch.Generator | None = None,
                 progress: bool = False) -> np.ndarray:
        """Generate one clip: ``reference_image`` (PIL or uint8 (H, W, 3)) of the person, ``pose_frames`` the
        OpenPose condition image of every frame to generate. Returns uint8 frames (T, H, W, 3), T = len(pose_frames),
        at the pipeline's resolution. A model without trained temporal blocks generates every frame independently;
        one with them generates windows of its clip length (the last padded by repeating the final pose)."""
        s = self.settings
        steps = num_inference_steps or s.num_inference_steps
        scale = s.guidance_scale if guidance_scale is None else guidance_scale
        if len(pose_frames) < 1:
            raise HumantuneError("pose_frames must hold at least one pose image")
        device, dtype = self.transformer.device, self.transformer.dtype
        size, h = s.resolution, self.latent_size
        poses = pose_maps(_uint8_chw(pose_frames, size), h)                      # (T, 3, h, w)
        ref, ref_latent = self.encode_reference(_uint8_chw([reference_image], size))   # (1, N, D), (1, C, h, w)
        t_total = len(poses)
        length = self.transformer.config.video_length if s.temporal else t_total
        windows = frame_windows(t_total, length)
        pose = torch.stack([poses[w] for w in windows]).permute(0, 2, 1, 3, 4).to(device, dtype)  # (W, 3, L, h, w)
        b = len(windows)
        cond_ref = ref.expand(b, -1, -1).to(device, dtype)
        cond_latent = ref_latent.expand(b, -1, -1, -1).to(device, dtype)
        latents = torch.randn((b, s.latent_channels, length, h, h), generator=generator, dtype=torch.float32)
        latents = latents.to(device, dtype) * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(steps, device=device)
        guided = scale != 1.0
        for t in self.progress_bar(self.scheduler.timesteps) if progress else self.scheduler.timesteps:
            x = self.scheduler.scale_model_input(latents, t)
            ts = torch.full((b,), int(t), device=device, dtype=torch.long)
            if guided:
                eps = denoise(self.transformer, torch.cat([x, x]), torch.cat([ts, ts]),
                              torch.cat([torch.zeros_like(pose), pose]),
                              torch.cat([torch.zeros_like(cond_ref), cond_ref]), s.temporal,
                              torch.cat([torch.zeros_like(cond_latent), cond_latent]))
                eps = guided_noise(*eps.chunk(2), scale)
            else:
                eps = denoise(self.transformer, x, ts, pose, cond_ref, s.temporal, cond_latent)
            latents = self.scheduler.step(eps, t, latents, generator=generator).prev_sample
        return self.decode(latents, windows, t_total)

    def decode(self, latents: torch.Tensor, windows: list[list[int]], num_frames: int) -> np.ndarray:
        """Window latents (W, C, L, h, w) → uint8 frames (T, H, W, 3), each frame from the first window holding it."""
        vae = self.vae
        z = latents.permute(0, 2, 1, 3, 4).reshape(-1, *latents.shape[1:2], *latents.shape[3:])
        z = z / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        images = vae.decode(z.to(vae.dtype)).sample.float()
        images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out, flat = [None] * num_frames, [i for w in windows for i in w]
        for k, i in enumerate(flat):
            if out[i] is None:
                out[i] = images[k]
        return np.stack(out)
