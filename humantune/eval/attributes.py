"""Text–image alignment in the mannequin world, offline: does the image show the attributes its caption asks for?

A caption says what it asks for in the world's grammar, parsed by
:func:`humantune.data.mannequin.prompted.parse_caption` (e.g. "a woman in a red shirt and blue jeans lying on the
grass"). :func:`read_attributes` reads the same attributes off an image, given one person's COCO-17 keypoints (ground
truth, or detections such as :class:`~humantune.eval.pose_estimators.MediaPipePoseEstimator`'s):

- **top colour**: the torso region, a quadrilateral through the shoulders and hips shrunk towards its centre
  (see :func:`torso_region`), **bottom colour**: the upper thighs (hip → 10–45 % of the way to the knee).
  Each pixel of a region is assigned to the nearest *prototype* in CIELAB (OpenCV's float Lab, L in [0, 100],
  Euclidean distance, i.e. CIE76 ΔE). The prototypes are the 10 named colours of ``CLOTH_COLORS`` at the four
  shading factors the renderer uses (0.72, 0.8, 1.0, 1.18), the denim of jeans (``JEANS_BLUE``, read as "blue",
  the colour the caption names), and, as a reject class, the 7 skin tones (bare arms over a t-shirt). The colour
  is the name with the most pixels; pixels nearest to skin do not vote.
- **background**: a multinomial logistic regression on the pixels away from the person (a keypoint skeleton,
  dilated, is masked out): the fraction of those pixels nearest (CIELAB) to each of the procedural backgrounds'
  base colours, separately for the upper and lower halves of the image, plus the median absolute Laplacian of
  lightness in each half (grass and asphalt are grainy, walls and sky smooth). Its weights are fitted on renders
  by :func:`fit_background_classifier` and shipped in ``humantune/assets/attributes/background_classifier.json``.
- **posture** (the action, coarsened): ``lying`` when the keypoints' bounding box is much wider than tall or the
  torso is closer to horizontal than to vertical with the ankles not below the hips; ``sitting`` when the knees
  are about as high as the hips while the torso is upright; ``upright`` otherwise. The world's 11 actions map to
  these three (:data:`~humantune.data.mannequin.prompted.POSTURE_OF_ACTION`); walking vs standing vs waving is not
  attempted.

:func:`attribute_accuracy` scores images against their captions for the first person named in each caption.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from humantune.data.keypoints import COCO17, COCO17_SKELETON
from humantune.data.mannequin.appearance import BACKGROUNDS, CLOTH_COLORS, JEANS_BLUE, SKIN_TONES
from humantune.data.mannequin.prompted import parse_caption
from humantune.errors import HumantuneError

# ----------------------------------------------------------------------------------------------------------------
# Reading attributes off an image
# ----------------------------------------------------------------------------------------------------------------

SHADES = (0.72, 0.8, 1.0, 1.18)
"""Shading factors of the renderer (capsule rim, polygon rim, flat, highlight): each colour appears at all four."""

REJECT = "skin"

BACKGROUND_CODEBOOK: dict[str, tuple[int, int, int]] = {
    "sky_top": (70, 130, 215), "sky_bottom": (175, 210, 240), "cloud": (245, 245, 245),
    "grass": (70, 140, 55), "grass_dark": (60, 119, 47), "street": (96, 96, 100), "sidewalk": (165, 160, 150),
    "lane": (225, 215, 150), "sea": (40, 110, 170), "sand": (222, 200, 150), "wall_beige": (214, 200, 176),
    "wall_blue": (190, 205, 215), "wall_white": (222, 222, 214), "wall_pink": (200, 180, 190),
    "floor": (150, 110, 72), "seat": (90, 90, 100),
}
"""Base colours of the procedural backgrounds (humantune/data/mannequin/background.py) and of the seat prop:
the codebook of the background features."""

BACKGROUND_WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "attributes" / "background_classifier.json"


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (OpenCV float convention: L in [0, 100]) of uint8 or float RGB values in [0, 255], shape (..., 3)."""
    arr = np.asarray(rgb, np.float32).reshape(-1, 1, 3) / 255.0
    return cv2.cvtColor(arr, cv2.COLOR_RGB2LAB).reshape(np.shape(rgb))


