"""The evaluation workflow behind ``humantune eval``: score a folder of generated images against targets and a
reference, and write the results.

:func:`evaluate` builds the :class:`~humantune.eval.context.EvalContext` from the inputs (:mod:`humantune.eval.inputs`
describes the folder layouts, prompt files and pairing), runs the chosen metrics of the registry
(:mod:`humantune.eval.metrics`: what each measures and its interval) and writes them out.

Outputs in ``out_dir`` (written as a whole: a temporary folder replaces ``out_dir`` at the end): ``metrics.json``
(every metric's value, interval, sample counts, conventions, seconds and images/s), ``per_image.jsonl`` (one row per
generated image: its metric values, detection and target keypoints) and ``report.html``
(:mod:`humantune.report.eval_report`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from humantune import __version__
from humantune.errors import HumantuneError
from humantune.eval.context import EvalContext, build_context, describe_estimator
from humantune.eval.metrics import DEFAULT_METRICS, METRICS, MetricResult, load_models, missing_input, \
    parse_metric_names
from humantune.eval.pose_estimators import PoseEstimator, load_pose_estimator
from humantune.io import json_safe, new_output_dir, write_json_atomic, write_jsonl_atomic
from humantune.report.eval_report import write_eval_report


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
    anatomy_judge: str | os.PathLike | None = None,
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
    open). anatomy_judge: a folder for :meth:`~humantune.eval.anatomy_judge.AnatomyJudge.load` (the
    ``body_states`` metric; default: the shipped judge). ``out_dir`` must not exist or be empty unless ``overwrite``.
    """
    names = parse_metric_names(metrics)
    ctx = build_context(generated, reference, prompts, area_convention, pairing, progress)
    skipped: dict[str, str] = {}
    if names is None:
        names = []
        for name in DEFAULT_METRICS:
            missing = next((m for m in map(lambda need: missing_input(ctx, need), METRICS[name].needs) if m), None)
            if missing:
                skipped[name] = f"needs {missing}"
            else:
                names.append(name)
        if not names:
            raise HumantuneError(f"no metric can run on {ctx.generated_dir} alone: give a reference or target poses")
    else:
        for name in names:
            for need in METRICS[name].needs:
                missing = missing_input(ctx, need)
                if missing:
                    raise HumantuneError(f"metric '{name}' needs {missing}")
    ctx.options = {"inception_weights": inception_weights, "lpips_net": lpips_net, "lpips_weights": lpips_weights,
                   "lpips_backbone_weights": lpips_backbone_weights, "clip_model": clip_model,
                   "world_features": world_features, "anatomy_judge": anatomy_judge,
                   "kid_subset_size": kid_subset_size, "kid_subsets": kid_subsets}
    ctx.models = load_models(names, ctx.options)

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
        write_json_atomic(tmp / "metrics.json", json_safe(summary))
        write_jsonl_atomic(tmp / "per_image.jsonl", [json_safe(r) for r in rows])
        if report:
            write_eval_report(tmp)
    out = Path(out_dir)
    return EvalResult(summary=json_safe(summary), per_image=[json_safe(r) for r in rows], out_dir=out,
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
