"""The anatomy judge: a small image classifier that tells a broken body from a whole one.

MediaPipe fits a plausible skeleton onto a broken body (``benchmarks/anatomy_separation.py``: ROC AUC 0.58 on its
detections), so keypoint checks mostly count missed detections. :class:`AnatomyJudge` looks at the pixels instead:
a CNN trained on the mannequin world's labelled broken renders (``anomaly_prob``, every type of
:data:`~humantune.data.mannequin.anomalies.ANOMALY_TYPES`) and correct renders, some of them passed through the
shipped tiny-sd VAE (encode, decode) so that the blur and colour shifts of generated images are not themselves
evidence of a broken body.

Output (:meth:`AnatomyJudge.judge`, :func:`judge_images`): P(broken) = 1 − softmax(logits)[``correct``], the
softmax over six classes — ``correct`` and the five anomaly types (an image is labelled with the type of its first
broken person). An image is *judged broken* when P(broken) > ``config.threshold`` (0.5, the training prior: half
the training people are broken).

Preprocessing (:func:`preprocess`): RGB uint8 (H, W, 3) → ``cv2.resize`` to 128 × 128 with ``INTER_AREA`` (a
non-square image is squashed, not cropped) → float32 / 255 in [0, 1] → NCHW.

Network: seven 3×3 convolutions with batch norm and ReLU (channels 16-32-32-64-64-128-128, strides 2-2-1-2-1-2-1:
128² → 8²), global average and global max pooling (concatenated), a linear layer to the six logits (≈ 290 k
parameters).

On disk (a folder, :meth:`AnatomyJudge.save`): ``anatomy_judge.safetensors`` (float32) and ``config.json``
(architecture, classes, threshold, preprocessing, training record and held-out ROC AUCs). The trained judge ships in
``humantune/assets/anatomy_judge/`` with a README giving the command that reproduces it
(``python benchmarks/anatomy_judge.py``, which calls :func:`train_anatomy_judge`).

The three body states of an image (:func:`body_states`, :func:`body_rates`): ``no_person`` (the pose estimator
found nobody), ``broken`` (a person was found and the judge says broken) and ``whole`` (found and not broken); each
rate carries the Wilson 95 % interval.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from humantune.data.mannequin.anomalies import ANOMALY_TYPES
from humantune.errors import HumantuneError
from humantune.eval import world_features
from humantune.eval.local_weights import ShippedNetwork
from humantune.eval.preference import wilson_interval

INPUT_SIZE = 128
CLASSES: tuple[str, ...] = ("correct",) + tuple(ANOMALY_TYPES)
"""Logit order: ``correct`` first, then the anomaly types."""
WEIGHTS_NAME = "anatomy_judge.safetensors"
CONFIG_NAME = "config.json"
DEFAULT_JUDGE = "anatomy_judge"
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "assets" / DEFAULT_JUDGE
DEFAULT_VAE_DIR = Path(__file__).resolve().parent.parent / "assets" / "models" / "tiny-sd" / "vae"
PREPROCESSING = "RGB uint8 -> cv2.resize to 128x128 with INTER_AREA -> float32 / 255 in [0, 1] -> NCHW"
BODY_STATES = ("no_person", "broken", "whole")
DEFECT_DIFFERENCE = 60
"""A pixel of a broken twin is part of the defect when its RGB differs from the correct twin by more than this
(summed over channels, uint8 levels) inside either twin's person mask."""
DEFECT_WEIGHT = 1.0
"""Weight of the defect-map loss beside the class cross-entropy."""


