"""Pose estimators that turn an image into COCO-17 keypoints, for scoring generated images against target poses.

Coordinate convention (the COCO one): keypoint ``(x, y)`` is in pixels of the input image, with the centre of
the top-left pixel at ``(0, 0)``. Every backend returns a :class:`PoseEstimate`; :func:`load_pose_estimator`
builds one by name.

Only MediaPipe Pose is implemented: the ``mediapipe==0.10.21`` wheel bundles its detector and its full landmark
model, so it runs offline (shared/papers.md, "Evaluation facts"). It finds at most one person per image. A
detector different from the one that made the target poses biases OKS; compare against its detections on the
real image of the same pose where one exists.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterable, Iterator

import cv2
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from humantune.data.keypoints import MEDIAPIPE33_TO_COCO17
from humantune.errors import HumantuneError

DETECTION_CONFIDENCE = 0.5
"""A detected keypoint counts as present (anatomy checks, attributes, overlays, reference ground truth) at this
confidence."""


@dataclass
class PoseEstimate:
    """People found in one image.

    keypoints: float32 (P, 17, 3) COCO-17 ``[x, y, confidence]`` in input-image pixels, confidence in [0, 1];
    scores: float32 (P,) person scores in [0, 1]. P = 0 when nobody is found.
    """

    keypoints: np.ndarray
    scores: np.ndarray

    @property
    def num_people(self) -> int:
        return int(self.keypoints.shape[0])

    def best_person(self) -> np.ndarray | None:
        """float64 (17, 3) keypoints of the highest-scoring person, None when nobody was found."""
        return np.asarray(self.keypoints[int(np.argmax(self.scores))], np.float64) if self.num_people else None


class PoseEstimator(ABC):
    """Estimates COCO-17 poses in RGB images (PIL images or uint8 H×W×3 arrays); a backend implements
    :meth:`estimate` and, if it holds resources, :meth:`close`."""

    @abstractmethod
    def estimate(self, image: Image.Image | np.ndarray) -> PoseEstimate: ...

    def estimate_batch(
        self, images: Iterable[Image.Image | np.ndarray], progress: bool = False
    ) -> list[PoseEstimate]:
        """:meth:`estimate` on each image in order, with a tqdm progress bar when ``progress``."""
        if progress:
            images = tqdm(images, desc=f"pose ({type(self).__name__})", unit="img")
        return [self.estimate(image) for image in images]

    def close(self) -> None:
        """Free the backend's resources; the estimator cannot be used afterwards."""

    def __enter__(self) -> PoseEstimator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """A C-contiguous uint8 (H, W, 3) RGB array of ``image``; ValueError for any other array layout."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 H×W×3 RGB array, got dtype {arr.dtype} and shape {arr.shape}")
    return np.ascontiguousarray(arr)


def upscaled_size(width: int, height: int, min_size: int) -> tuple[int, int]:
    """(width, height) scaled by ``min_size / min(width, height)`` when the short side is below ``min_size``.

    Unchanged otherwise. The scaled sides are rounded to whole pixels.
    """
    short = min(width, height)
    if short >= min_size:
        return width, height
    scale = min_size / short
    return round(width * scale), round(height * scale)


def normalized_to_pixels(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Map normalised image coordinates to pixel coordinates of an image of ``width`` × ``height``.

    x_px = x_n · W − ½,  y_px = y_n · H − ½

    ``x_n`` spans the image from its left edge (0) to its right edge (1), as MediaPipe landmarks do; the −½ moves
    the origin to the centre of the top-left pixel (COCO). Because the normalisation is relative to the whole
    image, coordinates found in a resized copy map back to the original by using the original size here.
    """
    xy = np.asarray(xy, dtype=np.float64)
    return xy * np.array([width, height], dtype=np.float64) - 0.5


MEDIAPIPE_NOTICES = (
    "inference_feedback_manager.cc", "landmark_projection_calculator.cc",
    "Created TensorFlow Lite XNNPACK delegate", "All log messages before absl::InitializeLog()",
)
"""Start-up notices MediaPipe's native code writes to stderr on every new graph (two per estimator, more on its
first detection), whatever ``GLOG_minloglevel`` says: nothing a user can act on."""


