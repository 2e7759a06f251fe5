"""Recipe: multi-stage ControlNet pose fine-tuning with the heatmap-guided loss (``shared/papers.md`` §1).

``humantune train controlnet-pose --config configs/controlnet_pose/quick.yaml --output-dir DIR`` trains a
``ControlNetModel`` on OpenPose conditions next to a frozen StableDiffusionPipeline-family base (VAE, UNet and text
encoder frozen; only the ControlNet learns), in stages declared by the config and run in sequence:

- each stage names its loss, ``plain`` (ε-MSE) or ``heatmap`` (:func:`~humantune.losses.heatmap.heatmap_weighted_mse`,
  W = w·H + 1 with H from the target pose: Gaussian keypoint/limb heatmaps, the person mask or a blurred skeleton
  mask), its length (``epochs`` or ``train.max_steps``) and its optimisation (a nested
  :class:`~humantune.train.engine.TrainConfig`); stage k+1 starts from stage k's ControlNet (or from the stage
  named by ``init_from``, which lets two stages branch from one, as the benchmark's ablation does); the first
  stage starts from ``ControlNetModel.from_unet(base UNet)`` or from ``controlnet_init``;
- every stage runs on the shared engine in ``OUT/<stage>/`` (metrics.jsonl, TensorBoard, checkpoints, validation
  grids) and ends by saving ``OUT/<stage>/controlnet`` (``ControlNetModel.save_pretrained``, atomic);
- validation every epoch: fixed held-out prompts and poses, generated with ``StableDiffusionControlNetPipeline``,
  saved as a grid with the target skeleton drawn over each image, and scored by mean OKS / AP of MediaPipe
  detections against the target poses (logged by the engine);
- after the last stage every stage's ControlNet (and the base without one) generates the held-out set into
  ``OUT/eval/<stage>/images`` and :func:`humantune.eval.runner.evaluate` scores it (default metrics: oks,
  attribute_accuracy, world_fd, ssim against the held-out images); ``OUT/results.json`` holds the numbers and
  ``OUT/report.html`` the metric table with 95 % intervals, side-by-side grids and the loss curves.

Running the same command again resumes: a stage whose ``controlnet`` directory exists is skipped, an interrupted
stage continues from its last checkpoint exactly (data order and noise are drawn from ``(seed, step)``), and an
evaluation whose inputs did not change is reused. ``--no-resume`` starts every stage over.

Data: the mannequin world (rendered into ``OUT/data/train`` and ``OUT/data/heldout``, two seeds that must differ),
a humantune pose folder, a COCO keypoints JSON with its images and captions, or Captioned COCO-Pose parquet
files. Images are resized (short side) and centre-cropped to ``resolution``, keypoints and masks with them; the
condition is the dataset's OpenPose image when it has one, else :func:`~humantune.data.openpose.draw_openpose` of
the keypoints.

Assumes: a StableDiffusionPipeline-family base (UNet2DConditionModel, AutoencoderKL, CLIP text encoder; SD1.5 and
the shipped tiny-sd); square training images. With ``cache: true`` (the default) VAE latents (posterior mean and
std), text embeddings, conditions and latent heatmaps are computed once, in memory, on every process, so a step
costs only the UNet and the ControlNet; for large datasets (Captioned COCO-Pose) set ``cache: false`` and they are
computed per batch instead. Validation and the final evaluation run on the main process (under ``accelerate
launch`` the other processes finish after the last stage). world_fd needs more than 128 evaluation images (the
width of its features). SDXL / SD3 ControlNets are not covered.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from humantune.config import config_to_dict, option, save_config
from humantune.data.loaders import (
    CaptionedCocoPoseDataset, CocoKeypointsDataset, PoseFolderDataset,
)
from humantune.data.mannequin.world import MannequinConfig, write_world
from humantune.data.openpose import draw_openpose
from humantune.data.sample import PoseSample
from humantune.errors import ConfigError, DataError, HumantuneError
from humantune.io import atomic_path, new_output_dir, write_json_atomic
from humantune.losses.denoising import ddpm_noisy_latents, ddpm_target, min_snr_weights, per_sample_mse
from humantune.losses.heatmap import (
    heatmap_weighted_mse, mask_heatmap, pose_heatmap, reduce_to_latent, skeleton_blur_mask,
)
from humantune.train.engine import Trainer, TrainConfig, read_metrics

RESERVED_STAGE_NAMES = ("base", "data", "eval", "logs", "checkpoints")
_STAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
WORLD_FEATURE_DIM = 128
"""Width of the world-feature net's features (humantune.eval.world_features.FEATURE_DIM): world_fd's covariances
are singular, and the distance unstable, with this many images or fewer."""
CONDITIONING_CHANNELS = (16, 32, 96, 256)
"""diffusers' ControlNet condition encoder widths for an f8 VAE (three stride-2 convolutions); a VAE with factor
2^k uses the first k + 1 of them, so the condition always lands at latent resolution."""


# ---------------------------------------------------------------------------------------------------------- config


@dataclass
class HeatmapConfig:
    """H of the heatmap-guided loss L_h = mean ‖W ⊙ (ε − ε_θ)‖², W = w·H + 1 (papers.md §1)."""

    kind: Literal["gaussian", "mask", "skeleton_blur"] = option(
        "gaussian", "gaussian: keypoint + limb Gaussians of the target pose reduced to latent size (the paper's "
                    "intent); mask: the person mask (needs masks: mannequin world, COCO with segmentations); "
                    "skeleton_blur: Stable-Pose-style blurred skeleton mask at latent size")
    w: float = option(1.0, "extra weight w (W = w·H + 1); Stable-Pose's α = 5 is w = 4 with placement outside")
    sigma: float | None = option(None, "gaussian: σ in image pixels (null: the long side / 32, 4 px at 128²)")
    limbs: Literal["coco17", "openpose18", "none"] = option(
        "coco17", "gaussian: limb segments added to the keypoints (COCO-17 skeleton, the OpenPose-18 limbs, or none)")
    reduce: Literal["area", "bilinear"] = option("area", "gaussian, mask: image → latent reduction")
    blur_sigma: float = option(1.0, "skeleton_blur: σ of the fall-off around the skeleton, in latent cells")
    placement: Literal["inside", "outside"] = option(
        "inside", "inside: ‖W ⊙ e‖² (the paper's equation, weight W²); outside: W ⊙ e² (HumanSD, Stable-Pose)")

    def __post_init__(self) -> None:
        if self.w < 0:
            raise ValueError(f"w must be at least 0, got {self.w}")
        if self.sigma is not None and self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if self.blur_sigma <= 0:
            raise ValueError(f"blur_sigma must be positive, got {self.blur_sigma}")

    def geometry(self) -> tuple:
        """What H depends on (w and placement only weight it): the key of the heatmap cache."""
        if self.kind == "gaussian":
            return (self.kind, self.sigma, self.limbs, self.reduce)
        if self.kind == "mask":
            return (self.kind, self.reduce)
        return (self.kind, self.blur_sigma)


@dataclass
class StageConfig:
    """One training stage."""

    name: str = option("stage1", "stage name: its directory OUT/<name> and its label in the report")
    loss: Literal["plain", "heatmap"] = option("plain", "plain: ε-MSE (stage 1 of the paper); heatmap: the "
                                                        "heatmap-guided loss (stage 2)")
    epochs: float | None = option(None, "passes over the training set; sets train.max_steps to "
                                        "ceil(epochs·N / (batch_size·gradient_accumulation_steps·processes))")
    init_from: str | None = option(None, "name of an earlier stage whose ControlNet this stage starts from (null: "
                                         "the previous stage; the first stage starts from controlnet_init)")
    heatmap: HeatmapConfig = option(HeatmapConfig(), "heatmap settings (loss: heatmap)")
    train: TrainConfig = option(
        TrainConfig(max_steps=100, batch_size=8, learning_rate=1e-4, lr_scheduler="constant", weight_decay=1e-2,
                    checkpoint_every=100, validate_every=0),
        "optimisation (validate_every 0: every epoch)")

    def __post_init__(self) -> None:
        if not _STAGE_NAME_RE.match(self.name) or self.name in RESERVED_STAGE_NAMES:
            raise ValueError(f"name {self.name!r} must be letters, digits, '_', '-', '.' (not starting with a "
                             f"symbol) and not one of {', '.join(RESERVED_STAGE_NAMES)}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")


@dataclass
class DataSource:
    """Where samples come from."""

    kind: Literal["mannequin", "pose_folder", "coco", "parquet"] = option(
        "mannequin", "mannequin: render `world`; pose_folder: a humantune pose folder at `path`; coco: a COCO "
                     "keypoints JSON at `path` with `image_dir` (and `captions`); parquet: Captioned COCO-Pose "
                     "parquet file(s) at `path` (a file, a folder or a glob)")
    world: MannequinConfig = option(MannequinConfig(n=1000, seed=0), "kind mannequin: the world to render")
    path: str | None = option(None, "pose_folder / coco / parquet: where the data is")
    image_dir: Path | None = option(None, "coco: the image folder")
    captions: Path | None = option(None, "coco: captions (JSONL, {file_name: caption} or COCO captions JSON); "
                                         "null: each image's 'caption' field")
    caption_column: str | None = option(None, "parquet: caption column (null: caption, then prompt, then text)")
    max_samples: int | None = option(None, "use only the first N samples")

    def __post_init__(self) -> None:
        if self.kind != "mannequin" and not self.path:
            raise ValueError(f"kind {self.kind} needs 'path'")
        if self.kind == "coco" and self.image_dir is None:
            raise ValueError("kind coco needs 'image_dir' (the images of the COCO JSON)")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, got {self.max_samples}")

    def identity(self) -> tuple:
        return ("mannequin", self.world.seed) if self.kind == "mannequin" else (self.kind, str(self.path))


@dataclass
class GenerationConfig:
    """How validation and evaluation images are generated (StableDiffusionControlNetPipeline)."""

    num_inference_steps: int | None = option(None, "sampling steps (null: the base's humantune.json, else 30)")
    guidance_scale: float | None = option(None, "classifier-free guidance (null: the base's humantune.json, else 7.5)")
    conditioning_scale: float = option(1.0, "controlnet_conditioning_scale")
    seed: int = option(0, "held-out sample i is generated with seed + i (the same for every stage)")

    def __post_init__(self) -> None:
        if self.num_inference_steps is not None and self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {self.num_inference_steps}")


@dataclass
class ValidationConfig:
    """Validation during training."""

    samples: int = option(4, "held-out samples (prompt + pose) generated at every validation (0: no validation)")


@dataclass
class EvalConfig:
    """The evaluation after the last stage."""

    samples: int = option(200, "held-out samples every stage generates and is scored on (0: no evaluation)")
    include_base: bool = option(True, "also evaluate the base model without a ControlNet")
    metrics: list[str] = option(["oks", "attribute_accuracy", "world_fd", "ssim"],
                                "humantune.eval metrics (world_fd and attribute_accuracy read mannequin images)")
    report_samples: int = option(8, "held-out samples shown side by side in report.html")
    lpips_weights: Path | None = option(None, "metric lpips: LPIPS linear-layer weights file (see humantune eval)")
    lpips_backbone_weights: Path | None = option(None, "metric lpips: torchvision AlexNet weights file")
    clip_model: str = option("openai/clip-vit-large-patch14", "metric clip_score: local CLIP model directory or "
                                                               "cached hub id")

    def __post_init__(self) -> None:
        from humantune.eval.runner import METRICS

        for name in self.metrics:
            if name not in METRICS:
                raise ValueError(f"unknown metric {name!r} in metrics; known: {', '.join(METRICS)}")
        if self.samples < 0 or self.report_samples < 0:
            raise ValueError("samples and report_samples must be at least 0")
        if "world_fd" in self.metrics and 0 < self.samples <= WORLD_FEATURE_DIM:
            raise ValueError(f"world_fd compares covariances of {WORLD_FEATURE_DIM}-d features and needs more than "
                             f"{WORLD_FEATURE_DIM} samples (got {self.samples}): raise samples or drop world_fd "
                             "from metrics")


@dataclass
class ControlNetPoseConfig:
    """``humantune train controlnet-pose``: multi-stage ControlNet pose fine-tuning (papers.md §1)."""

    base_model: str = option("tiny-sd", "StableDiffusionPipeline-family base: shipped name, directory or hub id")
    controlnet_init: str | None = option(None, "start the first stage from this ControlNetModel (directory or hub "
                                               "id, e.g. an OpenPose ControlNet); null: ControlNetModel.from_unet")
    conditioning_channels: list[int] | None = option(
        None, "widths of a new ControlNet's condition encoder (null: diffusers' 16, 32, 96, 256, truncated to the "
              "VAE's downsampling factor)")
    resolution: int | None = option(None, "training and generation size (null: the base UNet's sample size × the "
                                          "VAE factor: 128 for tiny-sd, 512 for SD1.5)")
    train_data: DataSource = option(DataSource(), "training samples")
    heldout_data: DataSource = option(DataSource(world=MannequinConfig(n=200, seed=1)),
                                      "held-out samples for validation and evaluation (never the training data)")
    cache: bool = option(True, "precompute latents, text embeddings, conditions and heatmaps once, in memory "
                               "(false: per batch, for large datasets)")
    snr_gamma: float | None = option(None, "Min-SNR-γ loss weighting (null: none)")
    stages: list[StageConfig] = option(
        [StageConfig(name="stage1", loss="plain", epochs=4.0),
         StageConfig(name="stage2", loss="heatmap", epochs=2.0)],
        "stages run in sequence (paper: 4 epochs plain, then 2 epochs heatmap)")
    generation: GenerationConfig = option(GenerationConfig(), "validation / evaluation sampling")
    validation: ValidationConfig = option(ValidationConfig(), "validation during training")
    eval: EvalConfig = option(EvalConfig(), "evaluation after the last stage")

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("stages must name at least one stage")
        names = [s.name for s in self.stages]
        for k, stage in enumerate(self.stages):
            if stage.name in names[:k]:
                raise ValueError(f"stages[{k}]: the stage name {stage.name!r} is used twice")
            if stage.init_from is not None and stage.init_from not in names[:k]:
                raise ValueError(f"stages[{k}].init_from {stage.init_from!r} must name an earlier stage "
                                 f"({', '.join(names[:k]) or 'none before the first'})")
            if stage.train.mixed_precision != self.stages[0].train.mixed_precision:
                raise ValueError(f"stages[{k}].train.mixed_precision must equal the first stage's (one accelerator "
                                 "per run)")
        if self.train_data.identity() == self.heldout_data.identity():
            what = "world.seed" if self.train_data.kind == "mannequin" else "path"
            raise ValueError(f"heldout_data.{what} must differ from train_data.{what}: the held-out set must not be "
                             "the training data")
        needed = max(self.validation.samples, self.eval.samples, self.eval.report_samples if self.eval.samples else 0)
        if self.heldout_data.kind == "mannequin" and self.heldout_data.world.n < needed:
            raise ValueError(f"heldout_data.world.n ({self.heldout_data.world.n}) must be at least the "
                             f"{needed} held-out samples that validation/eval use")
        if self.resolution is not None and self.resolution < 8:
            raise ValueError(f"resolution must be at least 8, got {self.resolution}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ValueError(f"snr_gamma must be positive, got {self.snr_gamma}")
        if self.validation.samples < 0:
            raise ValueError(f"validation.samples must be at least 0, got {self.validation.samples}")


def steps_for_epochs(epochs: float, n: int, batch_size: int, accumulation: int, processes: int) -> int:
    """Optimizer steps of ``epochs`` passes over ``n`` samples:  ceil(epochs·N / (batch·accumulation·processes))."""
    return max(1, math.ceil(epochs * n / (batch_size * accumulation * processes) - 1e-9))


# ---------------------------------------------------------------------------------------------------------- data


@dataclass
class PreparedSample:
    """A sample at the training resolution R: image and condition uint8 (R, R, 3), keypoints (P, 17, 3) in its
    pixels, mask uint8 (R, R) or None, bboxes (P, 4), areas (P,) segment areas (None without a mask)."""

    image: np.ndarray
    condition: np.ndarray
    keypoints: np.ndarray
    caption: str
    mask: np.ndarray | None
    bboxes: np.ndarray
    areas: np.ndarray | None


def centre_crop_geometry(width: int, height: int, resolution: int) -> tuple[int, int, int, int]:
    """(resized width, resized height, left, top): resize so the short side is ``resolution``, then crop the
    centre ``resolution`` square."""
    scale = resolution / min(width, height)
    w, h = max(resolution, round(width * scale)), max(resolution, round(height * scale))
    return w, h, (w - resolution) // 2, (h - resolution) // 2


def transform_keypoints(kp: np.ndarray, size: tuple[int, int], resized: tuple[int, int], offset: tuple[int, int],
                        resolution: int) -> np.ndarray:
    """COCO keypoints of an image of ``size`` mapped through a resize to ``resized`` and a crop at ``offset``
    (pixel centres at integers:  x' = (x + ½)·W'/W − ½ − left). Points that leave the crop become [0, 0, 0]."""
    out = np.asarray(kp, np.float32).copy()
    sx, sy = resized[0] / size[0], resized[1] / size[1]
    out[..., 0] = (out[..., 0] + 0.5) * sx - 0.5 - offset[0]
    out[..., 1] = (out[..., 1] + 0.5) * sy - 0.5 - offset[1]
    inside = (out[..., 0] >= -0.5) & (out[..., 0] < resolution - 0.5) & (out[..., 1] >= -0.5) \
        & (out[..., 1] < resolution - 0.5)
    keep = (out[..., 2] > 0) & inside
    out[~keep] = 0.0
    return out


def _resize_crop(image: Image.Image, resized: tuple[int, int], offset: tuple[int, int], resolution: int,
                 resample: int) -> Image.Image:
    if image.size != resized:
        image = image.resize(resized, resample)
    left, top = offset
    return image.crop((left, top, left + resolution, top + resolution))


def _mask_boxes(mask: np.ndarray, people: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment areas and tight boxes [x, y, w, h] of persons 1..people of a mask."""
    areas, boxes = np.zeros(people, np.float32), np.zeros((people, 4), np.float32)
    for k in range(people):
        ys, xs = np.nonzero(mask == k + 1)
        areas[k] = len(xs)
        if len(xs):
            boxes[k] = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    return areas, boxes


