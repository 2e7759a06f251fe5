import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from humantune.data.keypoints import COCO17, COCO17_NAMES, COCO17_SKELETON
from humantune.eval.pose_estimators import PoseEstimate
from humantune.eval.pose_metrics import (
    PoseGroundTruth,
    debiased_pose_agreement,
    ground_truth_areas,
    keypoint_ap,
    matched_oks,
    pck,
    pose_agreement,
    reference_ground_truths,
)


def _random_people(rng, n, visible_frac=0.75):
    kp = np.zeros((n, 17, 3))
    centres = rng.uniform(60, 440, size=(n, 1, 2))
    kp[:, :, :2] = centres + rng.normal(0, 35, size=(n, 17, 2))
    kp[:, :, 2] = np.where(rng.random((n, 17)) < visible_frac, rng.integers(1, 3, size=(n, 17)), 0)
    kp[kp[:, :, 2] == 0] = 0  # COCO stores unlabelled points as [0, 0, 0]
    return kp


def _synthetic_dataset(seed, n_images=25):
    """Multi-person images with perturbed, missed and false-positive detections and unlabelled ground truths."""
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for i in range(n_images):
        g = _random_people(rng, int(rng.integers(0, 5)))
        if len(g) and rng.random() < 0.3:
            g[int(rng.integers(len(g)))] = 0  # a person with no labelled keypoint (COCOeval ignores it)
        xy = g[:, :, :2]
        labelled = g[:, :, 2] > 0
        bboxes = np.zeros((len(g), 4))
        for j in range(len(g)):
            pts = xy[j][labelled[j]] if labelled[j].any() else rng.uniform(60, 440, size=(2, 2))
            bboxes[j] = [*pts.min(0) - 10, *(np.ptp(pts, 0) + 20)]
        areas = bboxes[:, 2] * bboxes[:, 3] * rng.uniform(0.3, 0.8, size=len(g))
        gts.append(PoseGroundTruth(g, bboxes, areas))

        found = rng.random(len(g)) < 0.8  # the rest are missed
        d = g[found].copy()
        noise = rng.choice([2.0, 8.0, 20.0], size=(len(d), 1, 1))
        d[:, :, :2] = np.where(d[:, :, 2:] > 0, d[:, :, :2], rng.uniform(60, 440, size=d[:, :, :2].shape))
        d[:, :, :2] += rng.normal(0, 1, size=d[:, :, :2].shape) * noise
        d = np.concatenate([d, _random_people(rng, int(rng.integers(0, 3)), 1.0)])  # false positives
        d[:, :, 2] = rng.random(d.shape[:2])
        scores = np.round(rng.random(len(d)), 1)  # rounded: ties in score exercise the stable sort
        dets.append(PoseEstimate(d, scores))
    return dets, gts


def _pycocotools_stats(dets, gts, area_convention):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        annotations, ann_id = [], 1
        for i, gt in enumerate(gts):
            for g, a, b in zip(gt.keypoints, ground_truth_areas(gt, area_convention), gt.bboxes):
                annotations.append({
                    "id": ann_id, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                    "keypoints": g.reshape(-1).tolist(), "num_keypoints": int((g[:, 2] > 0).sum()),
                    "area": float(a), "bbox": b.tolist(),
                })
                ann_id += 1
        coco_gt.dataset = {
            "images": [{"id": i + 1, "width": 500, "height": 500} for i in range(len(gts))],
            "categories": [{"id": 1, "name": "person", "keypoints": COCO17_NAMES,
                            "skeleton": [[a + 1, b + 1] for a, b in COCO17_SKELETON]}],
            "annotations": annotations,
        }
        coco_gt.createIndex()
        results = [
            {"image_id": i + 1, "category_id": 1, "keypoints": kp.reshape(-1).tolist(), "score": float(s)}
            for i, d in enumerate(dets) for kp, s in zip(d.keypoints, d.scores)
        ]
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("seed, area_convention", [(0, "segment"), (1, "bbox"), (2, "bbox053"), (3, "segment")])
def test_keypoint_ap_equals_pycocotools(seed, area_convention):
    dets, gts = _synthetic_dataset(seed)
    stats = _pycocotools_stats(dets, gts, area_convention)
    got = keypoint_ap(dets, gts, area_convention=area_convention)
    assert (got.ap, got.ap50, got.ap75) == (stats[0], stats[1], stats[2])
    assert (got.ar, got.ar50, got.ar75) == (stats[5], stats[6], stats[7])
    assert 0.05 < got.ap < 0.95  # a non-trivial case: some matches, some misses, some false positives
    for area_range, ap_i, ar_i in (("medium", 3, 8), ("large", 4, 9)):
        ranged = keypoint_ap(dets, gts, area_convention=area_convention, area_range=area_range)
        expected_ap = stats[ap_i] if stats[ap_i] != -1 else float("nan")
        expected_ar = stats[ar_i] if stats[ar_i] != -1 else float("nan")
        np.testing.assert_equal([ranged.ap, ranged.ar], [expected_ap, expected_ar])