def preprocess(images: Sequence[np.ndarray] | np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """The world-feature net's preprocessing (:func:`humantune.eval.world_features.preprocess`) at the judge's
    input size: (N, 3, size, size) float32 in [0, 1]."""
    return world_features.preprocess(images, size)


@dataclass
class AnatomyJudgeConfig:
    """Architecture, classes, threshold and preprocessing of an :class:`AnatomyJudge` (stored as ``config.json``)."""

    channels: tuple[int, ...] = (16, 32, 32, 64, 64, 128, 128)
    strides: tuple[int, ...] = (2, 2, 1, 2, 1, 2, 1)
    input_size: int = INPUT_SIZE
    classes: tuple[str, ...] = CLASSES
    threshold: float = 0.5
    preprocessing: str = PREPROCESSING
    training: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict, source: Path) -> AnatomyJudgeConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise HumantuneError(f"anatomy-judge config {source} has unknown key(s) {unknown}")
        d = dict(d)
        for key in ("channels", "strides", "classes"):
            if key in d:
                d[key] = tuple(d[key])
        config = cls(**d)
        if len(config.channels) != len(config.strides) or config.classes[:1] != ("correct",):
            raise HumantuneError(f"anatomy-judge config {source}: channels and strides must have equal lengths and "
                                 f"the first class must be 'correct'")
        return config


