"""The evaluation engine behind ``humantune eval``: score a folder of generated images against targets and a reference.

Inputs
------
- ``generated``: a folder of images (:data:`~humantune.data.loaders.IMAGE_EXTENSIONS`), taken in order of their
  relative path. An optional ``metadata.jsonl`` (HF imagefolder layout) lists them instead: ``file_name``, ``text``
  (the prompt) and, optionally, the target pose the image was generated for: ``keypoints`` (people × 17 ``[x, y, v]``
  in the generated image's pixels), ``bboxes`` and ``areas``. Rows are sorted by ``file_name`` too.
- ``reference``: anything :func:`~humantune.data.loaders.open_pose_dataset` reads (a humantune pose folder, a COCO
  JSON with its images, Captioned COCO-Pose parquet, a plain image folder).
- ``prompts``: a ``.txt`` file (one prompt per line), a ``.jsonl`` file (``text``/``prompt``/``caption`` per row) or a
  list of strings, one per generated image; by default the generated metadata's ``text``, else the reference captions.

Pairing (generated image i ↔ reference sample j) is by file-name stem when both sides have the same set of unique
stems, else by order (i ↔ i); ``pairing="stem"`` or ``"order"`` forces one. The counts must be equal. Target poses
come from the generated metadata's ``keypoints`` when given, else from the paired reference sample; reference
keypoints are mapped to the generated image's pixels when the sizes differ (pixel-centre convention,
x_g = (x_r + ½)·W_g/W_r − ½; areas scale by the product of the two factors).

Metrics (:data:`METRICS`; ``metrics=None`` runs every default metric, :data:`DEFAULT_METRICS`, that needs no
weights file and whose inputs exist):

========================  ===========================================================================================
``oks``                   HumanSD's protocol: mean OKS of detections on the generated image vs the target poses
                          (:func:`~humantune.eval.pose_metrics.pose_agreement`), plus COCO keypoint AP/AR.
``oks_debiased``          the same against detections by the same estimator on the reference image
                          (:func:`~humantune.eval.pose_metrics.debiased_pose_agreement`, bbox area).
``pck``                   PCK@0.2 (torso) of the detection matched to each target person; a missed person's keypoints
                          are all wrong.
``anomaly_rate``          fraction of generated images whose best detection fails an anatomy check
                          (:mod:`humantune.eval.anatomy`); no detection counts as an anomaly.
``ssim``/``psnr``/``l1``  paired with the reference image resized to the generated size (PIL bicubic), uint8, R = 255.
``lpips``                 LPIPS v0.1 (:class:`~humantune.eval.distribution.LpipsMetric`), local weights only.
``fid``/``kid``           FID/KID on FID-Inception pool3 features (local ``pt_inception-2015-12-05-6726825d.pth``).
``clip_score``            100·cos(image, prompt) with a local transformers CLIP model.
``attribute_accuracy``    mannequin-caption attributes (colours, background, posture) read off the image at the
                          detected person (``humantune.eval.attributes``, imported only when asked for).
``world_fd``              Fréchet distance on the mannequin-world feature net (``humantune.eval.world_features``,
                          shipped weights; imported only when asked for).
========================  ===========================================================================================

Intervals (95 %): a mean over images gets a percentile bootstrap over images (10 000 resamples, seed 0); a mean over
people or keypoints (OKS, PCK) a bootstrap over images of the ratio of per-image sums, so images stay the resampled
unit; a rate over images (anomaly rate) the Wilson interval. AP/AR, FID and KID get none (KID reports its std over
subsets).

Outputs in ``out_dir`` (written as a whole: a temporary folder replaces ``out_dir`` at the end): ``metrics.json``
(every metric's value, interval, sample counts, conventions, seconds and images/s), ``per_image.jsonl`` (one row per
generated image: its metric values, detection and target keypoints) and ``report.html``
(:mod:`humantune.report.eval_report`).
"""

from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from humantune import __version__
from humantune.data.loaders import IMAGE_EXTENSIONS, load_rgb, read_jsonl, open_pose_dataset
from humantune.data.sample import validate_keypoints
from humantune.errors import DataError, HumantuneError
from humantune.eval import anatomy, distribution, image_metrics, pose_metrics
from humantune.eval.oks import oks_matrix
from humantune.eval.pose_estimators import PoseEstimate, PoseEstimator, load_pose_estimator
from humantune.eval.preference import bootstrap_interval
from humantune.io import new_output_dir, write_json_atomic, write_jsonl_atomic

PAIRINGS = ("auto", "stem", "order")
PSNR_MAX_DB = 100.0
"""PSNR cap in dB: an identical pair (MSE = 0, PSNR = +∞) scores this, so means stay finite."""
PCK_THRESHOLD = 0.2
PCK_NORMALIZE = "torso"
DETECTION_CONFIDENCE = 0.5
"""A detected keypoint counts as present (anatomy checks, overlays, reference ground truth) at this confidence."""
REFERENCE_RESIZE = "PIL bicubic to the generated image's size, when the sizes differ"
N_BOOT = 10_000
BOOT_SEED = 0


# ----------------------------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class GeneratedImage:
    """One generated image: ``file_name`` relative to its folder, its ``prompt`` and its target pose if given."""

    file_name: str
    path: Path
    prompt: str | None = None
    target: pose_metrics.PoseGroundTruth | None = None

    @property
    def stem(self) -> str:
        return Path(self.file_name).stem


def _keypoint_extent_boxes(kp: np.ndarray) -> np.ndarray:
    """[x, y, w, h] of each person's labelled keypoints (zeros for a person with none)."""
    boxes = np.zeros((len(kp), 4))
    for n, person in enumerate(kp):
        xy = person[person[:, 2] > 0, :2]
        if len(xy):
            boxes[n, :2] = xy.min(axis=0)
            boxes[n, 2:] = np.ptp(xy, axis=0)
    return boxes


