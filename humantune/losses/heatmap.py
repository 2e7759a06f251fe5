"""The heatmap-guided loss of multi-stage ControlNet pose fine-tuning (``shared/papers.md`` §1) and the heatmaps H
it weights with.

Stage 2 of the method replaces the plain denoising MSE by

    L_h = E[ ‖ W ⊙ (ε − ε_θ(√ᾱ_t z_0 + √(1−ᾱ_t) ε, c, t)) ‖² ],   W = w·H + 1,

with H ∈ [0, 1] a map at latent resolution that is 1 near the target body and 0 elsewhere. The paper does not say
how H is built; §1 lists three choices, all here as pure functions:

a) ``gaussian`` (the paper's intent, the default): Gaussian keypoint and limb heatmaps of the target pose rendered
   at image size (:func:`pose_heatmap`) and reduced to latent size by area or bilinear interpolation
   (:func:`reduce_to_latent`);
b) ``mask``: the person mask (any pixel of a person), reduced the same way (:func:`mask_heatmap`);
c) ``skeleton_blur``: a Stable-Pose-style blurred skeleton mask at latent size (:func:`skeleton_blur_mask`).

HumanSD's variant (papers.md §1 b: the predicted-noise error VAE-decoded, a pose network's thresholded joint
heatmaps on it, re-encoded into latent space) is deliberately not implemented: papers.md calls it quirky (its mask
is 0 where a joint is detected and 1 elsewhere), and it needs a pose network inside the training loop.

Where W sits. The paper writes W inside the norm, so the squared error is weighted by W²; HumanSD and Stable-Pose
multiply the squared error by the weight itself. :func:`heatmap_weighted_mse` takes ``placement="inside"`` (the
paper's literal equation, the default) or ``"outside"``. Stable-Pose's loss α·m·L + (1−m)·L = (1 + (α−1)·m)·L is
``placement="outside"`` with H = m and w = α − 1 (its α = 5 is w = 4).

Heatmaps are numpy float32 arrays (rendered once per sample and cached); the loss works on torch tensors.
Coordinates follow humantune's keypoint convention: pixel centres at integers, (0, 0) the centre of the top-left
pixel; a keypoint is used when its v > 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from humantune.config import option
from humantune.data.keypoints import COCO17_SKELETON, coco17_to_openpose18
from humantune.data.openpose import OPENPOSE_LIMBS, draw_openpose
from humantune.data.sample import validate_keypoints
from humantune.errors import DataError

LIMB_SETS = ("coco17", "openpose18")
"""Limb sets of :func:`limb_heatmap`: the COCO-17 skeleton (:data:`humantune.data.keypoints.COCO17_SKELETON`, 19
segments incl. the torso sides and the hips) or the 17 limbs an OpenPose-18 condition draws
(:data:`humantune.data.openpose.OPENPOSE_LIMBS`, with the neck as the shoulder midpoint)."""

REDUCE_MODES = ("area", "bilinear")
PLACEMENTS = ("inside", "outside")


def default_sigma(width: int, height: int) -> float:
    """The default Gaussian σ in pixels: the long side / 32 (4 px at 128², 16 px at 512², i.e. half an f8 latent
    cell at 128² and two at 512²), so H covers about the same share of the image at every size."""
    return max(width, height) / 32.0


def _grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    width, height = size
    return np.arange(width, dtype=np.float32)[None, :], np.arange(height, dtype=np.float32)[:, None]


def keypoint_heatmap(keypoints: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian keypoint heatmap at image size (papers.md §1, choice a):

        H_kp(x, y) = max_{p, j : v_pj > 0} exp(−((x − x_pj)² + (y − y_pj)²) / (2σ²))

    keypoints: COCO-17 ``[x, y, v]``, (P, 17, 3) or one person (17, 3), in pixels; size = (width, height); σ in
    pixels. Returns float32 (height, width) in [0, 1], exactly 1 at a labelled keypoint on a pixel centre; all
    zeros when nothing is labelled.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    people = validate_keypoints(keypoints, where="keypoint_heatmap")
    xs, ys = _grid(size)
    out = np.zeros((size[1], size[0]), np.float32)
    points = people.reshape(-1, 3)
    for x, y, v in points[points[:, 2] > 0]:
        np.maximum(out, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)), out=out)
    return out


def _segments(people: np.ndarray, limbs: str) -> list[tuple[np.ndarray, np.ndarray]]:
    if limbs == "coco17":
        points, pairs = people, COCO17_SKELETON
    elif limbs == "openpose18":
        points, pairs = coco17_to_openpose18(people), OPENPOSE_LIMBS
    else:
        raise ValueError(f"limbs must be one of {', '.join(LIMB_SETS)}, got {limbs!r}")
    return [(person[a, :2], person[b, :2]) for person in points for a, b in pairs
            if person[a, 2] > 0 and person[b, 2] > 0]


def limb_heatmap(keypoints: np.ndarray, size: tuple[int, int], sigma: float, limbs: str = "coco17") -> np.ndarray:
    """Gaussian limb (segment) heatmap at image size (papers.md §1, choice a):

        H_limb(x, y) = max_{p, (a, b) ∈ limbs : v_pa > 0, v_pb > 0} exp(−d((x, y), [k_pa, k_pb])² / (2σ²))

    where d(q, [a, b]) = |q − a − t*·(b − a)|, t* = clip((q − a)·(b − a) / |b − a|², 0, 1), is the distance from
    pixel q to the closed segment between the two keypoints. ``limbs`` is one of :data:`LIMB_SETS`. Returns
    float32 (height, width) in [0, 1]: 1 along every drawn limb (its end points included).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    people = validate_keypoints(keypoints, where="limb_heatmap")
    xs, ys = _grid(size)
    out = np.zeros((size[1], size[0]), np.float32)
    for a, b in _segments(people, limbs):
        d = (b - a).astype(np.float32)
        length2 = float(d @ d)
        t = 0.0 if length2 == 0 else np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / length2, 0.0, 1.0)
        dist2 = (xs - a[0] - t * d[0]) ** 2 + (ys - a[1] - t * d[1]) ** 2
        np.maximum(out, np.exp(-dist2 / (2 * sigma**2)), out=out)
    return out


