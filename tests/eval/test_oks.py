import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from humantune.data.keypoints import COCO17_NAMES, COCO17_SIGMAS, COCO17_SKELETON
from humantune.eval.oks import object_keypoint_similarity, oks_matrix


def _random_people(rng, n, visible_frac=0.7):
    kp = np.zeros((n, 17, 3))
    centres = rng.uniform(50, 450, size=(n, 1, 2))
    kp[:, :, :2] = centres + rng.normal(0, 40, size=(n, 17, 2))
    kp[:, :, 2] = np.where(rng.random((n, 17)) < visible_frac, rng.integers(1, 3, size=(n, 17)), 0)
    return kp


def _pycocotools_oks(gts, gt_areas, gt_bboxes, dets, scores):
    """OKS matrix from pycocotools for one image, with COCO objects built in memory."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": [{"id": 1, "width": 500, "height": 500}],
            "categories": [
                {"id": 1, "name": "person", "keypoints": COCO17_NAMES,
                 "skeleton": [[a + 1, b + 1] for a, b in COCO17_SKELETON]}
            ],
            "annotations": [
                {"id": j + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                 "keypoints": g.reshape(-1).tolist(), "num_keypoints": int((g[:, 2] > 0).sum()),
                 "area": float(a), "bbox": b.tolist()}
                for j, (g, a, b) in enumerate(zip(gts, gt_areas, gt_bboxes))
            ],
        }
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(
            [{"image_id": 1, "category_id": 1, "keypoints": d.reshape(-1).tolist(), "score": float(s)}
             for d, s in zip(dets, scores)]
        )
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev._prepare()
        return np.asarray(ev.computeOks(1, 1))


def test_oks_matrix_matches_pycocotools_multi_person():
    rng = np.random.default_rng(0)
    gts = _random_people(rng, 4)
    gts[2, :, 2] = 0  # a person with no labelled keypoint: pycocotools measures to the enlarged bbox
    gt_bboxes = np.concatenate([gts[:, :, :2].min(1), np.ptp(gts[:, :, :2], axis=1)], axis=1)
    gt_areas = rng.uniform(2_000, 40_000, size=4)
    dets = np.concatenate([gts, _random_people(rng, 3)])
    dets[:4, :, :2] += rng.normal(0, 8, size=(4, 17, 2))
    dets[:, :, 2] = 1.0
    scores = rng.random(len(dets))

    expected = _pycocotools_oks(gts, gt_areas, gt_bboxes, dets, scores)
    order = np.argsort(-scores, kind="mergesort")  # pycocotools' detection order
    got = oks_matrix(dets[order], gts, gt_areas, gt_bboxes)

    assert got.shape == (7, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    assert (expected[:, 2] > 0).any() and (expected[:, 2] < 1).any()  # the no-keypoint GT path was exercised


def test_oks_matrix_needs_bbox_only_for_unlabelled_gt():
    gts = np.zeros((1, 17, 3))
    with pytest.raises(ValueError, match="gt_bboxes"):
        oks_matrix(np.zeros((1, 17, 3)), gts, np.array([100.0]))
    gts[0, 0, 2] = 2
    assert oks_matrix(np.zeros((0, 17, 3)), gts, np.array([100.0])).shape == (0, 1)
    assert oks_matrix(np.zeros((2, 17, 3)), gts[:0], np.zeros(0)).shape == (2, 0)


def test_single_pair_matches_matrix():
    rng = np.random.default_rng(1)
    gt = _random_people(rng, 1)[0]
    gt[0, 2] = 2
    pred = gt[:, :2] + rng.normal(0, 5, size=(17, 2))
    single = object_keypoint_similarity(pred, gt, 5_000.0)
    matrix = oks_matrix(pred[None], gt[None], np.array([5_000.0]))[0, 0]
    assert single == pytest.approx(matrix, rel=1e-12)


def test_single_keypoint_hand_computed():
    # Only the left shoulder (σ = 0.079) is labelled; prediction is off by (3, 4) → d² = 25, area = 400.
    gt = np.zeros((17, 3))
    gt[5] = [100.0, 50.0, 2]
    pred = gt[:, :2].copy()
    pred[5] += [3.0, 4.0]
    pred[0] += [1000.0, 1000.0]  # unlabelled keypoints do not count
    # k = 2σ = 0.158; e = 25 / (2 · 400 · 0.158²) = 1.2518025; OKS = exp(−e)
    assert object_keypoint_similarity(pred, gt, 400.0) == pytest.approx(0.2859888097, rel=1e-9)


def test_perfect_prediction_is_one_and_no_labels_is_nan():
    gt = _random_people(np.random.default_rng(2), 1)[0]
    gt[0, 2] = 2
    assert object_keypoint_similarity(gt, gt, 1234.0) == 1.0
    assert object_keypoint_similarity(gt[:, :2], gt, 1234.0, sigmas=COCO17_SIGMAS) == 1.0
    gt[:, 2] = 0
    assert math.isnan(object_keypoint_similarity(gt, gt, 1234.0))
