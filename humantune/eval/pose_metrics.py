"""Pose-accuracy metrics: COCO keypoint AP/AR, PCK, and the pose-agreement protocol for generated images.

COCO keypoint AP/AR (shared/papers.md, "Evaluation facts") follow pycocotools ``COCOeval(iouType='keypoints')``
step by step: OKS (:func:`humantune.eval.oks.oks_matrix`) as the similarity, thresholds 0.50:0.05:0.95, greedy
matching of detections in descending score order per image, 101 recall points, ``maxDets`` = 20. The ground-truth
area enters twice, as s² in OKS and in the area-range filter, so it is a named option (:data:`AREA_CONVENTIONS`)
to report with the number:

- ``segment``: the person's segment (mask) area, COCO's own convention and the mannequin world's ``areas``;
- ``bbox``: w·h of the ground-truth box;
- ``bbox053``: 0.53·w·h, the mean segment/box area ratio of COCO people, for boxes without masks.

Pose agreement (HumanSD's protocol): detect poses on each generated image and score them against the target poses
with mean OKS and AP. A detector other than the one that produced the targets biases that comparison, so
:func:`debiased_pose_agreement` scores detections on the generated image against detections *by the same
estimator* on the real image of the same pose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from humantune.data.keypoints import COCO17, COCO17_SIGMAS
from humantune.eval.oks import oks_matrix

AREA_CONVENTIONS = ("segment", "bbox", "bbox053")

# COCO's mean ratio of segment area to bbox area for people (the "0.53·bbox" convention).
BBOX_TO_SEGMENT_AREA = 0.53

# pycocotools COCOeval.Params for iouType='keypoints'.
OKS_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = {"all": (0.0, 1e5**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e5**2)}


class PoseDetections(Protocol):
    """People detected in one image (:class:`~humantune.eval.pose_estimators.PoseEstimate` is one).

    keypoints: (D, K, 3) ``[x, y, confidence]``; scores: (D,) person scores.
    """

    keypoints: np.ndarray
    scores: np.ndarray


@dataclass
class PoseGroundTruth:
    """Ground-truth people of one image (a mannequin :class:`~humantune.data.mannequin.scene.Scene` has the same
    fields).

    keypoints: (G, K, 3) ``[x, y, v]``, v > 0 = labelled; bboxes: (G, 4) ``[x, y, w, h]``;
    areas: (G,) segment areas in pixels², or None when no mask exists (then use the ``bbox``/``bbox053`` area).
    """

    keypoints: np.ndarray
    bboxes: np.ndarray
    areas: np.ndarray | None = None


@dataclass
class KeypointAP:
    """COCO keypoint AP/AR for one area range: ``ap`` = pycocotools ``stats[0]`` (``stats[3]``/``stats[4]`` for
    medium/large), ``ar`` = ``stats[5]`` (``stats[8]``/``stats[9]``); ``ap50``/``ap75``/``ar50``/``ar75`` at single
    OKS thresholds. NaN where pycocotools reports −1 (no ground truth in the range)."""

    ap: float
    ap50: float
    ap75: float
    ar: float
    ar50: float
    ar75: float
    area_range: str
    area_convention: str
    num_ground_truths: int
    num_detections: int


def ground_truth_areas(gt: PoseGroundTruth, area_convention: str) -> np.ndarray:
    """The area s² of each ground-truth person under ``area_convention`` (one of :data:`AREA_CONVENTIONS`).

    segment → ``gt.areas``; bbox → w·h; bbox053 → 0.53·w·h. ValueError for an unknown convention, or ``segment``
    without areas.
    """
    if area_convention not in AREA_CONVENTIONS:
        raise ValueError(f"unknown area convention {area_convention!r}; expected one of {', '.join(AREA_CONVENTIONS)}")
    if area_convention == "segment":
        if gt.areas is None:
            raise ValueError("area convention 'segment' needs segment areas; these ground truths have none")
        return np.asarray(gt.areas, dtype=np.float64)
    bboxes = np.asarray(gt.bboxes, dtype=np.float64).reshape(-1, 4)
    box_area = bboxes[:, 2] * bboxes[:, 3]
    return box_area * BBOX_TO_SEGMENT_AREA if area_convention == "bbox053" else box_area


def _people(array: np.ndarray, k: int, cols: int) -> np.ndarray:
    """``array`` as float64; an empty array of any shape becomes (0, k, cols)."""
    arr = np.asarray(array, dtype=np.float64)
    return arr.reshape(0, k, cols) if arr.size == 0 else arr


def _check_image(dets: PoseDetections, gt: PoseGroundTruth, index: int, k: int) -> tuple[np.ndarray, ...]:
    """Image ``index``'s detection keypoints (D, k, 3), scores (D,), ground-truth keypoints (G, k, 3) and bboxes
    (G, 4) as float64; ValueError naming the image and the shapes otherwise."""
    kp = _people(dets.keypoints, k, 3)
    scores = np.asarray(dets.scores, dtype=np.float64).reshape(-1)
    if kp.ndim != 3 or kp.shape[1:] != (k, 3) or scores.shape != (kp.shape[0],):
        raise ValueError(
            f"image {index}: detections must be keypoints (D, {k}, 3) with scores (D,), got {kp.shape} and "
            f"{scores.shape}"
        )
    gkp = _people(gt.keypoints, k, 3)
    bboxes = np.asarray(gt.bboxes, dtype=np.float64)
    bboxes = bboxes.reshape(0, 4) if bboxes.size == 0 else bboxes
    if gkp.ndim != 3 or gkp.shape[1:] != (k, 3) or bboxes.shape != (gkp.shape[0], 4):
        raise ValueError(
            f"image {index}: ground truth must be keypoints (G, {k}, 3) with bboxes (G, 4), got {gkp.shape} and "
            f"{bboxes.shape}"
        )
    return kp, scores, gkp, bboxes


def _evaluate_image(
    dets: np.ndarray, scores: np.ndarray, gts: np.ndarray, bboxes: np.ndarray, areas: np.ndarray,
    area_range: tuple[float, float], max_dets: int, sigmas: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """pycocotools ``COCOeval.evaluateImg`` for one image and category: (det scores, det matched (T, D),
    det ignored (T, D), gt ignored (G,)), or None for an image with neither detections nor ground truth."""
    if len(dets) == 0 and len(gts) == 0:
        return None
    lo, hi = area_range
    # A person with no labelled keypoint is ignored (COCOeval._prepare); so is one outside the area range.
    gt_ignore = ~(gts[:, :, 2] > 0).any(axis=1) | (areas < lo) | (areas > hi)
    gt_order = np.argsort(gt_ignore, kind="mergesort")
    gt_ignore = gt_ignore[gt_order]
    det_order = np.argsort(-scores, kind="mergesort")[:max_dets]
    dets, scores = dets[det_order], scores[det_order]
    ious = oks_matrix(dets, gts, areas, bboxes, sigmas)[:, gt_order] if len(dets) and len(gts) else None

    n_t = len(OKS_THRESHOLDS)
    gt_matched = np.zeros((n_t, len(gts)), dtype=bool)
    det_matched = np.zeros((n_t, len(dets)), dtype=bool)
    det_ignore = np.zeros((n_t, len(dets)), dtype=bool)
    if ious is not None:
        for t_i, t in enumerate(OKS_THRESHOLDS):
            for d_i in range(len(dets)):
                best = min(t, 1 - 1e-10)
                m = -1
                for g_i in range(len(gts)):
                    if gt_matched[t_i, g_i]:
                        continue
                    # Already matched to a real ground truth: stop at the ignored ones (sorted last).
                    if m > -1 and not gt_ignore[m] and gt_ignore[g_i]:
                        break
                    if ious[d_i, g_i] < best:
                        continue
                    best = ious[d_i, g_i]
                    m = g_i
                if m == -1:
                    continue
                det_ignore[t_i, d_i] = gt_ignore[m]
                det_matched[t_i, d_i] = True
                gt_matched[t_i, m] = True
    # Unmatched detections outside the area range are ignored; pycocotools' detection area is the box spanned by
    # all K keypoints (COCO.loadRes).
    xy = dets[:, :, :2]
    det_area = np.ptp(xy[:, :, 0], axis=1) * np.ptp(xy[:, :, 1], axis=1) if len(dets) else np.zeros(0)
    outside = (det_area < lo) | (det_area > hi)
    det_ignore |= ~det_matched & outside[None, :]
    return scores, det_matched, det_ignore, gt_ignore


def keypoint_ap(
    detections: Sequence[PoseDetections],
    ground_truths: Sequence[PoseGroundTruth],
    area_convention: str = "segment",
    area_range: str = "all",
    max_dets: int = 20,
    sigmas: np.ndarray = COCO17_SIGMAS,
) -> KeypointAP:
    """COCO keypoint AP and AR, equal to pycocotools ``COCOeval(iouType='keypoints')`` on the same inputs.

    Per image, detections are sorted by descending score (stable), the first ``max_dets`` kept, and at each OKS
    threshold t ∈ {0.50, 0.55, …, 0.95} each detection in turn takes the unmatched ground truth of highest
    OKS ≥ t (real ground truths before ignored ones). Over all images, detections are ranked by score (stable, in
    image order); with TP/FP cumulative sums, recall = TP/N_gt and precision = TP/(TP+FP+ε) made monotone from the
    right, AP_t = mean over r ∈ {0, 0.01, …, 1} of the precision at the first rank with recall ≥ r (0 if never),
    AR_t = final recall. AP and AR are the means over t.

    Ignored (neither TP, FP nor counted in N_gt): ground truths with no labelled keypoint or whose area is outside
    ``area_range`` ('all', 'medium' = 32²–96², 'large' > 96²), detections matched to them, and unmatched detections
    whose keypoint-extent box area is outside the range. Crowd regions are not supported: every ground truth is a
    person (iscrowd = 0).

    detections[i] and ground_truths[i] are image i (same length); each detection has keypoints (D, K, 3) and
    scores (D,); each ground truth keypoints (G, K, 3) ``[x, y, v]``, bboxes (G, 4) ``[x, y, w, h]`` and, for the
    ``segment`` convention, areas (G,). ``area_convention`` picks s² (see :func:`ground_truth_areas`).
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"got detections for {len(detections)} images but ground truth for {len(ground_truths)}")
    if area_range not in AREA_RANGES:
        raise ValueError(f"unknown area range {area_range!r}; expected one of {', '.join(AREA_RANGES)}")
    if max_dets < 1:
        raise ValueError(f"max_dets must be positive, got {max_dets}")
    sigmas = np.asarray(sigmas, dtype=np.float64)
    k = sigmas.shape[0]
    per_image = []
    n_dets = n_gts = 0
    for i, (dets, gt) in enumerate(zip(detections, ground_truths)):
        kp, scores, gkp, bboxes = _check_image(dets, gt, i, k)
        areas = ground_truth_areas(PoseGroundTruth(gkp, bboxes, gt.areas), area_convention).reshape(-1)
        if areas.shape != (gkp.shape[0],):
            raise ValueError(f"image {i}: areas must have shape ({gkp.shape[0]},), got {areas.shape}")
        n_dets += len(kp)
        n_gts += len(gkp)
        result = _evaluate_image(kp, scores, gkp, bboxes, areas, AREA_RANGES[area_range], max_dets, sigmas)
        if result is not None:
            per_image.append(result)

    precision, recall = _accumulate(per_image)
    valid_p, valid_r = precision > -1, recall > -1

    def mean_or_nan(values: np.ndarray, valid: np.ndarray) -> float:
        return float(np.mean(values[valid])) if valid.any() else float("nan")

    t50, t75 = 0, int(np.flatnonzero(np.isclose(OKS_THRESHOLDS, 0.75))[0])
    return KeypointAP(
        ap=mean_or_nan(precision, valid_p),
        ap50=mean_or_nan(precision[t50], valid_p[t50]),
        ap75=mean_or_nan(precision[t75], valid_p[t75]),
        ar=mean_or_nan(recall, valid_r),
        ar50=mean_or_nan(recall[t50:t50 + 1], valid_r[t50:t50 + 1]),
        ar75=mean_or_nan(recall[t75:t75 + 1], valid_r[t75:t75 + 1]),
        area_range=area_range, area_convention=area_convention, num_ground_truths=n_gts, num_detections=n_dets,
    )


