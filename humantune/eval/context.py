"""The evaluation context every metric reads (:class:`EvalContext`): the generated images, their reference samples,
target poses and prompts, the pose estimator and feature models, and caches of the stages several metrics share
(detections, features) with the seconds each took. :func:`build_context` makes one from the inputs
(:mod:`humantune.eval.inputs`): target poses come from the generated metadata's ``keypoints`` when given, else from
the paired reference sample (mapped to the generated image's pixels); prompts from ``prompts``, else the generated
metadata's ``text``, else the reference captions.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from humantune.data.loaders import open_pose_dataset
from humantune.data.readers import load_rgb
from humantune.errors import DataError, HumantuneError
from humantune.eval import pose_metrics
from humantune.eval.inputs import (
    GeneratedImage, keypoint_extent_boxes, pair_by, read_generated_folder, read_prompts, rescale_detections,
    rescale_ground_truth, sample_id,
)
from humantune.eval.pose_estimators import PoseEstimate, PoseEstimator

REFERENCE_RESIZE = "PIL bicubic to the generated image's size, when the sizes differ"


def describe_estimator(estimator: PoseEstimator | str) -> str:
    """A one-line description of a pose estimator and its settings, for metrics.json; a name describes the
    estimator :func:`~humantune.eval.pose_estimators.load_pose_estimator` builds with its defaults."""
    if isinstance(estimator, str):
        from humantune.eval.pose_estimators import load_pose_estimator

        with load_pose_estimator(estimator) as built:
            return describe_estimator(built)
    name = type(estimator).__name__
    if name == "MediaPipePoseEstimator":
        import mediapipe

        margin = estimator.margin
        framing = f"extended by {margin:g} of the longer side per side, " if margin else ""
        return (f"MediaPipe Pose {mediapipe.__version__} (static_image_mode, model_complexity=1, BlazePose-33 → "
                f"COCO-17, {framing}upscaled to short side {estimator.min_size} px), at most one person per image")
    return name


@dataclass
class EvalContext:
    """Everything the metrics read: the generated images, their reference samples, targets, prompts, the pose
    estimator and feature models, plus caches of the stages several metrics share (detections, features) and
    the seconds each stage took."""

    generated: list[GeneratedImage]
    generated_dir: str
    reference: Any | None = None
    reference_dir: str | None = None
    pairs: list[int] | None = None
    pairing: str = "none"
    targets: list[pose_metrics.PoseGroundTruth] | None = None
    target_source: str | None = None
    prompts: list[str] | None = None
    prompt_source: str | None = None
    area_convention: str = "segment"
    estimator: PoseEstimator | None = None
    models: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    stage_seconds: dict[str, float] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)
    _sizes: list[tuple[int, int]] | None = None

    @property
    def n(self) -> int:
        return len(self.generated)

    def bar(self, iterable, desc: str, total: int | None = None):
        return tqdm(iterable, desc=desc, total=total, unit="img", disable=not self.progress, leave=False)

    def generated_image(self, i: int) -> np.ndarray:
        """Generated image i as uint8 (H, W, 3) RGB."""
        return np.asarray(load_rgb(self.generated[i].path, f"generated image {i}"))

    def generated_size(self, i: int) -> tuple[int, int]:
        """(width, height) of generated image i, read from the file header once."""
        if self._sizes is None:
            self._sizes = []
            for item in self.generated:
                try:
                    with Image.open(item.path) as image:
                        self._sizes.append(image.size)
                except (OSError, ValueError) as e:
                    raise DataError(f"{item.path}: cannot read generated image ({' '.join(str(e).split())})") \
                        from None
        return self._sizes[i]

    def reference_sample(self, i: int):
        """The reference :class:`~humantune.data.sample.PoseSample` paired with generated image i."""
        return self.reference[self.pairs[i]]

    def reference_image(self, i: int, resize: bool = True) -> np.ndarray:
        """Reference image paired with generated image i, uint8 RGB, resized to its size (:data:`REFERENCE_RESIZE`)
        unless ``resize`` is False."""
        image = self.reference_sample(i).image.convert("RGB")
        size = self.generated_size(i)
        if resize and image.size != size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        return np.asarray(image)

    def _stage(self, name: str, compute: Callable[[], Any]) -> Any:
        if name not in self._cache:
            start = time.perf_counter()
            self._cache[name] = compute()
            self.stage_seconds[name] = time.perf_counter() - start
        return self._cache[name]

    def generated_detections(self) -> list[PoseEstimate]:
        """Poses detected on every generated image (stage ``detect_generated``)."""
        return self._stage("detect_generated", lambda: [
            self.estimator.estimate(self.generated_image(i))
            for i in self.bar(range(self.n), "pose (generated)")
        ])

    def reference_detections(self) -> list[PoseEstimate]:
        """Poses detected by the same estimator on each paired reference image at its own size, mapped to the
        generated image's pixels (stage ``detect_reference``)."""
        def compute():
            out = []
            for i in self.bar(range(self.n), "pose (reference)"):
                image = self.reference_image(i, resize=False)
                det = self.estimator.estimate(image)
                out.append(rescale_detections(det, (image.shape[1], image.shape[0]), self.generated_size(i)))
            return out
        return self._stage("detect_reference", compute)

    def inception_features(self) -> tuple[np.ndarray, np.ndarray]:
        """FID-Inception pool3 features of the generated and the reference images at their own sizes (stage
        ``inception_features``); the network resizes every image to 299² itself."""
        def features(load: Callable[[int], np.ndarray], desc: str) -> np.ndarray:
            net = self.models["inception"]
            out, batch = [], []
            for i in self.bar(range(self.n), desc):
                batch.append(load(i))
                if len(batch) == net.batch_size or i == self.n - 1:
                    out.extend(net(float_chw(img)[None]) for img in batch)
                    batch = []
            return np.concatenate(out)
        return self._stage("inception_features", lambda: (
            features(self.generated_image, "inception (generated)"),
            features(lambda i: self.reference_image(i, resize=False), "inception (reference)"),
        ))