@lru_cache(maxsize=None)
def _colour_prototypes() -> tuple[np.ndarray, tuple[str, ...]]:
    """Lab prototypes and their names: cloth colours × shades, jeans denim (as "blue"), skin tones (reject)."""
    rgbs, names = [], []
    for name, rgb in list(CLOTH_COLORS.items()) + [("blue", JEANS_BLUE)]:
        for f in SHADES:
            rgbs.append([min(255.0, c * f) for c in rgb])
            names.append(name)
    for rgb in SKIN_TONES:
        for f in (0.84, 1.0):  # the renderer shades the face 0.84 at its rim
            rgbs.append([c * f for c in rgb])
            names.append(REJECT)
    return _lab(np.array(rgbs, np.float32)), tuple(names)


def dominant_colour(pixels: np.ndarray) -> tuple[str | None, float, dict[str, int]]:
    """Name of the cloth colour most pixels are nearest to (CIE76 ΔE in CIELAB), its vote share, and all votes.

    pixels: (n, 3) RGB. Pixels nearest to a skin tone do not vote; with no votes the name is None.
    """
    protos, names = _colour_prototypes()
    if len(pixels) == 0:
        return None, 0.0, {}
    lab = _lab(np.asarray(pixels, np.float32).reshape(-1, 3))
    nearest = np.argmin(((lab[:, None, :] - protos[None]) ** 2).sum(-1), axis=1)
    votes: dict[str, int] = {}
    for k in nearest:
        if names[k] != REJECT:
            votes[names[k]] = votes.get(names[k], 0) + 1
    if not votes:
        return None, 0.0, votes
    best = max(votes, key=votes.get)
    return best, votes[best] / sum(votes.values()), votes


def _check_inputs(image: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be a uint8 H×W×3 RGB array, got dtype {image.dtype} and shape {image.shape}")
    kp = np.asarray(keypoints, np.float64)
    if kp.shape != (17, 3):
        raise ValueError(f"keypoints must be one person's COCO-17 [x, y, v] array of shape (17, 3), got {kp.shape}")
    if not np.isfinite(kp).all():
        raise ValueError("keypoints contain NaN or infinite values")
    return image, kp


def _point(kp: np.ndarray, name: str, min_confidence: float) -> np.ndarray | None:
    x, y, v = kp[COCO17[name]]
    return np.array([x, y]) if v > min_confidence else None


def torso_length(kp: np.ndarray, min_confidence: float) -> float | None:
    """Distance from the shoulder midpoint to the hip midpoint (any labelled shoulder and hip), in pixels."""
    sh = [p for p in (_point(kp, "left_shoulder", min_confidence), _point(kp, "right_shoulder", min_confidence))
          if p is not None]
    hp = [p for p in (_point(kp, "left_hip", min_confidence), _point(kp, "right_hip", min_confidence)) if p is not None]
    if not sh or not hp:
        return None
    return float(np.linalg.norm(np.mean(sh, 0) - np.mean(hp, 0)))


def torso_region(kp: np.ndarray, shape: tuple[int, int], min_confidence: float = 0.0,
                 along: tuple[float, float] = (0.3, 0.85), across: float = 0.6, min_half_width: float = 0.15
                 ) -> np.ndarray | None:
    """Boolean mask of the shirt region: the part of the shoulder–hip quadrilateral between ``along`` fractions of
    the hip→shoulder axis (skipping the waistband, drawn in the bottom colour, and the neck), ``across`` of its width.

    The half-width is at least ``min_half_width`` × torso length, so a person in profile (shoulders on top of each
    other) still gets a strip. None unless both shoulders and both hips have v > ``min_confidence``.
    """
    names = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
    pts = [_point(kp, n, min_confidence) for n in names]
    if any(p is None for p in pts):
        return None
    ls, rs, lh, rh = pts
    sh_c, hip_c = (ls + rs) / 2, (lh + rh) / 2
    axis = sh_c - hip_c
    length = float(np.linalg.norm(axis))
    if length < 1.0:
        return None
    unit = axis / length
    perp = np.array([-unit[1], unit[0]])
    polygon = []
    for t, half in ((along[0], abs((rh - lh) @ perp) / 2), (along[1], abs((rs - ls) @ perp) / 2)):
        centre = hip_c + axis * t
        half = max(half * across, min_half_width * length)
        polygon += [centre + perp * half, centre - perp * half]
    polygon = [polygon[0], polygon[1], polygon[3], polygon[2]]
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(np.array(polygon) * 4).astype(np.int32)], 1, cv2.LINE_8, 2)
    return mask.astype(bool)


