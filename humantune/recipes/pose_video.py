"""Recipe: a pose-guided human video model trained in the paper's three phases (``shared/papers.md`` §3).

``humantune train pose-video --config configs/pose_video/quick.yaml --output-dir DIR`` trains the
LatteTransformer3DModel of :mod:`humantune.models.pose_video` (reference image → cross-attention tokens and extra
input channels, OpenPose frames → extra input channels; latents from a frozen VAE, default the shipped tiny-sd's) in
stages declared by the config, each starting from the previous one (:class:`~humantune.train.stages.StageRunner`):

1. ``subject`` — subject-driven image generation: one frame per sample, its reference another frame of the same
   clip (same person and background), the pose input all zeros; spatial blocks train, temporal blocks are not run;
2. ``pose`` — pose-guided image generation: the same, with the frame's OpenPose condition;
3. ``video`` — only the temporal blocks train (zero-initialised output projections, so the stage starts from the
   image model), on clips of ``denoiser.frames`` consecutive frames.

Every stage runs on the shared engine (exact resume, checkpoints, metrics.jsonl) with the DDPM ε-objective
(:class:`~humantune.losses.objectives.DDPMObjective`), drops the reference and the pose independently with their
configured probabilities (classifier-free guidance), and ends by saving ``OUT/<stage>/pipeline`` — a
:class:`~humantune.models.pose_video.PoseVideoPipeline` in diffusers format. After the last stage every stage's
pipeline, and the trivial baseline that repeats the reference image for every frame, generate the held-out clips
(frame 0 of each is the reference, frames 1…T the ground truth) and :mod:`humantune.recipes.pose_video_eval` scores
them: per-frame L1 / SSIM / PSNR against the ground truth, pose OKS per frame and temporal jitter from MediaPipe,
and a kernel distance on the shipped world-feature network's clip features (the offline FVD / FID-VID stand-in);
``OUT/results.json`` holds the numbers and ``OUT/report.html`` the table, the clips as animated GIFs beside the
ground truth, and the loss curves.

For Ent-Prog (which trains these phases with its own block freezing) the pieces are public: :func:`load_clips`
(the encoded training / held-out clips), :func:`initial_denoiser`, :func:`phase_task` (a
:class:`~humantune.train.engine.TrainingTask` for any phase and any set of trainable blocks),
:func:`phase_trainable` (a phase's default blocks) and :func:`denoiser_blocks` (the spatial / temporal block names).

Assumes: square frames; the data is the mannequin video world (rendered into ``OUT/data/<split>``) or a folder in its
format; everything is encoded once into memory (VAE posteriors, pose maps), so a step costs only the denoiser.
Evaluation is redone on every run (it is minutes at the quick config's size); validation during training generates a
few held-out clips per epoch (``validation.clips``, 0 to skip).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from PIL import Image

from humantune.config import option
from humantune.data.mannequin.video import MannequinVideoConfig, write_video_world
from humantune.data.openpose import draw_openpose
from humantune.errors import ConfigError, DataError
from humantune.io import atomic_path
from humantune.losses.objectives import DDPMObjective, Objective, sample_latents
from humantune.models.encoding import encode_latent_stats
from humantune.models.generation import load_vae
from humantune.models.pose_video import (
    POSE_CHANNELS, SETTINGS_NAME, ConditioningSettings, DenoiserConfig, PoseVideoPipeline, adapt_latte,
    build_denoiser, denoise, denoiser_blocks, pose_maps, reference_condition, zero_init_temporal,
)
from humantune.train import stages as staging
from humantune.train.engine import Trainer, TrainConfig
from humantune.train.run_folder import RecipeRun, sigterm_as_interrupt

__all__ = ["PoseVideoConfig", "StageConfig", "VideoClips", "PoseVideoTask", "load_clips", "initial_denoiser",
           "phase_task", "phase_trainable", "denoiser_blocks", "train_pose_video"]

Phase = Literal["subject", "pose", "video"]
PHASES = ("subject", "pose", "video")


# ---------------------------------------------------------------------------------------------------------- config


@dataclass
class VideoSource:
    """Where clips come from: a mannequin video world rendered on demand, or a folder in its format."""

    world: MannequinVideoConfig = option(MannequinVideoConfig(n=32, frames=16, size=64, seed=0),
                                         "the video world to render (when path is null)")
    path: str | None = option(None, "an existing video-world folder (manifest.json + clips/) instead of rendering")


@dataclass
class StageConfig(staging.StageConfig):
    """One training phase."""

    phase: Phase = option("subject", "subject: image from the reference (pose zeroed); pose: image from reference "
                                     "+ pose; video: temporal blocks only, on clips of denoiser.frames frames")
    reference_dropout: float = option(0.1, "probability of training a sample without its reference (for CFG)")
    pose_dropout: float = option(0.1, "probability of training a sample without its pose (for CFG; phase pose/video)")
    train: TrainConfig = option(
        TrainConfig(max_steps=200, batch_size=8, learning_rate=1e-4, lr_scheduler="constant", weight_decay=0.0,
                    checkpoint_every=100), "optimisation (validate_every 0: every epoch)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("reference_dropout", "pose_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be within [0, 1), got {getattr(self, name)}")


@dataclass
class GenerationConfig:
    """How validation and evaluation clips are generated (PoseVideoPipeline, DDIM)."""

    num_inference_steps: int = option(30, "sampling steps (paper: 100)")
    guidance_scale: float = option(4.0, "classifier-free guidance over reference + pose (paper: 4.0)")
    seed: int = option(0, "held-out clip i is generated with seed + i (the same for every stage)")

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {self.num_inference_steps}")


@dataclass
class EvalConfig:
    """The held-out evaluation after the last stage."""

    clips: int = option(8, "held-out clips generated per model (0: no evaluation)")
    frames: int = option(8, "frames generated per clip (the held-out clips need frames + 1: frame 0 is the reference)")
    pose_metrics: bool = option(True, "pose OKS per frame and temporal jitter from MediaPipe detections")
    video_distance: bool = option(True, "kernel distance of world-feature clip features (offline FVD stand-in)")
    report_clips: int = option(4, "held-out clips shown as animations in report.html")

    def __post_init__(self) -> None:
        if self.clips < 0 or self.report_clips < 0 or self.frames < 1:
            raise ValueError("clips and report_clips must be at least 0 and frames at least 1")


@dataclass
class ValidationConfig:
    clips: int = option(2, "held-out clips generated at every validation and scored by L1/SSIM/PSNR (0: none)")


@dataclass
class PoseVideoConfig:
    """``humantune train pose-video``: a pose-guided human video model in three phases (papers.md §3)."""

    base_model: str | None = option(None, "start the first stage from this PoseVideoPipeline folder (null: a new "
                                          "denoiser of the `denoiser` size)")
    pretrained_transformer: str | None = option(
        None, "start a new model from this LatteTransformer3DModel (hub id or folder, e.g. Latte-1's), adapted: pose "
              "channels zero-initialised, ε half of a learned-sigma output, reference tokens through its caption "
              "projection; denoiser.frames and reference_patch_size apply, its other sizes are the source's")
    vae: str = option("tiny-sd", "the VAE of a new model: a shipped base name, a pipeline folder or hub id (its "
                                 "'vae'), or a VAE folder")
    denoiser: DenoiserConfig = option(DenoiserConfig(), "size of a new denoiser")
    train_data: VideoSource = option(VideoSource(), "training clips")
    heldout_data: VideoSource = option(VideoSource(world=MannequinVideoConfig(n=8, frames=9, size=64, seed=1)),
                                       "held-out clips for validation and evaluation (never the training data)")
    snr_gamma: float | None = option(None, "Min-SNR-γ loss weighting (null: none)")
    stages: list[StageConfig] = option(
        [StageConfig(name="subject", phase="subject"), StageConfig(name="pose", phase="pose"),
         StageConfig(name="video", phase="video")], "stages run in sequence (the paper's three phases)")
    generation: GenerationConfig = option(GenerationConfig(), "validation / evaluation sampling")
    validation: ValidationConfig = option(ValidationConfig(), "validation during training")
    eval: EvalConfig = option(EvalConfig(), "evaluation after the last stage")

    def __post_init__(self) -> None:
        staging.check_stages(self.stages)
        if self.train_data.path is None and self.heldout_data.path is None \
                and self.train_data.world.seed == self.heldout_data.world.seed:
            raise ValueError("heldout_data.world.seed must differ from train_data.world.seed: the held-out clips "
                             "must not be the training clips")
        if self.heldout_data.path is None:
            world = self.heldout_data.world
            if world.frames < self.eval.frames + 1:
                raise ValueError(f"heldout_data.world.frames ({world.frames}) must be at least eval.frames + 1 "
                                 f"({self.eval.frames + 1}): frame 0 is the reference")
            needed = max(self.eval.clips, self.validation.clips)
            if world.n < needed:
                raise ValueError(f"heldout_data.world.n ({world.n}) must be at least the {needed} clips that "
                                 "validation/eval use")
        if self.train_data.path is None and self.train_data.world.frames < self.denoiser.frames \
                and any(s.phase == "video" for s in self.stages):
            raise ValueError(f"train_data.world.frames ({self.train_data.world.frames}) must be at least "
                             f"denoiser.frames ({self.denoiser.frames}) for a video stage")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ValueError(f"snr_gamma must be positive, got {self.snr_gamma}")


# ---------------------------------------------------------------------------------------------------------- data


@dataclass
class RawClip:
    """One clip read from a video world: uint8 frames and OpenPose conditions (T, S, S, 3), keypoints (T, 17, 3)."""

    frames: np.ndarray
    conditions: np.ndarray
    keypoints: np.ndarray
    caption: str


def read_video_world(folder: str | Path, resolution: int | None = None) -> list[RawClip]:
    """The clips of a video-world folder (``manifest.json``), resized to ``resolution`` (box filter; conditions
    redrawn from the scaled keypoints) when it differs from the frame size. DataError for a malformed folder."""
    root = Path(folder)
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        entries = manifest["clips"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{root}: not a video world ({type(e).__name__}: {' '.join(str(e).split())[:120]}); "
                        "expected manifest.json with 'clips'") from None
    clips = []
    for entry in entries:
        frames, conditions, keypoints = [], [], []
        for f in entry["frames"]:
            with Image.open(root / f["image"]) as im:
                image = im.convert("RGB")
            kp = np.asarray(f["keypoints"], np.float64).reshape(-1, 17, 3)[0]
            if resolution is not None and image.size != (resolution, resolution):
                kp = kp * np.array([resolution / image.size[0], resolution / image.size[1], 1.0])
                image = image.resize((resolution, resolution), Image.Resampling.BOX)
                condition = np.asarray(draw_openpose(kp, (resolution, resolution)))
            else:
                with Image.open(root / f["conditioning_image"]) as im:
                    condition = np.asarray(im.convert("RGB"))
            frames.append(np.asarray(image))
            conditions.append(condition)
            keypoints.append(kp)
        clips.append(RawClip(np.stack(frames), np.stack(conditions), np.stack(keypoints), entry.get("caption", "")))
    if not clips:
        raise DataError(f"{root}: the video world holds no clips")
    return clips


class VideoClips:
    """Clips encoded once, by (clip, frame): VAE posterior stats (K, F, 2, C, h, w), pose maps (K, F, 3, h, w) and
    reference tokens (K, F, N, D) of every frame; ``raw`` keeps the frames for evaluation."""

    def __init__(self, raw: list[RawClip], vae, latent_size: int, reference_patch: int) -> None:
        self.raw = raw
        frames = torch.from_numpy(np.stack([c.frames for c in raw])).permute(0, 1, 4, 2, 3)  # (K, F, 3, S, S)
        k, f = frames.shape[:2]
        stats = encode_latent_stats(vae, frames.reshape(k * f, *frames.shape[2:]))
        self.latents = stats.reshape(k, f, *stats.shape[1:])
        conditions = torch.from_numpy(np.stack([c.conditions for c in raw])).permute(0, 1, 4, 2, 3)
        self.poses = pose_maps(conditions.reshape(k * f, *conditions.shape[2:]), latent_size).reshape(
            k, f, POSE_CHANNELS, latent_size, latent_size)
        shift, scale = vae.config.shift_factor or 0.0, vae.config.scaling_factor
        tokens = reference_condition((stats[:, 0] - shift) * scale, reference_patch)
        self.references = tokens.reshape(k, f, *tokens.shape[1:])
        self.shift, self.scale = shift, scale

    @property
    def num_frames(self) -> int:
        return self.latents.shape[1]

    def samples(self, length: int) -> list[tuple[int, int, int]]:
        """(clip, first frame, reference frame) of every window of ``length`` consecutive frames (1: every frame);
        the reference is the frame half a clip after the window's start, outside the window when the clip is at
        least twice as long."""
        f = self.num_frames
        if length > f:
            raise DataError(f"the clips have {f} frames; a window of {length} does not fit")
        return [(c, s, (s + max(length, f // 2)) % f) for c in range(len(self.raw)) for s in range(f - length + 1)]

    def collate(self, items: Sequence[tuple[int, int, int]], length: int) -> dict[str, torch.Tensor]:
        """A batch: ``latents`` (B, 2, C, T, h, w), ``pose`` (B, 3, T, h, w), ``reference`` tokens (B, N, D) and
        ``reference_latent`` (B, C, h, w, the scaled posterior mean)."""
        lat = torch.stack([self.latents[c, s:s + length] for c, s, _ in items])       # (B, T, 2, C, h, w)
        pose = torch.stack([self.poses[c, s:s + length] for c, s, _ in items])        # (B, T, 3, h, w)
        ref_latent = torch.stack([self.latents[c, r, 0] for c, _, r in items])
        return {"latents": lat.permute(0, 2, 3, 1, 4, 5), "pose": pose.permute(0, 2, 1, 3, 4),
                "reference": torch.stack([self.references[c, r] for c, _, r in items]),
                "reference_latent": (ref_latent - self.shift) * self.scale}


def _load_component(cls, source: str, subfolder: str, what: str):
    """``cls`` from ``source/subfolder`` (a pipeline folder or hub id) or from ``source`` itself; ConfigError
    naming the option otherwise."""
    try:
        return cls.from_pretrained(source, subfolder=subfolder)
    except (OSError, ValueError):
        pass
    try:
        return cls.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{what} '{source}': cannot load a {cls.__name__} ({str(e).splitlines()[0][:160]})") \
            from None


def _open_source(src: VideoSource, folder: Path, is_main: bool, wait: Callable[[], None]) -> Path:
    if src.path is not None:
        return Path(src.path)
    if is_main and not (folder / "manifest.json").is_file():
        write_video_world(src.world, folder, overwrite=True)
    wait()
    return folder


def load_clips(cfg: PoseVideoConfig, data_dir: str | Path, vae, latent_size: int, is_main: bool = True,
               wait: Callable[[], None] = lambda: None) -> tuple[VideoClips, list[RawClip]]:
    """The training clips, encoded (:class:`VideoClips`), and the held-out clips (raw). Mannequin worlds are rendered
    into ``data_dir/train`` and ``data_dir/heldout`` by the main process (``wait`` synchronises the others)."""
    data_dir = Path(data_dir)
    resolution = latent_size * vae_factor(vae)
    train = read_video_world(_open_source(cfg.train_data, data_dir / "train", is_main, wait), resolution)
    heldout = read_video_world(_open_source(cfg.heldout_data, data_dir / "heldout", is_main, wait), resolution)
    return VideoClips(train, vae, latent_size, cfg.denoiser.reference_patch_size), heldout


def _world_size(folder: str) -> int:
    """Frame width of a video-world folder, from its manifest."""
    try:
        return int(json.loads((Path(folder) / "manifest.json").read_text())["width"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{folder}: not a video world ({type(e).__name__}: {' '.join(str(e).split())[:120]}); "
                        "expected manifest.json with 'width'") from None


def vae_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


# ---------------------------------------------------------------------------------------------------------- task


def phase_trainable(model, phase: Phase) -> list[str]:
    """The module names a phase trains by default: every module but the temporal blocks for the image phases
    (``subject``, ``pose``); the temporal blocks (``temporal_transformer_blocks.k``) for ``video``."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    if phase == "video":
        return denoiser_blocks(model)["temporal"]
    top = dict.fromkeys(name.split(".")[0] for name, _ in model.named_parameters())
    return [name for name in top if name != "temporal_transformer_blocks"]