def float_chw(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) → float32 (3, H, W) in [0, 1]."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0


def build_context(generated, reference, prompts, area_convention: str, pairing: str, progress: bool) -> EvalContext:
    """The :class:`EvalContext` of the generated folder ``generated``, the optional ``reference`` and ``prompts``
    (see the module docstring); HumantuneError for an unknown area convention, mismatched counts or a segment-area
    convention the targets cannot serve."""
    if area_convention not in pose_metrics.AREA_CONVENTIONS:
        raise HumantuneError(f"unknown area convention {area_convention!r}; expected one of "
                             f"{', '.join(pose_metrics.AREA_CONVENTIONS)}")
    items = read_generated_folder(generated)
    ctx = EvalContext(generated=items, generated_dir=str(Path(generated).resolve()), area_convention=area_convention,
                      progress=progress)
    if reference is not None:
        ctx.reference = open_pose_dataset(reference)
        ctx.reference_dir = str(reference)
        ref_ids = [sample_id(ctx.reference, j) for j in range(len(ctx.reference))] \
            if pairing != "order" else [str(j) for j in range(len(ctx.reference))]
        ctx.pairs, ctx.pairing = pair_by([g.file_name for g in items], ref_ids, pairing, ctx.generated_dir,
                                         ctx.reference_dir)

    if items[0].target is not None:
        ctx.targets, ctx.target_source = [g.target for g in items], "generated metadata.jsonl keypoints"
    elif ctx.reference is not None:
        truths, any_people = [], False
        for i in ctx.bar(range(ctx.n), "reference targets"):
            sample = ctx.reference_sample(i)
            kp = np.asarray(sample.keypoints, np.float64)
            any_people |= len(kp) > 0
            bboxes = sample.bboxes if sample.bboxes is not None else keypoint_extent_boxes(kp)
            areas = sample.areas if sample.area_convention == "segment" else None
            truths.append(rescale_ground_truth(pose_metrics.PoseGroundTruth(kp, bboxes, areas),
                                               sample.image.size, ctx.generated_size(i)))
        if any_people:
            ctx.targets, ctx.target_source = truths, f"reference keypoints ({ctx.reference_dir})"
    if ctx.targets is not None and area_convention == "segment" and any(t.areas is None for t in ctx.targets):
        raise HumantuneError(f"area convention 'segment' needs person segment areas, which the {ctx.target_source} "
                             "do not give: use --area-convention bbox or bbox053")

    if prompts is not None:
        ctx.prompts = read_prompts(prompts)
        ctx.prompt_source = str(prompts) if isinstance(prompts, (str, os.PathLike)) else "given list"
        if len(ctx.prompts) != ctx.n:
            raise HumantuneError(f"{len(ctx.prompts)} prompts in {ctx.prompt_source} but {ctx.n} generated images in "
                                 f"{ctx.generated_dir}: the counts must match")
    elif all(g.prompt for g in items):
        ctx.prompts, ctx.prompt_source = [g.prompt for g in items], "generated metadata.jsonl text"
    elif ctx.reference is not None:
        captions = [ctx.reference_sample(i).caption for i in range(ctx.n)]
        if all(captions):
            ctx.prompts, ctx.prompt_source = captions, f"reference captions ({ctx.reference_dir})"
    return ctx
