"""Paired image-fidelity metrics: L1 error, PSNR and SSIM (shared/papers.md, "Evaluation facts").

Every function takes two image batches of the same shape, ``(N, H, W, C)`` or one image ``(H, W, C)`` (a grey
image is ``(H, W, 1)``), as numpy arrays of any real dtype (uint8 or float), and computes in float64.
``data_range`` is the width of the value range and is always explicit: 255 for uint8 images, 1.0 for float
images in [0, 1], 2.0 for [-1, 1] (with ``low=-1``). Values must lie in ``[low, low + data_range]``; a value
outside it, or two batches of different shapes, raise ValueError (a wrong range silently changes PSNR and SSIM).
SSIM is not invariant to an offset (its luminance term uses the local means themselves): the same images score
differently in [0, 1] and in [−1, 1], so report SSIM on [0, R] images (uint8, or floats in [0, 1]).

The ``*_per_image`` functions return a float64 ``(N,)`` array; :func:`l1_error`, :func:`psnr` and :func:`ssim`
return its mean over images (:func:`mean_over_images`).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

# Wang et al. 2004: an 11×11 Gaussian window of σ = 1.5 (truncated at 3.5σ, as skimage does), K1 = 0.01, K2 = 0.03.
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_WIN_SIZE = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _image_batch(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"{name} must have shape (N, H, W, C) or (H, W, C), got {np.shape(x)}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _checked_pair(a, b, data_range: float | None = None, low: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Both batches as float64 (N, H, W, C); ValueError on different shapes or a value outside the range."""
    a_arr, b_arr = _image_batch(a, "a"), _image_batch(b, "b")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"images differ in shape: a is {np.shape(a)}, b is {np.shape(b)}")
    if a_arr.shape[0] == 0:
        raise ValueError("no images: the batch is empty")
    if data_range is not None:
        if not (np.isfinite(data_range) and data_range > 0):
            raise ValueError(f"data_range must be a positive number, got {data_range}")
        high = low + data_range
        for name, arr in (("a", a_arr), ("b", b_arr)):
            lo, hi = np.min(arr), np.max(arr)
            if not (lo >= low and hi <= high):  # also catches NaN
                raise ValueError(
                    f"{name} has values in [{lo:g}, {hi:g}], outside the data range [{low:g}, {high:g}] "
                    f"(data_range={data_range:g}, low={low:g})"
                )
    elif not (np.isfinite(a_arr).all() and np.isfinite(b_arr).all()):
        raise ValueError("images contain NaN or infinite values")
    return a_arr, b_arr


def mean_over_images(values: np.ndarray) -> float:
    """Mean of per-image values, (1/N) Σ_n v_n, as a float.

    A +inf value (the PSNR of an identical pair, without ``max_db``) makes the mean +inf: it is not dropped,
    so a reported PSNR is never silently the mean of the other images.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of per-image values, got shape {values.shape}")
    return float(np.mean(values))


def l1_error_per_image(a, b) -> np.ndarray:
    """Mean absolute error of each image pair, L1_n = (1/HWC) Σ_{h,w,c} |a_nhwc − b_nhwc|, in input units.

    Returns float64 (N,). Raises ValueError on different shapes or non-finite values.
    """
    a_arr, b_arr = _checked_pair(a, b)
    return np.mean(np.abs(a_arr - b_arr), axis=(1, 2, 3))


def l1_error(a, b) -> float:
    """Mean over images of :func:`l1_error_per_image`."""
    return mean_over_images(l1_error_per_image(a, b))


def psnr_per_image(a, b, data_range: float, low: float = 0.0, max_db: float | None = None) -> np.ndarray:
    """Peak signal-to-noise ratio of each image pair, in dB.

    PSNR_n = 10 · log10(R² / MSE_n),  MSE_n = (1/HWC) Σ_{h,w,c} (a_nhwc − b_nhwc)²,  R = ``data_range``,
    as ``skimage.metrics.peak_signal_noise_ratio`` on one image. An identical pair (MSE_n = 0) gives +inf;
    with ``max_db`` every value is capped at ``max_db`` (so an identical pair gives ``max_db``).
    (torchmetrics' ``PeakSignalNoiseRatio`` with its default ``dim=None`` pools the MSE over the whole batch
    instead; ``dim=(1, 2, 3)`` gives these per-image values.)

    Returns float64 (N,). Raises ValueError on different shapes or values outside ``[low, low + data_range]``.
    """
    a_arr, b_arr = _checked_pair(a, b, data_range, low)
    mse = np.mean((a_arr - b_arr) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(float(data_range) ** 2 / mse)
    if max_db is not None:
        values = np.minimum(values, float(max_db))
    return values


def psnr(a, b, data_range: float, low: float = 0.0, max_db: float | None = None) -> float:
    """Mean over images of :func:`psnr_per_image` (per-image PSNR, then the mean; not the PSNR of the pooled MSE).

    The mean is +inf when any pair is identical and ``max_db`` is None; pass ``max_db`` (e.g. 100) to cap.
    """
    return mean_over_images(psnr_per_image(a, b, data_range, low, max_db))


def ssim_per_image(a, b, data_range: float, low: float = 0.0) -> np.ndarray:
    """Mean structural similarity of each image pair, Wang et al. 2004 (IEEE TIP 13(4), eq. 13 and Sec. III-C).

    SSIM(x, y) = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),  C1 = (K1 R)², C2 = (K2 R)²,

    with K1 = 0.01, K2 = 0.03, R = ``data_range``; μ, σ², σxy are local statistics under an 11×11 Gaussian
    window of σ = 1.5 (truncated at 3.5σ), with population (not sample) covariance: σxy = G*(xy) − μx μy.
    Borders are filtered with mirror ('reflect') padding and then dropped: the map is averaged over the
    valid region (5 pixels cropped on each side), and a multi-channel image scores the mean over its channels.
    This is ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=R, channel_axis=-1)``. torchmetrics'
    ``StructuralSimilarityIndexMeasure`` uses the same window and constants but averages its map over the whole
    image, border included (computed on edge-excluding reflect padding), and guesses data_range from the data
    when it is not given; so its values differ (by ~1e-3 on 32×40 noise images), while its full map cropped by
    5 pixels averages to these values.

    Returns float64 (N,). Raises ValueError on different shapes, values outside ``[low, low + data_range]``,
    or images smaller than the 11×11 window.
    """
    a_arr, b_arr = _checked_pair(a, b, data_range, low)
    height, width = a_arr.shape[1:3]
    if height < SSIM_WIN_SIZE or width < SSIM_WIN_SIZE:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} pixels, got {height}x{width}"
        )

    def local_mean(x: np.ndarray) -> np.ndarray:
        # σ = 0 on the batch and channel axes: each channel of each image is filtered on its own.
        return gaussian_filter(x, sigma=(0, SSIM_SIGMA, SSIM_SIGMA, 0), truncate=SSIM_TRUNCATE, mode="reflect")

    mu_a, mu_b = local_mean(a_arr), local_mean(b_arr)
    var_a = local_mean(a_arr * a_arr) - mu_a * mu_a
    var_b = local_mean(b_arr * b_arr) - mu_b * mu_b
    cov_ab = local_mean(a_arr * b_arr) - mu_a * mu_b
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    pad = (SSIM_WIN_SIZE - 1) // 2
    per_channel = ssim_map[:, pad:-pad, pad:-pad, :].mean(axis=(1, 2))
    return per_channel.mean(axis=1)


def ssim(a, b, data_range: float, low: float = 0.0) -> float:
    """Mean over images of :func:`ssim_per_image`."""
    return mean_over_images(ssim_per_image(a, b, data_range, low))