def _metadata_target(row: dict[str, Any], where: str) -> pose_metrics.PoseGroundTruth:
    kp = validate_keypoints(row["keypoints"], where).astype(np.float64)
    bboxes = np.asarray(row["bboxes"], np.float64).reshape(-1, 4) if row.get("bboxes") is not None \
        else _keypoint_extent_boxes(kp)
    areas = np.asarray(row["areas"], np.float64).reshape(-1) if row.get("areas") is not None else None
    if bboxes.shape[0] != kp.shape[0] or (areas is not None and areas.shape[0] != kp.shape[0]):
        raise DataError(f"{where}: {kp.shape[0]} people in 'keypoints' but {bboxes.shape[0]} bboxes"
                        f"{'' if areas is None else f' and {areas.shape[0]} areas'}")
    return pose_metrics.PoseGroundTruth(kp, bboxes, areas)


def read_generated_folder(folder: str | os.PathLike) -> list[GeneratedImage]:
    """The generated images of ``folder`` sorted by relative path, with prompts and targets from its metadata.jsonl.

    Without ``metadata.jsonl``: every image file under the folder. With it: one image per row (``file_name``
    required; ``text``, ``keypoints``, ``bboxes``, ``areas`` optional; ``keypoints`` in all rows or none).
    DataError (one line naming the file and line) for a missing folder, no images or a malformed row.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: generated image folder not found")
    metadata = root / "metadata.jsonl"
    items: list[GeneratedImage] = []
    if metadata.is_file():
        rows = read_jsonl(metadata, "one JSON object per generated image with 'file_name'")
        with_keypoints = [number for number, row in rows if row.get("keypoints") is not None]
        if with_keypoints and len(with_keypoints) != len(rows):
            missing = next(number for number, row in rows if row.get("keypoints") is None)
            raise DataError(f"{metadata}: line {missing}: no 'keypoints' although other rows give target poses "
                            "(give them in every row or in none)")
        for number, row in rows:
            if not isinstance(row.get("file_name"), str):
                raise DataError(f"{metadata}: line {number}: expected a string 'file_name'")
            where = f"{metadata.name} line {number}"
            text = row.get("text", row.get("prompt"))
            items.append(GeneratedImage(
                file_name=row["file_name"], path=root / row["file_name"],
                prompt=None if text is None else str(text),
                target=_metadata_target(row, where) if with_keypoints else None,
            ))
        items.sort(key=lambda item: item.file_name)
    else:
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()):
            items.append(GeneratedImage(file_name=path.relative_to(root).as_posix(), path=path))
    if not items:
        raise DataError(f"{root}: no generated images (expected {', '.join(IMAGE_EXTENSIONS)} files or a "
                        "metadata.jsonl)")
    return items


def read_prompts(prompts: str | os.PathLike | Sequence[str]) -> list[str]:
    """Prompts from a ``.txt`` file (one per non-empty line), a ``.jsonl`` file (``text``, ``prompt`` or ``caption``
    per row) or a sequence of strings."""
    if isinstance(prompts, (str, os.PathLike)):
        path = Path(prompts)
        if not path.is_file():
            raise DataError(f"{path}: prompts file not found (expected .txt, one prompt per line, or .jsonl)")
        if path.suffix == ".jsonl":
            out = []
            for number, row in read_jsonl(path, "one JSON object per prompt with 'text'"):
                text = next((row[k] for k in ("text", "prompt", "caption") if isinstance(row.get(k), str)), None)
                if text is None:
                    raise DataError(f"{path}: line {number}: expected a string 'text' (or 'prompt', 'caption')")
                out.append(text)
            return out
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [str(p) for p in prompts]


def pair_by(generated: Sequence[str], reference: Sequence[str], pairing: str,
            generated_dir: str, reference_dir: str) -> tuple[list[int], str]:
    """Reference index for each generated image and the pairing used (``stem`` or ``order``).

    ``generated``/``reference``: file names (or sample ids) whose stems are matched. ``auto`` pairs by stem when both
    sides have the same set of unique stems, else by order. HumantuneError when the counts differ (naming both counts
    and folders) or, for ``stem``, when the stems do not match one to one.
    """
    if pairing not in PAIRINGS:
        raise HumantuneError(f"unknown pairing {pairing!r}; expected one of {', '.join(PAIRINGS)}")
    if len(generated) != len(reference):
        raise HumantuneError(f"{len(generated)} generated images in {generated_dir} but {len(reference)} reference "
                             f"samples in {reference_dir}: the counts must match")
    gen_stems = [Path(name).stem for name in generated]
    ref_stems = [Path(name).stem for name in reference]
    same = len(set(gen_stems)) == len(gen_stems) and set(gen_stems) == set(ref_stems) \
        and len(set(ref_stems)) == len(ref_stems)
    if pairing == "stem" or (pairing == "auto" and same):
        if not same:
            missing = next((s for s in gen_stems if s not in set(ref_stems)), None)
            reason = f"'{missing}' has no reference sample" if missing is not None else "stems are not unique"
            raise HumantuneError(f"cannot pair {generated_dir} with {reference_dir} by file-name stem: {reason}")
        index = {s: j for j, s in enumerate(ref_stems)}
        return [index[s] for s in gen_stems], "stem"
    return list(range(len(generated))), "order"


def rescale_ground_truth(gt: pose_metrics.PoseGroundTruth, from_size: tuple[int, int],
                         to_size: tuple[int, int]) -> pose_metrics.PoseGroundTruth:
    """Map ground truth from an image of ``from_size`` = (W, H) to one of ``to_size`` (pixel-centre convention).

    x' = (x + ½)·W'/W − ½ (y likewise); boxes scale about the image corner; areas by (W'/W)·(H'/H). Unlabelled
    keypoints (v = 0) are left as they are.
    """
    if tuple(from_size) == tuple(to_size):
        return gt
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    kp = np.asarray(gt.keypoints, np.float64).copy()
    labelled = kp[..., 2] > 0
    kp[..., 0] = np.where(labelled, (kp[..., 0] + 0.5) * sx - 0.5, kp[..., 0])
    kp[..., 1] = np.where(labelled, (kp[..., 1] + 0.5) * sy - 0.5, kp[..., 1])
    boxes = np.asarray(gt.bboxes, np.float64).reshape(-1, 4) * np.array([sx, sy, sx, sy])
    areas = None if gt.areas is None else np.asarray(gt.areas, np.float64) * sx * sy
    return pose_metrics.PoseGroundTruth(kp, boxes, areas)


def _rescale_detections(det: PoseEstimate, from_size: tuple[int, int], to_size: tuple[int, int]) -> PoseEstimate:
    if tuple(from_size) == tuple(to_size):
        return det
    kp = np.asarray(det.keypoints, np.float64).copy()
    kp[..., 0] = (kp[..., 0] + 0.5) * to_size[0] / from_size[0] - 0.5
    kp[..., 1] = (kp[..., 1] + 0.5) * to_size[1] / from_size[1] - 0.5
    return PoseEstimate(kp.astype(np.float32), det.scores)


def describe_estimator(estimator: PoseEstimator) -> str:
    """A one-line description of a pose estimator and its settings, for metrics.json."""
    name = type(estimator).__name__
    if name == "MediaPipePoseEstimator":
        import mediapipe

        return (f"MediaPipe Pose {mediapipe.__version__} (static_image_mode, model_complexity=1, BlazePose-33 → "
                f"COCO-17, upscaled to short side {estimator.min_size} px), at most one person per image")
    return name


# ----------------------------------------------------------------------------------------------------------------
# the evaluation context: inputs, shared stages and their timings
# ----------------------------------------------------------------------------------------------------------------


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
                out.append(_rescale_detections(det, (image.shape[1], image.shape[0]), self.generated_size(i)))
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
                    out.extend(net(_float_chw(img)[None]) for img in batch)
                    batch = []
            return np.concatenate(out)
        return self._stage("inception_features", lambda: (
            features(self.generated_image, "inception (generated)"),
            features(lambda i: self.reference_image(i, resize=False), "inception (reference)"),
        ))


def _float_chw(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) → float32 (3, H, W) in [0, 1]."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0


# ----------------------------------------------------------------------------------------------------------------
# metric results and intervals
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class MetricResult:
    """One metric's outcome.

    value: the headline number; per_image: float64 (N,) per generated image (NaN where undefined) or None;
    n: how many samples ``value`` averages over (``unit`` says of what); ci95: (low, high) or None, with
    ``ci_method``; conventions: everything that changes the value; extra: further numbers (AP, AR, …);
    per_image_extra: further per-image columns; stages: shared stages it used; per_image_column: the per-image
    column's name in per_image.jsonl (default: the metric's name).
    """

    value: float
    n: int
    unit: str
    conventions: dict[str, Any]
    per_image: np.ndarray | None = None
    ci95: tuple[float, float] | None = None
    ci_method: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    per_image_extra: dict[str, list] = field(default_factory=dict)
    stages: tuple[str, ...] = ()
    per_image_column: str | None = None


def mean_interval(values: np.ndarray, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> tuple[tuple | None, str]:
    """95 % percentile-bootstrap interval of the mean of the finite per-image ``values`` (None for fewer than 2)."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return None, "none (fewer than 2 images)"
    method = f"percentile bootstrap over images, {n_boot} resamples, seed {seed}"
    return bootstrap_interval(x, 0.95, n_boot, seed), method


