"""HG-DPO's image pool and its preference pairs (``shared/papers.md`` §2).

Per prompt, the current model draws N images (:func:`generate_pool`: image j of prompt p uses seed
``seed + p·N + j``, so an image does not depend on the batch it was drawn in; the pool is saved as PNGs with a
fingerprint of what made it, and a run interrupted part-way draws only the missing images). A pluggable reward
scores them (:func:`build_reward`, :func:`score_pool`; cached). Each curriculum stage turns the scored pool into
Pick-a-Pic pairs (:func:`select_pairs`, pure and tested, then :func:`materialise_pairs`):

- **easy**: winner = the best of the pool, loser = the worst (prompts whose best and worst scores tie give no pair);
- **normal**: winner from an intermediate domain between generated and real — ``blend``: (1 − α)·best generated +
  α·real, in pixel space (:func:`blend_pixels`) or in the VAE's latent space (:func:`blend_latents`, decoded back to
  an image); or ``reconstruction``: the real image noised to strength s and denoised by the current model
  (:func:`reconstruct`, img2img: SDEdit) — loser = the worst of the pool;
- **hard**: winner = the real image of the prompt, loser = a generated image (the worst, the best, or a random one
  of the pool: an option).

Scores order the pool best first, equal scores in image order (:func:`pool_order`); an image the reward could not
judge (a NaN score) takes part in no pair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from humantune.config import option
from humantune.data.preference_pairs import PreferencePair
from humantune.errors import ConfigError
from humantune.io import atomic_path, json_safe, write_json_atomic

StageKind = Literal["easy", "normal", "hard"]
NormalWinner = Literal["blend", "reconstruction"]
LoserChoice = Literal["worst", "best", "random"]


@dataclass
class RewardConfig:
    """The reward that ranks a pool."""

    name: Literal["mannequin", "anatomy", "attributes", "realism", "pickscore", "hpsv2", "imagereward"] = option(
        "mannequin", "mannequin: the offline sum of anatomy, attribute match and realism vs the real images "
                     "(humantune.eval.rewards.mannequin_reward); or one component; pickscore / hpsv2 / imagereward "
                     "from local weights (real photos)")
    weights: dict[str, float] | None = option(None, "mannequin: component weights (anatomy, attributes, realism); "
                                                    "null: humantune.eval.rewards.MANNEQUIN_REWARD_WEIGHTS")
    model: str | None = option(None, "pickscore: model folder or cached hub id (null: yuvalkirstain/PickScore_v1); "
                                     "hpsv2 / imagereward: the checkpoint file (required)")


@dataclass
class PoolConfig:
    """The image pool each stage draws from the current model."""

    images_per_prompt: int = option(8, "N images per prompt (the paper: 8; 2 is clearly worse)")
    prompts: int | None = option(None, "prompts per pool: the first K real images' captions (null: all)")
    seed: int = option(1000, "image j of prompt p is drawn with seed + p·N + j")
    batch_size: int = option(8, "images per generation batch")
    per_stage: bool = option(True, "draw a new pool from the current model at the start of every stage (false: "
                                   "the first stage's pool serves every stage)")
    reward: RewardConfig = option(RewardConfig(), "the reward that ranks the pool")

    def __post_init__(self) -> None:
        if self.images_per_prompt < 2:
            raise ValueError(f"images_per_prompt must be at least 2 (a best and a worst), got "
                             f"{self.images_per_prompt}")
        if self.prompts is not None and self.prompts < 1:
            raise ValueError(f"prompts must be at least 1, got {self.prompts}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


# ---------------------------------------------------------------------------------------------------------- ranking


def pool_order(scores: Sequence[float]) -> np.ndarray:
    """Indices of one prompt's pool, best (highest score) first; NaN scores last; ties keep the image order."""
    s = np.asarray(scores, np.float64)
    key = np.where(np.isnan(s), np.inf, -s)
    return np.argsort(key, kind="stable")


@dataclass(frozen=True)
class PairChoice:
    """One pair to build: prompt ``prompt``'s ``winner`` ("generated", "real", "blend" or "reconstruction"; the
    last two mix ``winner_index``'s image with the real one) against generated image ``loser_index``."""

    prompt: int
    winner: str
    winner_index: int | None
    loser_index: int


def judged(scores: Sequence[float]) -> np.ndarray:
    """The images of one pool the reward could judge (finite score), best first (:func:`pool_order`)."""
    order = pool_order(scores)
    return order[np.isfinite(np.asarray(scores, np.float64)[order])]


def choose_loser(scores: Sequence[float], how: LoserChoice, rng: np.random.Generator) -> int:
    """The generated loser of a hard pair among the judged images: the worst, the best, or a uniformly random
    one."""
    order = judged(scores)
    if how == "worst":
        return int(order[-1])
    if how == "best":
        return int(order[0])
    if how == "random":
        return int(order[rng.integers(len(order))])
    raise ValueError(f"loser must be worst, best or random, got {how!r}")