def keypoint_boxes(kp: np.ndarray) -> np.ndarray:
    """[x, y, w, h] of each person's labelled keypoints (zeros for a person with none)."""
    boxes = np.zeros((len(kp), 4), np.float32)
    for n, person in enumerate(kp):
        xy = person[person[:, 2] > 0, :2]
        if len(xy):
            boxes[n, :2], boxes[n, 2:] = xy.min(axis=0), np.ptp(xy, axis=0)
    return boxes


def prepare_sample(sample: PoseSample, resolution: int) -> PreparedSample:
    """``sample`` at ``resolution``²: image resized (bicubic) and centre-cropped, keypoints and mask (nearest) the
    same way; the condition is the sample's own (resized like the image) or drawn from the keypoints."""
    size = sample.image.size
    w, h, left, top = centre_crop_geometry(*size, resolution)
    same = size == (resolution, resolution)
    image = sample.image if same else _resize_crop(sample.image, (w, h), (left, top), resolution, Image.BICUBIC)
    kp = sample.keypoints if same else transform_keypoints(sample.keypoints, size, (w, h), (left, top), resolution)
    if sample.condition is not None:
        condition = sample.condition.convert("RGB")
        if condition.size != size:
            condition = condition.resize(size, Image.BILINEAR)
        condition = condition if same else _resize_crop(condition, (w, h), (left, top), resolution, Image.BILINEAR)
    else:
        condition = draw_openpose(kp, (resolution, resolution))
    mask = areas = None
    if sample.mask is not None:
        m = Image.fromarray(sample.mask)
        mask = np.array(m if same else _resize_crop(m, (w, h), (left, top), resolution, Image.NEAREST))
        areas, boxes = _mask_boxes(mask, len(kp))
        missing = areas == 0
        boxes[missing] = keypoint_boxes(kp)[missing]
    else:
        boxes = keypoint_boxes(kp)
    return PreparedSample(image=np.array(image.convert("RGB")), condition=np.array(condition), keypoints=kp,
                          caption=sample.caption, mask=mask, bboxes=boxes, areas=areas)