class AnatomyJudge(ShippedNetwork, nn.Module):
    """Small CNN on 128 × 128 RGB images: logits over ``correct`` and the anomaly types; :meth:`judge` gives
    P(broken)."""

    WHAT, WEIGHTS_NAME, CONFIG_CLASS = "anatomy-judge", WEIGHTS_NAME, AnatomyJudgeConfig
    DEFAULT_DIR, NAME = DEFAULT_WEIGHTS_DIR, "anatomy judge"

    def __init__(self, config: AnatomyJudgeConfig | None = None) -> None:
        super().__init__()
        self.config = config or AnatomyJudgeConfig()
        layers, c_in = [], 3
        for c_out, stride in zip(self.config.channels, self.config.strides):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU()]
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        self.head = nn.Linear(2 * c_in, len(self.config.classes))
        self.defect = nn.Conv2d(c_in, 1, 1)  # where the body is broken: trains the features, unused in judge()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, len(classes)) of preprocessed images (N, 3, input_size, input_size)."""
        return self.logits_and_defects(x)[0]

    def logits_and_defects(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (N, len(classes)) and defect-map logits (N, h, w) on the last feature grid."""
        h = self.conv(x)
        # the max finds a local defect anywhere in the frame; the mean sees the whole body
        return self.head(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], 1)), self.defect(h)[:, 0]

    def judge(self, images: Sequence[np.ndarray] | np.ndarray, batch_size: int = 128) -> np.ndarray:
        """P(broken) = 1 − P(correct) of each RGB uint8 image, float64 (N,), in eval mode."""
        if len(images) == 0:
            return np.zeros(0, np.float64)
        self.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                probs = self(preprocess(images[start:start + batch_size], self.config.input_size)).softmax(1)
                out.append(1.0 - probs[:, 0].double())
        return torch.cat(out).numpy()

    @classmethod
    def load(cls, path: str | Path | None = None) -> AnatomyJudge:
        """Load a judge by name (``"anatomy_judge"``, the default: the weights shipped in
        ``humantune/assets/anatomy_judge``) or from a folder holding ``config.json`` and
        ``anatomy_judge.safetensors`` (or the path of either file), in eval mode; one-line HumantuneError naming
        the file if a file is missing, unreadable or does not match the architecture."""
        if path is None or str(path) == DEFAULT_JUDGE:
            return cls.load_folder(DEFAULT_WEIGHTS_DIR)
        return cls.load_folder(Path(path).expanduser())


def judge_images(images: Sequence[np.ndarray] | np.ndarray, judge: AnatomyJudge | str | Path | None = None
                 ) -> np.ndarray:
    """P(broken) of each RGB uint8 image (float64, (N,)) by ``judge``: a loaded :class:`AnatomyJudge`, a name or
    folder for :meth:`AnatomyJudge.load`, or None for the shipped judge."""
    if not isinstance(judge, AnatomyJudge):
        judge = AnatomyJudge.load(judge)
    return judge.judge(images)


# ----------------------------------------------------------------------------------------------------------------
# Three body states of an image
# ----------------------------------------------------------------------------------------------------------------


def body_states(detected: Sequence[bool], p_broken: Sequence[float], threshold: float = 0.5) -> list[str]:
    """Each image's body state: ``no_person`` when nobody was detected, else ``broken`` when P(broken) >
    ``threshold``, else ``whole``."""
    if len(detected) != len(p_broken):
        raise ValueError(f"detected and p_broken must have the same length, got {len(detected)} and {len(p_broken)}")
    return ["no_person" if not d else "broken" if p > threshold else "whole" for d, p in zip(detected, p_broken)]


def body_rates(states: Sequence[str]) -> dict[str, dict[str, Any]]:
    """For each of :data:`BODY_STATES`: ``rate`` = count / n over images, its Wilson 95 % interval ``ci95``
    (:func:`~humantune.eval.preference.wilson_interval`; NaN for no images), ``count`` and ``n``. The three rates sum
    to 1."""
    unknown = sorted(set(states) - set(BODY_STATES))
    if unknown:
        raise ValueError(f"unknown body state(s) {unknown}; known: {', '.join(BODY_STATES)}")
    n = len(states)
    out = {}
    for state in BODY_STATES:
        k = sum(s == state for s in states)
        lo, hi = wilson_interval(k, n) if n else (float("nan"), float("nan"))
        out[state] = {"rate": k / n if n else float("nan"), "ci95": [lo, hi], "count": k, "n": n}
    return out


# ----------------------------------------------------------------------------------------------------------------
# Training data and training
# ----------------------------------------------------------------------------------------------------------------


def image_label(attributes: dict) -> str:
    """Class of a render from its ``Scene.attributes()``: the anomaly type of its first broken person, else
    ``correct``."""
    for person in attributes["people"]:
        if person.get("anomaly"):
            return person["anomaly"]["type"]
    return "correct"


def render_judge_set(n: int, seed: int, anomaly_prob: float = 0.5, size: int = 128, progress: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Samples 0..n−1 of the default world with ``seed`` and ``anomaly_prob`` at ``size`` px (every anomaly type,
    10 % two-person images, 5 % truncated): uint8 images (n, size, size, 3) and class ids (n,) into :data:`CLASSES`."""
    from tqdm.auto import tqdm

    from humantune.data.mannequin.world import MannequinConfig, render_sample

    cfg = MannequinConfig(n=n, seed=seed, size=size, anomaly_prob=anomaly_prob)
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty(n, np.int64)
    for i in tqdm(range(n), desc=f"render (seed {seed})", unit="img", disable=not progress, leave=False):
        scene = render_sample(cfg, i)
        images[i] = scene.image
        labels[i] = CLASSES.index(image_label(scene.attributes()))
    return images, labels


def render_judge_pairs(n_pairs: int, seed: int, size: int = 128, progress: bool = False
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` twin renders: rows 2k and 2k+1 show the same scene (people, clothes, pose, placement draws,
    background) drawn from the random stream ``(seed, k)`` — row 2k correct, row 2k+1 with one anomaly on its
    first person, the type cycling through :data:`ANOMALY_TYPES`. The world's defaults otherwise (action mix,
    10 % two-person scenes, 5 % truncation). A twin differs from its partner only where the body is broken, so the
    judge learns the defect rather than a scene statistic. Returns uint8 images (2·n_pairs, size, size, 3), class
    ids, and defect maps (2·n_pairs, size, size) bool: on a broken twin, the person pixels (of either twin) whose
    colour differs from its correct twin by more than :data:`DEFECT_DIFFERENCE` (summed over RGB); all False on a
    correct one."""
    import copy

    from tqdm.auto import tqdm

    from humantune.data.mannequin.anomalies import sample_anomaly
    from humantune.data.mannequin.scene import render_scene, sample_background, sample_person
    from humantune.data.mannequin.world import MannequinConfig, sample_rng

    cfg = MannequinConfig(seed=seed, size=size)
    actions = list(cfg.action_mix)
    weights = np.array([cfg.action_mix[a] for a in actions], np.float64)
    weights /= weights.sum()
    images = np.empty((2 * n_pairs, size, size, 3), np.uint8)
    labels = np.empty(2 * n_pairs, np.int64)
    defects = np.zeros((2 * n_pairs, size, size), bool)
    for k in tqdm(range(n_pairs), desc=f"render pairs (seed {seed})", unit="pair", disable=not progress, leave=False):
        rng = sample_rng(seed, k)
        action = actions[int(rng.choice(len(actions), p=weights))]
        people = [sample_person(action, rng)]
        if rng.uniform() < cfg.second_person_prob:
            people.append(sample_person(actions[int(rng.choice(len(actions), p=weights))], rng))
        kind = ANOMALY_TYPES[k % len(ANOMALY_TYPES)]
        anomaly = sample_anomaly(kind, rng)
        background = sample_background(action, rng)
        state = rng.bit_generator.state
        masks = []
        for j, broken in enumerate((False, True)):
            twins = copy.deepcopy(people)
            twins[0].anomaly = anomaly if broken else None
            draw = np.random.default_rng()
            draw.bit_generator.state = state
            scene = render_scene(twins, background, draw, (size, size), cfg.supersample, cfg.truncate_prob)
            images[2 * k + j] = scene.image
            labels[2 * k + j] = CLASSES.index(kind) if broken else 0
            masks.append(scene.mask > 0)
        changed = np.abs(images[2 * k + 1].astype(np.int16) - images[2 * k]).sum(axis=2) > DEFECT_DIFFERENCE
        defects[2 * k + 1] = changed & (masks[0] | masks[1])
    return images, labels, defects


def vae_roundtrip(images: np.ndarray, vae_dir: str | Path, batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """``images`` (uint8 NHWC) encoded and decoded by the diffusers ``AutoencoderKL`` in ``vae_dir`` (the latent
    distribution's mode, no sampling): what a base model's decoder can draw. uint8 NHWC, same size."""
    from diffusers import AutoencoderKL
    from tqdm.auto import tqdm

    try:
        vae = AutoencoderKL.from_pretrained(str(vae_dir)).eval()
    except (OSError, ValueError) as exc:
        raise HumantuneError(f"VAE {vae_dir} could not be loaded: {' '.join(str(exc).split())[:200]}") from None
    out = np.empty_like(images)
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), batch_size), desc="VAE round trip", unit="batch",
                          disable=not progress, leave=False):
            x = torch.from_numpy(images[start:start + batch_size]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            y = vae.decode(vae.encode(x).latent_dist.mode()).sample
            out[start:start + batch_size] = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return out


def _describe_vae(vae_dir: Path) -> str:
    """The VAE folder (relative to the package when shipped) and the SHA-256 of its weights, for the record."""
    import hashlib

    weights = sorted(vae_dir.glob("*.safetensors")) or sorted(vae_dir.glob("*.bin"))
    digest = hashlib.sha256(weights[0].read_bytes()).hexdigest()[:16] if weights else "?"
    try:
        shown = str(vae_dir.resolve().relative_to(Path(__file__).resolve().parent.parent.parent))
    except ValueError:
        shown = str(vae_dir)
    return f"{shown} (weights sha256 {digest})"


def train_judge_on(images: np.ndarray, labels: np.ndarray, steps: int, seed: int = 0, batch_size: int = 64,
                   lr: float = 3e-3, config: AnatomyJudgeConfig | None = None, paired: bool = False,
                   defects: np.ndarray | None = None, progress: bool = False) -> tuple[AnatomyJudge, list[float]]:
    """Train an :class:`AnatomyJudge` on uint8 images (N, H, W, 3) with class ids into ``config.classes``.

    Each step draws ``batch_size`` images at random (from a generator seeded with ``seed``; with ``paired``, rows
    2k and 2k+1 are twins, :func:`render_judge_pairs`, and ``batch_size // 2`` twin pairs are drawn), flips half of them
    left-right (a flip changes no label) and minimises the cross-entropy over the classes with Adam — plus, with
    ``defects`` (bool (N, H, W) defect maps, :func:`render_judge_pairs`), ``DEFECT_WEIGHT`` × the binary
    cross-entropy of the defect-map logits against the maps max-pooled to the last feature grid (a cell is broken
    when any of its pixels is), which tells the network where each defect is; the learning rate warms up linearly
    over the first 5 % of steps, then follows a cosine to 0. Single process; torch's thread
    count is left to the caller. Returns the judge (eval mode) and the loss of each step.
    """
    if len(images) != len(labels) or len(images) < 2 or steps < 1 or batch_size < 1:
        raise ValueError(f"need as many labels as images (>= 2), steps >= 1, batch_size >= 1; got {len(images)} "
                         f"images, {len(labels)} labels, {steps} steps, batch {batch_size}")
    if paired and (len(images) % 2 or batch_size < 2):
        raise ValueError(f"paired training needs an even number of images and batch_size >= 2, got {len(images)} "
                         f"and {batch_size}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = AnatomyJudge(config)
    x = world_features.uint8_batch(images, net.config.input_size)
    maps = None
    if defects is not None:
        maps = np.stack([cv2.resize(d.astype(np.uint8), (net.config.input_size,) * 2, interpolation=cv2.INTER_NEAREST)
                         for d in defects]) if defects.shape[1:] != (net.config.input_size,) * 2 else \
            defects.astype(np.uint8)
    y = torch.as_tensor(labels, dtype=torch.long)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    warmup = max(1, steps // 20)

    def rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
    bar = range(steps)
    if progress:
        from tqdm import tqdm

        bar = tqdm(bar, desc="anatomy judge", unit="step")
    losses = []
    net.train()
    for _ in bar:
        if paired:
            idx = (2 * torch.randint(0, len(x) // 2, (batch_size // 2, 1), generator=gen) + torch.arange(2)).flatten()
        else:
            idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        xb = torch.from_numpy(x[idx.numpy()]).permute(0, 3, 1, 2).float().div_(255.0)
        flip = torch.rand(batch_size, generator=gen) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        logits, defect_logits = net.logits_and_defects(xb)
        loss = F.cross_entropy(logits, y[idx])
        if maps is not None:
            mb = torch.from_numpy(maps[idx.numpy()]).float()[:, None]
            mb = torch.where(flip[:, None, None, None], mb.flip(3), mb)
            target = F.adaptive_max_pool2d(mb, defect_logits.shape[-2:])[:, 0]
            loss = loss + DEFECT_WEIGHT * F.binary_cross_entropy_with_logits(defect_logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return net.eval(), losses


def heldout_aucs(p_broken: np.ndarray, labels: np.ndarray, classes: Sequence[str] = CLASSES) -> dict[str, float]:
    """ROC AUC of P(broken): correct images vs all broken ones (``overall``) and vs each anomaly type."""
    from humantune.eval.anatomy import roc_auc

    labels = np.asarray(labels)
    correct = labels == 0
    out = {"overall": roc_auc(p_broken, ~correct)}
    for k, name in enumerate(classes[1:], 1):
        keep = correct | (labels == k)
        if (labels == k).any():
            out[name] = roc_auc(p_broken[keep], labels[keep] == k)
    return out


def operating_point(p_broken: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """At ``threshold``: the share of correct images judged broken (false positives) and of broken ones caught,
    each with its Wilson 95 % interval."""
    labels = np.asarray(labels)
    flagged = np.asarray(p_broken) > threshold
    out = {}
    for name, group in (("false_positive_rate", labels == 0), ("true_positive_rate", labels != 0)):
        n, k = int(group.sum()), int(flagged[group].sum())
        out[name] = {"rate": k / n if n else float("nan"), "ci95": list(wilson_interval(k, n)) if n else None,
                     "n": n}
    return out


def evaluate_anatomy_judge(judge: AnatomyJudge, n: int = 2000, n_vae: int = 1000, seed: int = 1,
                           vae_dir: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """The judge on samples 0..n−1 of ``MannequinConfig(seed=seed, anomaly_prob=0.5)`` as rendered (``heldout``)
    and, the first ``n_vae`` of them, passed through the VAE in ``vae_dir`` (``heldout_vae``; default the shipped
    tiny-sd's): per set, the class counts, ROC AUCs (:func:`heldout_aucs`) and the operating point at the judge's
    threshold (:func:`operating_point`)."""
    vae_dir = Path(vae_dir) if vae_dir is not None else DEFAULT_VAE_DIR
    x, y = render_judge_set(n, seed, progress=progress)
    sets = {"heldout": (x, y)}
    if n_vae:
        sets["heldout_vae"] = (vae_roundtrip(x[:n_vae], vae_dir, progress=progress), y[:n_vae])
    out: dict[str, Any] = {}
    for name, (images, labels) in sets.items():
        p = judge.judge(images)
        out[name] = {"n": int(len(labels)), "n_per_class": {c: int((labels == k).sum()) for k, c in enumerate(CLASSES)},
                     "auc": heldout_aucs(p, labels), **operating_point(p, labels, judge.config.threshold)}
    return out


def train_anatomy_judge(n_pairs: int = 10000, n_vae: int = 1250, seed: int = 0, steps: int = 8000,
                        batch_size: int = 64, lr: float = 3e-3, heldout: int = 2000, heldout_vae: int = 1000,
                        vae_dir: str | Path | None = None, out_path: str | Path | None = None,
                        progress: bool = False) -> tuple[AnatomyJudge, dict[str, Any]]:
    """Train the anatomy judge on the mannequin world and measure it on held-out renders; save it to ``out_path``
    if given.

    Training data: ``n_pairs`` twin renders of world seed ``seed`` (:func:`render_judge_pairs`: each scene once
    correct and once broken, every anomaly type in turn), plus the first ``n_vae`` pairs passed through the VAE in
    ``vae_dir`` (default: the shipped tiny-sd's ``vae/``) as further pairs with the same labels. Held-out:
    samples 0..heldout−1 of seed ``seed + 1`` of the plain world with ``anomaly_prob=0.5`` (no twins: a different
    random stream and the distribution the judge meets), as rendered and — the first ``heldout_vae`` — VAE-passed. Training is
    :func:`train_judge_on` with ``steps``, ``batch_size``, ``lr``, ``seed`` and twin-pair batches.

    Returns the judge (eval mode) and a record: settings, wall seconds (``train_seconds``: rendering, VAE and
    training; ``total_seconds`` also the held-out evaluation), the loss of each step (``losses``), and held-out
    ROC AUCs (overall and per type; :func:`heldout_aucs`) and the operating point at the threshold
    (:func:`operating_point`) for the rendered (``heldout``) and the VAE-passed (``heldout_vae``) images.
    """
    vae_dir = Path(vae_dir) if vae_dir is not None else DEFAULT_VAE_DIR
    n_vae, heldout_vae = min(n_vae, n_pairs), min(heldout_vae, heldout)
    t0 = time.perf_counter()
    images, labels, defects = render_judge_pairs(n_pairs, seed, progress=progress)
    if n_vae:
        images = np.concatenate([images, vae_roundtrip(images[:2 * n_vae], vae_dir, progress=progress)])
        labels = np.concatenate([labels, labels[:2 * n_vae]])
        defects = np.concatenate([defects, defects[:2 * n_vae]])
    net, losses = train_judge_on(images, labels, steps, seed, batch_size, lr, paired=True, defects=defects,
                                 progress=progress)
    train_seconds = time.perf_counter() - t0
    del images
    evaluation = evaluate_anatomy_judge(net, heldout, heldout_vae, seed + 1, vae_dir, progress) if heldout else {}
    record = {
        "seed": seed, "n_pairs": n_pairs, "n_vae_pairs": n_vae, "render_size": 128,
        "vae": _describe_vae(vae_dir), "steps": steps, "batch_size": batch_size, "lr": lr, "heldout_images": heldout,
        "heldout_vae_images": heldout_vae, "heldout_seed": seed + 1, "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - t0, 1), "final_loss": float(np.mean(losses[-20:])),
        "torch_threads": torch.get_num_threads(), **evaluation,
    }
    net.config.training = json.loads(json.dumps(record))
    record["losses"] = losses
    if out_path is not None:
        net.save(out_path)
    return net, record
