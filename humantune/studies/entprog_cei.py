"""``humantune entprog cei``: Conditional Entropy Inflation of every residual block of a denoiser (papers.md §3).

For ~1,000 random (x_t, t, c) — training images' latents noised at random levels with their own captions — the
denoiser predicts ε̂ once with every block and once with each block skipped
(:func:`humantune.models.blocks.skip_block`);
π(b) = log(σ_skip(b)(ε̂) / σ(ε̂)) (:func:`humantune.train.progressive.cei_priority`) in all four readings (σ per
sample or pooled; mean of log-ratios or log of the mean ratio). Writes ``OUT/cei.json`` (scores in block order per
reading, the ranking of the chosen reading, the settings and the digest) and ``OUT/cei.png`` (bar plot). The
result is cached by a digest of the denoiser's weights, the data and the settings: the same call again reads it.

Also home of what Ent-Prog's recipe shares with it: :class:`EncodedData` (a dataset's VAE latents and cached text
conditioning by sample index), :func:`fixed_noised` (noised batches drawn once from a seed: CEI's samples and the
recipe's fixed held-out evaluation) and :func:`predict` (the denoiser call of each family).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from humantune.config import option
from humantune.data.mannequin.world import MannequinConfig
from humantune.data.sources import DataSource, open_source
from humantune.io import json_safe, write_bytes_atomic, write_json_atomic
from humantune.losses.objectives import NoisedLatents
from humantune.models.blocks import residual_blocks, skip_block
from humantune.models.encoding import PromptConditioning, digest, encode_latent_stats
from humantune.models.families import FAMILIES, denoise, family_of
from humantune.train.progressive import cei_priority, rank_blocks, sample_moments

READINGS = [("sample", "log_ratio"), ("sample", "ratio"), ("pooled", "log_ratio")]
"""(sigma, average) readings of CEI that differ (pooled σ gives one ratio, so its two averages agree)."""


@dataclass
class CeiConfig:
    """How CEI priorities are measured."""

    samples: int = option(1000, "random (x_t, t, c) samples (the paper: ~1,000)")
    batch_size: int = option(50, "samples per forward pass")
    sigma: Literal["sample", "pooled"] = option("sample", "σ of each sample's prediction, or one σ over all samples")
    average: Literal["log_ratio", "ratio"] = option("log_ratio", "mean of log-ratios, or log of the mean ratio")
    seed: int = option(0, "seed of the samples' latents, noise, levels and captions")

    def __post_init__(self) -> None:
        if self.samples < 2 or self.batch_size < 1:
            raise ValueError(f"samples must be at least 2 and batch_size at least 1, got {self.samples}, "
                             f"{self.batch_size}")


# ---------------------------------------------------------------------------------------------------------- inputs


@dataclass
class NoisedBatch:
    """A batch at its drawn noise level (``noised``: the objective's NoisedLatents) with its text conditioning:
    ``cond`` (hidden states) and ``pooled`` (SD3's pooled projections, or None)."""

    noised: NoisedLatents
    cond: torch.Tensor
    pooled: torch.Tensor | None

    def to(self, device) -> NoisedBatch:
        moved = NoisedLatents(**{k: v.to(device) for k, v in vars(self.noised).items()})
        return NoisedBatch(moved, self.cond.to(device), None if self.pooled is None else self.pooled.to(device))


class EncodedData:
    """A dataset's VAE posteriors (N, 2, C, h, w) and text conditioning by sample index, at ``resolution``."""

    def __init__(self, pipe, samples, resolution: int, max_sequence_length: int = 77) -> None:
        from humantune.data.prepare import resize_centre_crop, to_chw

        self.family = family_of(pipe)
        vae = pipe.vae
        pixels = torch.stack([to_chw(resize_centre_crop(s.image, resolution)) for s in samples])
        self.latents = encode_latent_stats(vae, pixels)
        self.shift = (vae.config.shift_factor or 0.0) if self.family.name == "sd3" else 0.0
        self.scale = vae.config.scaling_factor
        self.captions = [s.caption for s in samples]
        self.text = PromptConditioning(pipe, self.family, self.captions, False, max_sequence_length)

    def __len__(self) -> int:
        return len(self.latents)

    def batch(self, index: torch.Tensor, objective, generator) -> NoisedBatch:
        """z₀ from the cached posteriors, then noise and level from ``generator``, in that order."""
        from humantune.losses.objectives import sample_latents

        z0 = sample_latents(self.latents[index], generator, self.shift, self.scale)
        cond, pooled = self.text(index)
        return NoisedBatch(objective.noise(z0, generator), cond, pooled)


def objective_of(pipe):
    """The training objective of a pipeline's family (rectified flow with the scheduler's shift; DDPM)."""
    from humantune.losses.objectives import DDPMObjective, FlowMatchingConfig, RectifiedFlowObjective

    if family_of(pipe).name == "sd3":
        return RectifiedFlowObjective(FlowMatchingConfig(), float(pipe.scheduler.config.get("shift", 1.0)))
    from diffusers import DDPMScheduler

    return DDPMObjective(DDPMScheduler.from_config(pipe.scheduler.config))


def fixed_noised(data: EncodedData, objective, n: int, batch_size: int, seed: int) -> list[NoisedBatch]:
    """``n`` samples (sample indices drawn with replacement), their z₀, noise and levels drawn once from ``seed``:
    the same batches every time (CEI's random (x_t, t, c); the fixed held-out evaluation)."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, len(data), (n,), generator=g) if n != len(data) else torch.arange(n)
    return [data.batch(index[i:i + batch_size], objective, g) for i in range(0, n, batch_size)]


def predict(family_name: str, denoiser, batch: NoisedBatch) -> torch.Tensor:
    """The denoiser's output on a batch, called as its family calls it (:func:`humantune.models.families.denoise`)."""
    batch = batch.to(next(denoiser.parameters()).device)
    return denoise(FAMILIES[family_name], denoiser, batch.noised.noisy, batch.noised.timesteps, batch.cond,
                   batch.pooled)


# ---------------------------------------------------------------------------------------------------------- CEI


@torch.no_grad()
def block_priorities(denoiser, run, batches, blocks=None, progress: bool = True) -> dict:
    """π(b) of every residual block of ``denoiser`` (or of ``blocks``, a subset in forward order) in every reading:
    ``run(batch)`` returns ε̂ of a batch with the denoiser as it currently is (blocks skipped inside
    :func:`skip_block`). Returns ``{"blocks": [names in forward order],
    "priorities": {"sigma/average": {name: π}}}``."""
    blocks = residual_blocks(denoiser) if blocks is None else blocks
    was_training = denoiser.training
    denoiser.eval()
    full, skipped = [], {b.name: [] for b in blocks}
    try:
        for batch in tqdm(batches, desc="CEI", unit="batch", disable=not progress):
            full.append(sample_moments(run(batch)))
            for block in blocks:
                with skip_block(block):
                    skipped[block.name].append(sample_moments(run(batch)))
    finally:
        denoiser.train(was_training)
    full_m = torch.cat(full)
    priorities = {}
    for sigma, average in READINGS:
        priorities[f"{sigma}/{average}"] = {b.name: cei_priority(full_m, torch.cat(skipped[b.name]), sigma, average)
                                            for b in blocks}
    return {"blocks": [b.name for b in blocks], "priorities": priorities}


def reading_key(cfg: CeiConfig) -> str:
    return f"{cfg.sigma}/{'log_ratio' if cfg.sigma == 'pooled' else cfg.average}"


def cei_ranking(result: dict, cfg: CeiConfig) -> list[str]:
    """Block names by descending π of the configured reading."""
    return rank_blocks(result["priorities"][reading_key(cfg)])


def cei_bar_plot(result: dict, cfg: CeiConfig) -> bytes:
    """PNG bytes: π(b) per block in forward order (configured reading)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = result["priorities"][reading_key(cfg)]
    names = result["blocks"]
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(names) + 1), 3), dpi=90)
    ax.bar(range(len(names)), [scores[n] for n in names], color="#4a7ab5")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=70, ha="right", fontsize=6)
    ax.set_ylabel("π(b) = log σ_skip / σ")
    ax.set_title(f"CEI per block ({reading_key(cfg)}, {result['samples']} samples)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def cached_cei(out: Path, denoiser, run, batches: list, cfg: CeiConfig, data_key: str, blocks=None,
               progress: bool = True) -> dict:
    """``OUT/cei.json`` when its digest (denoiser weights + data + settings + blocks) matches, else computed by
    :func:`block_priorities` and written with ``OUT/cei.png``."""
    import json

    names = [b.name for b in (residual_blocks(denoiser) if blocks is None else blocks)]
    key = digest(denoiser, data_key, repr(sorted(vars(cfg).items())), names)
    path = out / "cei.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("digest") == key:
            return cached
    t0 = time.perf_counter()
    result = block_priorities(denoiser, run, batches, blocks, progress)
    result.update(samples=cfg.samples, reading=reading_key(cfg),
                  settings=dict(vars(cfg)), seconds=time.perf_counter() - t0, digest=key)
    result["ranking"] = cei_ranking(result, cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, json_safe(result))
    write_bytes_atomic(out / "cei.png", cei_bar_plot(result, cfg))
    return result


def cei_study(model: str, out: Path, data: str | None = None, cfg: CeiConfig = CeiConfig(),
              resolution: int | None = None, progress: bool = True) -> dict:
    """The CLI body: load ``model`` (pipeline: shipped name, directory or hub id), encode ``data`` (a pose folder;
    None: 64 images of a fresh mannequin world), measure CEI (cached) and write OUT/cei.json and OUT/cei.png."""
    from humantune.models.generation import load_pipeline, model_info, resolve_model

    pipe = load_pipeline(model)
    source = resolve_model(model)
    info = model_info(Path(source)) if Path(source).is_dir() else {}
    family = family_of(pipe, f"--model {model}")
    denoiser = pipe.components[family.denoiser]
    size = resolution or denoiser.config.sample_size * pipe.vae_scale_factor
    where = DataSource(kind="pose_folder", path=data) if data else DataSource(world=MannequinConfig(n=64, seed=7,
                                                                                                    size=size))
    samples = open_source(where, "--data", out / "world")
    length = 0 if family.name != "sd3" else int(info.get("generation", {}).get("max_sequence_length", 77))
    encoded = EncodedData(pipe, samples, size, length)
    batches = fixed_noised(encoded, objective_of(pipe), cfg.samples, cfg.batch_size, cfg.seed)
    return cached_cei(out, denoiser, lambda b: predict(family.name, denoiser, b), batches, cfg,
                      digest(encoded.latents, encoded.text.embeds), progress=progress)