def latent_heatmap(keypoints: np.ndarray, mask: np.ndarray | None, size: tuple[int, int], cfg: HeatmapConfig,
                   latent_size: tuple[int, int], where: str = "sample") -> np.ndarray:
    """H of one sample (its keypoints and person mask in an image of ``size``) at latent size (h, w), built as
    ``cfg.kind`` says (papers.md §1)."""
    if cfg.kind == "gaussian":
        heat = pose_heatmap(keypoints, size, cfg.sigma, None if cfg.limbs == "none" else cfg.limbs)
        return reduce_to_latent(heat, latent_size, cfg.reduce)
    if cfg.kind == "mask":
        if mask is None:
            raise DataError(f"{where}: heatmap kind 'mask' needs a person mask, and this sample has none (the "
                            "mannequin world and COCO JSONs with segmentations have masks; use kind gaussian)")
        return mask_heatmap(mask, latent_size, cfg.reduce)
    return skeleton_blur_mask(keypoints, size, latent_size, cfg.blur_sigma)


class _Head(Sequence):
    """The first ``n`` items of a sequence."""

    def __init__(self, data: Sequence, n: int) -> None:
        self.data, self.n = data, min(n, len(data))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.data[i]


def _to_chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()


class CachedData:
    """Every training sample encoded once: latent posterior stats (N, 2, C, h, w), text embeddings (N, L, D),
    conditions uint8 (N, 3, R, R), and latent heatmaps (N, h, w) per heatmap geometry, all indexed by sample."""

    def __init__(self, latents: torch.Tensor, embeds: torch.Tensor, conditions: torch.Tensor,
                 keypoints: list[np.ndarray], masks: list[np.ndarray | None]) -> None:
        self.latents, self.embeds, self.conditions = latents, embeds, conditions
        self.keypoints, self.masks = keypoints, masks
        self.heatmaps: dict[tuple, torch.Tensor] = {}

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
    """Training samples prepared per item (for DataLoader workers): pixel values in [−1, 1], the condition
    (uint8), token ids and, for a heatmap stage, the latent heatmap; the loss encodes them."""

    def __init__(self, dataset: Sequence[PoseSample], resolution: int, tokenizer, latent_size: tuple[int, int],
                 heatmap: HeatmapConfig | None) -> None:
        self.dataset, self.resolution, self.tokenizer = dataset, resolution, tokenizer
        self.latent_size, self.heatmap = latent_size, heatmap

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        s = prepare_sample(self.dataset[i], self.resolution)
        item = {"pixel_values": _to_chw(s.image).float() / 127.5 - 1.0, "condition": _to_chw(s.condition),
                "input_ids": tokenize(self.tokenizer, [s.caption])[0]}
        if self.heatmap is not None:
            item["heatmap"] = torch.from_numpy(latent_heatmap(
                s.keypoints, s.mask, (self.resolution, self.resolution), self.heatmap, self.latent_size,
                f"training sample {i}"))
        return item

    @staticmethod
    def collate(items: list[dict]) -> dict:
        return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


