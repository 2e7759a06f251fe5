"""Automatic judges: they answer a study's pairs through the same storage path as people
(:meth:`~humantune.studies.preference.storage.StudyStore.record_vote`, as a participant of kind ``judge``), so the
results compare them with people by the same statistics.

A judge is any callable ``judge(prompt, left, right) -> "left" | "right" | "tie"`` (PIL images) with a ``name``
and an optional ``close()``; :data:`JUDGES` maps a name to its factory and :func:`register_judge` adds one.
Built in:

- ``pose``: pose detectability — the image where MediaPipe Pose finds a person with more keypoints at
  confidence ≥ 0.5 (then higher mean keypoint confidence) wins; tie when both score the same (e.g. nobody found).
- ``anatomy``: the image with the lower anatomy anomaly score (:class:`humantune.eval.rewards.AnatomyReward`:
  MediaPipe keypoints and the plausibility checks of :mod:`humantune.eval.anatomy`) wins; tie when equal (e.g.
  both capped: nobody found in either).
- ``reward``: a reward model of :mod:`humantune.eval.rewards` (``reward=pickscore``, ``anatomy``, ... with its
  own arguments, e.g. ``model=/path/to/PickScore_v1``): the higher reward wins, within ``margin`` a tie.
- ``vlm``: a vision-language model behind an OpenAI-compatible chat endpoint (:mod:`.vlm`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from humantune.data.readers import load_rgb
from humantune.errors import HumantuneError
from humantune.studies.preference.storage import StudyStore, safe_file
from humantune.studies.preference.study import add_judge


class JudgeNoAnswer(HumantuneError):
    """A judge could not answer one pair (e.g. a model kept answering malformed text); the pair is skipped."""


class Judge(ABC):
    """Answers which of two images of ``prompt`` is better: ``"left"``, ``"right"`` or ``"tie"``."""

    name: str = "judge"

    @abstractmethod
    def __call__(self, prompt: str, left: Image.Image, right: Image.Image) -> str: ...

    def close(self) -> None:
        """Free what the judge holds (a pose estimator, an HTTP client)."""


class ScoreJudge(Judge):
    """Scores each image and prefers the higher score; |difference| ≤ ``margin`` is a tie."""

    def __init__(self, margin: float = 0.0):
        if margin < 0:
            raise HumantuneError(f"judge margin must be non-negative, got {margin}")
        self.margin = float(margin)

    @abstractmethod
    def score(self, prompt: str, image: Image.Image) -> float: ...

    def __call__(self, prompt: str, left: Image.Image, right: Image.Image) -> str:
        diff = self.score(prompt, left) - self.score(prompt, right)
        return "tie" if abs(diff) <= self.margin else "left" if diff > 0 else "right"


def detectability(keypoints: np.ndarray, min_confidence: float = 0.5) -> float:
    """Pose detectability of the best detected person: (number of COCO-17 keypoints with confidence ≥
    ``min_confidence``) + (mean keypoint confidence) — the count decides, the mean (in [0, 1]) breaks count ties.
    0 when nobody was detected. ``keypoints``: (P, 17, 3) ``[x, y, confidence]``."""
    kp = np.asarray(keypoints, np.float64).reshape(-1, 17, 3)
    if len(kp) == 0:
        return 0.0
    per_person = (kp[:, :, 2] >= min_confidence).sum(axis=1) + kp[:, :, 2].mean(axis=1)
    return float(per_person.max())


class PoseDetectabilityJudge(ScoreJudge):
    """Prefers the image where a person is detected with more (and more confident) keypoints (:func:`detectability`)."""

    name = "pose"

    def __init__(self, estimator: str = "mediapipe", margin: float = 0.0):
        from humantune.eval.pose_estimators import load_pose_estimator

        super().__init__(margin)
        self.estimator = load_pose_estimator(estimator)

    def score(self, prompt: str, image: Image.Image) -> float:
        return detectability(self.estimator.estimate(image).keypoints)

    def close(self) -> None:
        self.estimator.close()


class RewardJudge(ScoreJudge):
    """Prefers the image with the higher reward of a :mod:`humantune.eval.rewards` model (``reward`` = its name;
    other keyword arguments go to the reward, e.g. ``model=`` a local PickScore folder)."""

    def __init__(self, reward: str = "anatomy", margin: float = 0.0, **kwargs: Any):
        from humantune.eval.rewards import load_reward

        super().__init__(margin)
        self.reward = load_reward(reward, **kwargs)
        self.name = f"reward:{reward}"

    def score(self, prompt: str, image: Image.Image) -> float:
        return float(self.reward.score([image], [prompt])[0])

    def close(self) -> None:
        self.reward.close()


class AnatomyJudge(RewardJudge):
    """Prefers the anatomically more plausible image: the anatomy reward, −min(anomaly score, 10)."""

    name = "anatomy"

    def __init__(self, margin: float = 0.0, **kwargs: Any):
        super().__init__("anatomy", margin, **kwargs)
        self.name = "anatomy"


def _vlm(**kwargs: Any) -> Judge:
    from humantune.studies.preference.vlm import VLMJudge

    return VLMJudge(**kwargs)


JUDGES: dict[str, Callable[..., Judge]] = {
    "pose": PoseDetectabilityJudge,
    "anatomy": AnatomyJudge,
    "reward": RewardJudge,
    "vlm": _vlm,
}


def register_judge(name: str, factory: Callable[..., Judge]) -> None:
    """Make ``factory(**kwargs)`` available as ``humantune study judge STUDY --judge NAME``."""
    JUDGES[name] = factory


def load_judge(name: str, **kwargs: Any) -> Judge:
    try:
        factory = JUDGES[name]
    except KeyError:
        raise HumantuneError(f"unknown judge {name!r}; known: {', '.join(sorted(JUDGES))}") from None
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise HumantuneError(f"judge {name!r}: bad arguments ({e})") from None


def run_judge(study_dir: str | os.PathLike, judge: Judge, progress: bool = True,
              limit: int | None = None) -> dict:
    """Let ``judge`` answer every pair of the study it has not answered yet (a re-run resumes), as participant
    ``judge:<judge.name>``. Pairs the judge cannot answer (:class:`JudgeNoAnswer`) are skipped and counted.
    Returns {"participant", "voted", "skipped", "remaining"}."""
    study_dir = Path(study_dir)
    store = StudyStore(study_dir)
    voted = skipped = 0
    try:
        participant = f"judge:{judge.name}"
        pid = add_judge(store, participant)
        todo = store.unanswered(pid)[:limit]
        for a in tqdm(todo, desc=participant, unit="pair", disable=not progress):
            left = load_rgb(safe_file(study_dir, a.left_path), "the study's left image")
            right = load_rgb(safe_file(study_dir, a.right_path), "the study's right image")
            try:
                verdict = judge(a.prompt, left, right)
            except JudgeNoAnswer:
                skipped += 1
                continue
            store.record_vote(pid, a.id, verdict)
            voted += 1
        remaining = len(store.unanswered(pid))
    finally:
        store.close()
    return {"participant": participant, "voted": voted, "skipped": skipped, "remaining": remaining}
