"""Training batches of pose-conditioned recipes (controlnet-pose): samples prepared at the training resolution
(:func:`humantune.data.prepare.prepare_sample`) and either encoded once into memory (:class:`CachedData`: VAE
posteriors, text embeddings, conditions and latent heatmaps by sample index) or prepared per item for DataLoader
workers on large datasets (:class:`StreamedData`)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from humantune.data.prepare import prepare_sample, to_chw
from humantune.data.sample import PoseSample
from humantune.losses.heatmap import HeatmapConfig, latent_heatmap
from humantune.models.encoding import encode_latent_stats
from humantune.models.tiny import encode_prompt_sd
from humantune.models.tokenizer import tokenize


class CachedData:
    """Every training sample encoded once: latent posterior stats (N, 2, C, h, w), text embeddings (N, L, D),
    conditions uint8 (N, 3, R, R), and latent heatmaps (N, h, w) per heatmap geometry, all indexed by sample."""

    def __init__(self, latents: torch.Tensor, embeds: torch.Tensor, conditions: torch.Tensor,
                 keypoints: list[np.ndarray], masks: list[np.ndarray | None]) -> None:
        self.latents, self.embeds, self.conditions = latents, embeds, conditions
        self.keypoints, self.masks = keypoints, masks
        self.heatmaps: dict[tuple, torch.Tensor] = {}

    @classmethod
    @torch.no_grad()
    def encode(cls, dataset: Sequence[PoseSample], resolution: int, vae, text_encoder, tokenizer,
               progress: bool) -> CachedData:
        """Prepare and encode ``dataset`` in chunks (only the encodings stay in memory)."""
        keypoints, masks, latents, embeds, conditions = [], [], [], [], []
        n = len(dataset)
        bar = tqdm(total=n, desc="encoding training set", unit="img", disable=not progress)
        for start in range(0, n, 32):
            chunk = [prepare_sample(dataset[i], resolution) for i in range(start, min(n, start + 32))]
            latents.append(encode_latent_stats(vae, torch.stack([to_chw(s.image) for s in chunk])))
            ids = tokenize(tokenizer, [s.caption for s in chunk]).to(text_encoder.device)
            embeds.append(encode_prompt_sd(text_encoder, ids).float().cpu())
            conditions.append(torch.stack([to_chw(s.condition) for s in chunk]))
            keypoints += [s.keypoints for s in chunk]
            masks += [s.mask for s in chunk]
            bar.update(len(chunk))
        bar.close()
        return cls(torch.cat(latents), torch.cat(embeds), torch.cat(conditions), keypoints, masks)

    def __len__(self) -> int:
        return len(self.latents)

    def heatmap(self, cfg: HeatmapConfig, latent_size: tuple[int, int], progress: bool) -> tuple:
        """Compute (once per geometry) every sample's latent heatmap; return the key of :meth:`collate_fn`."""
        key = cfg.geometry()
        if key not in self.heatmaps:
            size = (self.conditions.shape[-1], self.conditions.shape[-2])
            self.heatmaps[key] = torch.stack([
                torch.from_numpy(latent_heatmap(self.keypoints[i], self.masks[i], size, cfg, latent_size,
                                                f"training sample {i}"))
                for i in tqdm(range(len(self)), desc=f"heatmaps ({cfg.kind})", unit="img", disable=not progress)])
        return key

    def collate_fn(self, heatmap_key: tuple | None) -> Callable[[list[int]], dict]:
        def collate(indices: list[int]) -> dict:
            index = torch.tensor(indices)
            batch = {"latent_stats": self.latents[index], "prompt_embeds": self.embeds[index],
                     "condition": self.conditions[index]}
            if heatmap_key is not None:
                batch["heatmap"] = self.heatmaps[heatmap_key][index]
            return batch
        return collate


class StreamedData(Sequence):
    """Training samples prepared per item (for DataLoader workers): pixels uint8, the condition (uint8), token ids
    and, for a heatmap stage, the latent heatmap; the loss encodes them."""

    def __init__(self, dataset: Sequence[PoseSample], resolution: int, tokenizer, latent_size: tuple[int, int],
                 heatmap: HeatmapConfig | None) -> None:
        self.dataset, self.resolution, self.tokenizer = dataset, resolution, tokenizer
        self.latent_size, self.heatmap = latent_size, heatmap

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        s = prepare_sample(self.dataset[i], self.resolution)
        item = {"pixels": to_chw(s.image), "condition": to_chw(s.condition),
                "input_ids": tokenize(self.tokenizer, [s.caption])[0]}
        if self.heatmap is not None:
            item["heatmap"] = torch.from_numpy(latent_heatmap(
                s.keypoints, s.mask, (self.resolution, self.resolution), self.heatmap, self.latent_size,
                f"training sample {i}"))
        return item

    @staticmethod
    def collate(items: list[dict]) -> dict:
        return {k: torch.stack([item[k] for item in items]) for k in items[0]}
