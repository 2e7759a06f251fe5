import numpy as np

from humantune.eval import pose_metrics
from humantune.eval.inputs import rescale_ground_truth


def test_rescale_ground_truth_keeps_pixel_centres():
    gt = pose_metrics.PoseGroundTruth(np.array([[[0.0, 9.0, 2.0]] * 17]), np.array([[0.0, 0.0, 10.0, 10.0]]),
                                      np.array([50.0]))
    out = rescale_ground_truth(gt, (10, 10), (20, 40))
    assert out.keypoints[0, 0, :2].tolist() == [0.5, 37.5]  # (x + 0.5)·s − 0.5
    assert out.areas[0] == 50.0 * 2 * 4 and out.bboxes[0].tolist() == [0, 0, 20, 40]