def _trained_by(name: str, modules: Sequence[str]) -> bool:
    """Whether parameter ``name`` lies in one of ``modules`` (matched on whole name components: 'blocks.1' is not
    'blocks.10')."""
    return any(name == m or name.startswith(m + ".") for m in modules)


class PoseVideoTask:
    """One phase on the engine: ``model`` (LatteTransformer3DModel) with only the parameters of ``trainable``
    modules requiring grad; batches of ``length``-frame windows of ``data``; the DDPM ε-loss with the reference and
    the pose dropped per sample (probabilities ``reference_dropout``, ``pose_dropout``; the subject phase always
    drops the pose)."""

    def __init__(self, phase: Phase, model, data: VideoClips, objective: Objective, trainable: Sequence[str],
                 length: int, reference_dropout: float = 0.1, pose_dropout: float = 0.1,
                 validate: Callable[[Any, int, Path], dict] | None = None) -> None:
        self.phase, self.model, self.data, self.objective, self.length = phase, model, data, objective, length
        self.reference_dropout, self.pose_dropout, self._validate = reference_dropout, pose_dropout, validate
        self.items = data.samples(length)
        for name, p in model.named_parameters():
            p.requires_grad_(_trained_by(name, trainable))
        model.train()

    @property
    def temporal(self) -> bool:
        return self.phase == "video"

    def trainable_modules(self):
        return {"transformer": self.model}

    def frozen_modules(self):
        return {}

    def attach(self, modules):
        self.model = modules["transformer"]

    def dataset(self):
        return self.items

    def collate(self, items):
        return self.data.collate(items, self.length)

    def loss(self, batch, generator):
        z0 = sample_latents(batch["latents"], generator, self.data.shift, self.data.scale)   # (B, C, T, h, w)
        noised = self.objective.noise(z0, generator)
        b = len(z0)
        keep_ref = (generator.rand((b,)) >= self.reference_dropout).float().to(z0.device)
        keep_pose = (generator.rand((b,)) >= self.pose_dropout).float().to(z0.device)
        if self.phase == "subject":
            keep_pose = torch.zeros_like(keep_pose)
        pose = batch["pose"] * keep_pose.view(b, 1, 1, 1, 1)
        reference = batch["reference"] * keep_ref.view(b, 1, 1)
        ref_latent = batch["reference_latent"] * keep_ref.view(b, 1, 1, 1)
        pred = denoise(self.model, noised.noisy, noised.timesteps, pose, reference, self.temporal, ref_latent)
        return self.objective.loss(pred, noised).mean(), {"reference_kept": keep_ref.mean().item()}

    def validate(self, step, out_dir):
        return self._validate(self.model, step, out_dir) if self._validate else {}


