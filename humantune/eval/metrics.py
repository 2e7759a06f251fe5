"""The metric registry behind ``humantune eval``: each metric is a function of an
:class:`~humantune.eval.context.EvalContext` returning a :class:`MetricResult`.

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
``body_states``           three rates over images: nobody detected (``no_person``), a person detected and judged
                          broken by the anatomy judge (``broken``; the headline value) and detected and whole
                          (``whole``) (:mod:`humantune.eval.anatomy_judge`, shipped weights or ``anatomy_judge``).
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
unit; a rate over images (anomaly rate, body states) the Wilson interval (:mod:`humantune.eval.statistics`). AP/AR,
FID and KID get none (KID reports its std over subsets).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from humantune.errors import HumantuneError
from humantune.eval import anatomy, distribution, fid_inception, image_metrics, pose_metrics
from humantune.eval.context import REFERENCE_RESIZE, EvalContext, describe_estimator, float_chw
from humantune.eval.pose_estimators import DETECTION_CONFIDENCE, PoseEstimate
from humantune.eval.statistics import mean_interval, ratio_interval

PSNR_MAX_DB = 100.0
"""PSNR cap in dB: an identical pair (MSE = 0, PSNR = +∞) scores this, so means stay finite."""
PCK_THRESHOLD = 0.2
PCK_NORMALIZE = "torso"


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
        match = pose_metrics.greedy_assignment(dkp, gkp, areas)
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
    judged = [anatomy.score_detection(det, ctx.generated_size(i)) for i, det in enumerate(ctx.generated_detections())]
    scores = np.array([j.score for j in judged], np.float64).reshape(ctx.n)
    flags = [bool(j.anomalous) for j in judged]
    fired = [j.violations for j in judged]
    rate = anatomy.anomaly_rate(flags)
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


def _metric_body_states(ctx: EvalContext) -> MetricResult:
    from humantune.eval.anatomy_judge import PREPROCESSING, body_rates, body_states

    judge = ctx.models["anatomy_judge"]
    p_broken = judge.judge([ctx.generated_image(i) for i in ctx.bar(range(ctx.n), "anatomy judge")])
    detected = [det.num_people > 0 for det in ctx.generated_detections()]
    states = body_states(detected, p_broken, judge.config.threshold)
    rates = body_rates(states)
    broken = rates["broken"]
    return MetricResult(
        value=broken["rate"], n=ctx.n, unit="images", per_image=p_broken, ci95=tuple(broken["ci95"]),
        ci_method="Wilson score interval over images (each of the three rates)", stages=("detect_generated",),
        extra={"rates": rates, "no_person_rate": rates["no_person"]["rate"], "broken_rate": broken["rate"],
               "whole_rate": rates["whole"]["rate"]},
        per_image_extra={"body_state": states}, per_image_column="judge_p_broken",
        conventions={
            "estimator": describe_estimator(ctx.estimator),
            "judge": f"humantune.eval.anatomy_judge.AnatomyJudge ({ctx.options.get('anatomy_judge') or 'shipped'}"
                     f" weights), P(broken) = 1 - P(correct); preprocessing: {PREPROCESSING}",
            "states": f"no_person: no detection; broken: detected and P(broken) > {judge.config.threshold}; "
                      "whole: detected and not broken",
            "value": "the broken rate; the three rates (sum 1) are under 'rates'",
            "per_image": "P(broken) of every image, detected or not",
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
        float(net(torch.from_numpy(float_chw(ctx.generated_image(i))[None]),
                  torch.from_numpy(float_chw(ctx.reference_image(i))[None]), normalize=True)[0])
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
        "network": f"FID Inception-v3 (pytorch-fid, TF-2015 weights {fid_inception.FID_INCEPTION_WEIGHTS}), "
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
    best = [d.best_person() for d in dets]
    images = [ctx.generated_image(i) for i in ctx.bar(range(ctx.n), "attributes")]
    try:
        result = attributes.attribute_accuracy(images, ctx.prompts, best, DETECTION_CONFIDENCE)
    except ValueError as e:
        raise HumantuneError(f"attribute_accuracy: {' '.join(str(e).split())} (prompts: {ctx.prompt_source})") \
            from None
    correct, counted = result.per_image_counts()
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
    MetricSpec("body_states", _metric_body_states, ("detector", "anatomy_judge"),
               "rates of no person / detected but judged broken / detected and whole (anatomy judge)"),
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


def missing_input(ctx: EvalContext, need: str) -> str | None:
    if need == "reference" and ctx.reference is None:
        return "a reference (--reference)"
    if need == "targets" and ctx.targets is None:
        return "target poses (keypoints in the generated metadata.jsonl or a reference with keypoints)"
    if need == "prompts" and ctx.prompts is None:
        return "prompts (--prompts, or 'text' in the generated metadata.jsonl or reference captions)"
    return None


def load_models(names: list[str], options: dict[str, Any]) -> dict[str, Any]:
    """Feature networks the chosen metrics need, loaded before any other work so a missing file fails fast."""
    models: dict[str, Any] = {}
    needs = {need for name in names for need in METRICS[name].needs}
    if "inception" in needs:
        models["inception"] = fid_inception.InceptionFeatures(options.get("inception_weights"))
    if "lpips" in needs:
        models["lpips"] = distribution.LpipsMetric(options.get("lpips_net", "alex"), options.get("lpips_weights"),
                                                   options.get("lpips_backbone_weights"))
    if "anatomy_judge" in needs:
        from humantune.eval.anatomy_judge import AnatomyJudge

        models["anatomy_judge"] = AnatomyJudge.load(options.get("anatomy_judge"))
    if "clip" in needs:
        models["clip"] = distribution.ClipScoreMetric(options.get("clip_model", "openai/clip-vit-large-patch14"))
    return models
