"""Heatmaps of the heatmap-guided loss and the loss itself, against hand computations (shared/papers.md §1)."""

import math

import numpy as np
import pytest
import torch

from humantune.data.keypoints import COCO17
from humantune.losses.denoising import per_sample_mse
from humantune.losses.heatmap import (
    HeatmapConfig, latent_heatmap,
    default_sigma, heatmap_weighted_mse, keypoint_heatmap, limb_heatmap, mask_heatmap, pose_heatmap,
    reduce_to_latent, skeleton_blur_mask,
)


def person(**points):
    """One COCO-17 person with the named keypoints labelled (v = 2) at the given (x, y), the rest [0, 0, 0]."""
    kp = np.zeros((1, 17, 3), np.float32)
    for name, (x, y) in points.items():
        kp[0, COCO17[name]] = (x, y, 2)
    return kp


def test_keypoint_heatmap_peaks_at_the_keypoint_and_falls_as_a_gaussian():
    kp = person(nose=(10, 7))
    kp[0, COCO17["left_wrist"]] = (20, 20, 0)               # not labelled: must not show
    h = keypoint_heatmap(kp, (32, 24), sigma=2.0)
    assert h.shape == (24, 32) and h.dtype == np.float32
    assert h[7, 10] == 1.0
    assert h[7, 13] == pytest.approx(math.exp(-9 / 8), rel=1e-6)        # 3 px right: exp(−3²/(2·2²))
    assert h[9, 10] == pytest.approx(math.exp(-4 / 8), rel=1e-6)        # 2 px down
    assert h[4, 6] == pytest.approx(math.exp(-(16 + 9) / 8), rel=1e-6)  # (−4, −3)
    assert h[20, 20] == pytest.approx(math.exp(-(100 + 169) / 8), abs=1e-12)


def test_people_and_joints_combine_by_maximum_not_sum():
    kp = np.concatenate([person(nose=(10, 10)), person(nose=(14, 10))])
    h = keypoint_heatmap(kp, (24, 20), sigma=2.0)
    assert h[10, 12] == pytest.approx(math.exp(-4 / 8), rel=1e-6)        # both 2 px away: max, not 2·exp
    assert h.max() == 1.0 and h.min() >= 0.0


def test_limb_heatmap_covers_the_segment_including_its_midpoint():
    kp = person(left_shoulder=(4, 4), left_elbow=(20, 4))
    sigma = 1.5
    for limbs in ("coco17", "openpose18"):                   # both sets hold the shoulder–elbow limb
        h = limb_heatmap(kp, (32, 16), sigma, limbs)
        assert h[4, 12] == 1.0                                # midpoint of the segment
        assert h[7, 12] == pytest.approx(math.exp(-9 / (2 * sigma**2)), rel=1e-6)   # 3 px off the segment
        assert h[4, 24] == pytest.approx(math.exp(-16 / (2 * sigma**2)), rel=1e-6)  # 4 px beyond its end
    # a keypoint heatmap alone is far from 1 at the midpoint; the pose heatmap (max of both) is 1 there
    assert keypoint_heatmap(kp, (32, 16), sigma)[4, 12] < 1e-6
    assert pose_heatmap(kp, (32, 16), sigma, limbs="coco17")[4, 12] == 1.0
    assert pose_heatmap(kp, (32, 16), sigma, limbs=None)[4, 12] < 1e-6


def test_limbs_need_both_end_points_labelled():
    kp = person(left_shoulder=(4, 4))
    kp[0, COCO17["left_elbow"]] = (20, 4, 0)
    assert limb_heatmap(kp, (32, 16), 1.5).max() == 0.0


def test_default_sigma_scales_with_the_image():
    assert default_sigma(128, 128) == 4.0 and default_sigma(512, 384) == 16.0
    kp = person(nose=(20, 20))
    h = pose_heatmap(kp, (64, 64))                             # σ = 2
    assert h[20, 22] == pytest.approx(math.exp(-4 / 8), rel=1e-6)


def test_reduce_to_latent_area_is_the_block_mean_and_bilinear_samples_cell_centres():
    full = np.zeros((16, 16), np.float32)
    full[0:8, 0:8] = 1.0                                      # top-left latent cell fully covered
    full[8:10, 8:16] = 1.0                                    # bottom-right cell: 16 of 64 pixels
    area = reduce_to_latent(full, (2, 2), "area")
    assert area.shape == (2, 2)
    np.testing.assert_allclose(area, [[1.0, 0.0], [0.0, 0.25]])
    ramp = np.tile(np.arange(16, dtype=np.float32) / 15, (16, 1))
    bilinear = reduce_to_latent(ramp, (2, 2), "bilinear")
    # align_corners=False: latent column j samples x = (j + ½)·8 − ½ = 3.5, 11.5 → mean of pixels 3, 4 / 11, 12
    np.testing.assert_allclose(bilinear[0], [3.5 / 15, 11.5 / 15], rtol=1e-6)


def test_reduction_keeps_the_range_and_gives_the_latent_size():
    rng = np.random.default_rng(0)
    full = rng.uniform(0, 1, (64, 48)).astype(np.float32)
    for mode in ("area", "bilinear"):
        lat = reduce_to_latent(full, (8, 6), mode)
        assert lat.shape == (8, 6) and lat.min() >= 0.0 and lat.max() <= 1.0
    kp = person(nose=(5, 5), left_shoulder=(10, 20), left_elbow=(30, 40))
    lat = reduce_to_latent(pose_heatmap(kp, (48, 64)), (8, 6))
    assert lat.shape == (8, 6) and 0.0 <= lat.min() and lat.max() <= 1.0


