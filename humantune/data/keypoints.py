"""Keypoint formats: COCO-17, OpenPose-18 (BODY_18, as ControlNet-OpenPose uses) and MediaPipe-33."""

from __future__ import annotations

import numpy as np

COCO17_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
]
COCO17 = {name: i for i, name in enumerate(COCO17_NAMES)}

# COCO keypoint sigmas (pycocotools COCOeval.kpt_oks_sigmas).
COCO17_SIGMAS = np.array(
    [.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89], dtype=np.float64
) / 10.0

# COCO skeleton, 0-based pairs (the COCO JSON 'skeleton' field is the same, 1-based).
COCO17_SKELETON = [
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
]

# Horizontal flip permutation (left <-> right).
COCO17_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]

OPENPOSE18_NAMES = [
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
]

# MediaPipe Pose landmark index for each COCO-17 keypoint (shared/papers.md, "Evaluation facts").
MEDIAPIPE33_TO_COCO17 = [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]

# COCO-17 index for each OpenPose-18 keypoint; the neck (OpenPose index 1) has no COCO counterpart.
_OPENPOSE18_NECK = 1
_OPENPOSE18_FROM_COCO17 = [COCO17[name] for name in OPENPOSE18_NAMES if name != "neck"]
_OPENPOSE18_NON_NECK = [i for i, name in enumerate(OPENPOSE18_NAMES) if name != "neck"]


def _check_points(kp: np.ndarray, count: int, name: str, coords: int | None = None) -> np.ndarray:
    """``kp`` as a float array (float dtypes kept, others → float32); ValueError unless its shape is
    (..., count, coords), any last size when ``coords`` is None."""
    arr = np.asarray(kp)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    if arr.ndim < 2 or arr.shape[-2] != count or (coords is not None and arr.shape[-1] != coords):
        expected = f"(..., {count}, {coords if coords is not None else 'k'})"
        raise ValueError(f"{name}: expected shape {expected}, got {arr.shape}")
    return arr


def coco17_to_openpose18(kp: np.ndarray) -> np.ndarray:
    """COCO-17 ``[x, y, v]`` (..., 17, 3) → OpenPose BODY_18 (..., 18, 3), in the order of :data:`OPENPOSE18_NAMES`.

    Every OpenPose point except the neck is a copy of the COCO point of the same name. The neck is the midpoint of
    the two shoulders with v = min(v_left, v_right), and only when both shoulders are labelled (v > 0); otherwise
    it is ``[0, 0, 0]`` (COCO's "not labelled"). DWPose in controlnet_aux builds the OpenPose neck from COCO
    keypoints the same way (shoulder mean, kept when both shoulders are confident).
    """
    coco = _check_points(kp, 17, "coco17_to_openpose18", 3)
    out = np.zeros(coco.shape[:-2] + (18, 3), dtype=coco.dtype)
    out[..., _OPENPOSE18_NON_NECK, :] = coco[..., _OPENPOSE18_FROM_COCO17, :]
    left, right = coco[..., COCO17["left_shoulder"], :], coco[..., COCO17["right_shoulder"], :]
    both = (left[..., 2] > 0) & (right[..., 2] > 0)
    neck = np.concatenate([(left[..., :2] + right[..., :2]) / 2, np.minimum(left[..., 2:], right[..., 2:])], axis=-1)
    out[..., _OPENPOSE18_NECK, :] = np.where(both[..., None], neck, 0)
    return out


def openpose18_to_coco17(kp: np.ndarray) -> np.ndarray:
    """OpenPose BODY_18 (..., 18, k) → COCO-17 (..., 17, k): the neck is dropped, the other points reordered."""
    openpose = _check_points(kp, 18, "openpose18_to_coco17")
    out = np.empty(openpose.shape[:-2] + (17, openpose.shape[-1]), dtype=openpose.dtype)
    out[..., _OPENPOSE18_FROM_COCO17, :] = openpose[..., _OPENPOSE18_NON_NECK, :]
    return out


def mediapipe33_to_coco17(landmarks: np.ndarray) -> np.ndarray:
    """MediaPipe Pose landmarks (..., 33, k) → COCO-17 (..., 17, k) by :data:`MEDIAPIPE33_TO_COCO17`.

    The last axis is copied as is (e.g. ``[x, y, visibility]`` or ``[x, y, z, visibility, presence]``); turning
    MediaPipe scores into COCO v flags is the caller's choice.
    """
    mediapipe = _check_points(landmarks, 33, "mediapipe33_to_coco17")
    return mediapipe[..., MEDIAPIPE33_TO_COCO17, :].copy()


def coco17_to_mediapipe33(kp: np.ndarray) -> np.ndarray:
    """COCO-17 ``[x, y, v]`` (..., 17, 3) → MediaPipe-33 layout (..., 33, 3).

    The 17 COCO points go to their landmarks (:data:`MEDIAPIPE33_TO_COCO17`); the 16 landmarks COCO lacks (inner/outer
    eye corners, mouth, hands, heels, foot tips) are ``[0, 0, 0]``, i.e. not labelled.
    """
    coco = _check_points(kp, 17, "coco17_to_mediapipe33", 3)
    out = np.zeros(coco.shape[:-2] + (33, 3), dtype=coco.dtype)
    out[..., MEDIAPIPE33_TO_COCO17, :] = coco
    return out


def flip_coco17_horizontal(kp: np.ndarray, width: int) -> np.ndarray:
    """COCO-17 ``[x, y, v]`` (..., 17, 3) of an image ``width`` pixels wide, mirrored left-right.

    Convention: pixel centres at integers (the centre of the top-left pixel is (0, 0), as humantune's ground truth
    and COCO's keypoint annotations use), so mirroring the image (``PIL.Image.FLIP_LEFT_RIGHT``: column i → column
    width − 1 − i) moves a point to x' = width − 1 − x; y and v are unchanged. Left and right points then swap
    names (:data:`COCO17_FLIP`): the mirrored left wrist is the right wrist. Points with v = 0 keep their stored
    coordinates (COCO stores ``[0, 0, 0]`` for them), so "not labelled" stays exactly ``[0, 0, 0]``.
    """
    coco = _check_points(kp, 17, "flip_coco17_horizontal", 3)
    mirrored = coco.copy()
    labelled = coco[..., 2] > 0
    mirrored[..., 0] = np.where(labelled, (width - 1) - coco[..., 0], coco[..., 0])
    return mirrored[..., COCO17_FLIP, :]
