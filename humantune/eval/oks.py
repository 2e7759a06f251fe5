"""Object Keypoint Similarity (OKS), the COCO keypoint matching score (shared/papers.md, "Evaluation facts").

OKS = Σ_i exp(−d_i² / (2 s² k_i²)) · [v_i > 0]  /  Σ_i [v_i > 0],   k_i = 2σ_i,   s² = object area

d_i is the Euclidean distance between predicted and ground-truth keypoint i, v_i the ground-truth visibility flag
and σ_i the per-keypoint COCO sigma (:data:`humantune.data.keypoints.COCO17_SIGMAS`). The area is in pixels²;
which area is used (segment area, bbox area, 0.53·bbox area) changes the score and must be stated with it.
"""

from __future__ import annotations

import numpy as np

from humantune.data.keypoints import COCO17_SIGMAS


def object_keypoint_similarity(
    pred: np.ndarray, gt: np.ndarray, area: float, sigmas: np.ndarray = COCO17_SIGMAS
) -> float:
    """OKS of one predicted person against one ground-truth person.

    OKS = Σ_i exp(−d_i² / (2·s²·k_i²))·[v_i>0] / Σ_i [v_i>0],  k_i = 2σ_i,  s² = ``area``.

    pred: (K, 2) or (K, 3) ``[x, y(, score)]`` (the third column is ignored); gt: (K, 3) ``[x, y, v]``.
    Returns NaN when no ground-truth keypoint is labelled (Σ_i [v_i>0] = 0, the ratio is undefined); COCO's
    treatment of such people is in :func:`oks_matrix`. Raises ValueError for a non-positive area or bad shapes.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    k = sigmas.shape[0]
    if pred.ndim != 2 or pred.shape[0] != k or pred.shape[1] not in (2, 3):
        raise ValueError(f"pred must have shape ({k}, 2) or ({k}, 3), got {pred.shape}")
    if gt.shape != (k, 3):
        raise ValueError(f"gt must have shape ({k}, 3), got {gt.shape}")
    if not area > 0:
        raise ValueError(f"area must be positive, got {area}")
    visible = gt[:, 2] > 0
    if not visible.any():
        return float("nan")
    d2 = np.sum((pred[:, :2] - gt[:, :2]) ** 2, axis=1)
    e = d2 / (2.0 * area * (2.0 * sigmas) ** 2)
    return float(np.mean(np.exp(-e[visible])))


def oks_matrix(
    dets: np.ndarray,
    gts: np.ndarray,
    gt_areas: np.ndarray,
    gt_bboxes: np.ndarray | None = None,
    sigmas: np.ndarray = COCO17_SIGMAS,
) -> np.ndarray:
    """OKS between every detection and every ground truth of one image, as pycocotools ``COCOeval.computeOks``.

    For a ground truth j with labelled keypoints (k1 = Σ_i [v_i>0] > 0):
        e_dij = (dx² + dy²) / k_i² / (area_j + ε) / 2,   OKS_dj = Σ_{i: v_i>0} exp(−e_dij) / k1
    For a ground truth with no labelled keypoint, dx (dy likewise) is the distance from the detected keypoint to
    the box [x − w, x + 2w] × [y − h, y + 2h] (its bbox grown by its own size on every side, pycocotools'
    "double the gt bbox"; 0 inside), and the mean runs over all K keypoints.
    k_i = 2σ_i and ε = ``np.spacing(1)``, as in pycocotools.

    dets: (D, K, 3) or (D, K, 2) in the order to report (pycocotools first sorts detections by descending score
    and keeps ``maxDets[-1]``; do that before calling to compare); gts: (G, K, 3); gt_areas: (G,);
    gt_bboxes: (G, 4) ``[x, y, w, h]``, needed only when some ground truth has no labelled keypoint
    (ValueError otherwise). Returns float64 (D, G); an empty side gives an empty matrix.
    """
    dets = np.asarray(dets, dtype=np.float64)
    gts = np.asarray(gts, dtype=np.float64)
    gt_areas = np.asarray(gt_areas, dtype=np.float64)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    k = sigmas.shape[0]
    if dets.ndim != 3 or dets.shape[1] != k or dets.shape[2] not in (2, 3):
        raise ValueError(f"dets must have shape (D, {k}, 3), got {dets.shape}")
    if gts.ndim != 3 or gts.shape[1:] != (k, 3):
        raise ValueError(f"gts must have shape (G, {k}, 3), got {gts.shape}")
    if gt_areas.shape != (gts.shape[0],):
        raise ValueError(f"gt_areas must have shape ({gts.shape[0]},), got {gt_areas.shape}")
    unlabelled = ~(gts[:, :, 2] > 0).any(axis=1)
    if gt_bboxes is None:
        if unlabelled.any():
            raise ValueError(
                f"ground truths {np.flatnonzero(unlabelled).tolist()} have no labelled keypoint: "
                "their bboxes are needed (gt_bboxes)"
            )
    else:
        gt_bboxes = np.asarray(gt_bboxes, dtype=np.float64)
        if gt_bboxes.shape != (gts.shape[0], 4):
            raise ValueError(f"gt_bboxes must have shape ({gts.shape[0]}, 4), got {gt_bboxes.shape}")

    variances = (sigmas * 2) ** 2
    xd, yd = dets[:, :, 0], dets[:, :, 1]
    ious = np.zeros((dets.shape[0], gts.shape[0]))
    for j, (gt, area) in enumerate(zip(gts, gt_areas)):
        if not unlabelled[j]:
            visible = gt[:, 2] > 0
            dx = xd - gt[:, 0]
            dy = yd - gt[:, 1]
        else:
            bx, by, bw, bh = gt_bboxes[j]
            x0, x1 = bx - bw, bx + bw * 2
            y0, y1 = by - bh, by + bh * 2
            dx = np.maximum(0.0, x0 - xd) + np.maximum(0.0, xd - x1)
            dy = np.maximum(0.0, y0 - yd) + np.maximum(0.0, yd - y1)
            visible = np.ones(k, dtype=bool)
        # Same operation order as pycocotools (agreement to ~1 ulp; only the summation order differs).
        e = (dx**2 + dy**2) / variances / (area + np.spacing(1)) / 2
        e = e[:, visible]
        ious[:, j] = np.sum(np.exp(-e), axis=1) / e.shape[1]
    return ious
