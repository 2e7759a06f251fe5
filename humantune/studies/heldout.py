"""Generate a held-out set with several labelled models, score every model the same way, and collect the numbers:
the evaluation a recipe runs after training (the base vs each stage) and a benchmark runs per arm.

Layout under ``OUT`` (a recipe's ``OUT/eval``)::

    reference/            the held-out images (+ ``_condition.png``) and metadata.jsonl: what paired metrics compare with
    <label>/images/       one image per held-out sample, generated with seed ``seeds[i]``, and metadata.jsonl (caption,
                          seed and the sample's targets, e.g. keypoints, boxes and areas for OKS)
    <label>/metrics/      metrics.json, per_image.jsonl, report.html (:func:`humantune.studies.evaluation.evaluate`)
    <label>/fingerprint.json  what the images and scores were made from; an unchanged label is not regenerated

A model is given as a function that generates the held-out images of given sample indices (called only when its
fingerprint changed), so loading weights costs nothing when the evaluation is reused, and under ``accelerate
launch`` each process generates a shard of the set.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from humantune.config import option
from humantune.io import json_safe, new_output_dir, write_json_atomic

WORLD_FEATURE_DIM = 128
"""Width of the world-feature net's features (humantune.eval.world_features.FEATURE_DIM): world_fd's covariances
are singular, and the distance unstable, with this many images or fewer."""


@dataclass
class EvalConfig:
    """The held-out evaluation after training (:func:`evaluate_models`)."""

    samples: int = option(200, "held-out samples every stage generates and is scored on (0: no evaluation)")
    include_base: bool = option(True, "also evaluate the base model (without the trained weights)")
    metrics: list[str] = option(["oks", "attribute_accuracy", "world_fd", "ssim"],
                                "humantune.eval metrics (world_fd and attribute_accuracy read mannequin images)")
    report_samples: int = option(8, "held-out samples shown side by side in report.html")
    lpips_weights: Path | None = option(None, "metric lpips: LPIPS linear-layer weights file (see humantune eval)")
    lpips_backbone_weights: Path | None = option(None, "metric lpips: torchvision AlexNet weights file")
    clip_model: str = option("openai/clip-vit-large-patch14", "metric clip_score: local CLIP model directory or "
                                                               "cached hub id")

    def __post_init__(self) -> None:
        from humantune.eval.metrics import METRICS

        for name in self.metrics:
            if name not in METRICS:
                raise ValueError(f"unknown metric {name!r} in metrics; known: {', '.join(METRICS)}")
        if self.samples < 0 or self.report_samples < 0:
            raise ValueError("samples and report_samples must be at least 0")
        if "world_fd" in self.metrics and 0 < self.samples <= WORLD_FEATURE_DIM:
            raise ValueError(f"world_fd compares covariances of {WORLD_FEATURE_DIM}-d features and needs more than "
                             f"{WORLD_FEATURE_DIM} samples (got {self.samples}): raise samples or drop world_fd "
                             "from metrics")

    def evaluate_options(self) -> dict[str, Any]:
        """The :func:`humantune.studies.evaluation.evaluate` options this config sets."""
        return {"metrics": self.metrics, "lpips_weights": self.lpips_weights,
                "lpips_backbone_weights": self.lpips_backbone_weights, "clip_model": self.clip_model}


@dataclass
class HeldoutSet:
    """The held-out samples: ``captions[i]`` generated with seed ``seeds[i]``; ``images`` the real images of the
    same samples (uint8 H×W×3; None: no paired reference); ``conditions`` their condition images (written beside
    the reference); ``targets[i]`` extra metadata of sample i for the metrics (e.g. ``keypoints``, ``bboxes``,
    ``areas``)."""

    captions: list[str]
    seeds: list[int]
    images: list[np.ndarray] | None = None
    conditions: list[np.ndarray] | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.captions)


def write_reference(heldout: HeldoutSet, folder: Path, fingerprint: dict) -> Path:
    """The held-out images as a folder the metrics read (``NNNNN.png``, ``NNNNN_condition.png``,
    metadata.jsonl); rewritten only when ``fingerprint`` changed."""
    done = folder / "fingerprint.json"
    if not (done.is_file() and json.loads(done.read_text()) == json_safe(fingerprint)):
        with new_output_dir(folder, overwrite=True) as tmp:
            rows = []
            for i, caption in enumerate(heldout.captions):
                Image.fromarray(heldout.images[i]).save(tmp / f"{i:05d}.png")
                if heldout.conditions is not None:
                    Image.fromarray(heldout.conditions[i]).save(tmp / f"{i:05d}_condition.png")
                rows.append({"file_name": f"{i:05d}.png", "text": caption})
            (tmp / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            write_json_atomic(tmp / "fingerprint.json", json_safe(fingerprint))
    return folder


def write_generated(images: list[Image.Image], heldout: HeldoutSet, folder: Path) -> Path:
    """``images`` (one per held-out sample) as ``folder/NNNNN.png`` with metadata.jsonl rows ``file_name``,
    ``text``, ``seed`` and the sample's targets."""
    with new_output_dir(folder, overwrite=True) as tmp:
        rows = []
        for i, image in enumerate(images):
            image.save(tmp / f"{i:05d}.png")
            target = heldout.targets[i] if heldout.targets else {}
            rows.append({"file_name": f"{i:05d}.png", "text": heldout.captions[i], "seed": heldout.seeds[i],
                         **json_safe(target)})
        (tmp / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def evaluate_models(models: dict[str, Callable[[list[int]], list[Image.Image]]], heldout: HeldoutSet, out: Path,
                    fingerprints: dict[str, dict], reference: Path | None = None,
                    progress: bool = True, **evaluate_options: Any) -> dict[str, dict]:
    """For every label of ``models``: generate the held-out set with ``models[label](indices)`` (the images of
    held-out samples ``indices``, in that order) into ``out/<label>/images`` and score it against ``reference`` with
    :func:`humantune.studies.evaluation.evaluate` (``evaluate_options``: metrics, estimator, area_convention,
    LPIPS/CLIP weights ...) — unless ``out/<label>/fingerprint.json`` equals ``fingerprints[label]`` and its
    metrics exist. Images kept from an earlier call are scored again (not generated again) when their metrics were
    computed with another pose estimator setting than this call's (``metrics.json``'s ``estimator`` line, e.g. an
    earlier MediaPipe ``margin``). Returns label → metrics.json.

    Under ``accelerate launch`` every process calls this: process r of P generates samples r, r + P, …, the main
    process gathers the images, writes and scores them once, and every process returns the same results (the
    main process's reading of the folder decides what is reused)."""
    from accelerate.utils import broadcast_object_list, gather_object

    from humantune.eval.context import describe_estimator
    from humantune.studies.evaluation import evaluate
    from humantune.train.processes import process_state

    state = process_state()
    main = state.is_main_process
    results = {}
    estimator = evaluate_options.get("estimator", "mediapipe")
    scorer = functools.cache(lambda: None if estimator is None else describe_estimator(estimator))
    for label, generate in tqdm(models.items(), desc="evaluating models", unit="model",
                                disable=not (progress and main)):
        root = out / label
        done = root / "fingerprint.json"
        fingerprint = json_safe(fingerprints[label])
        stale = [main and not (done.is_file() and json.loads(done.read_text()) == fingerprint
                               and (root / "metrics" / "metrics.json").is_file())]
        if main and not stale[0]:
            recorded = json.loads((root / "metrics" / "metrics.json").read_text()).get("estimator")
            if recorded is not None and scorer() is not None and recorded != scorer():
                evaluate(root / "images", reference, out_dir=root / "metrics", overwrite=True, **evaluate_options)
        if broadcast_object_list(stale)[0]:
            shard = list(range(state.process_index, len(heldout), state.num_processes))
            images = gather_object([(i, np.asarray(im.convert("RGB"))) for i, im in zip(shard, generate(shard))])
            if main:
                by_index = dict(images)
                write_generated([Image.fromarray(by_index[i]) for i in range(len(heldout))], heldout, root / "images")
                evaluate(root / "images", reference, out_dir=root / "metrics", overwrite=True, **evaluate_options)
                write_json_atomic(done, fingerprint)
            state.wait_for_everyone()
        if main:
            results[label] = json.loads((root / "metrics" / "metrics.json").read_text())
    return broadcast_object_list([results])[0]


def with_interval(metric: dict | None) -> str | None:
    """``value [lo, hi]`` of a metrics.json entry (3 decimals), or None when it has no value."""
    if metric is None or metric.get("value") is None:
        return None
    text = f"{metric['value']:.3f}"
    if metric.get("ci95"):
        lo, hi = metric["ci95"]
        if lo is not None and hi is not None:
            text += f" [{lo:.3f}, {hi:.3f}]"
    return text


def metric_table_row(label: str, summary: dict) -> dict:
    """One report-table row of a model's metrics.json: OKS with its interval, AP and detections per image, then
    every other metric with its interval."""
    m = summary["metrics"]
    row: dict[str, Any] = {"model": label}
    if "oks" in m:
        row["OKS"] = with_interval(m["oks"])
        row["AP"] = m["oks"].get("ap")
        row["detected"] = m["oks"]["num_detections"] / max(1, m["oks"]["num_images"])
    for name in m:
        if name != "oks":
            row[name] = with_interval(m[name])
    return row


SUMMARY_ONLY_KEYS = ("conventions", "seconds", "shared_stages", "seconds_with_stages", "images_per_s")
"""metrics.json entries that describe how a score was computed, not the score: left out of results.json."""


def scores_only(evaluation: dict[str, dict]) -> dict[str, dict]:
    """label → metric → its numbers, without :data:`SUMMARY_ONLY_KEYS` (the ``metrics`` part of results.json)."""
    return {label: {name: {k: v for k, v in m.items() if k not in SUMMARY_ONLY_KEYS}
                    for name, m in summary["metrics"].items()}
            for label, summary in evaluation.items()}