def thigh_region(kp: np.ndarray, shape: tuple[int, int], min_confidence: float = 0.0,
                 along: tuple[float, float] = (0.1, 0.45), half_width: float = 0.08) -> np.ndarray | None:
    """Boolean mask of the upper thighs: hip → knee from ``along[0]`` to ``along[1]`` of the way, ``half_width`` ×
    torso length either side of the bone (the clothes cover at least 55 % of the thigh: shorts, skirt, dress).
    None when no side has both its hip and knee labelled, or the torso length is unknown."""
    length = torso_length(kp, min_confidence)
    if length is None or length < 1.0:
        return None
    mask = np.zeros(shape, np.uint8)
    found = False
    for side in ("left", "right"):
        hip, knee = _point(kp, f"{side}_hip", min_confidence), _point(kp, f"{side}_knee", min_confidence)
        if hip is None or knee is None:
            continue
        a, b = hip + (knee - hip) * along[0], hip + (knee - hip) * along[1]
        thickness = max(1, int(round(2 * half_width * length)))
        cv2.line(mask, tuple(int(round(v)) for v in a), tuple(int(round(v)) for v in b), 1, thickness, cv2.LINE_8)
        found = True
    return mask.astype(bool) if found else None


def person_mask(kp: np.ndarray, shape: tuple[int, int], min_confidence: float = 0.0, width: float = 0.5,
                margin: float = 0.15) -> np.ndarray:
    """Boolean mask over-covering one person from keypoints: every COCO bone drawn ``width`` × torso length thick,
    the torso quadrilateral, a head disc, all dilated by ``margin`` × torso length (plus the keypoint bounding
    Empty when fewer than 2 keypoints are labelled."""
    labelled = kp[:, 2] > min_confidence
    mask = np.zeros(shape, np.uint8)
    if labelled.sum() < 2:
        return mask.astype(bool)
    pts = kp[labelled, :2]
    length = torso_length(kp, min_confidence) or 0.3 * float(np.linalg.norm(pts.max(0) - pts.min(0)))
    length = max(length, 2.0)
    thick = max(1, int(round(width * length)))
    for a, b in COCO17_SKELETON:
        if labelled[a] and labelled[b]:
            cv2.line(mask, tuple(int(round(v)) for v in kp[a, :2]), tuple(int(round(v)) for v in kp[b, :2]), 1, thick)
    torso = [COCO17[n] for n in ("left_shoulder", "right_shoulder", "right_hip", "left_hip")]
    if labelled[torso].all():
        cv2.fillPoly(mask, [np.round(kp[torso, :2]).astype(np.int32)], 1)
    head = [i for i in range(5) if labelled[i]]
    if head:
        centre = kp[head, :2].mean(0)
        cv2.circle(mask, tuple(int(round(v)) for v in centre), max(1, int(round(0.45 * length))), 1, -1)
    r = max(1, int(round(margin * length)))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return mask.astype(bool)