@contextlib.contextmanager
def native_stderr_without(notices: Iterable[str], buffer: BinaryIO) -> Iterator[None]:
    """Capture what native code writes to stderr (file descriptor 2) inside the block into ``buffer``, then write
    back every line except those containing one of ``notices``. Nothing else is dropped, only delayed to the end of
    the block."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):   # no usable stderr: nothing to filter
        yield
        return
    buffer.seek(0)
    buffer.truncate()
    os.dup2(buffer.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        buffer.seek(0)
        kept = [line for line in buffer.read().splitlines(keepends=True)
                if not any(n.encode() in line for n in notices)]
        if kept:
            os.write(2, b"".join(kept))


DEFAULT_MARGIN = 0.25
"""MediaPipe's default ``margin``. Measured by ``benchmarks/estimator_margin.py``
(``benchmarks/results/estimator_margin.json``): on tiny-sd's 128² samples it raises detection from about 0.35 to
about 0.6, while on the world's renders detection and OKS against the exact keypoints stay within noise and on
person-free backgrounds it finds nobody at any margin up to 0.5."""


class MediaPipePoseEstimator(PoseEstimator):
    """MediaPipe Pose (BlazePose, 33 landmarks) mapped to COCO-17; at most one person per image.

    ``margin`` > 0 first extends the image on every side by ``margin`` × its longer side (edge pixels repeated):
    BlazePose's detector often misses a person who fills most of the frame, as generated people at 128² do, and a
    top-down estimator is normally given a person box with a margin. Images whose short side is below ``min_size``
    are then upscaled (bicubic) before inference, since the detector misses small people; keypoints come back in
    the input image's pixels. Confidence = landmark visibility; person score = mean visibility of the 17 COCO
    keypoints. One MediaPipe graph is built per instance and reused: call :meth:`close` (or use ``with``) to free it.
    """

    def __init__(self, model_complexity: int = 1, min_detection_confidence: float = 0.5, min_size: int = 256,
                 margin: float = DEFAULT_MARGIN):
        if model_complexity != 1:
            raise HumantuneError(
                f"MediaPipe pose model_complexity={model_complexity} is not available offline: only "
                "model_complexity=1 (pose_landmark_full) is bundled with mediapipe 0.10.21; 0 and 2 are downloaded"
            )
        if not 0.0 <= min_detection_confidence <= 1.0:
            raise HumantuneError(f"min_detection_confidence must be in [0, 1], got {min_detection_confidence}")
        if min_size < 1:
            raise HumantuneError(f"min_size must be a positive number of pixels, got {min_size}")
        if not 0.0 <= margin <= 2.0:
            raise HumantuneError(f"margin must be in [0, 2] (a fraction of the image's longer side), got {margin}")
        import mediapipe as mp  # imported here: it takes ~1 s and only this backend needs it

        self.min_size, self.margin = min_size, margin
        self._native_log = tempfile.TemporaryFile()
        self._pose = mp.solutions.pose.Pose(
            static_image_mode=True,
            model_complexity=model_complexity,
            min_detection_confidence=min_detection_confidence,
        )

    def estimate(self, image: Image.Image | np.ndarray) -> PoseEstimate:
        if self._pose is None:
            raise RuntimeError("MediaPipePoseEstimator is closed")
        rgb = as_rgb_array(image)
        pad = int(round(self.margin * max(rgb.shape[:2])))
        if pad:
            rgb = cv2.copyMakeBorder(np.ascontiguousarray(rgb), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        height, width = rgb.shape[:2]
        up_w, up_h = upscaled_size(width, height, self.min_size)
        if (up_w, up_h) != (width, height):
            rgb = cv2.resize(rgb, (up_w, up_h), interpolation=cv2.INTER_CUBIC)
        with native_stderr_without(MEDIAPIPE_NOTICES, self._native_log):
            result = self._pose.process(rgb)
        if result.pose_landmarks is None:
            return PoseEstimate(np.zeros((0, 17, 3), np.float32), np.zeros(0, np.float32))
        landmarks = result.pose_landmarks.landmark
        coco = [landmarks[i] for i in MEDIAPIPE33_TO_COCO17]
        xy = normalized_to_pixels(np.array([[lm.x, lm.y] for lm in coco]), width, height) - pad
        confidence = np.clip([lm.visibility for lm in coco], 0.0, 1.0)
        keypoints = np.concatenate([xy, confidence[:, None]], axis=1)[None].astype(np.float32)
        return PoseEstimate(keypoints, np.array([confidence.mean()], np.float32))

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None
            self._native_log.close()


POSE_ESTIMATORS: dict[str, type[PoseEstimator]] = {"mediapipe": MediaPipePoseEstimator}


def load_pose_estimator(name: str, **kwargs: Any) -> PoseEstimator:
    """Build the pose estimator called ``name`` (one of :data:`POSE_ESTIMATORS`) with ``kwargs``."""
    try:
        cls = POSE_ESTIMATORS[name]
    except KeyError:
        raise HumantuneError(
            f"unknown pose estimator {name!r}; known: {', '.join(sorted(POSE_ESTIMATORS))}"
        ) from None
    return cls(**kwargs)