def _accumulate(per_image: list) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools ``COCOeval.accumulate`` for one category, area range and maxDets: precision (T, R) and
    recall (T,), −1 where there is no non-ignored ground truth."""
    n_t, n_r = len(OKS_THRESHOLDS), len(RECALL_THRESHOLDS)
    precision = -np.ones((n_t, n_r))
    recall = -np.ones(n_t)
    if not per_image:
        return precision, recall
    scores = np.concatenate([r[0] for r in per_image])
    order = np.argsort(-scores, kind="mergesort")
    det_matched = np.concatenate([r[1] for r in per_image], axis=1)[:, order]
    det_ignore = np.concatenate([r[2] for r in per_image], axis=1)[:, order]
    gt_ignore = np.concatenate([r[3] for r in per_image])
    n_pos = np.count_nonzero(gt_ignore == 0)
    if n_pos == 0:
        return precision, recall
    tp_sum = np.cumsum(det_matched & ~det_ignore, axis=1).astype(dtype=float)
    fp_sum = np.cumsum(~det_matched & ~det_ignore, axis=1).astype(dtype=float)
    for t_i, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
        nd = len(tp)
        rc = tp / n_pos
        pr = tp / (fp + tp + np.spacing(1))
        recall[t_i] = rc[-1] if nd else 0
        pr = np.maximum.accumulate(pr[::-1])[::-1] if nd else pr
        idx = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
        q = np.zeros(n_r)
        hit = idx < nd
        q[hit] = pr[idx[hit]]
        precision[t_i] = q
    return precision, recall


# --- PCK ------------------------------------------------------------------------------------------------------

PCK_NORMALIZERS = ("torso", "bbox", "head")


def _pair_distance(gt: np.ndarray, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """Per person, the distance between the first pair of ``pairs`` whose two keypoints are both labelled."""
    out = np.full(gt.shape[0], np.nan)
    for a, b in reversed(pairs):
        ia, ib = COCO17[a], COCO17[b]
        ok = (gt[:, ia, 2] > 0) & (gt[:, ib, 2] > 0)
        out = np.where(ok, np.linalg.norm(gt[:, ia, :2] - gt[:, ib, :2], axis=1), out)
    return out


def pck_normalizer(gt: np.ndarray, normalize: str = "torso", bboxes: np.ndarray | None = None) -> np.ndarray:
    """The per-person length PCK thresholds are relative to, from COCO-17 ground truth (N, 17, 3); NaN when undefined.

    - ``torso``: torso diameter, |left shoulder − right hip| (the LSP PCK convention); the other diagonal
      |right shoulder − left hip| when that one is not labelled.
    - ``bbox``: max(w, h) of ``bboxes`` (N, 4) ``[x, y, w, h]``, or of the labelled keypoints' extent if None.
    - ``head``: |left ear − right ear| (head breadth), a COCO-17 stand-in for MPII's PCKh head size
      (0.6·head-box diagonal, which needs head-top keypoints COCO lacks); values are not comparable with PCKh.
    """
    gt = np.asarray(gt, dtype=np.float64)
    if normalize == "torso":
        return _pair_distance(gt, [("left_shoulder", "right_hip"), ("right_shoulder", "left_hip")])
    if normalize == "head":
        return _pair_distance(gt, [("left_ear", "right_ear")])
    if normalize == "bbox":
        if bboxes is not None:
            bboxes = np.asarray(bboxes, dtype=np.float64)
            if bboxes.shape != (gt.shape[0], 4):
                raise ValueError(f"bboxes must have shape ({gt.shape[0]}, 4), got {bboxes.shape}")
            return np.maximum(bboxes[:, 2], bboxes[:, 3])
        out = np.full(gt.shape[0], np.nan)
        for n, person in enumerate(gt):
            xy = person[person[:, 2] > 0, :2]
            if len(xy):
                out[n] = np.ptp(xy, axis=0).max()
        return out
    raise ValueError(f"unknown PCK normaliser {normalize!r}; expected one of {', '.join(PCK_NORMALIZERS)}")


def pck(
    pred: np.ndarray, gt: np.ndarray, threshold: float = 0.2, normalize: str = "torso",
    bboxes: np.ndarray | None = None,
) -> float:
    """Percentage of Correct Keypoints: the fraction of labelled keypoints predicted within ``threshold``·L.

    PCK = Σ_n Σ_i [v_ni > 0]·[‖p_ni − g_ni‖ ≤ α·L_n] / Σ_n Σ_i [v_ni > 0],  α = ``threshold``

    with L_n the person's normaliser (:func:`pck_normalizer`: ``torso`` diameter, ``bbox`` max side, or ``head``
    breadth). People whose normaliser is undefined (its keypoints unlabelled) or zero are left out. pred: (N, 17, 2)
    or (N, 17, 3), already paired with gt: (N, 17, 3) ``[x, y, v]`` (a single person (17, ·) is accepted).
    Returns a fraction in [0, 1], NaN when no keypoint counts.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if gt.ndim == 2:
        pred, gt = pred[None], gt[None]
        bboxes = None if bboxes is None else np.asarray(bboxes, dtype=np.float64).reshape(1, 4)
    if gt.ndim != 3 or gt.shape[1:] != (17, 3):
        raise ValueError(f"gt must have shape (N, 17, 3), got {gt.shape}")
    if pred.shape[:2] != gt.shape[:2] or pred.shape[2] not in (2, 3):
        raise ValueError(f"pred must have shape ({gt.shape[0]}, 17, 2 or 3), got {pred.shape}")
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    length = pck_normalizer(gt, normalize, bboxes)
    usable = np.isfinite(length) & (length > 0)
    labelled = (gt[:, :, 2] > 0) & usable[:, None]
    if not labelled.any():
        return float("nan")
    dist = np.linalg.norm(pred[:, :, :2] - gt[:, :, :2], axis=2)
    correct = dist <= threshold * np.where(usable, length, 0.0)[:, None]
    return float(np.count_nonzero(correct & labelled) / np.count_nonzero(labelled))