def test_perfect_detections_give_ap_one_and_max_dets_truncates():
    rng = np.random.default_rng(5)
    g = _random_people(rng, 3, 1.0)
    gt = PoseGroundTruth(g, np.tile([0.0, 0.0, 100.0, 100.0], (3, 1)), np.full(3, 5000.0))
    perfect = keypoint_ap([PoseEstimate(g, np.array([0.9, 0.8, 0.7]))], [gt])
    assert (perfect.ap, perfect.ar) == (1.0, 1.0)
    # With max_dets = 1 only the best-scoring detection is kept: recall 1/3 at every threshold.
    one = keypoint_ap([PoseEstimate(g, np.array([0.9, 0.8, 0.7]))], [gt], max_dets=1)
    assert one.ar == pytest.approx(1 / 3)


def test_keypoint_ap_rejects_bad_inputs():
    gt = PoseGroundTruth(np.zeros((1, 17, 3)), np.zeros((1, 4)), None)
    dets = PoseEstimate(np.zeros((1, 17, 3)), np.ones(1))
    with pytest.raises(ValueError, match="segment"):
        keypoint_ap([dets], [gt])
    with pytest.raises(ValueError, match=r"\(1, 16, 3\)"):
        keypoint_ap([PoseEstimate(np.zeros((1, 16, 3)), np.ones(1))], [gt], area_convention="bbox")
    with pytest.raises(ValueError, match="area convention"):
        keypoint_ap([dets], [gt], area_convention="mask")
    with pytest.raises(ValueError, match="2 images"):
        keypoint_ap([dets, dets], [gt], area_convention="bbox")


def test_pck_hand_example():
    # Torso diameter |left shoulder − right hip| = |(0, 0) − (30, 40)| = 50, so α = 0.2 accepts distances ≤ 10.
    gt = np.zeros((17, 3))
    gt[COCO17["left_shoulder"]] = [0, 0, 2]
    gt[COCO17["right_hip"]] = [30, 40, 2]
    gt[COCO17["nose"]] = [5, -20, 2]
    gt[COCO17["left_wrist"]] = [50, 50, 1]
    pred = gt[:, :2].copy()
    pred[COCO17["nose"]] += [6, 8]            # 10 px: correct (boundary counts)
    pred[COCO17["left_wrist"]] += [0, 10.5]   # 10.5 px: wrong
    pred[COCO17["right_hip"]] += [9, 0]       # correct
    pred[COCO17["left_ankle"]] += [500, 500]  # unlabelled: not counted
    assert pck(pred, gt) == pytest.approx(3 / 4)
    assert pck(pred, gt, threshold=0.21) == 1.0
    # bbox normaliser: max side of the labelled extent = max(50, 70) = 70 → α·L = 14 accepts all four.
    assert pck(pred, gt, normalize="bbox") == 1.0
    assert pck(pred, gt, normalize="bbox", bboxes=np.array([0, 0, 10, 10])) == pytest.approx(1 / 4)  # only exact
    assert math.isnan(pck(pred, gt, normalize="head"))  # ears unlabelled: no usable person
    with pytest.raises(ValueError, match="normaliser"):
        pck(pred, gt, normalize="neck")


def test_matched_oks_is_one_to_one():
    rng = np.random.default_rng(7)
    g = _random_people(rng, 2, 1.0)
    dets = np.stack([g[0], g[0]])  # two copies of person 0, none of person 1
    out = matched_oks(dets, g, np.full(2, 4000.0))
    assert out[0] == pytest.approx(1.0)
    assert out[1] < 0.5  # person 1 gets the leftover copy, not the same detection twice


def test_pose_agreement_and_debiased_variant():
    rng = np.random.default_rng(3)
    g = _random_people(rng, 1, 1.0)
    targets = [PoseGroundTruth(g, np.array([[0.0, 0.0, 120.0, 150.0]]), np.array([9000.0])),
               PoseGroundTruth(g, np.array([[0.0, 0.0, 120.0, 150.0]]), np.array([9000.0]))]
    generated = [PoseEstimate(np.concatenate([g[:, :, :2], np.ones((1, 17, 1))], 2), np.ones(1)),
                 PoseEstimate(np.zeros((0, 17, 3)), np.zeros(0))]  # missed on image 1
    agreement = pose_agreement(generated, targets)
    assert agreement.mean_oks == pytest.approx(0.5)  # 1 for image 0, 0 for the miss
    assert agreement.ar == pytest.approx(0.5) and agreement.num_people == 2

    # The estimator's bias (a 3-px shift) is on both sides in the de-biased variant, so agreement is perfect.
    shifted = np.concatenate([g[:, :, :2] + 3.0, np.full((1, 17, 1), 0.9)], 2)
    biased = [PoseEstimate(shifted, np.ones(1))]
    reference = reference_ground_truths(biased)
    assert reference[0].keypoints[0, :, 2].tolist() == [2.0] * 17
    np.testing.assert_allclose(reference[0].bboxes[0, 2:], np.ptp(shifted[0, :, :2], axis=0))
    debiased = debiased_pose_agreement(biased, biased)
    assert debiased.mean_oks == 1.0 and debiased.ap == pytest.approx(1.0)
    assert pose_agreement(biased, targets[:1]).mean_oks < 1.0