def select_pairs(scores: np.ndarray, kind: StageKind, normal_winner: NormalWinner = "blend",
                 hard_loser: LoserChoice = "worst", seed: int = 0) -> list[PairChoice]:
    """The pairs of a stage from a scored pool ``scores`` (P prompts × N images). Only images the reward could
    judge (a finite score) take part; a prompt with none gives no pair.

    - easy: (best generated, worst generated), skipped where the best and worst scores are equal: no preference to
      learn;
    - normal: (``normal_winner`` made from the best generated image and the real one, worst generated);
    - hard: (real image, :func:`choose_loser` with ``hard_loser``; ``random`` draws from ``seed``)."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (prompts, images ≥ 2), got shape {scores.shape}")
    if kind not in ("easy", "normal", "hard"):
        raise ValueError(f"kind must be easy, normal or hard, got {kind!r}")
    rng = np.random.default_rng(seed)
    pairs = []
    for p, row in enumerate(scores):
        order = judged(row)
        if len(order) == 0:
            continue
        best, worst = int(order[0]), int(order[-1])
        if kind == "easy":
            if row[best] > row[worst]:
                pairs.append(PairChoice(p, "generated", best, worst))
        elif kind == "normal":
            pairs.append(PairChoice(p, normal_winner, best, worst))
        else:
            pairs.append(PairChoice(p, "real", None, choose_loser(row, hard_loser, rng)))
    return pairs


# ---------------------------------------------------------------------------------------------------------- winners


def blend_pixels(generated: Image.Image, real: Image.Image, alpha: float) -> Image.Image:
    """The pixel-space intermediate image  x = (1 − α)·x_generated + α·x_real  (α = 0: the generated image, 1: the
    real one), rounded to uint8; ``real`` is resized to the generated image's size."""
    g = np.asarray(generated.convert("RGB"), np.float64)
    r = np.asarray(real.convert("RGB").resize(generated.size, Image.BILINEAR), np.float64)
    return Image.fromarray(np.clip(np.rint((1 - alpha) * g + alpha * r), 0, 255).astype(np.uint8))