def background_features(image: np.ndarray, kp: np.ndarray, min_confidence: float = 0.0) -> np.ndarray:
    """Feature vector of the pixels away from the person (see the module docstring), float64.

    Layout: for the upper then the lower half of the image, the fraction of its background pixels nearest to each
    :data:`BACKGROUND_CODEBOOK` colour, then the median |Laplacian| (3×3) of L (CIELAB) over those pixels not next to
    the person mask (divided by 10).
    A half with no background pixels contributes zeros.
    """
    h, w = image.shape[:2]
    free = ~person_mask(kp, (h, w), min_confidence)
    lab = _lab(image)
    codebook = _lab(np.array(list(BACKGROUND_CODEBOOK.values()), np.float32))
    nearest = np.argmin(((lab.reshape(-1, 1, 3) - codebook[None]) ** 2).sum(-1), axis=1).reshape(h, w)
    grain = np.abs(cv2.Laplacian(lab[..., 0], cv2.CV_32F, ksize=1))
    # The person's outline and the horizon are edges, not grain: count grain only well inside the free region.
    inner = cv2.erode(free.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    feats = []
    for rows in (slice(0, h // 2), slice(h // 2, h)):
        sel = free[rows]
        n = int(sel.sum())
        counts = np.bincount(nearest[rows][sel], minlength=len(codebook)) / max(n, 1)
        g = inner[rows]
        feats += [*counts, float(np.median(grain[rows][g])) / 10 if g.any() else 0.0]
    return np.array(feats, np.float64)


@dataclass(frozen=True)
class BackgroundClassifier:
    """Multinomial logistic regression p(class | x) = softmax(W ((x − μ)/σ) + b) over :data:`BACKGROUNDS`."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray   # (classes, features)
    bias: np.ndarray      # (classes,)
    classes: tuple[str, ...]
    calibration: dict

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        z = ((np.atleast_2d(features) - self.mean) / self.scale) @ self.weights.T + self.bias
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, features: np.ndarray) -> list[str]:
        return [self.classes[k] for k in self.probabilities(features).argmax(axis=1)]

    def to_json(self) -> dict:
        return {"classes": list(self.classes), "codebook": {k: list(v) for k, v in BACKGROUND_CODEBOOK.items()},
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "weights": self.weights.tolist(),
                "bias": self.bias.tolist(), "calibration": self.calibration}

    @classmethod
    def load(cls, path: str | Path = BACKGROUND_WEIGHTS) -> BackgroundClassifier:
        """Read a classifier written by :func:`fit_background_classifier`; HumantuneError (one line) if missing."""
        path = Path(path)
        if not path.is_file():
            raise HumantuneError(f"background classifier {path} does not exist; write it with "
                                 "python -m humantune.eval.attributes --fit-background")
        d = json.loads(path.read_text())
        if d.get("codebook") != {k: list(v) for k, v in BACKGROUND_CODEBOOK.items()}:
            raise HumantuneError(f"background classifier {path} was fitted with another colour codebook; refit it")
        return cls(np.array(d["mean"]), np.array(d["scale"]), np.array(d["weights"]), np.array(d["bias"]),
                   tuple(d["classes"]), d["calibration"])


@lru_cache(maxsize=4)
def _cached_classifier(path: str) -> BackgroundClassifier:
    return BackgroundClassifier.load(path)


def fit_background_classifier(n: int = 1500, seed: int = 7, l2: float = 1e-2, steps: int = 300,
                              out: str | Path | None = BACKGROUND_WEIGHTS) -> tuple[BackgroundClassifier, dict]:
    """Fit the background classifier on renders of the default world with ground-truth keypoints.

    Samples 0..n−1 of ``MannequinConfig(seed=seed)``, features of the first person's keypoints; held-out accuracy
    on samples 0..n/3−1 of seed ``seed + 1``. Loss: mean cross-entropy + ``l2``·||W||² on standardised features,
    minimised with L-BFGS (torch). Writes the JSON to ``out`` unless None. Returns the classifier and the record.
    """
    import torch

    from humantune.data.mannequin.world import MannequinConfig, render_sample

    def data(count: int, s: int) -> tuple[np.ndarray, np.ndarray]:
        cfg = MannequinConfig(n=count, seed=s)
        xs, ys = [], []
        for i in range(count):
            scene = render_sample(cfg, i)
            xs.append(background_features(scene.image, scene.keypoints[0]))
            ys.append(BACKGROUNDS.index(scene.background))
        return np.stack(xs), np.array(ys)

    x, y = data(n, seed)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mean) / scale)
    yt = torch.tensor(y)
    weights = torch.zeros(len(BACKGROUNDS), x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(BACKGROUNDS), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weights, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ weights.T + bias, yt) + l2 * weights.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    xh, yh = data(max(2, n // 3), seed + 1)
    record = {"n": n, "seed": seed, "heldout_n": len(yh), "heldout_seed": seed + 1, "l2": l2}
    clf = BackgroundClassifier(mean, scale, weights.detach().numpy(), bias.detach().numpy(), tuple(BACKGROUNDS), record)
    record["train_accuracy"] = float(np.mean(np.array(clf.predict(x)) == np.array(BACKGROUNDS)[y]))
    record["heldout_accuracy"] = float(np.mean(np.array(clf.predict(xh)) == np.array(BACKGROUNDS)[yh]))
    if out is not None:
        from humantune.io import write_json_atomic

        write_json_atomic(out, clf.to_json())
    return clf, record


def read_posture(kp: np.ndarray, min_confidence: float = 0.0) -> str | None:
    """``lying``, ``sitting`` or ``upright`` from one person's keypoints (rules in the module docstring); None when
    the shoulders, hips or knees are not labelled.

    With T the torso length and image y pointing down: lying if the labelled keypoints' box is wider than
    1.4 × its height, or the torso is within 40° of horizontal and the ankles are not more than T below the hips;
    sitting if the knees are less than 0.45 T below the hips, the torso is within 35° of vertical and the ankles are
    more than 0.6 T below the knees.
    """
    def mid(a: str, b: str) -> np.ndarray | None:
        pa, pb = _point(kp, a, min_confidence), _point(kp, b, min_confidence)
        pts = [p for p in (pa, pb) if p is not None]
        return np.mean(pts, 0) if pts else None

    sh, hip, knee = mid("left_shoulder", "right_shoulder"), mid("left_hip", "right_hip"), mid("left_knee", "right_knee")
    ankle = mid("left_ankle", "right_ankle")
    if sh is None or hip is None or knee is None:
        return None
    torso = sh - hip
    length = float(np.linalg.norm(torso))
    if length < 1.0:
        return None
    pts = kp[kp[:, 2] > min_confidence, :2]
    width, height = pts.max(0) - pts.min(0)
    from_vertical = np.degrees(np.arctan2(abs(torso[0]), -torso[1]))  # 0 upright, 90 horizontal, 180 head down
    ankle_drop = (ankle[1] - hip[1]) / length if ankle is not None else 0.0
    if width > 1.4 * height or (50 <= from_vertical <= 130 and ankle_drop < 1.0):
        return "lying"
    knee_drop = (knee[1] - hip[1]) / length
    shin_drop = (ankle[1] - knee[1]) / length if ankle is not None else 0.0
    if knee_drop < 0.45 and from_vertical < 35 and shin_drop > 0.6:
        return "sitting"
    return "upright"


@dataclass(frozen=True)
class ReadAttributes:
    """Attributes read off one person in an image. None means the region could not be located from the keypoints.

    ``*_share``: the winning colour's fraction of the voting pixels (low values flag an unsure reading).
    """

    top_color: str | None
    top_share: float
    bottom_color: str | None
    bottom_share: float
    background: str
    posture: str | None


def read_attributes(image: np.ndarray, keypoints: np.ndarray, min_confidence: float = 0.0,
                    background_classifier: str | Path | BackgroundClassifier = BACKGROUND_WEIGHTS) -> ReadAttributes:
    """Read top colour, bottom colour, background and posture of one person.

    image: RGB uint8 (H, W, 3); keypoints: (17, 3) COCO ``[x, y, v]`` in image pixels, where a keypoint counts as
    labelled when v > ``min_confidence`` (ground truth v ∈ {0, 1, 2}, or a detector's confidence). Raises
    ValueError for a malformed image or keypoint array.
    """
    image, kp = _check_inputs(image, keypoints)
    shape = image.shape[:2]
    top = torso_region(kp, shape, min_confidence)
    top_color, top_share, _ = dominant_colour(image[top]) if top is not None else (None, 0.0, {})
    thighs = thigh_region(kp, shape, min_confidence)
    bottom_color, bottom_share, _ = dominant_colour(image[thighs]) if thighs is not None else (None, 0.0, {})
    clf = background_classifier if isinstance(background_classifier, BackgroundClassifier) \
        else _cached_classifier(str(background_classifier))
    background = clf.predict(background_features(image, kp, min_confidence))[0]
    return ReadAttributes(top_color, top_share, bottom_color, bottom_share, background,
                          read_posture(kp, min_confidence))


# ----------------------------------------------------------------------------------------------------------------
# Attribute accuracy
# ----------------------------------------------------------------------------------------------------------------

ATTRIBUTES = ("top_color", "bottom_color", "background", "posture")


@dataclass
class AttributeAccuracy:
    """Per-attribute accuracy over images: ``accuracy[a] = correct[a] / counted[a]``.

    ``rows``: one dict per image (index, requested and read values, per-attribute correctness, detected).
    ``confusion[a][requested][read]``: counts, with ``"missed"`` for no detection and ``"unread"`` for a region
    that could not be located.
    """

    accuracy: dict[str, float]
    correct: dict[str, int]
    counted: dict[str, int]
    confusion: dict[str, dict[str, dict[str, int]]]
    rows: list[dict]

    def per_image_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """float64 (N,) arrays: the attributes read correctly in each image, and the attributes its caption asks
        for (the numerators and denominators of a ratio over images)."""
        correct = np.array([sum(bool(v) for k, v in row.items() if k.endswith("_correct")) for row in self.rows],
                           float)
        counted = np.array([sum(1 for k in row if k.endswith("_correct")) for row in self.rows], float)
        return correct, counted


def attribute_accuracy(images: Sequence[np.ndarray], captions: Sequence[str],
                       detections: Sequence[np.ndarray | None], min_confidence: float = 0.0,
                       background_classifier: str | Path | BackgroundClassifier = BACKGROUND_WEIGHTS
                       ) -> AttributeAccuracy:
    """Score each image against the first person its caption names.

    detections[i]: the keypoints of that person in image i, (17, 3) or (P, 17, 3) (the first row is used), or
    None / an empty (0, 17, 3) array when no person was found. Conventions:

    - a missed detection counts as wrong for every attribute the caption requests, the background included
      (it is read from the non-person pixels, which are unknown without a person);
    - a region that cannot be located (keypoints unlabelled) counts as wrong;
    - ``bottom_color`` is counted only for captions with a bottom garment (a dress has none); jeans request "blue";
    - ``posture`` compares :func:`read_posture` with the caption's action coarsened by
      :data:`~humantune.data.mannequin.prompted.POSTURE_OF_ACTION`.

    Raises ValueError if the three sequences differ in length or a caption does not parse.
    """
    if not (len(images) == len(captions) == len(detections)):
        raise ValueError(f"need one caption and one detection per image, got {len(images)} images, "
                         f"{len(captions)} captions and {len(detections)} detections")
    clf = background_classifier if isinstance(background_classifier, BackgroundClassifier) \
        else _cached_classifier(str(background_classifier))
    correct = {a: 0 for a in ATTRIBUTES}
    counted = {a: 0 for a in ATTRIBUTES}
    confusion: dict[str, dict[str, dict[str, int]]] = {a: {} for a in ATTRIBUTES}
    rows = []
    for i, (image, caption, det) in enumerate(zip(images, captions, detections)):
        request = parse_caption(caption)
        person, background = request.people[0], request.background
        wanted = {"top_color": person.top_color, "bottom_color": person.bottom_color, "background": background,
                  "posture": person.posture}
        kp = None if det is None else np.asarray(det, np.float64)
        if kp is not None and kp.ndim == 3:
            kp = kp[0] if kp.shape[0] > 0 else None
        read = read_attributes(image, kp, min_confidence, clf) if kp is not None else None
        row = {"index": i, "caption": caption, "detected": read is not None}
        for a in ATTRIBUTES:
            if wanted[a] is None:
                continue
            got = "missed" if read is None else (getattr(read, a) or "unread")
            ok = got == wanted[a]
            counted[a] += 1
            correct[a] += int(ok)
            cell = confusion[a].setdefault(wanted[a], {})
            cell[got] = cell.get(got, 0) + 1
            row[f"{a}_requested"], row[f"{a}_read"], row[f"{a}_correct"] = wanted[a], got, ok
        rows.append(row)
    accuracy = {a: (correct[a] / counted[a] if counted[a] else float("nan")) for a in ATTRIBUTES}
    return AttributeAccuracy(accuracy, correct, counted, confusion, rows)


def confusion_summary(confusion: dict[str, dict[str, int]], top: int = 5) -> list[tuple[str, str, int]]:
    """The ``top`` most frequent (requested, read) mistakes of one attribute's confusion table."""
    pairs = [(want, got, n) for want, row in confusion.items() for got, n in row.items() if got != want]
    return sorted(pairs, key=lambda t: -t[2])[:top]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m humantune.eval.attributes --fit-background``: refit and write the background classifier."""
    import argparse

    ap = argparse.ArgumentParser(description="Fit the mannequin background classifier used by read_attributes.")
    ap.add_argument("--fit-background", action="store_true", required=True)
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=BACKGROUND_WEIGHTS)
    args = ap.parse_args(argv)
    _, record = fit_background_classifier(args.n, args.seed, out=args.out)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