def pose_heatmap(keypoints: np.ndarray, size: tuple[int, int], sigma: float | None = None,
                 limbs: str | None = "coco17") -> np.ndarray:
    """The pose heatmap of papers.md §1 choice a at image size:  H = max(H_kp, H_limb)  (H_limb left out when
    ``limbs`` is None). σ defaults to :func:`default_sigma`. float32 (height, width) in [0, 1]."""
    sigma = default_sigma(*size) if sigma is None else sigma
    heat = keypoint_heatmap(keypoints, size, sigma)
    if limbs is not None:
        np.maximum(heat, limb_heatmap(keypoints, size, sigma, limbs), out=heat)
    return heat


def reduce_to_latent(heatmap: np.ndarray, latent_size: tuple[int, int],
                     mode: Literal["area", "bilinear"] = "area") -> np.ndarray:
    """An image-size map (H, W) reduced to latent size ``latent_size`` = (h, w) (papers.md §1: "reduced to latent
    size (area or bilinear interpolation)").

    ``area``: H_lat[i, j] = the mean of the image pixels falling in latent cell (i, j) (``F.interpolate`` mode
    "area", adaptive average pooling; for an f8 VAE the mean of an 8×8 block). ``bilinear``: ``F.interpolate``
    mode "bilinear", ``align_corners=False``, no antialiasing (samples the map at the latent cell centres). Both
    are convex combinations of the input, so a map in [0, 1] stays in [0, 1]. Returns float32 (h, w).
    """
    if mode not in REDUCE_MODES:
        raise ValueError(f"mode must be one of {', '.join(REDUCE_MODES)}, got {mode!r}")
    x = torch.from_numpy(np.ascontiguousarray(heatmap, np.float32))[None, None]
    kw = {"align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(x, size=tuple(latent_size), mode=mode, **kw)[0, 0]
    lo, hi = float(np.min(heatmap)), float(np.max(heatmap))
    return out.clamp(lo, hi).numpy()  # guards float rounding just outside the input's range


def mask_heatmap(mask: np.ndarray, latent_size: tuple[int, int],
                 mode: Literal["area", "bilinear"] = "area") -> np.ndarray:
    """The person-mask heatmap (papers.md §1, option "the person mask"):  H = reduce([mask > 0])  — the share of
    each latent cell covered by any person (``area``). ``mask``: (H, W), 0 = background, k = person k."""
    return reduce_to_latent((np.asarray(mask) > 0).astype(np.float32), latent_size, mode)


def skeleton_blur_mask(keypoints: np.ndarray, size: tuple[int, int], latent_size: tuple[int, int],
                       blur_sigma: float = 1.0, stickwidth: int | None = None) -> np.ndarray:
    """A Stable-Pose-style blurred skeleton mask at latent size (papers.md §1, choice c):

        m(i, j) = exp(−D(i, j)² / (2σ_b²))

    B = the latent cells containing any pixel of the target's OpenPose-18 skeleton drawing
    (:func:`humantune.data.openpose.draw_openpose` at image size, limb half-width ``stickwidth``; max-pooled to
    latent size), D = the Euclidean distance in latent cells from cell (i, j) to the nearest cell of B, σ_b =
    ``blur_sigma`` in latent cells. So m = 1 on the skeleton and falls off as a Gaussian around it; all zeros when
    nothing is drawn. Pair it with ``placement="outside"`` and w = α − 1 for Stable-Pose's α·m·L + (1−m)·L.
    """
    from scipy.ndimage import distance_transform_edt

    if not blur_sigma > 0:
        raise ValueError(f"blur_sigma must be positive, got {blur_sigma}")
    people = validate_keypoints(keypoints, where="skeleton_blur_mask")
    drawing = np.asarray(draw_openpose(people, size, stickwidth=stickwidth))
    skeleton = torch.from_numpy((drawing.max(axis=2) > 0).astype(np.float32))[None, None]
    cells = F.adaptive_max_pool2d(skeleton, tuple(latent_size))[0, 0].numpy() > 0
    if not cells.any():
        return np.zeros(tuple(latent_size), np.float32)
    distance = distance_transform_edt(~cells)
    return np.exp(-(distance**2) / (2 * blur_sigma**2)).astype(np.float32)


def heatmap_weights(heatmap: torch.Tensor, w: float) -> torch.Tensor:
    """W = w·H + 1   (papers.md §1): 1 away from the body, 1 + w where H = 1."""
    return w * heatmap + 1.0


def heatmap_weighted_mse(pred: torch.Tensor, target: torch.Tensor, heatmap: torch.Tensor, w: float,
                         placement: Literal["inside", "outside"] = "inside") -> torch.Tensor:
    """The heatmap-guided loss of papers.md §1, one value per sample (float32), W = w·H + 1:

        inside  (the paper's equation):   L_h = mean_{c,y,x} ( W ⊙ (ε − ε_θ) )²  = mean W²·(ε − ε_θ)²
        outside (HumanSD, Stable-Pose):   L_h = mean_{c,y,x} W ⊙ (ε − ε_θ)²

    The mean runs over channels and latent positions, as :func:`humantune.losses.denoising.per_sample_mse` does
    (w = 0 gives exactly that). pred, target: (B, C, h, w); heatmap: (B, h, w), (B, 1, h, w) or (h, w), values in
    [0, 1], shared by every channel. Stable-Pose's α·m·L + (1−m)·L is ``outside`` with H = m, w = α − 1.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"pred and target must be (B, C, h, w) of one shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    h = heatmap.float().to(pred.device)
    if h.ndim == 2:
        h = h[None]
    if h.ndim == 3:
        h = h[:, None]
    if h.shape[-2:] != pred.shape[-2:] or h.shape[1] != 1 or h.shape[0] not in (1, pred.shape[0]):
        raise ValueError(f"heatmap of shape {tuple(heatmap.shape)} does not fit a prediction of shape "
                         f"{tuple(pred.shape)} (expected (B, h, w), (B, 1, h, w) or (h, w))")
    weights = heatmap_weights(h, w)
    squared = (pred.float() - target.float()) ** 2
    weighted = squared * (weights**2 if placement == "inside" else weights)
    return weighted.flatten(1).mean(1)


@dataclass
class HeatmapConfig:
    """H of the heatmap-guided loss L_h = mean ‖W ⊙ (ε − ε_θ)‖², W = w·H + 1 (papers.md §1)."""

    kind: Literal["gaussian", "mask", "skeleton_blur"] = option(
        "gaussian", "gaussian: keypoint + limb Gaussians of the target pose reduced to latent size (the paper's "
                    "intent); mask: the person mask (needs masks: mannequin world, COCO with segmentations); "
                    "skeleton_blur: Stable-Pose-style blurred skeleton mask at latent size")
    w: float = option(1.0, "extra weight w (W = w·H + 1); Stable-Pose's α = 5 is w = 4 with placement outside")
    sigma: float | None = option(None, "gaussian: σ in image pixels (null: the long side / 32, 4 px at 128²)")
    limbs: Literal["coco17", "openpose18", "none"] = option(
        "coco17", "gaussian: limb segments added to the keypoints (COCO-17 skeleton, the OpenPose-18 limbs, or none)")
    reduce: Literal["area", "bilinear"] = option("area", "gaussian, mask: image → latent reduction")
    blur_sigma: float = option(1.0, "skeleton_blur: σ of the fall-off around the skeleton, in latent cells")
    placement: Literal["inside", "outside"] = option(
        "inside", "inside: ‖W ⊙ e‖² (the paper's equation, weight W²); outside: W ⊙ e² (HumanSD, Stable-Pose)")

    def __post_init__(self) -> None:
        if self.w < 0:
            raise ValueError(f"w must be at least 0, got {self.w}")
        if self.sigma is not None and self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if self.blur_sigma <= 0:
            raise ValueError(f"blur_sigma must be positive, got {self.blur_sigma}")

    def geometry(self) -> tuple:
        """What H depends on (w and placement only weight it): the key of the heatmap cache."""
        if self.kind == "gaussian":
            return (self.kind, self.sigma, self.limbs, self.reduce)
        if self.kind == "mask":
            return (self.kind, self.reduce)
        return (self.kind, self.blur_sigma)


def latent_heatmap(keypoints: np.ndarray, mask: np.ndarray | None, size: tuple[int, int], cfg: HeatmapConfig,
                   latent_size: tuple[int, int], where: str = "sample") -> np.ndarray:
    """H of one sample (its keypoints and person mask in an image of ``size``) at latent size (h, w), built as
    ``cfg.kind`` says (papers.md §1)."""
    if cfg.kind == "gaussian":
        heat = pose_heatmap(keypoints, size, cfg.sigma, None if cfg.limbs == "none" else cfg.limbs)
        return reduce_to_latent(heat, latent_size, cfg.reduce)
    if cfg.kind == "mask":
        if mask is None:
            raise DataError(f"{where}: heatmap kind 'mask' needs a person mask, and this sample has none (the "
                            "mannequin world and COCO JSONs with segmentations have masks; use kind gaussian)")
        return mask_heatmap(mask, latent_size, cfg.reduce)
    return skeleton_blur_mask(keypoints, size, latent_size, cfg.blur_sigma)