@torch.no_grad()
def blend_latents(vae, generated: Sequence[Image.Image], real: Sequence[Image.Image], alpha: float
                  ) -> list[Image.Image]:
    """The latent-space intermediate images  x = D((1 − α)·E(x_generated) + α·E(x_real))  with the VAE's posterior
    means E and its decoder D (scaling cancels in the blend)."""
    from humantune.data.prepare import to_chw
    from humantune.models.encoding import to_unit_range

    out = []
    for g, r in zip(generated, real):
        x = torch.stack([to_chw(g.convert("RGB")), to_chw(r.convert("RGB").resize(g.size, Image.BILINEAR))])
        z = vae.encode(to_unit_range(x).to(vae.device, vae.dtype)).latent_dist.mean
        y = vae.decode((1 - alpha) * z[:1] + alpha * z[1:]).sample[0].float().clamp(-1, 1)
        out.append(Image.fromarray(((y + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()))
    return out


def img2img_pipeline(pipe):
    """The img2img pipeline of ``pipe``'s family sharing its components (SDEdit: noise to a strength, denoise)."""
    from diffusers import (
        StableDiffusion3Img2ImgPipeline, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline,
    )

    if isinstance(pipe, StableDiffusionXLPipeline):
        out = StableDiffusionXLImg2ImgPipeline(**pipe.components)
    elif isinstance(pipe, StableDiffusionPipeline):
        parts = {k: v for k, v in pipe.components.items() if k not in ("safety_checker", "feature_extractor")}
        out = StableDiffusionImg2ImgPipeline(**parts, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    else:
        out = StableDiffusion3Img2ImgPipeline(**pipe.components)
    out.set_progress_bar_config(disable=True)
    return out


def reconstruct(pipe, real: Sequence[Image.Image], captions: Sequence[str], strength: float, seeds: Sequence[int],
                generation: dict, progress: bool = False) -> list[Image.Image]:
    """HG-DPO's reconstruction winners ("SDRecon"): each real image noised to ``strength`` s ∈ (0, 1] of the
    sampling schedule and denoised by the current model with its caption (img2img), seeded per image."""
    from humantune.models.generation import generate_images

    kwargs = {k: v for k, v in generation.items() if k not in ("height", "width")}
    return generate_images(img2img_pipeline(pipe), list(captions), per_image_seeds=list(seeds), progress=progress,
                           image=list(real), strength=strength, **kwargs)


def materialise_pairs(choices: Sequence[PairChoice], pool: Sequence[Sequence[Image.Image]],
                      real: Sequence[Image.Image], captions: Sequence[str],
                      winners: dict[int, Image.Image] | None = None) -> list[PreferencePair]:
    """The :class:`~humantune.data.preference_pairs.PreferencePair` of each choice (label 1): winner = the pool
    image, the real image, or ``winners[prompt]`` (the blend / reconstruction made for that prompt)."""
    pairs = []
    for c in choices:
        if c.winner == "generated":
            winner = pool[c.prompt][c.winner_index]
        elif c.winner == "real":
            winner = real[c.prompt]
        else:
            if winners is None or c.prompt not in winners:
                raise ValueError(f"pair of prompt {c.prompt} needs its {c.winner} winner")
            winner = winners[c.prompt]
        pairs.append(PreferencePair(winner, pool[c.prompt][c.loser_index], captions[c.prompt], 1.0))
    return pairs


# ---------------------------------------------------------------------------------------------------------- the pool


def pool_seeds(prompts: int, n: int, seed: int) -> list[list[int]]:
    """Seed of image j of prompt p: seed + p·N + j."""
    return [[seed + p * n + j for j in range(n)] for p in range(prompts)]


def _fingerprint_matches(path: Path, fingerprint: dict) -> bool:
    return path.is_file() and json.loads(path.read_text()) == json_safe(fingerprint)


def generate_pool(pipe, prompts: Sequence[str], n: int, seed: int, folder: Path, generation: dict,
                  fingerprint: dict, batch_size: int = 8, progress: bool = True,
                  generate: Callable[[list[str], list[int]], list[Image.Image]] | None = None
                  ) -> list[list[Image.Image]]:
    """N images per prompt from ``pipe`` as it is now, saved as ``folder/images/PPPPP_JJ.png``. A folder whose
    ``pool.json`` equals ``fingerprint`` (what made the pool: model weights, prompts, N, seed, settings) keeps the
    images it has and draws only the missing ones; another fingerprint starts the pool over. ``generate(prompts,
    seeds)``: how to draw images (default: :func:`~humantune.models.generation.generate_images` of ``pipe`` with
    ``generation``)."""
    from humantune.models.generation import generate_images

    if generate is None:
        def generate(chunk_prompts, chunk_seeds):
            return generate_images(pipe, chunk_prompts, per_image_seeds=chunk_seeds, batch_size=batch_size,
                                   progress=False, **generation)

    images_dir, manifest = folder / "images", folder / "pool.json"
    if not _fingerprint_matches(manifest, fingerprint):
        if images_dir.is_dir():
            for old in images_dir.glob("*.png"):
                old.unlink()
        images_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(manifest, json_safe(fingerprint))
    seeds = pool_seeds(len(prompts), n, seed)
    jobs = [(p, j) for p in range(len(prompts)) for j in range(n)
            if not (images_dir / f"{p:05d}_{j:02d}.png").is_file()]
    bar = tqdm(total=len(jobs), desc=f"image pool ({len(prompts)} prompts × {n})", unit="image",
               disable=not progress or not jobs)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        made = generate([prompts[p] for p, _ in chunk], [seeds[p][j] for p, j in chunk])
        for (p, j), image in zip(chunk, made):
            with atomic_path(images_dir / f"{p:05d}_{j:02d}.png") as tmp:
                image.save(tmp, format="PNG")
        bar.update(len(chunk))
    bar.close()
    return read_pool(folder, len(prompts), n)


def read_pool(folder: Path, prompts: int, n: int) -> list[list[Image.Image]]:
    """The pool images of ``folder``, prompt by prompt."""
    return [[Image.open(folder / "images" / f"{p:05d}_{j:02d}.png").convert("RGB") for j in range(n)]
            for p in range(prompts)]


def build_reward(cfg: RewardConfig, reference: Sequence[Image.Image | np.ndarray]):
    """The pool's :class:`~humantune.eval.rewards.RewardModel` (``reference``: the real images, for realism)."""
    from humantune.eval import rewards

    if cfg.name == "mannequin":
        return rewards.mannequin_reward(reference, cfg.weights)
    if cfg.name == "realism":
        return rewards.RealismReward(reference)
    if cfg.name in ("hpsv2", "imagereward"):
        if cfg.model is None:
            raise ConfigError(f"pool.reward.model: the {cfg.name} reward needs its checkpoint file")
        return rewards.load_reward(cfg.name, checkpoint=cfg.model)
    if cfg.name == "pickscore" and cfg.model is not None:
        return rewards.load_reward("pickscore", model=cfg.model)
    return rewards.load_reward(cfg.name)


def score_pool(pool: Sequence[Sequence[Image.Image]], prompts: Sequence[str], reward, folder: Path,
               fingerprint: dict, progress: bool = True) -> np.ndarray:
    """Reward of every pool image, (P, N) float64, cached in ``folder/scores.json`` under ``fingerprint``."""
    path = folder / "scores.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == json_safe(fingerprint):
            return np.array([[np.nan if v is None else v for v in row] for row in saved["scores"]], np.float64)
    rows = []
    for images, prompt in tqdm(list(zip(pool, prompts)), desc="scoring the pool", unit="prompt",
                               disable=not progress):
        rows.append(np.asarray(reward.score(list(images), [prompt] * len(images)), np.float64))
    scores = np.stack(rows)
    write_json_atomic(path, {"fingerprint": json_safe(fingerprint),
                             "scores": [[None if np.isnan(v) else float(v) for v in row] for row in scores]})
    return scores
