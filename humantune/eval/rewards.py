"""Reward models that score generated images, e.g. to rank candidates into DPO preference pairs.

Every reward is a :class:`RewardModel` with ``score(images, prompts) -> np.ndarray`` (float64 (N,), higher = better).
:func:`load_reward` builds one by name (:data:`REWARDS`).

Offline, built in (no weights beyond the MediaPipe wheel):

- :class:`PoseAgreementReward`: OKS of the detected person against the target pose of the image (mean over target
  people, a missed person scores 0).
- :class:`AnatomyReward`: −(anomaly score) of the best detection (:mod:`humantune.eval.anatomy`), capped.
- :class:`AttributeReward`: the fraction of the caption's attributes (top/bottom colour, background, posture) read
  off the best detection (:mod:`humantune.eval.attributes`; mannequin-world captions).
- :class:`RealismReward`: −(RMS standardised distance) of the image's world features
  (:mod:`humantune.eval.world_features`) to those of real renders.
- :class:`CombinedReward`: Σ_m w_m · r_m over component rewards; :func:`mannequin_reward` is the offline default
  (anatomy, attributes, realism on one shared estimator).

Learned human-preference models, loaded from a local folder or the Hugging Face cache only (a missing model raises a
one-line HumantuneError naming it):

- :class:`PickScoreReward`: PickScore (Kirstain et al. 2023), a CLIP-H model; score = logit_scale · cos(image, text).
- :class:`HPSv2Reward`, :class:`ImageRewardReward`: need the ``hpsv2`` / ``image-reward`` packages, which require
  torchvision and a different torch than humantune's, so humantune does not install them; without the package these
  raise HumantuneError naming the package and the weights.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from humantune.errors import HumantuneError
from humantune.eval import anatomy, pose_metrics
from humantune.eval.pose_estimators import PoseEstimator, as_rgb_array, load_pose_estimator


class RewardModel(ABC):
    """Scores images (PIL images or uint8 (H, W, 3) RGB arrays), optionally given their prompts.

    ``score`` returns float64 (N,), higher = better; rewards that ignore prompts accept ``prompts=None``.
    """

    name: str = "reward"

    @abstractmethod
    def score(self, images: Sequence[Image.Image | np.ndarray], prompts: Sequence[str] | None = None,
              **kwargs: Any) -> np.ndarray: ...

    def close(self) -> None:
        """Free resources (a pose estimator the reward created)."""

    def __enter__(self) -> RewardModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_prompts(images: Sequence, prompts: Sequence[str] | None, name: str, required: bool) -> None:
    if prompts is None:
        if required:
            raise HumantuneError(f"the {name} reward needs one prompt per image")
        return
    if len(prompts) != len(images):
        raise HumantuneError(f"the {name} reward got {len(images)} images but {len(prompts)} prompts")


class _DetectingReward(RewardModel):
    """A reward computed from the pose detected on each image by one estimator (a name, built and closed here,
    or an instance, shared and left open)."""

    def __init__(self, estimator: str | PoseEstimator = "mediapipe") -> None:
        self._own = isinstance(estimator, str)
        self.estimator = load_pose_estimator(estimator) if self._own else estimator

    def close(self) -> None:
        if self._own and self.estimator is not None:
            self.estimator.close()
            self.estimator = None


class PoseAgreementReward(_DetectingReward):
    """r = mean over the target's labelled people of the OKS of their matched detection
    (:func:`humantune.eval.pose_metrics.matched_oks`; a missed person scores 0), in [0, 1].

    ``targets`` (one per image, given to :meth:`score`) are (P, 17, 3) ``[x, y, v]`` keypoint arrays in the image's
    pixels, or :class:`~humantune.eval.pose_metrics.PoseGroundTruth` (needed for the ``segment`` area). s² follows
    ``area_convention``; for keypoint arrays the box is the labelled keypoints' extent. An image whose target has no
    labelled person scores NaN.
    """

    name = "pose_agreement"

    def __init__(self, estimator: str | PoseEstimator = "mediapipe", area_convention: str = "bbox") -> None:
        if area_convention not in pose_metrics.AREA_CONVENTIONS:
            raise HumantuneError(f"unknown area convention {area_convention!r}; expected one of "
                                 f"{', '.join(pose_metrics.AREA_CONVENTIONS)}")
        super().__init__(estimator)
        self.area_convention = area_convention

    def _target(self, target: Any) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(target, pose_metrics.PoseGroundTruth):
            gt = target
        else:
            kp = np.asarray(target, np.float64).reshape(-1, 17, 3)
            boxes = np.zeros((len(kp), 4))
            for n, person in enumerate(kp):
                xy = person[person[:, 2] > 0, :2]
                if len(xy):
                    boxes[n] = [*xy.min(axis=0), *np.ptp(xy, axis=0)]
            gt = pose_metrics.PoseGroundTruth(kp, boxes, None)
        kp = np.asarray(gt.keypoints, np.float64).reshape(-1, 17, 3)
        try:
            areas = pose_metrics.ground_truth_areas(pose_metrics.PoseGroundTruth(kp, gt.bboxes, gt.areas),
                                                    self.area_convention)
        except ValueError as e:
            raise HumantuneError(f"pose agreement reward: {e}") from None
        labelled = (kp[:, :, 2] > 0).any(axis=1)
        return kp[labelled], areas[labelled]

    def score(self, images, prompts=None, targets: Sequence[Any] | None = None, **kwargs: Any) -> np.ndarray:
        if targets is None or len(targets) != len(images):
            raise HumantuneError(f"the pose_agreement reward needs one target pose per image (got {len(images)} "
                                 f"images and {'no' if targets is None else len(targets)} targets)")
        out = np.full(len(images), np.nan)
        for i, (image, target) in enumerate(zip(images, targets)):
            gkp, areas = self._target(target)
            if len(gkp) == 0:
                continue
            det = self.estimator.estimate(as_rgb_array(image))
            dkp = np.asarray(det.keypoints, np.float64).reshape(-1, 17, 3)
            out[i] = float(np.mean(pose_metrics.matched_oks(dkp, gkp, areas)))
        return out


class AnatomyReward(_DetectingReward):
    """r = −min(anomaly score, ``max_severity``) of the highest-scoring detection
    (:func:`humantune.eval.anatomy.anomaly_score` of :func:`~humantune.eval.anatomy.anatomy_checks`, keypoints used at
    confidence ≥ 0.5, no mask). 0 = no check evaluated or all at severity 0; below −1 some check fired. An image where
    nobody is detected scores −``max_severity`` (its score would be −∞), so weighted sums stay finite."""

    name = "anatomy"

    def __init__(self, estimator: str | PoseEstimator = "mediapipe", max_severity: float = 10.0) -> None:
        if not max_severity > 1:
            raise HumantuneError(f"max_severity must exceed 1 (the firing threshold), got {max_severity}")
        super().__init__(estimator)
        self.max_severity = float(max_severity)

    def score(self, images, prompts=None, **kwargs: Any) -> np.ndarray:
        out = np.empty(len(images))
        for i, image in enumerate(images):
            rgb = as_rgb_array(image)
            judged = anatomy.score_detection(self.estimator.estimate(rgb), (rgb.shape[1], rgb.shape[0]))
            out[i] = -min(judged.score, self.max_severity)
        return out


class AttributeReward(_DetectingReward):
    """r = (attributes read correctly) / (attributes the caption asks for), for the first person a mannequin-world
    caption names, read off the highest-scoring detection (keypoints with confidence > 0.5) by
    :func:`humantune.eval.attributes.attribute_accuracy`; in [0, 1], 0 when nobody is detected (every requested
    attribute then counts as wrong)."""

    name = "attributes"

    def score(self, images, prompts=None, **kwargs: Any) -> np.ndarray:
        from humantune.eval.attributes import attribute_accuracy
        from humantune.eval.pose_estimators import DETECTION_CONFIDENCE

        _check_prompts(images, prompts, self.name, required=True)
        rgb = [as_rgb_array(im) for im in images]
        best = [self.estimator.estimate(im).best_person() for im in rgb]
        try:
            result = attribute_accuracy(rgb, list(prompts), best, DETECTION_CONFIDENCE)
        except ValueError as e:
            raise HumantuneError(f"the attributes reward reads mannequin-world captions: {' '.join(str(e).split())}"
                                 ) from None
        correct, counted = result.per_image_counts()
        return np.where(counted > 0, correct / np.maximum(counted, 1), 0.0)


def standardised_distance(features: np.ndarray, reference_mean: np.ndarray, reference_std: np.ndarray) -> np.ndarray:
    """RMS standardised distance of each feature row to a reference distribution:
    d_i = √( (1/D) Σ_d ((f_id − μ_d) / s_d)² ), with μ, s the reference features' per-dimension mean and standard
    deviation (a diagonal-covariance Mahalanobis distance, per dimension); ≈ 1 for a typical reference image."""
    z = (np.asarray(features, np.float64) - reference_mean) / reference_std
    return np.sqrt(np.mean(z ** 2, axis=1))


class RealismReward(RewardModel):
    """r = −d, the negative :func:`standardised_distance` of the image's :class:`~humantune.eval.world_features.
    WorldFeatureNet` features to the features of ``reference`` images (real renders of the mannequin world): images
    that look like the world's renders score near −1, off-distribution ones lower. ``reference`` needs at least two
    images; a dimension with no spread gets s = 1e-6."""

    name = "realism"

    def __init__(self, reference: Sequence[Image.Image | np.ndarray], weights: str | os.PathLike | None = None
                 ) -> None:
        from humantune.eval.world_features import WorldFeatureNet

        if len(reference) < 2:
            raise HumantuneError(f"the realism reward needs at least 2 reference images, got {len(reference)}")
        self.net = WorldFeatureNet.load(weights)
        ref = self.net.extract([as_rgb_array(im) for im in reference])
        self.mean, self.std = ref.mean(axis=0), np.maximum(ref.std(axis=0), 1e-6)

    def score(self, images, prompts=None, **kwargs: Any) -> np.ndarray:
        if not len(images):
            return np.zeros(0)
        features = self.net.extract([as_rgb_array(im) for im in images])
        return -standardised_distance(features, self.mean, self.std)


class CombinedReward(RewardModel):
    """r = Σ_m w_m · r_m(images, prompts) over ``components`` (reward, weight); keyword arguments of :meth:`score`
    (e.g. ``targets``) go to every component. A NaN component value makes the sum NaN."""

    name = "combined"

    def __init__(self, components: Sequence[tuple[RewardModel, float]], owned: Sequence[Any] = ()) -> None:
        if not components:
            raise HumantuneError("a combined reward needs at least one (reward, weight) component")
        self.components = [(reward, float(weight)) for reward, weight in components]
        self.owned = list(owned)   # resources the components share (a pose estimator), closed with this reward

    def score(self, images, prompts=None, **kwargs: Any) -> np.ndarray:
        total = np.zeros(len(images))
        for reward, weight in self.components:
            total += weight * np.asarray(reward.score(images, prompts, **kwargs), np.float64)
        return total

    def close(self) -> None:
        for reward, _ in self.components:
            reward.close()
        for resource in self.owned:
            resource.close()
        self.owned = []


# ----------------------------------------------------------------------------------------------------------------
# learned preference models (local weights only)
# ----------------------------------------------------------------------------------------------------------------

PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def _load_pretrained(loader: Callable[..., Any], name: str, what: str) -> Any:
    """``loader(name, local_files_only=True)``; a one-line HumantuneError naming ``name`` when it is neither a
    loadable local folder nor in the Hugging Face cache."""
    try:
        return loader(name, local_files_only=True)
    except (OSError, ValueError) as e:
        if Path(name).expanduser().is_dir():
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise HumantuneError(f"{what} folder {name} could not be loaded: {reason}") from None
        raise HumantuneError(f"{what} needs {name}, which is neither a local folder nor in the Hugging Face cache: "
                             "download it first or pass a local path (offline: no download)") from None


class PickScoreReward(RewardModel):
    """PickScore (Kirstain et al. 2023, "Pick-a-Pic"): s = exp(τ) · cos(E_I, E_T), the CLIP logit of the image for its
    prompt, with the fine-tuned CLIP-ViT-H/14 ``yuvalkirstain/PickScore_v1`` and the processor of
    ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (exp(τ) = the model's ``logit_scale.exp()``, ≈ 100). Both load with
    transformers ``CLIPModel``/``AutoProcessor`` from a local path or the HF cache only."""

    name = "pickscore"

    def __init__(self, model: str | os.PathLike = PICKSCORE_MODEL, processor: str | os.PathLike = PICKSCORE_PROCESSOR,
                 device: str = "cpu", batch_size: int = 8) -> None:
        from transformers import AutoProcessor, CLIPModel

        self.model = _load_pretrained(CLIPModel.from_pretrained, str(model), "PickScore model")
        self.processor = _load_pretrained(AutoProcessor.from_pretrained, str(processor), "PickScore processor")
        self.device = device
        self.batch_size = batch_size
        self.model.to(device).eval().requires_grad_(False)

    def score(self, images, prompts=None, **kwargs: Any) -> np.ndarray:
        import torch

        _check_prompts(images, prompts, self.name, required=True)
        out = []
        for start in range(0, len(images), self.batch_size):
            imgs = [as_rgb_array(im) for im in images[start:start + self.batch_size]]
            texts = list(prompts[start:start + self.batch_size])
            inputs = self.processor(images=imgs, text=texts, padding=True, truncation=True, max_length=77,
                                    return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            with torch.inference_mode():
                result = self.model(**inputs)
                img, txt = result.image_embeds, result.text_embeds
                img = img / img.norm(dim=-1, keepdim=True)
                txt = txt / txt.norm(dim=-1, keepdim=True)
                out.append((self.model.logit_scale.exp() * (img * txt).sum(dim=-1)).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


def _require_package(module: str, package: str, what: str, weights: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise HumantuneError(
            f"{what} needs the '{package}' package and its weights {weights}; the package is not installed (it "
            "requires torchvision and replaces humantune's torch, so humantune does not install it)"
        )


class HPSv2Reward(RewardModel):
    """Human Preference Score v2 (Wu et al. 2023): an OpenCLIP ViT-H/14 fine-tuned on HPD v2; s = cos(E_I, E_T) of
    the fine-tuned model, as ``hpsv2.score``. Needs the ``hpsv2`` package and a local checkpoint
    (``HPS_v2_compressed.pt`` or ``HPS_v2.1_compressed.pt``); scoring is delegated to ``hpsv2.score``."""

    name = "hpsv2"

    def __init__(self, checkpoint: str | os.PathLike, hps_version: str = "v2.1") -> None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise HumantuneError(f"HPSv2 needs its checkpoint HPS_{hps_version}_compressed.pt ({path} does not "
                                 "exist): pass a local path (offline: no download)")
        _require_package("hpsv2", "hpsv2", "HPSv2", path.name)
        import hpsv2

        self._hpsv2, self.checkpoint, self.hps_version = hpsv2, str(path), hps_version

    def score(self, images, prompts=None, **kwargs: Any) -> np.ndarray:
        _check_prompts(images, prompts, self.name, required=True)
        return np.array([float(np.ravel(self._hpsv2.score(Image.fromarray(as_rgb_array(im)), p, cp=self.checkpoint,
                                                          hps_version=self.hps_version))[0])
                         for im, p in zip(images, prompts)])


class ImageRewardReward(RewardModel):
    """ImageReward (Xu et al. 2023): a BLIP-based reward model trained on ranked human comparisons; s = the model's
    standardised reward, as ``ImageReward.load(...).score(prompt, image)``. Needs the ``image-reward`` package and a
    local ``ImageReward.pt`` (with ``med_config.json`` beside it)."""

    name = "imagereward"

    def __init__(self, checkpoint: str | os.PathLike, device: str = "cpu") -> None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise HumantuneError(f"ImageReward needs its checkpoint ImageReward.pt ({path} does not exist): pass a "
                                 "local path (offline: no download)")
        _require_package("ImageReward", "image-reward", "ImageReward", path.name)
        import ImageReward

        self.model = ImageReward.load(str(path), device=device, med_config=str(path.with_name("med_config.json")))

    def score(self, images, prompts=None, **kwargs: Any) -> np.ndarray:
        _check_prompts(images, prompts, self.name, required=True)
        return np.array([float(self.model.score(p, Image.fromarray(as_rgb_array(im))))
                         for im, p in zip(images, prompts)])


REWARDS: dict[str, Callable[..., RewardModel]] = {
    "pose_agreement": PoseAgreementReward,
    "anatomy": AnatomyReward,
    "attributes": AttributeReward,
    "realism": RealismReward,
    "pickscore": PickScoreReward,
    "hpsv2": HPSv2Reward,
    "imagereward": ImageRewardReward,
}


def load_reward(name: str, **kwargs: Any) -> RewardModel:
    """Build the reward ``name`` (one of :data:`REWARDS`, or ``combined``) with ``kwargs``.

    ``combined`` takes ``weights`` = {reward name: weight} and passes the remaining ``kwargs`` to every component
    (e.g. ``estimator``: give an estimator instance to share one between components).
    """
    if name == "combined":
        weights: Mapping[str, float] | None = kwargs.pop("weights", None)
        if not weights:
            raise HumantuneError("the combined reward needs weights={reward name: weight, ...}")
        return CombinedReward([(load_reward(part, **kwargs), w) for part, w in weights.items()])
    try:
        factory = REWARDS[name]
    except KeyError:
        raise HumantuneError(f"unknown reward {name!r}; known: {', '.join([*REWARDS, 'combined'])}") from None
    return factory(**kwargs)


MANNEQUIN_REWARD_WEIGHTS = {"anatomy": 0.2, "attributes": 1.0, "realism": 0.5}
"""Default weights of :func:`mannequin_reward`, chosen to put the components on similar scales (anatomy spans
[−10, 0], attributes [0, 1], realism ≈ −1 for a render and a few units lower for an off-distribution image); not
tuned."""


def mannequin_reward(reference: Sequence[Image.Image | np.ndarray], weights: Mapping[str, float] | None = None,
                     estimator: str | PoseEstimator = "mediapipe") -> CombinedReward:
    """The offline reward for mannequin-world prompts: Σ w_m · r_m over anatomy plausibility (:class:`AnatomyReward`),
    attribute match (:class:`AttributeReward`) and realism against ``reference`` renders (:class:`RealismReward`),
    with one pose estimator shared by the detecting components (built here from a name, and closed with the
    reward). ``weights`` default to :data:`MANNEQUIN_REWARD_WEIGHTS`; a zero weight leaves its component out."""
    weights = dict(MANNEQUIN_REWARD_WEIGHTS if weights is None else weights)
    unknown = sorted(set(weights) - set(MANNEQUIN_REWARD_WEIGHTS))
    if unknown:
        raise HumantuneError(f"unknown mannequin reward component {', '.join(unknown)}; known: "
                             f"{', '.join(MANNEQUIN_REWARD_WEIGHTS)}")
    shared = load_pose_estimator(estimator) if isinstance(estimator, str) else estimator
    parts: list[tuple[RewardModel, float]] = []
    if weights.get("anatomy"):
        parts.append((AnatomyReward(shared), weights["anatomy"]))
    if weights.get("attributes"):
        parts.append((AttributeReward(shared), weights["attributes"]))
    if weights.get("realism"):
        parts.append((RealismReward(reference), weights["realism"]))
    if not parts:
        raise HumantuneError("the mannequin reward needs at least one component with a non-zero weight")
    return CombinedReward(parts, owned=[shared] if isinstance(estimator, str) else [])