# ---------------------------------------------------------------------------------------------------------- task


class ControlNetTask:
    """One stage: the ControlNet trains, the base UNet/VAE/text encoder are frozen."""

    def __init__(self, recipe: ControlNetPoseRecipe, stage: StageConfig, controlnet, data: Sequence,
                 collate: Callable) -> None:
        self.recipe, self.stage, self.controlnet, self.data, self._collate = recipe, stage, controlnet, data, collate

    def trainable_modules(self):
        return {"controlnet": self.controlnet}

    def frozen_modules(self):
        parts = self.recipe.parts
        return {"unet": parts["unet"], "vae": parts["vae"], "text_encoder": parts["text_encoder"]}

    def attach(self, modules):
        self.model = modules["controlnet"]

    def dataset(self):
        return self.data

    def collate(self, items):
        return self._collate(items)

    def loss(self, batch, generator):
        recipe, parts = self.recipe, self.recipe.parts
        device = batch["condition"].device
        if "latent_stats" in batch:
            mean, std = batch["latent_stats"][:, 0].float(), batch["latent_stats"][:, 1].float()
        else:
            with torch.no_grad():
                dist = parts["vae"].encode(batch["pixel_values"].to(dtype=parts["vae"].dtype)).latent_dist
            mean, std = dist.mean.float(), dist.std.float()
        z0 = mean + std * torch.randn(mean.shape, generator=generator).to(device)
        vae_cfg = parts["vae"].config
        z0 = (z0 - (vae_cfg.shift_factor or 0.0)) * vae_cfg.scaling_factor
        noise = torch.randn(z0.shape, generator=generator).to(device)
        scheduler = recipe.noise_scheduler
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(z0),), generator=generator).to(device)
        zt = ddpm_noisy_latents(z0, noise, scheduler.alphas_cumprod, t)
        if "prompt_embeds" in batch:
            embeds = batch["prompt_embeds"]
        else:
            with torch.no_grad():
                embeds = parts["text_encoder"](batch["input_ids"])[0]
        unet = parts["unet"]
        down, mid = self.model(zt, t, encoder_hidden_states=embeds, controlnet_cond=batch["condition"].float() / 255.0,
                               return_dict=False)
        pred = unet(zt, t, encoder_hidden_states=embeds,
                    down_block_additional_residuals=[r.to(unet.dtype) for r in down],
                    mid_block_additional_residual=mid.to(unet.dtype)).sample
        prediction = scheduler.config.prediction_type
        target = ddpm_target(z0, noise, scheduler.alphas_cumprod, t, prediction)
        mse = per_sample_mse(pred, target)
        if self.stage.loss == "heatmap":
            h = self.stage.heatmap
            loss = heatmap_weighted_mse(pred, target, batch["heatmap"], h.w, h.placement)
        else:
            loss = mse
        if recipe.cfg.snr_gamma is not None:
            loss = loss * min_snr_weights(scheduler.alphas_cumprod, t, recipe.cfg.snr_gamma, prediction).to(device)
        return loss.mean(), {"mse": mse.mean().item()}

    def validate(self, step, out_dir):
        net = self.recipe.trainer.unwrap(self.model)
        net.eval()
        try:
            return self.recipe.validate(net, step, out_dir)
        finally:
            net.train()


