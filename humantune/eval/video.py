"""Video metrics: per-frame fidelity, temporal pose consistency, and FVD / FID-VID on local feature networks
(shared/papers.md, "Evaluation facts").

- Per-frame L1 / SSIM / PSNR (:func:`frame_metrics`): :mod:`humantune.eval.image_metrics` on each frame pair, uint8
  frames, data range 255, PSNR capped at :data:`PSNR_MAX_DB`; a clip's value is the mean over its frames, a set's the
  mean over all frames of all clips.
- Temporal pose jitter (:func:`pose_jitter`), the offline temporal-consistency score: the mean magnitude of the
  second difference (acceleration) of detected keypoints, per frame and keypoint, divided by the person's body scale,
  after subtracting the ground-truth motion when the clip's true keypoints are known. Lower is smoother; a detector
  that follows the true motion exactly scores 0 however fast the person moves.
- FVD (I3D, Kinetics-400) and FID-VID (3D ResNet-50) (:func:`frechet_video_distance`): the Fréchet distance
  (:func:`humantune.eval.distribution.frechet_distance`) between Gaussians fitted to clip features. Both depend on the
  number of videos, the clip length, the stride and the resize, so these are named parameters
  (:class:`ClipSampling`) reported with the value. The networks load only from a local TorchScript file
  (:func:`load_video_network`); a missing file raises a one-line HumantuneError naming it.

Clip folders (:func:`read_clips`): the video world of :mod:`humantune.data.mannequin.video` (``manifest.json`` with
per-frame image paths and keypoints), or a folder with one sub-folder of frame images per clip (frames in order of
file name, directly in the sub-folder or in its ``frames/``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from humantune.data.loaders import IMAGE_EXTENSIONS
from humantune.errors import DataError, HumantuneError
from humantune.eval import image_metrics
from humantune.eval.anatomy import body_scale
from humantune.eval.distribution import feature_statistics, frechet_distance
from humantune.eval.local_weights import hub_checkpoint_dir
from humantune.eval.pose_estimators import PoseEstimator

PSNR_MAX_DB = 100.0
"""PSNR of an identical frame pair (MSE = 0) is capped at this many dB."""
JITTER_MIN_CONFIDENCE = 0.5


# ----------------------------------------------------------------------------------------------------------------
# clips on disk
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Clip:
    """One video: frame image paths in order, optional per-frame keypoints (T, P, 17, 3) and a caption."""

    clip_id: str
    frames: list[Path]
    keypoints: np.ndarray | None = None
    caption: str = ""

    def load(self) -> np.ndarray:
        """Frames as uint8 (T, H, W, 3) RGB; DataError naming a frame that cannot be read or differs in size."""
        out = []
        for path in self.frames:
            try:
                with Image.open(path) as image:
                    out.append(np.asarray(image.convert("RGB")))
            except (OSError, ValueError) as e:
                raise DataError(f"{path}: cannot read frame of clip {self.clip_id} ({' '.join(str(e).split())})") \
                    from None
            if out[-1].shape != out[0].shape:
                raise DataError(f"{path}: frame is {out[-1].shape[1]}×{out[-1].shape[0]}, the clip's first frame "
                                f"{out[0].shape[1]}×{out[0].shape[0]}")
        return np.stack(out)


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_clips(folder: str | os.PathLike) -> list[Clip]:
    """The clips of ``folder``: a mannequin video world (``manifest.json``) or one sub-folder per clip (sorted by
    name). DataError for a missing folder, a malformed manifest or no clips."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: clip folder not found")
    manifest = root / "manifest.json"
    clips = []
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            for entry in data["clips"]:
                frames = entry["frames"]
                keypoints = np.asarray([f["keypoints"] for f in frames], np.float64).reshape(len(frames), -1, 17, 3)
                clips.append(Clip(str(entry.get("id", len(clips))), [root / f["image"] for f in frames], keypoints,
                                  str(entry.get("caption", ""))))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"{manifest}: not a video-world manifest ({type(e).__name__}: {e}); expected 'clips' "
                            "with 'frames' of 'image' and 'keypoints'") from None
    else:
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            frames = _frame_files(sub / "frames") if (sub / "frames").is_dir() else _frame_files(sub)
            if frames:
                clips.append(Clip(sub.name, frames))
    if not clips:
        raise DataError(f"{root}: no clips (expected manifest.json or sub-folders of frame images)")
    return clips


# ----------------------------------------------------------------------------------------------------------------
# per-frame fidelity
# ----------------------------------------------------------------------------------------------------------------