# --- pose agreement -------------------------------------------------------------------------------------------


@dataclass
class PoseAgreement:
    """How well poses detected on generated images agree with reference poses.

    mean_oks: mean over reference people of the OKS of the detection matched to them (0 when unmatched);
    ap / ar: COCO keypoint AP/AR (:func:`keypoint_ap`, area range 'all'); num_people: reference people counted
    (those with a labelled keypoint); num_images; area_convention of s².
    """

    mean_oks: float
    ap: float
    ar: float
    num_people: int
    num_images: int
    area_convention: str


def matched_oks(dets: np.ndarray, gts: np.ndarray, areas: np.ndarray, sigmas: np.ndarray = COCO17_SIGMAS) -> np.ndarray:
    """OKS of each ground-truth person with its detection under one-to-one greedy matching by OKS.

    Pairs are taken in descending OKS order, each detection and person used once; people left unmatched (fewer
    detections than people) score 0. dets (D, K, 3), gts (G, K, 3), areas (G,). Returns (G,).
    """
    out = np.zeros(len(gts))
    if len(dets) == 0 or len(gts) == 0:
        return out
    oks = oks_matrix(dets, gts, areas, sigmas=sigmas)
    match = greedy_matching(oks)
    hit = match >= 0
    out[hit] = oks[match[hit], np.flatnonzero(hit)]
    return out


