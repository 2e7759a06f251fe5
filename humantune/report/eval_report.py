"""The HTML report of an evaluation folder written by :func:`humantune.studies.evaluation.evaluate`.

One self-contained page (:class:`~humantune.report.html.HtmlReport`): the metric table with intervals, sample
counts and throughput; the conventions of every metric; a grid of generated images with their detected skeletons
next to the target pose; the worst images by OKS and by anomaly score; a histogram of per-image OKS.

It reads only ``metrics.json``, ``per_image.jsonl`` and the generated images (their folder is recorded in
metrics.json), so a report can be rebuilt from an evaluation folder at any time.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from humantune.errors import DataError
from humantune.eval.pose_estimators import DETECTION_CONFIDENCE
from humantune.report.html import HtmlReport
from humantune.report.overlay import draw_keypoints

_TILE_GAP = 4
_TARGET_BACKGROUND = (235, 235, 235)


def _read(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    metrics_path, rows_path = run_dir / "metrics.json", run_dir / "per_image.jsonl"
    for path in (metrics_path, rows_path):
        if not path.is_file():
            raise DataError(f"{path}: not found (an evaluation folder has metrics.json and per_image.jsonl)")
    summary = json.loads(metrics_path.read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return summary, rows


def detection_flags(keypoints: Any, min_confidence: float = DETECTION_CONFIDENCE) -> np.ndarray:
    """Detected ``[x, y, confidence]`` people (P, 17, 3) as COCO ``[x, y, v]`` for drawing: v = 2 (drawn as a visible
    joint) where the confidence ≥ ``min_confidence``, else 0 (not drawn)."""
    kp = np.asarray(keypoints if keypoints is not None else [], np.float64).reshape(-1, 17, 3).copy()
    kp[:, :, 2] = np.where(kp[:, :, 2] >= min_confidence, 2.0, 0.0)
    return kp


def comparison_tile(image: Image.Image, detection: Any, target: Any | None) -> Image.Image:
    """The generated image with its detected skeleton, beside the target skeleton on a plain background."""
    left = draw_keypoints(image, detection_flags(detection))
    if target is None:
        return left
    canvas = Image.new("RGB", image.size, _TARGET_BACKGROUND)
    right = draw_keypoints(canvas, np.asarray(target, np.float64).reshape(-1, 17, 3))
    tile = Image.new("RGB", (2 * image.width + _TILE_GAP, image.height), (255, 255, 255))
    tile.paste(left, (0, 0))
    tile.paste(right, (image.width + _TILE_GAP, 0))
    return tile


def _fmt(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def _caption(row: dict[str, Any]) -> str:
    parts = [row["file_name"]]
    if "oks" in row:
        parts.append(f"OKS {_fmt(row['oks'])}")
    if "anomaly_score" in row or "anomaly_flag" in row:
        score = row.get("anomaly_score")
        parts.append("anomaly " + ("∞ (not detected)" if score is None and row.get("anomaly_flag") else _fmt(score)))
        if row.get("anomaly_violations"):
            parts.append(", ".join(row["anomaly_violations"]))
    return " · ".join(parts)


def _tiles(rows: list[dict[str, Any]], generated_dir: Path) -> list[tuple[Image.Image, str]]:
    out = []
    for row in rows:
        path = generated_dir / row["file_name"]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError):
            raise DataError(f"{path}: cannot read the generated image named in per_image.jsonl") from None
        out.append((comparison_tile(rgb, row.get("detection"), row.get("target_keypoints")), _caption(row)))
    return out


def _metric_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    details_keys = ("ap", "ar", "ap50", "ap75", "flagged", "std_over_subsets")
    rows = []
    for name, m in summary["metrics"].items():
        ci = m.get("ci95") or [None, None]
        details = ", ".join(f"{k} {_fmt(m[k])}" for k in details_keys if k in m)
        rows.append({"metric": name, "value": m["value"], "ci95 low": ci[0], "ci95 high": ci[1], "n": m["n"],
                     "unit": m["unit"], "images/s": m.get("images_per_s"), "details": details})
    return rows


def _oks_histogram(values: list[float]):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(values, bins=np.linspace(0, 1, 21), color="#1f77b4", edgecolor="white")
    ax.set_xlabel("per-image OKS (mean over target people)")
    ax.set_ylabel("images")
    ax.set_xlim(0, 1)
    return fig


def build_eval_report(run_dir: str | os.PathLike, grid_size: int = 24, worst: int = 8) -> HtmlReport:
    """The report of the evaluation folder ``run_dir``: at most ``grid_size`` images in the overview grid (the first
    ones in order) and ``worst`` images in each worst-case grid."""
    root = Path(run_dir)
    summary, rows = _read(root)
    generated_dir = Path(summary["generated"])
    report = HtmlReport("humantune evaluation")
    report.paragraph(
        f"{summary['num_images']} generated images from {summary['generated']}"
        + (f", reference {summary['reference']} (paired by {summary['pairing']})" if summary.get("reference") else "")
        + (f"; targets: {summary['targets']}" if summary.get("targets") else "")
        + (f"; estimator: {summary['estimator']}" if summary.get("estimator") else "") + "."
    )
    report.heading("Metrics")
    report.table(_metric_rows(summary))
    if summary.get("skipped"):
        report.paragraph("Not run: " + "; ".join(f"{k} ({v})" for k, v in summary["skipped"].items()) + ".")
    report.heading("Conventions", 3)
    conventions = {name: {"conventions": m["conventions"], "ci_method": m.get("ci_method")}
                   for name, m in summary["metrics"].items()}
    report.code(json.dumps(conventions, indent=2, ensure_ascii=False))

    has_pose = any("detection" in r for r in rows)
    if has_pose or rows:
        report.heading("Generated images" + (" (detected skeleton | target pose)" if any(
            "target_keypoints" in r for r in rows) else ""))
        report.image_grid(_tiles(rows[:grid_size], generated_dir), columns=4, thumb_size=320)
    oks_rows = [r for r in rows if r.get("oks") is not None]
    if oks_rows:
        report.heading(f"Worst {min(worst, len(oks_rows))} by OKS")
        ranked = sorted(oks_rows, key=lambda r: r["oks"])[:worst]
        report.image_grid(_tiles(ranked, generated_dir), columns=4, thumb_size=320)
        report.heading("Per-image OKS", 3)
        report.figure(_oks_histogram([r["oks"] for r in oks_rows]))
    anomaly_rows = [r for r in rows if "anomaly_flag" in r]
    if anomaly_rows:
        report.heading(f"Worst {min(worst, len(anomaly_rows))} by anomaly score")

        def severity(r: dict[str, Any]) -> float:
            return math.inf if r.get("anomaly_score") is None else r["anomaly_score"]

        ranked = sorted(anomaly_rows, key=severity, reverse=True)[:worst]
        report.image_grid(_tiles(ranked, generated_dir), columns=4, thumb_size=320)
    return report


def write_eval_report(run_dir: str | os.PathLike, path: str | os.PathLike | None = None, grid_size: int = 24,
                      worst: int = 8) -> Path:
    """Write :func:`build_eval_report` of ``run_dir`` to ``path`` (default ``run_dir/report.html``) atomically."""
    target = Path(path) if path is not None else Path(run_dir) / "report.html"
    return build_eval_report(run_dir, grid_size, worst).save(target)
