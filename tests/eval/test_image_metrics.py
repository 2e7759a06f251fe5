import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

from humantune.eval.image_metrics import (
    l1_error,
    l1_error_per_image,
    mean_over_images,
    psnr,
    psnr_per_image,
    ssim,
    ssim_per_image,
)


def _noisy_pair(rng, shape, noise, scale=1.0, dtype=np.float64):
    a = rng.random(shape) * scale
    b = np.clip(a + rng.normal(0, noise * scale, shape), 0, scale)
    if dtype == np.uint8:
        return np.round(a).astype(np.uint8), np.round(b).astype(np.uint8)
    return a.astype(dtype), b.astype(dtype)


def _skimage_ssim(a, b, data_range):
    return np.array([
        structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                              data_range=data_range, channel_axis=-1)
        for x, y in zip(a, b)
    ])


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


def test_ssim_matches_skimage_wang_settings_float_and_uint8():
    rng = np.random.default_rng(0)
    a, b = _noisy_pair(rng, (3, 32, 41, 3), 0.1)
    np.testing.assert_allclose(ssim_per_image(a, b, 1.0), _skimage_ssim(a, b, 1.0), rtol=0, atol=1e-12)

    a8, b8 = _noisy_pair(rng, (2, 24, 24, 1), 0.2, scale=255, dtype=np.uint8)
    np.testing.assert_allclose(ssim_per_image(a8, b8, 255), _skimage_ssim(a8, b8, 255), rtol=0, atol=1e-12)
    # one (H, W, C) image is a batch of one
    assert ssim(a8[0], b8[0], 255) == pytest.approx(_skimage_ssim(a8[:1], b8[:1], 255)[0], abs=1e-12)


def test_ssim_equals_cropped_torchmetrics_map_and_states_its_default_differs():
    rng = np.random.default_rng(1)
    a, b = _noisy_pair(rng, (2, 32, 40, 3), 0.1)
    mine = ssim_per_image(a, b, 1.0)
    # torchmetrics: same window and constants, but its score averages the full map, border included.
    tm_default, tm_map = tm_ssim(_nchw(b), _nchw(a), data_range=1.0, reduction="none", return_full_image=True)
    np.testing.assert_allclose(tm_map[:, :, 5:-5, 5:-5].mean(dim=(1, 2, 3)).numpy(), mine, rtol=0, atol=1e-12)
    assert np.all(np.abs(tm_default.numpy() - mine) > 1e-5)


def test_ssim_identical_is_one_and_known_constant_offset():
    rng = np.random.default_rng(2)
    a = rng.random((2, 16, 16, 2))
    np.testing.assert_allclose(ssim_per_image(a, a, 1.0), 1.0, atol=1e-12)
    # Two flat images x ≡ 0.2, y ≡ 0.6: σ terms vanish, SSIM = (2·0.2·0.6 + C1) / (0.2² + 0.6² + C1), C1 = 1e-4.
    x, y = np.full((16, 16, 1), 0.2), np.full((16, 16, 1), 0.6)
    assert ssim(x, y, 1.0) == pytest.approx((0.24 + 1e-4) / (0.40 + 1e-4), rel=1e-12)


def test_psnr_matches_skimage_and_torchmetrics_per_image():
    rng = np.random.default_rng(3)
    a, b = _noisy_pair(rng, (4, 20, 30, 3), 0.05)
    expected = np.array([peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in zip(a, b)])
    np.testing.assert_allclose(psnr_per_image(a, b, 1.0), expected, rtol=1e-13)
    assert psnr(a, b, 1.0) == pytest.approx(expected.mean(), rel=1e-13)
    # torchmetrics with dim=(C, H, W) is per image (float32 log constant: agreement to ~1e-7 relative);
    tm = tm_psnr(_nchw(b), _nchw(a), data_range=1.0, reduction="none", dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(psnr_per_image(a, b, 1.0), tm, rtol=1e-6)
    # its default dim=None pools the MSE over the batch, which is not the mean of per-image PSNRs.
    pooled = tm_psnr(_nchw(b), _nchw(a), data_range=1.0).item()
    assert pooled == pytest.approx(10 * math.log10(1.0 / np.mean((a - b) ** 2)), rel=1e-6)
    assert abs(pooled - psnr(a, b, 1.0)) > 1e-4


def test_psnr_hand_value_identical_images_and_cap():
    a = np.zeros((2, 4, 4, 1), dtype=np.uint8)
    b = a.copy()
    b[0] = 10  # MSE = 100 → PSNR = 10·log10(255² / 100) = 20·log10(25.5)
    values = psnr_per_image(a, b, 255)
    assert values[0] == pytest.approx(20 * math.log10(25.5), rel=1e-13)
    assert values[1] == math.inf
    assert psnr(a, b, 255) == math.inf  # an identical pair makes the mean +inf
    capped = psnr_per_image(a, b, 255, max_db=100.0)
    np.testing.assert_allclose(capped, [20 * math.log10(25.5), 100.0])
    assert psnr(a, b, 255, max_db=100.0) == pytest.approx((20 * math.log10(25.5) + 100.0) / 2)


def test_l1_error_hand_value():
    a = np.zeros((2, 2, 2, 1))
    b = np.array([[[[0.5], [0.0]], [[0.0], [0.5]]], [[[1.0], [1.0]], [[1.0], [1.0]]]])
    np.testing.assert_allclose(l1_error_per_image(a, b), [0.25, 1.0])
    assert l1_error(a, b) == pytest.approx(0.625)


def test_range_low_shifts_the_accepted_interval_and_ssim_is_not_shift_invariant():
    rng = np.random.default_rng(4)
    a, b = _noisy_pair(rng, (1, 16, 16, 3), 0.1)
    a2, b2 = 2 * a - 1, 2 * b - 1
    assert psnr(a2, b2, 2.0, low=-1.0) == pytest.approx(psnr(a, b, 1.0), rel=1e-12)
    assert ssim(a2, b2, 2.0, low=-1.0) == pytest.approx(_skimage_ssim(a2, b2, 2.0)[0], abs=1e-12)
    # SSIM's luminance term uses the means themselves: the same images in [-1, 1] score lower than in [0, 1].
    assert ssim(2 * a, 2 * b, 2.0) == pytest.approx(ssim(a, b, 1.0), abs=1e-12)
    assert ssim(a2, b2, 2.0, low=-1.0) < ssim(a, b, 1.0) - 0.05


def test_errors_name_shapes_and_ranges():
    a = np.zeros((2, 16, 16, 3))
    with pytest.raises(ValueError, match=r"a is \(2, 16, 16, 3\), b is \(2, 16, 15, 3\)"):
        ssim(a, np.zeros((2, 16, 15, 3)), 1.0)
    with pytest.raises(ValueError, match=r"b has values in \[255, 255\], outside the data range \[0, 1\]"):
        psnr(a, np.full((2, 16, 16, 3), 255.0), 1.0)
    with pytest.raises(ValueError, match=r"outside the data range \[0, 1\]"):
        ssim(np.full_like(a, np.nan), a, 1.0)
    with pytest.raises(ValueError, match="data_range must be a positive number"):
        psnr(a, a, 0.0)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\) or \(H, W, C\)"):
        l1_error(np.zeros((16, 16)), np.zeros((16, 16)))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((1, 10, 20, 1)), np.zeros((1, 10, 20, 1)), 1.0)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        mean_over_images(np.zeros(0))