def greedy_matching(oks: np.ndarray) -> np.ndarray:
    """Index of the detection matched to each ground-truth person (−1 if none) given their OKS matrix (D, G): pairs
    taken in descending OKS order (ties in index order), each detection and person used once."""
    out = -np.ones(oks.shape[1], dtype=np.int64)
    used_d: set[int] = set()
    for flat in np.argsort(-oks, axis=None, kind="mergesort"):
        d, g = divmod(int(flat), oks.shape[1])
        if d in used_d or out[g] >= 0:
            continue
        out[g] = d
        used_d.add(d)
    return out


def greedy_assignment(dets: np.ndarray, gts: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Index of the detection matched to each ground-truth person (−1 if none), one to one, greedily by descending
    OKS: the matching of :func:`matched_oks`. dets (D, 17, 3), gts (G, 17, 3), areas (G,)."""
    if len(dets) == 0 or len(gts) == 0:
        return -np.ones(len(gts), dtype=np.int64)
    return greedy_matching(oks_matrix(dets, gts, areas))


def pose_agreement(
    detections: Sequence[PoseDetections],
    targets: Sequence[PoseGroundTruth],
    area_convention: str = "segment",
    sigmas: np.ndarray = COCO17_SIGMAS,
) -> PoseAgreement:
    """HumanSD's pose protocol: detections on generated image i scored against the target poses of image i.

    mean OKS = mean over target people with a labelled keypoint of :func:`matched_oks` (a missed person scores 0);
    AP/AR = :func:`keypoint_ap` with the targets as ground truth. ``area_convention`` gives s² for both.
    """
    if len(detections) != len(targets):
        raise ValueError(f"got detections for {len(detections)} images but targets for {len(targets)}")
    per_person = []
    k = np.asarray(sigmas).shape[0]
    for i, (dets, gt) in enumerate(zip(detections, targets)):
        kp, _, gkp, bboxes = _check_image(dets, gt, i, k)
        labelled = (gkp[:, :, 2] > 0).any(axis=1)
        areas = ground_truth_areas(PoseGroundTruth(gkp, bboxes, gt.areas), area_convention)
        per_person.extend(matched_oks(kp, gkp[labelled], areas[labelled], sigmas).tolist())
    ap = keypoint_ap(detections, targets, area_convention=area_convention, sigmas=sigmas)
    return PoseAgreement(
        mean_oks=float(np.mean(per_person)) if per_person else float("nan"), ap=ap.ap, ar=ap.ar,
        num_people=len(per_person), num_images=len(targets), area_convention=area_convention,
    )


def reference_ground_truths(reference: Sequence[PoseDetections], min_confidence: float = 0.5) -> list[PoseGroundTruth]:
    """Detections on real (reference) images turned into ground truth for :func:`pose_agreement`.

    A keypoint is labelled (v = 2) when its confidence ≥ ``min_confidence``, else unlabelled ``[0, 0, 0]``; the
    bbox is the extent of the labelled keypoints (no segment area: use the ``bbox`` or ``bbox053`` convention).
    People with no labelled keypoint are dropped.
    """
    out = []
    for dets in reference:
        kp = _people(dets.keypoints, 17, 3)
        labelled = kp[:, :, 2] >= min_confidence
        keep = labelled.any(axis=1)
        kp, labelled = kp[keep], labelled[keep]
        gt = np.where(labelled[:, :, None], np.concatenate([kp[:, :, :2], np.full(kp.shape[:2] + (1,), 2.0)], 2), 0.0)
        bboxes = np.zeros((len(gt), 4))
        for n, person in enumerate(gt):
            xy = person[labelled[n], :2]
            bboxes[n, :2] = xy.min(axis=0)
            bboxes[n, 2:] = np.ptp(xy, axis=0)
        out.append(PoseGroundTruth(gt, bboxes, None))
    return out


def debiased_pose_agreement(
    generated: Sequence[PoseDetections],
    reference: Sequence[PoseDetections],
    min_confidence: float = 0.5,
    area_convention: str = "bbox",
    sigmas: np.ndarray = COCO17_SIGMAS,
) -> PoseAgreement:
    """Pose agreement of detections on generated images with detections on the real images of the same poses.

    Both sides come from the same estimator, so its own biases cancel: the reference detections become ground
    truth by :func:`reference_ground_truths` (keypoints with confidence ≥ ``min_confidence``, bbox = their extent)
    and :func:`pose_agreement` scores ``generated`` against them. s² follows ``area_convention`` on that
    keypoint-extent box (``bbox`` by default; ``segment`` is unavailable). A reference image where nothing was
    found contributes no person, so detections on its generated image count as false positives in AP.
    """
    if len(generated) != len(reference):
        raise ValueError(f"got {len(generated)} generated and {len(reference)} reference images")
    return pose_agreement(generated, reference_ground_truths(reference, min_confidence), area_convention, sigmas)