# ---------------------------------------------------------------------------------------------------------- recipe


class ControlNetPoseRecipe:
    """The run: data → stages (each on the engine, saved as a ControlNetModel) → evaluation → results and report."""

    def __init__(self, cfg: ControlNetPoseConfig, output_dir: str | Path, resume: bool = True) -> None:
        self.cfg, self.out, self.resume = cfg, Path(output_dir), resume
        self._estimator = None

    # -- the run, in order

    def run(self) -> Path:
        cfg, out = self.cfg, self.out
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        self.trainer = Trainer(out, cfg.stages[0].train.mixed_precision)
        self._load_base()
        train_set = self._open(cfg.train_data, "train")
        heldout_set = self._open(cfg.heldout_data, "heldout")
        needed = max(cfg.validation.samples, cfg.eval.samples)
        if len(heldout_set) < needed:
            raise DataError(f"heldout_data has {len(heldout_set)} samples; validation/eval need {needed}")
        self.heldout = [prepare_sample(heldout_set[i], self.resolution) for i in range(needed)]
        self.area_convention = "segment" if all(s.areas is not None for s in self.heldout) else "bbox"
        self._cached: CachedData | None = None
        self.train_set = train_set
        try:
            summaries = {}
            for k, stage in enumerate(cfg.stages):
                summaries[stage.name] = self._run_stage(k, stage)
            evaluation = {}
            if self.trainer.is_main:
                evaluation = self._evaluate_all()
                self._write_results(summaries, evaluation)
                self._write_report(summaries, evaluation)
        finally:
            if self._estimator is not None:
                self._estimator.close()
        return out / "report.html"

    def _load_base(self) -> None:
        from diffusers import DDPMScheduler, StableDiffusionPipeline

        from humantune.models.generation import load_pipeline, model_info, resolve_model

        cfg = self.cfg
        pipe = load_pipeline(cfg.base_model)
        if not isinstance(pipe, StableDiffusionPipeline):
            raise ConfigError(f"base_model '{cfg.base_model}' is a {type(pipe).__name__}; controlnet-pose needs a "
                              "StableDiffusionPipeline-family base (UNet2DConditionModel), e.g. tiny-sd or SD1.5")
        self.parts = {k: pipe.components[k] for k in ("vae", "unet", "text_encoder", "tokenizer", "scheduler")}
        for k in ("vae", "unet", "text_encoder"):
            self.parts[k].requires_grad_(False).eval()
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.vae_factor = 2 ** (len(self.parts["vae"].config.block_out_channels) - 1)
        self.resolution = cfg.resolution or self.parts["unet"].config.sample_size * self.vae_factor
        if self.resolution % self.vae_factor:
            raise ConfigError(f"resolution {self.resolution} must be a multiple of the base VAE's downsampling "
                              f"factor {self.vae_factor}")
        side = self.resolution // self.vae_factor
        self.latent_size = (side, side)
        defaults = model_info(Path(resolve_model(cfg.base_model))).get("generation", {})
        g = cfg.generation
        self.generation_kwargs = {
            "num_inference_steps": g.num_inference_steps or defaults.get("num_inference_steps", 30),
            "guidance_scale": g.guidance_scale if g.guidance_scale is not None else defaults.get("guidance_scale", 7.5),
            "height": self.resolution, "width": self.resolution,
        }

    def _open(self, src: DataSource, split: str) -> Sequence[PoseSample]:
        """The dataset of ``src``; a mannequin world is rendered into OUT/data/<split> (re-rendered when its
        config changed)."""
        try:
            if src.kind == "mannequin":
                folder = self.out / "data" / split
                meta = folder / "world.json"
                if self.trainer.is_main and (not meta.is_file()
                                             or json.loads(meta.read_text())["config"] != config_to_dict(src.world)):
                    write_world(src.world, folder, overwrite=True, progress=self.trainer.is_main)
                self.trainer.accelerator.wait_for_everyone()
                data = PoseFolderDataset(folder)
            elif src.kind == "pose_folder":
                data = PoseFolderDataset(src.path)
            elif src.kind == "coco":
                data = CocoKeypointsDataset(src.path, src.image_dir, src.captions, people_only=True)
            else:
                data = CaptionedCocoPoseDataset(src.path, src.caption_column)
        except DataError as e:
            raise DataError(f"{split}_data: {e}") from None
        return _Head(data, src.max_samples) if src.max_samples is not None else data

    # -- training

    def _stage_data(self, stage: StageConfig) -> tuple[Sequence, Callable]:
        heatmap = stage.heatmap if stage.loss == "heatmap" else None
        if not self.cfg.cache:
            data = StreamedData(self.train_set, self.resolution, self.parts["tokenizer"], self.latent_size, heatmap)
            return data, StreamedData.collate
        if self._cached is None:
            self._cached = self._encode_training_set()
        key = None if heatmap is None else self._cached.heatmap(heatmap, self.latent_size, self.trainer.is_main)
        return range(len(self._cached)), self._cached.collate_fn(key)

    @torch.no_grad()
    def _encode_training_set(self) -> CachedData:
        """Latent posterior mean/std, text embeddings and conditions of every training sample."""
        vae, te, tok = self.parts["vae"], self.parts["text_encoder"], self.parts["tokenizer"]
        device = self.trainer.device
        vae.to(device)
        te.to(device)
        keypoints, masks, latents, embeds, conditions = [], [], [], [], []
        n = len(self.train_set)
        bar = tqdm(total=n, desc="encoding training set", unit="img", disable=not self.trainer.is_main)
        for start in range(0, n, 32):
            chunk = [prepare_sample(self.train_set[i], self.resolution) for i in range(start, min(n, start + 32))]
            pixels = torch.stack([_to_chw(s.image) for s in chunk]).float().to(device) / 127.5 - 1.0
            dist = vae.encode(pixels.to(vae.dtype)).latent_dist
            latents.append(torch.stack([dist.mean, dist.std], 1).float().cpu())
            embeds.append(te(tokenize(tok, [s.caption for s in chunk]).to(device))[0].float().cpu())
            conditions.append(torch.stack([_to_chw(s.condition) for s in chunk]))
            keypoints += [s.keypoints for s in chunk]
            masks += [s.mask for s in chunk]
            bar.update(len(chunk))
        bar.close()
        return CachedData(torch.cat(latents), torch.cat(embeds), torch.cat(conditions), keypoints, masks)

    def _check_keypoints(self, stage: StageConfig, probe: int = 16) -> None:
        """A heatmap built from the target pose needs keypoints: without any, W = 1 and the stage would silently
        train with the plain loss."""
        n = min(probe, len(self.train_set))
        if not any((self.train_set[i].keypoints[..., 2] > 0).any() for i in range(n)):
            raise DataError(f"stage {stage.name}: heatmap kind '{stage.heatmap.kind}' is built from the target "
                            f"keypoints, and the first {n} training samples have none (Captioned COCO-Pose parquet "
                            "without a 'pose' column?); use heatmap kind mask or the plain loss")

    def _init_source(self, k: int, stage: StageConfig) -> str | None:
        """The stage whose ControlNet stage ``k`` starts from: ``init_from``, else the previous one (None: the
        first stage)."""
        return stage.init_from or (self.cfg.stages[k - 1].name if k > 0 else None)

    def _initial_controlnet(self, k: int, stage: StageConfig):
        from diffusers import ControlNetModel

        source = self._init_source(k, stage)
        if source is not None:
            return ControlNetModel.from_pretrained(self.out / source / "controlnet")
        if self.cfg.controlnet_init is not None:
            try:
                return ControlNetModel.from_pretrained(self.cfg.controlnet_init)
            except (OSError, ValueError) as e:
                raise HumantuneError(f"controlnet_init '{self.cfg.controlnet_init}': cannot load a ControlNetModel "
                                     f"({str(e).splitlines()[0]})") from None
        levels = int(round(math.log2(self.vae_factor)))
        channels = self.cfg.conditioning_channels or list(CONDITIONING_CHANNELS[:levels + 1])
        if len(channels) != levels + 1:
            raise ConfigError(f"conditioning_channels {channels} must have {levels + 1} entries for a VAE with "
                              f"factor {self.vae_factor} (one stride-2 convolution between consecutive entries)")
        torch.manual_seed(stage.train.seed)  # the condition encoder's first layers are drawn at random
        return ControlNetModel.from_unet(self.parts["unet"], conditioning_embedding_out_channels=tuple(channels))

    def stage_train_config(self, stage: StageConfig, n: int) -> TrainConfig:
        """The stage's TrainConfig with epochs turned into steps and validation every epoch by default."""
        t = stage.train
        per_epoch = steps_for_epochs(1.0, n, t.batch_size, t.gradient_accumulation_steps,
                                     self.trainer.accelerator.num_processes)
        steps = t.max_steps if stage.epochs is None else steps_for_epochs(
            stage.epochs, n, t.batch_size, t.gradient_accumulation_steps, self.trainer.accelerator.num_processes)
        return dataclasses.replace(t, max_steps=steps, validate_every=t.validate_every or per_epoch)

    def _run_stage(self, k: int, stage: StageConfig) -> dict:
        stage_dir = self.out / stage.name
        final = stage_dir / "controlnet"
        if self.resume and (final / "config.json").is_file():
            if self.trainer.is_main:
                tqdm.write(f"{stage.name}: done ({final}), skipped")
            summary_path = stage_dir / "summary.json"
            return json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        if stage.loss == "heatmap" and stage.heatmap.kind != "mask":
            self._check_keypoints(stage)
        data, collate = self._stage_data(stage)
        train_cfg = self.stage_train_config(stage, len(data))
        task = ControlNetTask(self, stage, self._initial_controlnet(k, stage), data, collate)
        summary = self.trainer.fit(task, train_cfg, stage_dir, resume=self.resume, desc=f"controlnet-pose {stage.name}")
        summary.update(stage=stage.name, loss=stage.loss, epochs=stage.epochs, samples=len(data),
                       steps=train_cfg.max_steps, init_from=self._init_source(k, stage) or
                       self.cfg.controlnet_init or "ControlNetModel.from_unet(base UNet)")
        if self.trainer.is_main:
            with atomic_path(final) as tmp:
                self.trainer.unwrap(task.model).save_pretrained(tmp, safe_serialization=True)
            write_json_atomic(stage_dir / "summary.json", summary)
        self.trainer.accelerator.wait_for_everyone()
        return summary

    # -- generation, validation, evaluation

    @property
    def estimator(self):
        if self._estimator is None:
            from humantune.eval.pose_estimators import load_pose_estimator

            self._estimator = load_pose_estimator("mediapipe")
        return self._estimator

    def pipeline(self, controlnet=None):
        """The base pipeline, with ``controlnet`` a StableDiffusionControlNetPipeline of the same components."""
        from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline

        p = self.parts
        common = dict(vae=p["vae"], text_encoder=p["text_encoder"], tokenizer=p["tokenizer"], unet=p["unet"],
                      scheduler=p["scheduler"], safety_checker=None, feature_extractor=None,
                      requires_safety_checker=False)
        pipe = StableDiffusionPipeline(**common) if controlnet is None else \
            StableDiffusionControlNetPipeline(**common, controlnet=controlnet)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def generate(self, controlnet, samples: list[PreparedSample], progress: bool = False) -> list[Image.Image]:
        """One image per held-out sample (its caption; its condition when ``controlnet``), sample i with seed
        ``generation.seed + i``."""
        from humantune.models.generation import generate_images

        kwargs = dict(self.generation_kwargs)
        if controlnet is not None:
            kwargs["image"] = [Image.fromarray(s.condition) for s in samples]
            kwargs["controlnet_conditioning_scale"] = self.cfg.generation.conditioning_scale
        seeds = [self.cfg.generation.seed + i for i in range(len(samples))]
        with self.trainer.accelerator.autocast():
            return generate_images(self.pipeline(controlnet), [s.caption for s in samples], per_image_seeds=seeds,
                                   progress=progress, **kwargs)

    def targets(self, samples: list[PreparedSample]):
        from humantune.eval.pose_metrics import PoseGroundTruth

        return [PoseGroundTruth(s.keypoints.astype(np.float64), s.bboxes.astype(np.float64),
                                None if s.areas is None else s.areas.astype(np.float64)) for s in samples]

    def validate(self, controlnet, step: int, out_dir: Path) -> dict[str, float]:
        """Generate the validation samples, save the grid (target skeleton over each image) and return mean OKS
        and AP of MediaPipe detections against the targets."""
        from humantune.eval.pose_metrics import pose_agreement
        from humantune.report.overlay import draw_keypoints

        samples = self.heldout[:self.cfg.validation.samples]
        if not samples:
            return {}
        images = self.generate(controlnet, samples)
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = [[Image.fromarray(s.condition) for s in samples], images,
                [draw_keypoints(im, s.keypoints) for im, s in zip(images, samples)]]
        _grid(rows).save(out_dir / f"step_{step:06d}.png")
        agreement = pose_agreement(self.estimator.estimate_batch(images), self.targets(samples), self.area_convention)
        return {"oks": agreement.mean_oks, "ap": agreement.ap}

    def _eval_labels(self) -> list[str]:
        return (["base"] if self.cfg.eval.include_base else []) + [s.name for s in self.cfg.stages]

    def _write_reference(self, samples: list[PreparedSample]) -> Path:
        ref = self.out / "eval" / "reference"
        fingerprint = {"heldout": config_to_dict(self.cfg.heldout_data), "resolution": self.resolution,
                       "samples": len(samples)}
        done = ref / "fingerprint.json"
        if not (done.is_file() and json.loads(done.read_text()) == fingerprint):
            with new_output_dir(ref, overwrite=True) as tmp:
                rows = []
                for i, s in enumerate(samples):
                    Image.fromarray(s.image).save(tmp / f"{i:05d}.png")
                    Image.fromarray(s.condition).save(tmp / f"{i:05d}_condition.png")
                    rows.append({"file_name": f"{i:05d}.png", "text": s.caption})
                (tmp / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                write_json_atomic(tmp / "fingerprint.json", fingerprint)
        return ref

    def _evaluate_all(self) -> dict[str, dict]:
        """Generate and score the held-out set with every stage (and the base); reuse unchanged evaluations."""
        from diffusers import ControlNetModel

        from humantune.eval.runner import evaluate

        cfg = self.cfg
        samples = self.heldout[:cfg.eval.samples]
        if not samples:
            return {}
        reference = self._write_reference(samples)
        for k in ("vae", "unet", "text_encoder"):
            self.parts[k].to(self.trainer.device)
        results = {}
        for label in tqdm(self._eval_labels(), desc="evaluating stages", unit="model"):
            root = self.out / "eval" / label
            source = None if label == "base" else self.out / label / "controlnet"
            fingerprint = {
                "controlnet_mtime": None if source is None else (source / "config.json").stat().st_mtime,
                "generation": self.generation_kwargs,
                # which models are evaluated and how many samples the report shows do not change a model's scores
                "eval": {k: v for k, v in config_to_dict(cfg.eval).items() if k not in ("include_base",
                                                                                        "report_samples")},
                "heldout": config_to_dict(cfg.heldout_data), "seed": cfg.generation.seed,
                "conditioning_scale": cfg.generation.conditioning_scale,
            }
            done = root / "fingerprint.json"
            if not (done.is_file() and json.loads(done.read_text()) == json.loads(json.dumps(fingerprint))
                    and (root / "metrics" / "metrics.json").is_file()):
                net = None
                if source is not None:
                    net = ControlNetModel.from_pretrained(source).to(self.trainer.device).eval()
                images = self.generate(net, samples, progress=True)
                with new_output_dir(root / "images", overwrite=True) as tmp:
                    rows = []
                    for i, (im, s) in enumerate(zip(images, samples)):
                        im.save(tmp / f"{i:05d}.png")
                        row = {"file_name": f"{i:05d}.png", "text": s.caption, "seed": cfg.generation.seed + i,
                               "keypoints": s.keypoints.tolist(), "bboxes": s.bboxes.tolist()}
                        if s.areas is not None:
                            row["areas"] = s.areas.tolist()
                        rows.append(row)
                    (tmp / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                evaluate(root / "images", reference, out_dir=root / "metrics", metrics=cfg.eval.metrics,
                         estimator=self.estimator, area_convention=self.area_convention, overwrite=True,
                         lpips_weights=cfg.eval.lpips_weights, lpips_backbone_weights=cfg.eval.lpips_backbone_weights,
                         clip_model=cfg.eval.clip_model)
                write_json_atomic(done, fingerprint)
            results[label] = json.loads((root / "metrics" / "metrics.json").read_text())
        return results

    # -- results and report

    def _write_results(self, summaries: dict, evaluation: dict) -> None:
        metrics = {label: {name: {k: v for k, v in m.items() if k not in ("conventions", "seconds", "shared_stages",
                                                                           "seconds_with_stages", "images_per_s")}
                           for name, m in summary["metrics"].items()}
                   for label, summary in evaluation.items()}
        write_json_atomic(self.out / "results.json", {
            "recipe": "controlnet-pose", "base_model": self.cfg.base_model, "resolution": self.resolution,
            "eval_samples": self.cfg.eval.samples if evaluation else 0, "area_convention": self.area_convention,
            "training": summaries, "metrics": metrics,
            "validation": {s.name: _validation_rows(self.out / s.name) for s in self.cfg.stages},
            "config": config_to_dict(self.cfg),
        })

    def _write_report(self, summaries: dict, evaluation: dict) -> Path:
        from humantune.report.html import HtmlReport
        from humantune.report.overlay import draw_keypoints

        cfg = self.cfg
        report = HtmlReport(f"controlnet-pose: {self.out.name}")
        report.paragraph(
            f"Base {cfg.base_model} (frozen: VAE, UNet, text encoder); ControlNet trained at {self.resolution}² on "
            f"{_describe(cfg.train_data)}; held out: {_describe(cfg.heldout_data)}. Heatmap-guided loss: "
            "L_h = mean ‖W ⊙ (ε − ε_θ)‖², W = w·H + 1 (shared/papers.md §1).")
        report.heading("Stages")
        rows = []
        for stage in cfg.stages:
            s = summaries.get(stage.name, {})
            val = _validation_rows(self.out / stage.name)
            rows.append({
                "stage": stage.name, "loss": stage.loss,
                "heatmap": (f"{stage.heatmap.kind}, w={stage.heatmap.w:g}, {stage.heatmap.placement}"
                            if stage.loss == "heatmap" else ""),
                "init from": s.get("init_from"), "epochs": stage.epochs, "steps": s.get("steps"),
                "batch": stage.train.batch_size, "lr": stage.train.learning_rate, "final loss": s.get("final_loss"),
                "seconds": s.get("seconds"), "last validation OKS": val[-1].get("oks") if val else None,
            })
        report.table(rows)
        if evaluation:
            report.heading(f"Held-out evaluation ({cfg.eval.samples} samples, area convention "
                           f"{self.area_convention}, 95 % intervals)")
            report.table([_metric_row(label, summary) for label, summary in evaluation.items()])
            report.paragraph("OKS: mean OKS of MediaPipe detections vs the target pose (a missed person scores 0); "
                             "AP: COCO keypoint AP; detected: MediaPipe detections per image; attribute_accuracy "
                             "and world_fd are the mannequin world's offline substitutes for CLIP score and FID; "
                             "ssim is against the held-out image of the same pose. Per-label details: "
                             "eval/<label>/metrics/report.html.")
            k = min(cfg.eval.report_samples, cfg.eval.samples)
            if k:
                labels = list(evaluation)
                items = []
                for i in range(k):
                    s = self.heldout[i]
                    items.append((Image.fromarray(s.condition), f"{i}: condition"))
                    items.append((draw_keypoints(Image.fromarray(s.image), s.keypoints), f"{i}: held-out image"))
                    for label in labels:
                        im = Image.open(self.out / "eval" / label / "images" / f"{i:05d}.png").convert("RGB")
                        items.append((draw_keypoints(im, s.keypoints), f"{i}: {label}"))
                report.heading("Held-out samples (target skeleton drawn over each image)", 3)
                report.paragraph(f"Prompts: " + " | ".join(f"{i}: {self.heldout[i].caption}" for i in range(k)))
                report.image_grid(items, columns=len(labels) + 2, thumb_size=160)
        report.heading("Training curves")
        report.figure(self._curves_figure())
        report.heading("Load the result")
        last = cfg.stages[-1].name
        report.code(
            "from diffusers import ControlNetModel, StableDiffusionControlNetPipeline\n"
            "from humantune.models.generation import load_pipeline, pose_condition\n"
            f"base = load_pipeline({cfg.base_model!r})\n"
            f"controlnet = ControlNetModel.from_pretrained({str(self.out / last / 'controlnet')!r})\n"
            "pipe = StableDiffusionControlNetPipeline(**base.components, controlnet=controlnet)\n"
            f"pose = pose_condition('pose.json', ({self.resolution}, {self.resolution}))  # 17×3 COCO keypoints\n"
            "image = pipe('a woman in a red shirt waving on the beach', image=pose).images[0]")
        return report.save(self.out / "report.html")

    def _curves_figure(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        stages = self.cfg.stages
        fig, axes = plt.subplots(1, len(stages) + 1, figsize=(4 * (len(stages) + 1), 3), dpi=80, squeeze=False)
        for ax, stage in zip(axes[0], stages):
            rows = read_metrics(self.out / stage.name)
            if rows:
                steps = np.array([r["step"] for r in rows])
                for key, style in (("loss", "-"), ("mse", "--")):
                    values = np.array([r.get(key, np.nan) for r in rows], float)
                    if key == "mse" and stage.loss == "plain":
                        continue
                    k = max(1, len(values) // 25)
                    smooth = np.convolve(values, np.ones(k) / k, mode="valid")
                    ax.plot(steps[k - 1:], smooth, style, label=key if key == "loss" else "plain mse")
                ax.legend(fontsize=7)
            ax.set_title(f"{stage.name} ({stage.loss})", fontsize=9)
            ax.set_xlabel("step")
        ax = axes[0][-1]
        for stage in stages:
            val = [r for r in _validation_rows(self.out / stage.name) if r.get("oks") is not None]
            if val:
                ax.plot([r["step"] for r in val], [r["oks"] for r in val], "o-", label=stage.name)
        ax.set_title("validation OKS", fontsize=9)
        ax.set_xlabel("stage step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        fig.tight_layout()
        plt.close(fig)
        return fig


def _describe(src: DataSource) -> str:
    if src.kind == "mannequin":
        return f"the mannequin world (seed {src.world.seed}, {src.world.n} images)"
    return f"{src.kind} {src.path}" + (f" (first {src.max_samples})" if src.max_samples else "")


def _validation_rows(stage_dir: Path) -> list[dict]:
    """Validation scalars of a stage by step (the last row of a step wins: a resumed run may repeat one; NaN, e.g.
    OKS with no target person, becomes None)."""
    path = stage_dir / "validation" / "metrics.jsonl"
    if not path.is_file():
        return []
    by_step = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in json.loads(line).items()}
            by_step[row["step"]] = row
    return [by_step[s] for s in sorted(by_step)]


def _with_ci(metric: dict | None) -> str | None:
    if metric is None or metric.get("value") is None:
        return None
    text = f"{metric['value']:.3f}"
    if metric.get("ci95"):
        lo, hi = metric["ci95"]
        if lo is not None and hi is not None:
            text += f" [{lo:.3f}, {hi:.3f}]"
    return text


def _metric_row(label: str, summary: dict) -> dict:
    m = summary["metrics"]
    row: dict[str, Any] = {"model": label}
    if "oks" in m:
        row["OKS"] = _with_ci(m["oks"])
        row["AP"] = m["oks"].get("ap")
        row["detected"] = m["oks"]["num_detections"] / max(1, m["oks"]["num_images"])
    for name in m:
        if name != "oks":
            row[name] = _with_ci(m[name])
    return row


def _grid(rows: list[list[Image.Image]]) -> Image.Image:
    w, h = rows[0][0].size
    canvas = Image.new("RGB", (w * max(len(r) for r in rows), h * len(rows)))
    for y, row in enumerate(rows):
        for x, im in enumerate(row):
            canvas.paste(im.resize((w, h)), (x * w, y * h))
    return canvas


def train_controlnet_pose(cfg: ControlNetPoseConfig, output_dir: str | Path, resume: bool = True) -> Path:
    """Run the recipe; return the path of ``report.html``."""
    return ControlNetPoseRecipe(cfg, output_dir, resume).run()