def frame_metrics(generated: np.ndarray, reference: np.ndarray, data_range: float = 255.0) -> dict[str, np.ndarray]:
    """Per-frame ``l1``, ``ssim`` and ``psnr`` of two clips (T, H, W, C) of one shape (float64 (T,) each).

    L1 in input units; SSIM Wang et al. (Gaussian σ = 1.5, data range ``data_range``); PSNR in dB capped at
    :data:`PSNR_MAX_DB`. ValueError when the clips differ in shape (e.g. in frame count).
    """
    a, b = np.asarray(generated), np.asarray(reference)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"clips must be two (T, H, W, C) arrays of one shape, got {a.shape} and {b.shape}")
    return {
        "l1": image_metrics.l1_error_per_image(a, b),
        "ssim": image_metrics.ssim_per_image(a, b, data_range),
        "psnr": image_metrics.psnr_per_image(a, b, data_range, max_db=PSNR_MAX_DB),
    }


def clip_set_frame_metrics(generated: Sequence[np.ndarray], reference: Sequence[np.ndarray],
                           data_range: float = 255.0) -> dict[str, Any]:
    """:func:`frame_metrics` over paired clips: for each metric the mean over all frames of all clips and the
    per-clip means. ValueError when the numbers of clips differ."""
    if len(generated) != len(reference):
        raise ValueError(f"got {len(generated)} generated and {len(reference)} reference clips")
    per_clip = [frame_metrics(g, r, data_range) for g, r in zip(generated, reference)]
    out: dict[str, Any] = {"num_clips": len(per_clip), "num_frames": int(sum(len(p["l1"]) for p in per_clip))}
    for name in ("l1", "ssim", "psnr"):
        out[name] = image_metrics.mean_over_images(np.concatenate([p[name] for p in per_clip]))
        out[f"{name}_per_clip"] = [float(np.mean(p[name])) for p in per_clip]
    return out


# ----------------------------------------------------------------------------------------------------------------
# temporal pose consistency
# ----------------------------------------------------------------------------------------------------------------


def detect_clip(estimator: PoseEstimator, frames: Iterable[np.ndarray]) -> np.ndarray:
    """The highest-scoring detected person in each frame, (T, 17, 3) ``[x, y, confidence]``; a frame where nobody
    is found gets NaN coordinates and confidence 0."""
    out = []
    for frame in frames:
        est = estimator.estimate(frame)
        if est.num_people == 0:
            out.append(np.concatenate([np.full((17, 2), np.nan), np.zeros((17, 1))], axis=1))
        else:
            out.append(np.asarray(est.keypoints[int(np.argmax(est.scores))], np.float64))
    return np.stack(out)


def pose_jitter(keypoints: np.ndarray, reference: np.ndarray | None = None,
                min_confidence: float = JITTER_MIN_CONFIDENCE) -> float:
    """Temporal pose jitter of one person over a clip (lower = temporally more consistent).

    J = (1/|V|) Σ_{(t,k) ∈ V} ‖r_{t+1,k} − 2 r_{t,k} + r_{t−1,k}‖ / S,   r = p − g  (r = p without ``reference``)

    p: detected keypoints (T, 17, 3) ``[x, y, confidence]``; g: the true keypoints (T, 17, 3) ``[x, y, v]``, whose
    motion is removed so that only the detector's (or generator's) frame-to-frame wobble remains. V: the (t, k),
    1 ≤ t ≤ T−2, with keypoint k detected (confidence ≥ ``min_confidence``, finite) at t−1, t and t+1 and, with a
    reference, labelled (v > 0) there. S: the median over frames of the body scale
    (:func:`humantune.eval.anatomy.body_scale`, torso length or shoulder width) of the reference, else of the
    detections. Returns NaN when V is empty (T < 3, nothing detected) or S is undefined.
    """
    p = np.asarray(keypoints, np.float64)
    if p.ndim != 3 or p.shape[1:] != (17, 3):
        raise ValueError(f"keypoints must have shape (T, 17, 3), got {p.shape}")
    ok = (p[:, :, 2] >= min_confidence) & np.isfinite(p[:, :, :2]).all(axis=2)
    r = p[:, :, :2]
    source = p
    if reference is not None:
        g = np.asarray(reference, np.float64)
        if g.shape != p.shape:
            raise ValueError(f"reference must have the shape of keypoints {p.shape}, got {g.shape}")
        ok &= g[:, :, 2] > 0
        r = r - g[:, :, :2]
        source = np.where(g[:, :, 2:] > 0, g, 0.0)
    if p.shape[0] < 3:
        return float("nan")
    threshold = 0.5 if reference is not None else min_confidence
    scales = [body_scale(np.nan_to_num(frame), threshold) for frame in source]
    scales = [s for s in scales if np.isfinite(s) and s > 0]
    if not scales:
        return float("nan")
    valid = ok[:-2] & ok[1:-1] & ok[2:]
    if not valid.any():
        return float("nan")
    accel = np.linalg.norm(np.nan_to_num(r[2:] - 2 * r[1:-1] + r[:-2]), axis=2)
    return float(accel[valid].mean() / np.median(scales))