def ratio_interval(numerators: np.ndarray, denominators: np.ndarray, n_boot: int = N_BOOT,
                   seed: int = BOOT_SEED) -> tuple[tuple | None, str]:
    """95 % bootstrap interval of Σ numerator / Σ denominator, resampling images (the clusters).

    For a mean over people (keypoints) pass each image's sum of per-person values and its number of people: the
    statistic of the full sample is the mean over people, while images, not people, are drawn with replacement.
    Images with a zero denominator are left out.
    """
    num = np.asarray(numerators, np.float64)
    den = np.asarray(denominators, np.float64)
    keep = den > 0
    num, den = num[keep], den[keep]
    if num.size < 2:
        return None, "none (fewer than 2 images)"

    def statistic(sample: np.ndarray) -> np.ndarray:
        idx = sample.astype(np.int64)
        return num[idx].sum(axis=1) / den[idx].sum(axis=1)

    interval = bootstrap_interval(np.arange(num.size, dtype=np.float64), 0.95, n_boot, seed, statistic)
    return interval, f"bootstrap over images of the ratio of per-image sums, {n_boot} resamples, seed {seed}"


# ----------------------------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------------------------


def greedy_assignment(dets: np.ndarray, gts: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Index of the detection matched to each ground-truth person (−1 if none), one to one, greedily by descending
    OKS: the matching of :func:`~humantune.eval.pose_metrics.matched_oks`."""
    out = -np.ones(len(gts), dtype=np.int64)
    if len(dets) == 0 or len(gts) == 0:
        return out
    oks = oks_matrix(dets, gts, areas)
    used_d: set[int] = set()
    for flat in np.argsort(-oks, axis=None, kind="mergesort"):
        d, g = divmod(int(flat), oks.shape[1])
        if d in used_d or out[g] >= 0:
            continue
        out[g] = d
        used_d.add(d)
    return out


def _labelled_targets(gt: pose_metrics.PoseGroundTruth, area_convention: str) -> tuple[np.ndarray, np.ndarray]:
    """Target people with a labelled keypoint, (G, 17, 3), and their areas under ``area_convention``."""
    kp = np.asarray(gt.keypoints, np.float64).reshape(-1, 17, 3)
    areas = pose_metrics.ground_truth_areas(pose_metrics.PoseGroundTruth(kp, gt.bboxes, gt.areas), area_convention)
    labelled = (kp[:, :, 2] > 0).any(axis=1)
    return kp[labelled], areas[labelled]


def _pose_conventions(ctx: EvalContext, area_convention: str, truth: str) -> dict[str, Any]:
    return {
        "estimator": describe_estimator(ctx.estimator), "ground_truth": truth,
        "area_convention": area_convention, "sigmas": "COCO-17 (pycocotools)",
        "matching": "one-to-one, greedy by descending OKS; a missed person scores 0",
        "ap_ar": "pycocotools COCOeval keypoints: OKS 0.50:0.05:0.95, 101 recall points, maxDets 20, area 'all'",
        "keypoint_mapping": "reference pixels → generated pixels, x' = (x + 0.5)·W'/W − 0.5",
    }


def _agreement_result(ctx: EvalContext, dets: list[PoseEstimate], truths: list[pose_metrics.PoseGroundTruth],
                      agreement: pose_metrics.PoseAgreement, area_convention: str, truth: str,
                      stages: tuple[str, ...]) -> MetricResult:
    sums, counts = np.zeros(ctx.n), np.zeros(ctx.n)
    for i, (det, gt) in enumerate(zip(dets, truths)):
        gkp, areas = _labelled_targets(gt, area_convention)
        values = pose_metrics.matched_oks(np.asarray(det.keypoints, np.float64).reshape(-1, 17, 3), gkp, areas)
        sums[i], counts[i] = values.sum(), len(values)
    per_image = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    ci, method = ratio_interval(sums, counts)
    return MetricResult(
        value=agreement.mean_oks, n=agreement.num_people, unit="people", per_image=per_image, ci95=ci,
        ci_method=method, conventions=_pose_conventions(ctx, area_convention, truth), stages=stages,
        extra={"ap": agreement.ap, "ar": agreement.ar, "num_images": agreement.num_images},
    )


def _metric_oks(ctx: EvalContext) -> MetricResult:
    dets = ctx.generated_detections()
    agreement = pose_metrics.pose_agreement(dets, ctx.targets, ctx.area_convention)
    ap = pose_metrics.keypoint_ap(dets, ctx.targets, area_convention=ctx.area_convention)
    result = _agreement_result(ctx, dets, ctx.targets, agreement, ctx.area_convention,
                               f"target poses ({ctx.target_source})", ("detect_generated",))
    result.extra.update({"ap50": ap.ap50, "ap75": ap.ap75, "ar50": ap.ar50, "ar75": ap.ar75,
                         "num_detections": ap.num_detections, "num_ground_truths": ap.num_ground_truths})
    return result


def _metric_oks_debiased(ctx: EvalContext) -> MetricResult:
    gen, ref = ctx.generated_detections(), ctx.reference_detections()
    agreement = pose_metrics.debiased_pose_agreement(gen, ref, DETECTION_CONFIDENCE)
    truths = pose_metrics.reference_ground_truths(ref, DETECTION_CONFIDENCE)
    return _agreement_result(
        ctx, gen, truths, agreement, "bbox",
        f"the same estimator's detections on the reference image (keypoints with confidence ≥ "
        f"{DETECTION_CONFIDENCE}, bbox = their extent)", ("detect_generated", "detect_reference"),
    )


def _metric_pck(ctx: EvalContext) -> MetricResult:
    dets = ctx.generated_detections()
    preds, gts = [], []
    num, den, per_image = np.zeros(ctx.n), np.zeros(ctx.n), np.full(ctx.n, np.nan)
    for i, (det, gt) in enumerate(zip(dets, ctx.targets)):
        gkp, areas = _labelled_targets(gt, ctx.area_convention)
        dkp = np.asarray(det.keypoints, np.float64).reshape(-1, 17, 3)
        match = greedy_assignment(dkp, gkp, areas)
        pred = np.full((len(gkp), 17, 2), np.nan)  # a missed person: every keypoint wrong
        pred[match >= 0] = dkp[match[match >= 0], :, :2]
        preds.append(pred)
        gts.append(gkp)
        if len(gkp):
            length = pose_metrics.pck_normalizer(gkp, PCK_NORMALIZE)
            usable = np.isfinite(length) & (length > 0)
            den[i] = np.count_nonzero((gkp[:, :, 2] > 0) & usable[:, None])
            if den[i] > 0:
                per_image[i] = pose_metrics.pck(pred, gkp, PCK_THRESHOLD, PCK_NORMALIZE)
                num[i] = per_image[i] * den[i]
    value = pose_metrics.pck(np.concatenate(preds), np.concatenate(gts), PCK_THRESHOLD, PCK_NORMALIZE) \
        if sum(len(g) for g in gts) else float("nan")
    ci, method = ratio_interval(num, den)
    return MetricResult(
        value=value, n=int(den.sum()), unit="keypoints", per_image=per_image, ci95=ci, ci_method=method,
        stages=("detect_generated",),
        conventions={
            "estimator": describe_estimator(ctx.estimator), "threshold": PCK_THRESHOLD, "normalizer": PCK_NORMALIZE,
            "matching": f"detection matched to each target person greedily by OKS ({ctx.area_convention} area); "
                        "a missed person's keypoints all count as wrong",
            "ground_truth": f"target poses ({ctx.target_source})",
        },
    )


def _metric_anomaly_rate(ctx: EvalContext) -> MetricResult:
    dets = ctx.generated_detections()
    checks, scores, flags, fired = [], np.zeros(ctx.n), [], []
    for i, det in enumerate(dets):
        kp = None
        if det.num_people:
            kp = np.asarray(det.keypoints[int(np.argmax(det.scores))], np.float64)
        c = anatomy.anatomy_checks(kp, None, DETECTION_CONFIDENCE, ctx.generated_size(i))
        checks.append(c)
        scores[i] = anatomy.anomaly_score(c)
        flags.append(bool(scores[i] > 1.0))
        fired.append(anatomy.violations(c))
    rate = anatomy.anomaly_rate(checks)
    return MetricResult(
        value=rate.rate, n=rate.n, unit="images", per_image=scores, ci95=(rate.ci95_lo, rate.ci95_hi),
        ci_method="Wilson score interval over images", stages=("detect_generated",), extra={"flagged": rate.flagged},
        per_image_extra={"anomaly_flag": flags, "anomaly_violations": fired}, per_image_column="anomaly_score",
        conventions={
            "estimator": describe_estimator(ctx.estimator),
            "checks": "humantune.eval.anatomy.anatomy_checks on the highest-scoring detection, no mask, "
                      f"keypoints used at confidence ≥ {DETECTION_CONFIDENCE}",
            "flag": "anomaly score (largest severity) > 1; an image with no detection is flagged (not_detected)",
            "per_image": "anomaly score (∞, written as null, when nobody was detected)",
        },
    )


def _paired_metric(name: str, per_pair: Callable[[np.ndarray, np.ndarray], float],
                   conventions: dict[str, Any]) -> Callable[[EvalContext], MetricResult]:
    def compute(ctx: EvalContext) -> MetricResult:
        values = np.array([per_pair(ctx.generated_image(i), ctx.reference_image(i))
                           for i in ctx.bar(range(ctx.n), name)])
        ci, method = mean_interval(values)
        return MetricResult(
            value=image_metrics.mean_over_images(values), n=ctx.n, unit="images", per_image=values, ci95=ci,
            ci_method=method, conventions={"reference_resize": REFERENCE_RESIZE, **conventions},
        )
    return compute


_metric_ssim = _paired_metric(
    "ssim", lambda a, b: float(image_metrics.ssim_per_image(a, b, 255.0)[0]),
    {"data_range": 255, "dtype": "uint8 RGB", "window": "Gaussian σ=1.5, 11×11, population covariance, "
     "5-pixel border cropped, mean over channels (skimage structural_similarity)"},
)
_metric_psnr = _paired_metric(
    "psnr", lambda a, b: float(image_metrics.psnr_per_image(a, b, 255.0, max_db=PSNR_MAX_DB)[0]),
    {"data_range": 255, "dtype": "uint8 RGB", "aggregation": "mean of per-image PSNR (dB)",
     "identical_images": f"capped at {PSNR_MAX_DB:g} dB"},
)
_metric_l1 = _paired_metric(
    "l1", lambda a, b: float(image_metrics.l1_error_per_image(a, b)[0]),
    {"units": "uint8 levels (0–255)", "aggregation": "mean over pixels and channels, then over images"},
)


def _metric_lpips(ctx: EvalContext) -> MetricResult:
    import torch

    net = ctx.models["lpips"]
    values = np.array([
        float(net(torch.from_numpy(_float_chw(ctx.generated_image(i))[None]),
                  torch.from_numpy(_float_chw(ctx.reference_image(i))[None]), normalize=True)[0])
        for i in ctx.bar(range(ctx.n), "lpips")
    ])
    ci, method = mean_interval(values)
    return MetricResult(
        value=image_metrics.mean_over_images(values), n=ctx.n, unit="images", per_image=values, ci95=ci,
        ci_method=method,
        conventions={"net": net.net, "version": "0.1", "input_range": "uint8 → [0, 1] → [−1, 1]",
                     "reference_resize": REFERENCE_RESIZE, "spatial": "no resize of the generated image"},
    )


def _fid_conventions(ctx: EvalContext) -> dict[str, Any]:
    return {
        "network": f"FID Inception-v3 (pytorch-fid, TF-2015 weights {distribution.FID_INCEPTION_WEIGHTS}), "
                   "pool3 2048-d",
        "resize": "bilinear to 299×299, align_corners=False, no antialiasing (pytorch-fid)",
        "input": "uint8 RGB → [0, 1] → [−1, 1]; reference images at their own size",
        "num_generated": ctx.n, "num_reference": ctx.n,
        "note": "values depend on sample count, resize and JPEG; compare only within one convention",
    }


def _metric_fid(ctx: EvalContext) -> MetricResult:
    gen, ref = ctx.inception_features()
    if ctx.n < 2:
        raise HumantuneError(f"FID needs at least 2 images per side, got {ctx.n}")
    value = distribution.frechet_distance(*distribution.feature_statistics(gen),
                                          *distribution.feature_statistics(ref))
    return MetricResult(value=value, n=ctx.n, unit="images per side", conventions=_fid_conventions(ctx),
                        stages=("inception_features",), ci_method="none (a set-level statistic)")


def _metric_kid(ctx: EvalContext) -> MetricResult:
    gen, ref = ctx.inception_features()
    subset_size = min(int(ctx.options.get("kid_subset_size", 1000)), ctx.n)
    subsets = int(ctx.options.get("kid_subsets", 100))
    if subset_size < 2:
        raise HumantuneError(f"KID needs at least 2 images per side, got {ctx.n}")
    mean, std = distribution.kernel_inception_distance(gen, ref, subsets=subsets, subset_size=subset_size)
    return MetricResult(value=mean, n=ctx.n, unit="images per side", stages=("inception_features",),
                        conventions={**_fid_conventions(ctx), "kernel": "(x·y/d + 1)^3", "subsets": subsets,
                                     "subset_size": subset_size},
                        extra={"std_over_subsets": std}, ci_method="none (std over subsets reported instead)")


def _metric_clip_score(ctx: EvalContext) -> MetricResult:
    model = ctx.models["clip"]
    batch_size = int(ctx.options.get("clip_batch_size", 16))
    image_embeds, text_embeds = [], []
    for start in ctx.bar(range(0, ctx.n, batch_size), "clip score", total=-(-ctx.n // batch_size)):
        idx = range(start, min(ctx.n, start + batch_size))
        img, txt = model.embed([ctx.generated_image(i) for i in idx], [ctx.prompts[i] for i in idx])
        image_embeds.append(img)
        text_embeds.append(txt)
    import torch

    img, txt = torch.cat(image_embeds), torch.cat(text_embeds)
    per_image = 100.0 * distribution.clip_cosines(img, txt)
    ci, method = mean_interval(per_image)
    return MetricResult(
        value=distribution.clip_score(img, txt, "torchmetrics"), n=ctx.n, unit="images", per_image=per_image,
        ci95=ci, ci_method=method,
        conventions={"backbone": model.name, "scale": "max(100 · mean cos, 0) (torchmetrics CLIPScore)",
                     "per_image": "100 · cos", "prompts": ctx.prompt_source, "truncation": "77 tokens"},
    )


def _optional_module(module: str, metric: str):
    """Import ``module`` for ``metric``; HumantuneError (one line) when it is not available."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise HumantuneError(f"metric '{metric}' needs {module}, which is not available ({' '.join(str(e).split())})") \
            from None


def _metric_attribute_accuracy(ctx: EvalContext) -> MetricResult:
    attributes = _optional_module("humantune.eval.attributes", "attribute_accuracy")
    dets = ctx.generated_detections()
    best = [np.asarray(d.keypoints[int(np.argmax(d.scores))], np.float64) if d.num_people else None for d in dets]
    images = [ctx.generated_image(i) for i in ctx.bar(range(ctx.n), "attributes")]
    try:
        result = attributes.attribute_accuracy(images, ctx.prompts, best, DETECTION_CONFIDENCE)
    except ValueError as e:
        raise HumantuneError(f"attribute_accuracy: {' '.join(str(e).split())} (prompts: {ctx.prompt_source})") \
            from None
    correct = np.array([sum(bool(v) for k, v in row.items() if k.endswith("_correct")) for row in result.rows], float)
    counted = np.array([sum(1 for k in row if k.endswith("_correct")) for row in result.rows], float)
    per_image = np.where(counted > 0, correct / np.maximum(counted, 1), np.nan)
    total = sum(result.counted.values())
    ci, method = ratio_interval(correct, counted)
    return MetricResult(
        value=sum(result.correct.values()) / total if total else float("nan"), n=total, unit="attribute judgements",
        per_image=per_image, ci95=ci, ci_method=method, stages=("detect_generated",),
        extra={f"accuracy_{a}": v for a, v in result.accuracy.items()} | {"counted": result.counted},
        conventions={
            "estimator": describe_estimator(ctx.estimator), "prompts": ctx.prompt_source,
            "reader": "humantune.eval.attributes.attribute_accuracy on the highest-scoring detection (keypoints "
                      f"with confidence > {DETECTION_CONFIDENCE}); first person named in each prompt",
            "value": "correct / counted pooled over top_color, bottom_color, background, posture; a missed "
                     "detection is wrong for every requested attribute",
        },
    )


def _metric_world_fd(ctx: EvalContext) -> MetricResult:
    world_features = _optional_module("humantune.eval.world_features", "world_fd")
    net = world_features.WorldFeatureNet.load(ctx.options.get("world_features"))
    if ctx.n < 2:
        raise HumantuneError(f"world_fd needs at least 2 images per side, got {ctx.n}")
    gen = net.extract([ctx.generated_image(i) for i in ctx.bar(range(ctx.n), "world features (generated)")])
    ref = net.extract([ctx.reference_image(i, resize=False)
                       for i in ctx.bar(range(ctx.n), "world features (reference)")])
    value = distribution.frechet_distance(*distribution.feature_statistics(gen), *distribution.feature_statistics(ref))
    return MetricResult(
        value=value, n=ctx.n, unit="images per side", ci_method="none (a set-level statistic)",
        conventions={"network": "humantune.eval.world_features.WorldFeatureNet, 128-d features "
                                f"({ctx.options.get('world_features') or 'shipped weights'})",
                     "preprocessing": world_features.PREPROCESSING, "num_generated": ctx.n, "num_reference": ctx.n,
                     "note": "comparable only with the same weights and set sizes"},
    )


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: what it needs (``reference``, ``targets``, ``prompts``, ``detector``, or a model key
    ``inception``/``lpips``/``clip``) and how to compute it; ``default`` metrics run when no names are given (they
    need no weights file and apply to any images)."""

    name: str
    compute: Callable[[EvalContext], MetricResult]
    needs: tuple[str, ...]
    description: str
    default: bool = True


METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("oks", _metric_oks, ("targets", "detector"), "mean OKS of detections vs target poses, AP/AR"),
    MetricSpec("oks_debiased", _metric_oks_debiased, ("reference", "detector"),
               "mean OKS vs detections on the reference image, AP/AR"),
    MetricSpec("pck", _metric_pck, ("targets", "detector"), "PCK@0.2 (torso) vs target poses"),
    MetricSpec("anomaly_rate", _metric_anomaly_rate, ("detector",), "fraction of images failing an anatomy check"),
    MetricSpec("ssim", _metric_ssim, ("reference",), "SSIM vs the reference image"),
    MetricSpec("psnr", _metric_psnr, ("reference",), "PSNR (dB) vs the reference image"),
    MetricSpec("l1", _metric_l1, ("reference",), "mean absolute error vs the reference image"),
    MetricSpec("lpips", _metric_lpips, ("reference", "lpips"), "LPIPS v0.1 vs the reference image", False),
    MetricSpec("fid", _metric_fid, ("reference", "inception"), "FID vs the reference images", False),
    MetricSpec("kid", _metric_kid, ("reference", "inception"), "KID vs the reference images", False),
    MetricSpec("clip_score", _metric_clip_score, ("prompts", "clip"), "CLIP score of image vs prompt", False),
    MetricSpec("attribute_accuracy", _metric_attribute_accuracy, ("prompts", "detector"),
               "mannequin-caption attributes read off the image (humantune.eval.attributes)", False),
    MetricSpec("world_fd", _metric_world_fd, ("reference",),
               "Fréchet distance on mannequin-world features (humantune.eval.world_features)", False),
)}
DEFAULT_METRICS = tuple(name for name, spec in METRICS.items() if spec.default)


def parse_metric_names(metrics: str | Sequence[str] | None) -> list[str] | None:
    """Metric names from a comma-separated string or a sequence (None stays None); HumantuneError for an unknown
    name, listing the known ones."""
    if metrics is None:
        return None
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise HumantuneError(f"unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")
    if not names:
        raise HumantuneError(f"no metric given; known: {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def _missing_input(ctx: EvalContext, need: str) -> str | None:
    if need == "reference" and ctx.reference is None:
        return "a reference (--reference)"
    if need == "targets" and ctx.targets is None:
        return "target poses (keypoints in the generated metadata.jsonl or a reference with keypoints)"
    if need == "prompts" and ctx.prompts is None:
        return "prompts (--prompts, or 'text' in the generated metadata.jsonl or reference captions)"
    return None


def _load_models(names: list[str], options: dict[str, Any]) -> dict[str, Any]:
    """Feature networks the chosen metrics need, loaded before any other work so a missing file fails fast."""
    models: dict[str, Any] = {}
    needs = {need for name in names for need in METRICS[name].needs}
    if "inception" in needs:
        models["inception"] = distribution.InceptionFeatures(options.get("inception_weights"))
    if "lpips" in needs:
        models["lpips"] = distribution.LpipsMetric(options.get("lpips_net", "alex"), options.get("lpips_weights"),
                                                   options.get("lpips_backbone_weights"))
    if "clip" in needs:
        models["clip"] = distribution.ClipScoreMetric(options.get("clip_model", "openai/clip-vit-large-patch14"))
    return models


# ----------------------------------------------------------------------------------------------------------------
# the engine
# ----------------------------------------------------------------------------------------------------------------


def _json_number(value: Any) -> Any:
    """A float as JSON allows it: NaN and ±∞ become None (metrics.json stays strict JSON)."""
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def _json_tree(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_tree(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_tree(obj.tolist())
    return _json_number(obj)


@dataclass
class EvalResult:
    """What :func:`evaluate` wrote: ``summary`` (= metrics.json), ``per_image`` (= per_image.jsonl rows) and the
    paths of ``out_dir``, ``metrics_path``, ``per_image_path`` and ``report_path`` (None without a report)."""

    summary: dict[str, Any]
    per_image: list[dict[str, Any]]
    out_dir: Path
    metrics_path: Path
    per_image_path: Path
    report_path: Path | None


def _build_context(generated, reference, prompts, area_convention, pairing, progress) -> EvalContext:
    if area_convention not in pose_metrics.AREA_CONVENTIONS:
        raise HumantuneError(f"unknown area convention {area_convention!r}; expected one of "
                             f"{', '.join(pose_metrics.AREA_CONVENTIONS)}")
    items = read_generated_folder(generated)
    ctx = EvalContext(generated=items, generated_dir=str(Path(generated).resolve()), area_convention=area_convention,
                      progress=progress)
    if reference is not None:
        ctx.reference = open_pose_dataset(reference)
        ctx.reference_dir = str(reference)
        ref_ids = [_sample_id(ctx.reference, j) for j in range(len(ctx.reference))] \
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
            bboxes = sample.bboxes if sample.bboxes is not None else _keypoint_extent_boxes(kp)
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


def _sample_id(dataset, index: int) -> str:
    """The id of sample ``index`` without decoding its image when the loader keeps its rows."""
    records = getattr(dataset, "records", None)
    if records is not None and index < len(records) and hasattr(records[index], "file_name"):
        return str(records[index].file_name)
    rows = getattr(dataset, "rows", None)
    if rows is not None and index < len(rows):
        row = rows[index]
        if isinstance(row, tuple) and len(row) >= 2 and isinstance(row[1], dict) and "file_name" in row[1]:
            return str(row[1]["file_name"])
        if isinstance(row, dict) and "file_name" in row:
            return str(row["file_name"])
    return dataset[index].sample_id or str(index)


def evaluate(
    generated: str | os.PathLike,
    reference: str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike,
    prompts: str | os.PathLike | Sequence[str] | None = None,
    metrics: str | Sequence[str] | None = None,
    estimator: str | PoseEstimator = "mediapipe",
    area_convention: str = "segment",
    pairing: str = "auto",
    inception_weights: str | os.PathLike | None = None,
    lpips_net: str = "alex",
    lpips_weights: str | os.PathLike | None = None,
    lpips_backbone_weights: str | os.PathLike | None = None,
    clip_model: str = "openai/clip-vit-large-patch14",
    world_features: str | os.PathLike | None = None,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    report: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> EvalResult:
    """Score the generated images in ``generated`` and write ``metrics.json``, ``per_image.jsonl`` and
    ``report.html`` to ``out_dir`` (see the module docstring for inputs, pairing, metrics and intervals).

    metrics: names or a comma-separated string from :data:`METRICS`; None runs every default metric
    (:data:`DEFAULT_METRICS`) whose inputs exist and lists the others under ``skipped`` in metrics.json. A named
    metric whose inputs are missing, an unknown name, mismatched counts or a missing weights file raise
    HumantuneError before any image is scored. estimator: a name for
    :func:`~humantune.eval.pose_estimators.load_pose_estimator` (closed at the end) or an estimator instance (left
    open). ``out_dir`` must not exist or be empty unless ``overwrite``.
    """
    names = parse_metric_names(metrics)
    ctx = _build_context(generated, reference, prompts, area_convention, pairing, progress)
    skipped: dict[str, str] = {}
    if names is None:
        names = []
        for name in DEFAULT_METRICS:
            missing = next((m for m in map(lambda need: _missing_input(ctx, need), METRICS[name].needs) if m), None)
            if missing:
                skipped[name] = f"needs {missing}"
            else:
                names.append(name)
        if not names:
            raise HumantuneError(f"no metric can run on {ctx.generated_dir} alone: give a reference or target poses")
    else:
        for name in names:
            for need in METRICS[name].needs:
                missing = _missing_input(ctx, need)
                if missing:
                    raise HumantuneError(f"metric '{name}' needs {missing}")
    ctx.options = {"inception_weights": inception_weights, "lpips_net": lpips_net, "lpips_weights": lpips_weights,
                   "lpips_backbone_weights": lpips_backbone_weights, "clip_model": clip_model,
                   "world_features": world_features, "kid_subset_size": kid_subset_size, "kid_subsets": kid_subsets}
    ctx.models = _load_models(names, ctx.options)

    own_estimator = False
    if any("detector" in METRICS[name].needs for name in names):
        if isinstance(estimator, str):
            ctx.estimator, own_estimator = load_pose_estimator(estimator), True
        else:
            ctx.estimator = estimator
    try:
        results: dict[str, MetricResult] = {}
        seconds: dict[str, float] = {}
        for name in tqdm(names, desc="metrics", unit="metric", disable=not progress):
            before = dict(ctx.stage_seconds)
            start = time.perf_counter()
            results[name] = METRICS[name].compute(ctx)
            elapsed = time.perf_counter() - start
            # Shared stages this metric triggered are booked to the stage, not to the metric.
            seconds[name] = elapsed - sum(v for k, v in ctx.stage_seconds.items() if k not in before)
    finally:
        if own_estimator:
            ctx.estimator.close()

    summary = _summary(ctx, results, seconds, skipped)
    rows = _per_image_rows(ctx, results)
    with new_output_dir(out_dir, overwrite) as tmp:
        write_json_atomic(tmp / "metrics.json", _json_tree(summary))
        write_jsonl_atomic(tmp / "per_image.jsonl", [_json_tree(r) for r in rows])
        if report:
            from humantune.report.eval_report import write_eval_report

            write_eval_report(tmp)
    out = Path(out_dir)
    return EvalResult(summary=_json_tree(summary), per_image=[_json_tree(r) for r in rows], out_dir=out,
                      metrics_path=out / "metrics.json", per_image_path=out / "per_image.jsonl",
                      report_path=out / "report.html" if report else None)


def _summary(ctx: EvalContext, results: dict[str, MetricResult], seconds: dict[str, float],
             skipped: dict[str, str]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for name, r in results.items():
        total = seconds[name] + sum(ctx.stage_seconds.get(s, 0.0) for s in r.stages)
        metrics[name] = {
            "value": r.value, "ci95": list(r.ci95) if r.ci95 is not None else None, "ci_method": r.ci_method,
            "n": r.n, "unit": r.unit, "num_images": ctx.n, **r.extra, "conventions": r.conventions,
            "seconds": seconds[name], "shared_stages": list(r.stages), "seconds_with_stages": total,
            "images_per_s": ctx.n / total if total > 0 else None,
        }
    return {
        "humantune_version": __version__,
        "generated": ctx.generated_dir,
        "reference": None if ctx.reference_dir is None else str(Path(ctx.reference_dir).resolve())
        if Path(ctx.reference_dir).exists() else ctx.reference_dir,
        "num_images": ctx.n,
        "pairing": ctx.pairing,
        "targets": ctx.target_source,
        "prompts": ctx.prompt_source,
        "area_convention": ctx.area_convention,
        "estimator": describe_estimator(ctx.estimator) if ctx.estimator is not None else None,
        "metrics": metrics,
        "skipped": skipped,
        "stages": {k: {"seconds": v, "images_per_s": ctx.n / v if v > 0 else None}
                   for k, v in ctx.stage_seconds.items()},
        "throughput_images_per_s": {name: m["images_per_s"] for name, m in metrics.items()},
    }


def _per_image_rows(ctx: EvalContext, results: dict[str, MetricResult]) -> list[dict[str, Any]]:
    dets = ctx._cache.get("detect_generated")
    rows = []
    for i, item in enumerate(ctx.generated):
        row: dict[str, Any] = {"index": i, "file_name": item.file_name}
        if ctx.pairs is not None:
            row["reference_index"] = ctx.pairs[i]
        if ctx.prompts is not None:
            row["prompt"] = ctx.prompts[i]
        for name, r in results.items():
            if r.per_image is not None:
                row[r.per_image_column or name] = float(r.per_image[i])
            for column, values in r.per_image_extra.items():
                row[column] = values[i]
        if dets is not None:
            row["detected_people"] = dets[i].num_people
            row["detection"] = np.asarray(dets[i].keypoints, np.float64).round(2).tolist()
        if ctx.targets is not None:
            row["target_keypoints"] = np.asarray(ctx.targets[i].keypoints, np.float64).round(2).tolist()
        rows.append(row)
    return rows


def read_results(out_dir: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics.json, per_image.jsonl rows) of an evaluation folder; DataError naming a missing file."""
    root = Path(out_dir)
    path = root / "metrics.json"
    if not path.is_file():
        raise DataError(f"{path}: not found (not an evaluation folder written by humantune eval)")
    summary = json.loads(path.read_text(encoding="utf-8"))
    rows = [row for _, row in read_jsonl(root / "per_image.jsonl", "one JSON object per generated image")]
    return summary, rows