def test_mask_heatmap_is_the_covered_share_of_each_latent_cell():
    mask = np.zeros((16, 16), np.uint8)
    mask[0:4, 0:8] = 1                                        # half of cell (0, 0) is person 1
    mask[8:16, 8:16] = 2                                      # cell (1, 1) is all person 2
    np.testing.assert_allclose(mask_heatmap(mask, (2, 2)), [[0.5, 0.0], [0.0, 1.0]])


def test_skeleton_blur_mask_is_one_on_the_skeleton_and_gaussian_in_latent_distance():
    # A horizontal limb at y = 10 of a 32² image: its OpenPose drawing spans rows 9–11 and columns 5–26, i.e. row
    # 2 and columns 1–6 of the 8² latent grid (4 pixels per cell).
    kp = person(left_shoulder=(6, 10), left_elbow=(25, 10))
    m = skeleton_blur_mask(kp, (32, 32), (8, 8), blur_sigma=1.0)
    assert m.shape == (8, 8)
    assert (m[2, 1:7] == 1.0).all()
    assert m[1, 3] == pytest.approx(math.exp(-1 / 2)) and m[3, 3] == pytest.approx(math.exp(-1 / 2))
    assert m[0, 3] == pytest.approx(math.exp(-4 / 2))
    assert m[2, 0] == pytest.approx(math.exp(-1 / 2))
    assert m[0, 0] == pytest.approx(math.exp(-5 / 2))         # √(2² + 1²) cells from (2, 1)
    assert skeleton_blur_mask(np.zeros((0, 17, 3)), (32, 32), (8, 8)).max() == 0.0


def test_heatmap_weighted_mse_matches_a_hand_computation_for_both_placements():
    pred = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]]], [[[0.0, 0.0], [3.0, 0.0]]]])   # (2, 1, 2, 2)
    target = torch.zeros_like(pred)
    heat = torch.tensor([[[1.0, 0.5], [0.0, 0.0]], [[0.0, 0.0], [0.5, 1.0]]])      # (2, 2, 2)
    # w = 2 → W = 2H + 1. Sample 0: W = [[3, 2], [1, 1]], e² = [[1, 4], [0, 1]].
    # Sample 1: W = [[1, 1], [2, 3]], e² = 9 at (1, 0) and 0 elsewhere.
    inside = heatmap_weighted_mse(pred, target, heat, w=2.0, placement="inside")
    outside = heatmap_weighted_mse(pred, target, heat, w=2.0, placement="outside")
    assert inside.tolist() == pytest.approx([(9 * 1 + 4 * 4 + 0 + 1 * 1) / 4, (4 * 9) / 4])
    assert outside.tolist() == pytest.approx([(3 * 1 + 2 * 4 + 0 + 1 * 1) / 4, (2 * 9) / 4])
    assert inside.dtype == torch.float32 and inside.shape == (2,)


def test_heatmap_weighted_mse_reduces_to_plain_mse_and_shares_the_heatmap_over_channels():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 4, 5, 6, generator=g), torch.randn(3, 4, 5, 6, generator=g)
    heat = torch.rand(3, 5, 6, generator=g)
    for placement in ("inside", "outside"):
        torch.testing.assert_close(heatmap_weighted_mse(pred, target, heat, 0.0, placement),
                                   per_sample_mse(pred, target))
    w = 1.5
    expected = (((w * heat[:, None] + 1) * (pred - target)) ** 2).mean((1, 2, 3))
    torch.testing.assert_close(heatmap_weighted_mse(pred, target, heat, w), expected)
    torch.testing.assert_close(heatmap_weighted_mse(pred, target, heat[:, None], w), expected)


def test_stable_pose_loss_is_placement_outside_with_w_alpha_minus_one():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 4, 6, 6, generator=g), torch.randn(2, 4, 6, 6, generator=g)
    m = torch.rand(2, 6, 6, generator=g)
    alpha = 5.0
    elementwise = (pred - target) ** 2
    stable_pose = (alpha * m[:, None] * elementwise + (1 - m[:, None]) * elementwise).mean((1, 2, 3))
    torch.testing.assert_close(heatmap_weighted_mse(pred, target, m, alpha - 1, "outside"), stable_pose)


def test_bad_inputs_are_rejected():
    pred = torch.zeros(2, 4, 8, 8)
    with pytest.raises(ValueError, match="does not fit"):
        heatmap_weighted_mse(pred, pred, torch.zeros(2, 4, 4), 1.0)
    with pytest.raises(ValueError, match="placement"):
        heatmap_weighted_mse(pred, pred, torch.zeros(2, 8, 8), 1.0, "sideways")
    with pytest.raises(ValueError, match="sigma"):
        keypoint_heatmap(person(nose=(1, 1)), (8, 8), 0.0)
    with pytest.raises(ValueError, match="mode"):
        reduce_to_latent(np.zeros((8, 8)), (2, 2), "nearest")


def test_latent_heatmaps_of_every_kind_have_the_latent_size_and_range():
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, [COCO17["left_shoulder"], COCO17["left_elbow"], COCO17["nose"]]] = [[8, 10, 2], [20, 12, 2], [12, 4, 2]]
    mask = np.zeros((32, 32), np.uint8)
    mask[4:28, 6:24] = 1
    for kind in ("gaussian", "mask", "skeleton_blur"):
        h = latent_heatmap(kp, mask, (32, 32), HeatmapConfig(kind=kind), (8, 8))
        assert h.shape == (8, 8) and h.min() >= 0.0 and h.max() <= 1.0 and h.max() > 0.5, kind
    from humantune.errors import DataError

    with pytest.raises(DataError, match="sample 3: heatmap kind 'mask' needs a person mask"):
        latent_heatmap(kp, None, (32, 32), HeatmapConfig(kind="mask"), (8, 8), "sample 3")