def phase_task(phase: Phase, model, data: VideoClips, objective: Objective, frames: int | None = None,
               trainable: Sequence[str] | None = None, reference_dropout: float = 0.1, pose_dropout: float = 0.1,
               validate: Callable[[Any, int, Path], dict] | None = None) -> PoseVideoTask:
    """A :class:`~humantune.train.engine.TrainingTask` training ``model`` in ``phase``.

    ``frames``: window length of the video phase (default the model's ``video_length``; image phases use 1).
    ``trainable``: module names whose parameters train (e.g. a subset of :func:`denoiser_blocks`, as Ent-Prog's
    top-m blocks; default :func:`phase_trainable`); every other parameter gets ``requires_grad=False``, so the
    engine keeps no gradient or optimizer state for it. The forward pass always runs the whole network.
    ``validate(model, step, out_dir) -> scalars`` is called by the engine's validation (default: none)."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    length = (frames or model.config.video_length) if phase == "video" else 1
    if phase == "video" and length != model.config.video_length:
        raise ConfigError(f"the video phase trains clips of the temporal blocks' length {model.config.video_length}, "
                          f"not {length}")
    names = list(trainable) if trainable is not None else phase_trainable(model, phase)
    return PoseVideoTask(phase, model, data, objective, names, length, reference_dropout, pose_dropout, validate)


def initial_denoiser(cfg: PoseVideoConfig, latent_channels: int, latent_size: int, seed: int = 0):
    """The first stage's denoiser: ``base_model``'s transformer, else ``pretrained_transformer`` adapted
    (:func:`~humantune.models.pose_video.adapt_latte`), else a new one of ``cfg.denoiser``'s size (drawn with
    ``seed``)."""
    from diffusers import LatteTransformer3DModel

    if cfg.base_model is not None:
        return _load_component(LatteTransformer3DModel, cfg.base_model, "transformer", "base_model")
    torch.manual_seed(seed)
    if cfg.pretrained_transformer is not None:
        source = _load_component(LatteTransformer3DModel, cfg.pretrained_transformer, "transformer",
                                 "pretrained_transformer")
        return adapt_latte(source, cfg.denoiser.reference_patch_size, cfg.denoiser.frames, latent_channels,
                           cfg.denoiser.reference_input)
    return build_denoiser(cfg.denoiser, latent_channels, latent_size)


# ---------------------------------------------------------------------------------------------------------- recipe


class PoseVideoRecipe(RecipeRun):
    """``setup()`` loads the VAE and encodes the clips, ``train()`` runs the phases (each saved as a
    PoseVideoPipeline), then :func:`humantune.recipes.pose_video_eval.evaluate` scores every phase and the
    repeated-reference baseline on the held-out clips and writes results.json and report.html."""

    cfg: PoseVideoConfig

    def run(self) -> Path:
        from humantune.recipes.pose_video_eval import evaluate

        with sigterm_as_interrupt():
            self.setup()
            summaries = self.train()
            return evaluate(self, summaries)

    def setup(self) -> None:
        from diffusers import DDIMScheduler, DDPMScheduler

        from humantune.models.tiny import ddpm_schedulers

        cfg = self.cfg
        with self.open_folder() as folder:
            self.trainer = Trainer(self.out, cfg.stages[0].train.mixed_precision)
            if cfg.base_model is not None:
                base = PoseVideoPipeline.from_pretrained(cfg.base_model)
                self.vae, settings = base.vae.requires_grad_(False).eval(), base.settings
                train_sched = DDPMScheduler.from_config(base.scheduler.config)
                self.latent_size = base.transformer.config.sample_size
            else:
                self.vae, settings = load_vae(cfg.vae), None
                train_sched = ddpm_schedulers()[0]
                size = cfg.train_data.world.size if cfg.train_data.path is None else _world_size(cfg.train_data.path)
                if size % (vae_factor(self.vae) * cfg.denoiser.patch_size):
                    raise ConfigError(f"frame size {size} must be a multiple of the VAE factor × denoiser.patch_size "
                                      f"({vae_factor(self.vae)} × {cfg.denoiser.patch_size})")
                self.latent_size = size // vae_factor(self.vae)
            self.sample_scheduler = DDIMScheduler.from_config(train_sched.config, set_alpha_to_one=False,
                                                              steps_offset=1)
            self.reference_patch = settings.reference_patch_size if settings else cfg.denoiser.reference_patch_size
            self.objective = DDPMObjective(train_sched, cfg.snr_gamma)
            self.resolution = self.latent_size * vae_factor(self.vae)
            self.vae.to(self.trainer.device)
            self.train_clips, self.heldout = load_clips(cfg, self.out / "data", self.vae, self.latent_size,
                                                        self.trainer.is_main, self.trainer.accelerator.wait_for_everyone)
            needed = max(cfg.eval.clips, cfg.validation.clips)
            short = [i for i, c in enumerate(self.heldout[:needed]) if len(c.frames) < cfg.eval.frames + 1]
            if len(self.heldout) < needed or short:
                raise DataError(f"heldout_data: validation/eval need {needed} clips of at least eval.frames + 1 = "
                                f"{cfg.eval.frames + 1} frames (frame 0 is the reference); got {len(self.heldout)} "
                                f"clips" + (f", clip {short[0]} shorter" if short else ""))
            folder.commit()

    # -- train

    def train(self) -> dict[str, dict]:
        runner = staging.StageRunner(self.trainer, self.out, f"pipeline/{SETTINGS_NAME}", self.resume)
        return runner.run(self.cfg.stages, self._train_stage)

    def _stage_model(self, stage: StageConfig, source: str | None):
        """The stage's starting denoiser (the previous stage's, or the initial one) and whether its pipeline runs
        the temporal blocks. A video stage whose temporal blocks were never trained (not by an earlier stage, not
        in ``base_model``, not in ``pretrained_transformer``) zero-initialises them."""
        cfg = self.cfg
        if source is not None:
            pipe = PoseVideoPipeline.from_pretrained(self.out / source / "pipeline")
            model, temporal = pipe.transformer, pipe.settings.temporal
        else:
            model = initial_denoiser(cfg, self.vae.config.latent_channels, self.latent_size, stage.train.seed)
            temporal = cfg.base_model is not None and PoseVideoPipeline.from_pretrained(cfg.base_model).settings.temporal
        pretrained = cfg.pretrained_transformer is not None and cfg.base_model is None
        if stage.phase == "video" and not temporal and not pretrained:
            zero_init_temporal(model)
        return model, temporal or stage.phase == "video"

    def _train_stage(self, k: int, stage: StageConfig, source: str | None) -> dict:
        model, temporal = self._stage_model(stage, source)
        task = phase_task(stage.phase, model, self.train_clips, self.objective,
                          reference_dropout=stage.reference_dropout, pose_dropout=stage.pose_dropout,
                          validate=self._validate_wrapped(temporal))
        train_cfg = staging.stage_train_config(stage, len(task.items), self.trainer.accelerator.num_processes)
        summary = self.trainer.fit(task, train_cfg, self.out / stage.name, resume=self.resume,
                                   desc=f"pose-video {stage.name}")
        summary.update(stage=stage.name, phase=stage.phase, samples=len(task.items), steps=train_cfg.max_steps,
                       frames=task.length, init_from=source or self.cfg.base_model or self.cfg.pretrained_transformer or "new denoiser",
                       trained_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
                       parameters=sum(p.numel() for p in model.parameters()))
        if self.trainer.is_main:
            with atomic_path(self.out / stage.name / "pipeline") as tmp:
                self.pipeline(self.trainer.unwrap(task.model), temporal).save_pretrained(tmp)
        return summary

    def pipeline(self, model, temporal: bool) -> PoseVideoPipeline:
        """A pipeline of ``model`` with the recipe's VAE, DDIM scheduler and generation settings."""
        g = self.cfg.generation
        pipe = PoseVideoPipeline(model, self.vae, self.sample_scheduler)
        pipe.settings = ConditioningSettings(
            latent_channels=self.vae.config.latent_channels, pose_channels=POSE_CHANNELS,
            reference_patch_size=self.reference_patch, resolution=self.resolution, temporal=temporal,
            num_inference_steps=g.num_inference_steps, guidance_scale=g.guidance_scale)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def generate(self, pipe: PoseVideoPipeline, clips: Sequence[RawClip], frames: int,
                 first: int = 0) -> list[np.ndarray]:
        """Held-out clip i: reference frame 0, poses of frames 1…``frames``, seed ``generation.seed + first + i``."""
        out = []
        for i, clip in enumerate(clips):
            gen = torch.Generator().manual_seed(self.cfg.generation.seed + first + i)
            out.append(pipe(clip.frames[0], list(clip.conditions[1:frames + 1]), generator=gen))
        return out

    def _validate_wrapped(self, temporal: bool):
        def validate(model, step: int, out_dir: Path) -> dict[str, float]:
            from humantune.eval.video import clip_set_frame_metrics

            clips = self.heldout[:self.cfg.validation.clips]
            if not clips:
                return {}
            net = self.trainer.unwrap(model)
            net.eval()
            try:
                frames = min(self.cfg.eval.frames, net.config.video_length)
                generated = self.generate(self.pipeline(net, temporal), clips, frames)
            finally:
                net.train()
            m = clip_set_frame_metrics(generated, [c.frames[1:frames + 1] for c in clips])
            return {"l1": m["l1"], "ssim": m["ssim"], "psnr": m["psnr"]}

        return validate


def train_pose_video(cfg: PoseVideoConfig, output_dir: str | Path, resume: bool = True,
                     allow_config_change: bool = False) -> Path:
    """Run the recipe; return the path of ``report.html``."""
    return PoseVideoRecipe(cfg, output_dir, resume, allow_config_change).run()