def temporal_pose_jitter(estimator: PoseEstimator, clips: Sequence[np.ndarray],
                         references: Sequence[np.ndarray | None] | None = None) -> dict[str, Any]:
    """:func:`pose_jitter` of the person detected by ``estimator`` in each clip (frames (T, H, W, 3) uint8), with the
    clip's true keypoints (T, 17, 3) from ``references`` when given. Returns the mean over clips with a defined value,
    the per-clip values (NaN when undefined) and the clip count."""
    if references is not None and len(references) != len(clips):
        raise ValueError(f"got {len(clips)} clips but {len(references)} references")
    values = []
    for c, frames in enumerate(clips):
        detections = detect_clip(estimator, frames)
        values.append(pose_jitter(detections, None if references is None else references[c]))
    finite = [v for v in values if np.isfinite(v)]
    return {"jitter": float(np.mean(finite)) if finite else float("nan"), "per_clip": values,
            "num_clips": len(finite), "min_confidence": JITTER_MIN_CONFIDENCE,
            "ground_truth_motion_removed": references is not None}


# ----------------------------------------------------------------------------------------------------------------
# FVD and FID-VID
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSampling:
    """How videos become network inputs; report it with every FVD / FID-VID value.

    clip_length: frames per clip (16 for FVD and FID-VID); frame_stride: step between the frames of a clip;
    clip_stride: step between the first frames of consecutive clips of one video (``clip_length`` = disjoint clips);
    size: each frame is resized to size × size (bilinear, ``align_corners=False``, no antialiasing, no crop).
    A video shorter than one clip contributes nothing.
    """

    clip_length: int = 16
    frame_stride: int = 1
    clip_stride: int = 16
    size: int = 224

    def __post_init__(self) -> None:
        for name in ("clip_length", "frame_stride", "clip_stride", "size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def sample_clips(video: np.ndarray, sampling: ClipSampling = ClipSampling()) -> np.ndarray:
    """Clips of one video (T, H, W, 3): clip m holds frames s_m + j·frame_stride, j < clip_length, with
    s_m = m·clip_stride for every s_m whose last frame exists. Returns (M, clip_length, H, W, 3), M ≥ 0."""
    v = np.asarray(video)
    span = (sampling.clip_length - 1) * sampling.frame_stride + 1
    starts = range(0, v.shape[0] - span + 1, sampling.clip_stride)
    idx = [[s + j * sampling.frame_stride for j in range(sampling.clip_length)] for s in starts]
    return v[np.asarray(idx, dtype=np.int64).reshape(-1, sampling.clip_length)]


def clips_to_tensor(clips: np.ndarray, sampling: ClipSampling, mean: Sequence[float],
                    std: Sequence[float]) -> torch.Tensor:
    """uint8 clips (M, L, H, W, 3) → float32 (M, 3, L, size, size): x/255, resized per :class:`ClipSampling`, then
    (x − mean)/std per channel."""
    x = torch.from_numpy(np.ascontiguousarray(clips)).float().div_(255.0)
    m, length, h, w, _ = x.shape
    x = x.permute(0, 1, 4, 2, 3).reshape(m * length, 3, h, w)
    if (h, w) != (sampling.size, sampling.size):
        x = F.interpolate(x, size=(sampling.size, sampling.size), mode="bilinear", align_corners=False)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.reshape(m, length, 3, sampling.size, sampling.size).permute(0, 2, 1, 3, 4).contiguous()


@dataclass(frozen=True)
class VideoNetworkSpec:
    """A video feature network: its weights ``file_name`` (TorchScript), input size, normalisation and the
    keyword arguments its forward takes."""

    name: str
    file_name: str
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


VIDEO_NETWORKS = {
    "i3d": VideoNetworkSpec(
        "i3d", "i3d_torchscript.pt", 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
        {"rescale": False, "resize": False, "return_features": True},
        "I3D Kinetics-400 (the TorchScript of StyleGAN-V / universome/fvd-comparison): input in [−1, 1] at 224², "
        "400-d logits before softmax as features",
    ),
    "resnet3d50": VideoNetworkSpec(
        "resnet3d50", "r3d50_K_200ep_features.pt", 112, (0.4345, 0.4051, 0.3775), (0.2768, 0.2713, 0.2737), {},
        "3D ResNet-50 (Hara et al., Kinetics) as TorchScript returning pooled 2048-d features, input normalised with "
        "the Kinetics mean/std at 112²",
    ),
}


class VideoFeatureNetwork:
    """A TorchScript video network from a local file, mapping (N, 3, L, S, S) clips to (N, D) features."""

    def __init__(self, spec: VideoNetworkSpec, weights_path: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 4) -> None:
        self.spec = spec
        self.path = load_weights_path(spec, weights_path)
        try:
            self.model = torch.jit.load(str(self.path), map_location="cpu")
        except Exception as e:  # a truncated download or a non-TorchScript file
            raise HumantuneError(f"{spec.name} weights {self.path} could not be loaded as TorchScript: "
                                 f"{' '.join(str(e).split())[:200]}") from None
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.batch_size = batch_size

    def features(self, videos: Iterable[np.ndarray], sampling: ClipSampling) -> np.ndarray:
        """Features of every clip of every video (uint8 (T, H, W, 3) each), float64 (M, D)."""
        out = []
        for video in videos:
            clips = sample_clips(video, sampling)
            for start in range(0, len(clips), self.batch_size):
                x = clips_to_tensor(clips[start:start + self.batch_size], sampling, self.spec.mean, self.spec.std)
                with torch.inference_mode():
                    out.append(self.model(x.to(self.device), **self.spec.call_kwargs).double().cpu().numpy())
        if not out:
            raise HumantuneError(f"no clip of {sampling.clip_length} frames (stride {sampling.frame_stride}) fits in "
                                 "any video")
        return np.concatenate(out).reshape(sum(len(o) for o in out), -1)


def load_weights_path(spec: VideoNetworkSpec, weights_path: str | os.PathLike | None = None) -> Path:
    """The weights file of ``spec``: ``weights_path`` or ``spec.file_name`` in the torch hub checkpoint folder;
    HumantuneError (one line naming the file) when it does not exist. Nothing is downloaded."""
    path = Path(weights_path).expanduser() if weights_path is not None else hub_checkpoint_dir() / spec.file_name
    if not path.is_file():
        raise HumantuneError(
            f"{spec.name} features need the TorchScript weights {spec.file_name} ({path} does not exist): pass its "
            "path (offline: no download)"
        )
    return path


def load_video_network(name: str, weights_path: str | os.PathLike | None = None,
                       device: str | torch.device = "cpu") -> VideoFeatureNetwork:
    """The feature network ``name`` (``i3d`` for FVD, ``resnet3d50`` for FID-VID) from a local TorchScript file."""
    if name not in VIDEO_NETWORKS:
        raise HumantuneError(f"unknown video network {name!r}; known: {', '.join(VIDEO_NETWORKS)}")
    return VideoFeatureNetwork(VIDEO_NETWORKS[name], weights_path, device)


def frechet_video_distance(generated_features: np.ndarray, reference_features: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of clip features (FVD on I3D features, FID-VID on
    3D ResNet-50 features): ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½), float64."""
    return frechet_distance(*feature_statistics(generated_features), *feature_statistics(reference_features))


def _video_distance(network: str, generated: Sequence[np.ndarray], reference: Sequence[np.ndarray],
                    weights_path: str | os.PathLike | None, sampling: ClipSampling | None) -> dict[str, Any]:
    net = load_video_network(network, weights_path)
    sampling = sampling or ClipSampling(size=net.spec.size)
    gen, ref = net.features(generated, sampling), net.features(reference, sampling)
    return {
        "value": frechet_video_distance(gen, ref), "network": net.spec.description, "weights": str(net.path),
        "num_videos": [len(generated), len(reference)], "num_clips": [len(gen), len(ref)],
        "clip_length": sampling.clip_length, "frame_stride": sampling.frame_stride,
        "clip_stride": sampling.clip_stride, "resize": f"bilinear to {sampling.size}×{sampling.size}, no crop",
    }


def fvd(generated: Sequence[np.ndarray], reference: Sequence[np.ndarray],
        weights_path: str | os.PathLike | None = None, sampling: ClipSampling | None = None) -> dict[str, Any]:
    """FVD between two sets of videos (uint8 (T, H, W, 3) each) on I3D Kinetics-400 features: the value with its
    conventions (videos, clips, clip length 16, strides, resize 224²)."""
    return _video_distance("i3d", generated, reference, weights_path, sampling)


def fid_vid(generated: Sequence[np.ndarray], reference: Sequence[np.ndarray],
            weights_path: str | os.PathLike | None = None, sampling: ClipSampling | None = None) -> dict[str, Any]:
    """FID-VID between two sets of videos on 3D ResNet-50 features of 16-frame segments (resize 112²), with its
    conventions."""
    return _video_distance("resnet3d50", generated, reference, weights_path, sampling)
