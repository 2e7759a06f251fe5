"""Encoding a training set once: VAE posteriors and text embeddings by sample index, cached on disk under a digest
of the encoder weights and the inputs.

Every recipe trains on cached encodings: sample ``i`` of a dataset has row ``i`` of every cached tensor, so a batch
is a list of sample indices and can never pair one sample's latents with another's caption (the pitfall of
diffusers' SD3 DreamBooth script, ``shared/papers.md`` §4). :func:`cached_tensors` keeps them in one
``.safetensors`` file whose metadata holds the digest: a resumed run skips the encoding, a changed encoder or
dataset re-encodes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from humantune.io import atomic_path


def digest(*parts: torch.nn.Module | torch.Tensor | np.ndarray | str | bytes | Iterable) -> str:
    """sha256 over modules (their state dicts, by name), tensors, arrays, strings and bytes, in order; lists and
    tuples of those are hashed item by item."""
    h = hashlib.sha256()

    def add(part) -> None:
        if isinstance(part, torch.nn.Module):
            for name, tensor in sorted(part.state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(part, torch.Tensor):
            h.update(part.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, str):
            h.update(part.encode())
        elif isinstance(part, bytes):
            h.update(part)
        else:
            for item in part:
                add(item)

    for p in parts:
        add(p)
    return h.hexdigest()


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [−1, 1], the range the VAE encodes."""
    return images_uint8.float() / 127.5 - 1.0


@torch.no_grad()
def encode_latent_stats(vae, images: torch.Tensor, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """VAE posterior mean and std of every image, by sample index: ``images`` uint8 (N, 3, H, W) → float32
    (N, 2, C, h, w) on the CPU (:func:`humantune.losses.objectives.sample_latents` draws z₀ from it)."""
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc="encoding latents", unit="batch", disable=not progress):
        x = to_unit_range(images[i:i + batch_size]).to(vae.device, vae.dtype)
        d = vae.encode(x).latent_dist
        out.append(torch.stack([d.mean, d.std], 1).float().cpu())
    return torch.cat(out)


def cached_tensors(path: str | os.PathLike | None, key: str, compute: Callable[[], dict[str, torch.Tensor]],
                   write: bool = True) -> dict[str, torch.Tensor]:
    """The tensors stored at ``path`` when its digest is ``key``; else ``compute()``, written there atomically
    (when ``write``: the main process) for the next run. ``path`` None: no cache, always compute."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    if path is not None and Path(path).is_file():
        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("digest") == key:
                return load_file(str(path))
    tensors = compute()
    if path is not None and write:
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"digest": key})
    return tensors


class PromptConditioning:
    """The text conditioning of a dataset's captions, by sample index, exactly as the pipeline's ``encode_prompt``
    builds it.

    With frozen text encoders the embeddings (and SDXL's / SD3's pooled embeddings) are computed once with the
    pipeline's own ``encode_prompt``; with trained ones (a text-encoder LoRA) the token ids are kept and every call
    encodes them with the encoders it is given (:func:`humantune.models.tiny.encode_prompt_sd` /
    :func:`~humantune.models.tiny.encode_prompt_sdxl` / :func:`~humantune.models.tiny.encode_prompt_sd3`), while
    SD3's T5 slots (zeros without T5) stay cached."""

    @torch.no_grad()
    def __init__(self, pipe, family, captions: list[str], trained: bool, max_sequence_length: int = 0,
                 device: str | torch.device = "cpu", batch_size: int = 16) -> None:
        from humantune.models.tokenizer import tokenize

        self.family, self.trained, self.max_sequence_length = family, trained, max_sequence_length
        self.joint_attention_dim = getattr(pipe.components[family.denoiser].config, "joint_attention_dim", None)
        unique = list(dict.fromkeys(captions))
        where = torch.tensor([unique.index(c) for c in captions])
        chunks = [unique[i:i + batch_size] for i in range(0, len(unique), batch_size)]
        if family.name == "sd":
            embeds = torch.cat([pipe.encode_prompt(c, device, 1, False)[0].float().cpu() for c in chunks])
            pooled = None
        else:
            # SD3's encode_prompt also takes the T5 prompt and its length; SDXL's has neither
            extra = {"prompt_3": None, "max_sequence_length": max_sequence_length} if family.name == "sd3" else {}
            parts = [pipe.encode_prompt(c, None, device=device, do_classifier_free_guidance=False, **extra)
                     for c in chunks]
            embeds = torch.cat([p[0].float().cpu() for p in parts])
            pooled = torch.cat([p[2].float().cpu() for p in parts])
        self.embeds = embeds[where]
        self.pooled = None if pooled is None else pooled[where]
        self.token_ids = [tokenize(pipe.components[k], captions) for k in family.tokenizers] if trained else None

    def __call__(self, samples: torch.Tensor, encoders: dict[str, torch.nn.Module] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(encoder hidden states, pooled projections or None) of ``samples``; ``encoders`` (component name →
        module, e.g. the engine-wrapped adapted text encoders) are used when the text encoders train."""
        from humantune.models.tiny import encode_prompt_sd, encode_prompt_sd3, encode_prompt_sdxl

        if not self.trained:
            return self.embeds[samples], None if self.pooled is None else self.pooled[samples]
        device = next(encoders["text_encoder"].parameters()).device
        ids = [t[samples].to(device) for t in self.token_ids]
        if self.family.name == "sd":
            return encode_prompt_sd(encoders["text_encoder"], ids[0]), None
        if self.family.name == "sdxl":
            return encode_prompt_sdxl(encoders["text_encoder"], encoders["text_encoder_2"], ids[0], ids[1])
        length = self.max_sequence_length
        clip, pooled = encode_prompt_sd3(encoders["text_encoder"], encoders["text_encoder_2"], ids[0], ids[1],
                                         self.joint_attention_dim, length)
        t5 = self.embeds[samples][:, -length:].to(device)   # zeros without T5, as the pipeline fills them
        return torch.cat([clip[:, :-length], t5], dim=1), pooled
