"""Image features for a Fréchet distance inside the mannequin world: the offline stand-in for FID's Inception.

FID needs Inception-v3 weights that this project cannot download; and on mannequin renders an ImageNet network
would measure mostly texture anyway. :class:`WorldFeatureNet` is a small CNN trained to tell the world's own
attributes apart (action, top colour, bottom colour, background; one classification head each), so its
penultimate features move when the things the world varies move. :func:`world_frechet_distance` is the Fréchet
distance (:func:`~humantune.eval.distribution.frechet_distance`) between the Gaussians fitted to those features.
Values are comparable only between runs with the same weights file and the same sample sizes.

Preprocessing (:func:`preprocess`): an RGB uint8 (H, W, 3) image is resized to 64 × 64 with ``cv2.INTER_AREA``
(area averaging; a non-square image is squashed, not cropped), scaled to [0, 1] float32 and laid out as NCHW.

Network: four 3×3 stride-2 convolutions (3→32→64→128→64 channels, each with batch norm and ReLU: 64² → 4²),
flattened (1024) and projected by a linear layer to the 128-d *feature* f; each head is ``Linear(ReLU(f))``.
f is taken before the ReLU so that no feature is identically zero (which would make the covariance singular).

Heads: ``action`` (the 11 world actions), ``top_color`` (the 10 cloth colours), ``bottom_color`` (the 10 cloth
colours, ``jeans`` — drawn in their own denim blue — and ``none`` for a dress), ``background`` (5). The labels are
those of the first person of each render.

On disk (a folder, see :meth:`WorldFeatureNet.save`): ``world_features.safetensors`` (float32 weights) and
``config.json`` (architecture, head labels, preprocessing, training record). The trained net ships in
``humantune/assets/world_features/`` with a README giving the command that reproduces it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from humantune.data.mannequin.appearance import BACKGROUNDS, CLOTH_COLORS
from humantune.data.mannequin.body import ACTIONS
from humantune.errors import HumantuneError
from humantune.eval.distribution import feature_statistics, frechet_distance
from humantune.eval.local_weights import ShippedNetwork

INPUT_SIZE = 64
FEATURE_DIM = 128
WEIGHTS_NAME = "world_features.safetensors"
CONFIG_NAME = "config.json"
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "assets" / "world_features"

WORLD_HEADS: dict[str, tuple[str, ...]] = {
    "action": tuple(ACTIONS),
    "top_color": tuple(CLOTH_COLORS),
    "bottom_color": tuple(CLOTH_COLORS) + ("jeans", "none"),
    "background": tuple(BACKGROUNDS),
}
"""Class labels of each head, in logit order."""

PREPROCESSING = "RGB uint8 -> cv2.resize to 64x64 with INTER_AREA -> float32 / 255 in [0, 1] -> NCHW"


def uint8_batch(images: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) images as one (N, size, size, 3) uint8 array (area-interpolated resize); ValueError
    naming the image that is not uint8 H×W×3."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    for k, image in enumerate(images):
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"image {k}: expected a uint8 H×W×3 RGB array, got dtype {arr.dtype} and shape "
                             f"{arr.shape}")
        if arr.shape[:2] != (size, size):
            arr = cv2.resize(arr, (size, size), interpolation=cv2.INTER_AREA)
        out[k] = arr
    return out


def preprocess(images: Sequence[np.ndarray] | np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """(N, 3, size, size) float32 tensor in [0, 1] from RGB uint8 (H, W, 3) images (area-interpolated resize).

    Raises ValueError for an empty batch or an image that is not uint8 H×W×3.
    """
    if len(images) == 0:
        raise ValueError("no images: the batch is empty")
    return torch.from_numpy(uint8_batch(images, size)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


@dataclass
class WorldFeatureConfig:
    """Architecture and preprocessing of a :class:`WorldFeatureNet` (stored as ``config.json``)."""

    channels: tuple[int, ...] = (32, 64, 128, 64)
    feature_dim: int = FEATURE_DIM
    input_size: int = INPUT_SIZE
    heads: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(WORLD_HEADS))
    preprocessing: str = PREPROCESSING
    training: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict, source: Path) -> WorldFeatureConfig:
        known = {"channels", "feature_dim", "input_size", "heads", "preprocessing", "training"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise HumantuneError(f"world-feature config {source} has unknown key(s) {unknown}")
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(d["channels"])
        if "heads" in d:
            d["heads"] = {k: tuple(v) for k, v in d["heads"].items()}
        return cls(**d)


class WorldFeatureNet(ShippedNetwork, nn.Module):
    """Small multi-head CNN on 64 × 64 mannequin renders; :meth:`extract` gives the 128-d features for FD."""

    WHAT, WEIGHTS_NAME, CONFIG_CLASS = "world-feature", WEIGHTS_NAME, WorldFeatureConfig
    DEFAULT_DIR, NAME = DEFAULT_WEIGHTS_DIR, "world-feature net"

    def __init__(self, config: WorldFeatureConfig | None = None) -> None:
        super().__init__()
        self.config = config or WorldFeatureConfig()
        layers, c_in = [], 3
        for c_out in self.config.channels:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        side = self.config.input_size // 2 ** len(self.config.channels)
        self.project = nn.Linear(c_in * side * side, self.config.feature_dim)
        self.heads = nn.ModuleDict({
            name: nn.Linear(self.config.feature_dim, len(labels)) for name, labels in self.config.heads.items()
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features f (N, feature_dim), before the ReLU, of preprocessed images (N, 3, 64, 64)."""
        return self.project(self.conv(x).flatten(1))

    def logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of each head for preprocessed images."""
        h = F.relu(self(x))
        return {name: head(h) for name, head in self.heads.items()}

    def extract(self, images: Sequence[np.ndarray] | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Features of RGB uint8 images, float64 (N, feature_dim), in eval mode (batch norm uses its statistics)."""
        self.eval()
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                chunks.append(self(preprocess(images[start:start + batch_size], self.config.input_size)))
        if not chunks:
            raise ValueError("no images: the batch is empty")
        return torch.cat(chunks).double().numpy()

    def predict(self, images: Sequence[np.ndarray] | np.ndarray) -> dict[str, list[str]]:
        """The most likely label of each head for each image."""
        self.eval()
        with torch.inference_mode():
            out = self.logits(preprocess(images, self.config.input_size))
        return {name: [self.config.heads[name][i] for i in v.argmax(1).tolist()] for name, v in out.items()}

    @classmethod
    def load(cls, path: str | Path | None = None) -> WorldFeatureNet:
        """Load a saved net from a folder holding ``config.json`` and ``world_features.safetensors``
        (default: the weights shipped in ``humantune/assets/world_features``), in eval mode; one-line
        HumantuneError naming the file if a file is missing or does not match the architecture."""
        return cls.load_folder(Path(path).expanduser() if path is not None else DEFAULT_WEIGHTS_DIR)


def world_frechet_distance(images_a: Sequence[np.ndarray] | np.ndarray, images_b: Sequence[np.ndarray] | np.ndarray,
                           net: WorldFeatureNet | None = None) -> float:
    """Fréchet distance between two image sets on :class:`WorldFeatureNet` features ("world FD").

    d² = ||μ_a − μ_b||² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½), with μ, Σ the mean and sample covariance of the
    128-d features of each set (:func:`~humantune.eval.distribution.feature_statistics`). ``net`` defaults to the
    shipped weights. Each set needs at least 2 images; like FID, the value is biased upwards for small sets, so
    compare values computed with equal set sizes.
    """
    net = net or WorldFeatureNet.load()
    mu_a, sigma_a = feature_statistics(net.extract(images_a))
    mu_b, sigma_b = feature_statistics(net.extract(images_b))
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


def world_labels(scene) -> dict[str, str]:
    """Head labels of a rendered :class:`~humantune.data.mannequin.scene.Scene`: its first person and background."""
    person = scene.people[0].look
    if person.bottom is None:
        bottom = "none"
    elif person.bottom == "jeans":
        bottom = "jeans"
    else:
        bottom = person.bottom_color
    return {"action": scene.actions[0], "top_color": person.top_color, "bottom_color": bottom,
            "background": scene.background}


def render_labelled(n: int, seed: int, size: int = 128, input_size: int = INPUT_SIZE,
                    heads: dict[str, tuple[str, ...]] = WORLD_HEADS) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Render samples 0..n−1 of the default world with ``seed`` at ``size`` px; preprocessed images and label ids."""
    from humantune.data.mannequin.world import MannequinConfig, render_sample

    cfg = MannequinConfig(n=n, seed=seed, size=size)
    images, labels = [], {name: [] for name in heads}
    for i in range(n):
        scene = render_sample(cfg, i)
        images.append(scene.image)
        for name, value in world_labels(scene).items():
            labels[name].append(heads[name].index(value))
    return preprocess(images, input_size), {k: torch.tensor(v) for k, v in labels.items()}


def head_accuracies(net: WorldFeatureNet, x: torch.Tensor, y: dict[str, torch.Tensor]) -> dict[str, float]:
    """Fraction of images whose argmax label is right, per head (eval mode)."""
    net.eval()
    with torch.inference_mode():
        out = net.logits(x)
    return {name: float((out[name].argmax(1) == y[name]).float().mean()) for name in out}


def train_world_feature_net(n_images: int = 5000, seed: int = 0, steps: int = 1600, out_path: str | Path | None = None,
                            batch_size: int = 64, lr: float = 3e-3, heldout: int = 500, render_size: int = 128,
                            progress: bool = False) -> tuple[WorldFeatureNet, dict]:
    """Train a :class:`WorldFeatureNet` on renders of the default mannequin world; save it to ``out_path`` if given.

    Data: samples 0..n_images−1 of ``MannequinConfig(seed=seed, size=render_size)`` (world defaults otherwise:
    10 % two-person images, labels of the first person); held-out: samples 0..heldout−1 of seed ``seed + 1``
    (a disjoint random stream). Each step draws ``batch_size`` training images at random, flips half of them
    left-right (no label changes under a flip) and minimises the sum of the heads' cross-entropies with Adam;
    the learning rate warms up linearly over the first 5 % of steps, then follows a cosine to 0. Single process;
    torch's thread count is left to the caller (``OMP_NUM_THREADS``).

    Returns the net (eval mode) and a record: seed, sizes, steps, wall seconds, the loss of each step
    (``losses``), and the held-out accuracy of each head. ``train_seconds`` covers rendering and training,
    ``total_seconds`` also the held-out evaluation (saving excluded).
    """
    if n_images < 2 or steps < 1 or batch_size < 1 or heldout < 0:
        raise ValueError(f"need n_images >= 2, steps >= 1, batch_size >= 1, heldout >= 0; got {n_images}, {steps}, "
                         f"{batch_size}, {heldout}")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config = WorldFeatureConfig()
    x, y = render_labelled(n_images, seed, render_size, config.input_size, config.heads)
    net = WorldFeatureNet(config)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    warmup = max(1, steps // 20)

    def rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
    losses = []
    bar = range(steps)
    if progress:
        from tqdm import tqdm

        bar = tqdm(bar, desc="world features", unit="step")
    net.train()
    for _ in bar:
        idx = torch.randint(0, n_images, (batch_size,), generator=gen)
        xb = x[idx]
        flip = torch.rand(batch_size, generator=gen) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        out = net.logits(xb)
        loss = sum(F.cross_entropy(out[name], y[name][idx]) for name in out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    train_seconds = time.perf_counter() - t0
    accuracy = {}
    if heldout:
        xh, yh = render_labelled(heldout, seed + 1, render_size, config.input_size, config.heads)
        accuracy = head_accuracies(net, xh, yh)
    net.eval()
    total_seconds = time.perf_counter() - t0
    record = {
        "seed": seed, "n_images": n_images, "render_size": render_size, "steps": steps, "batch_size": batch_size,
        "lr": lr, "heldout_images": heldout, "heldout_seed": seed + 1, "train_seconds": round(train_seconds, 1),
        "total_seconds": round(total_seconds, 1),
        "final_loss": float(np.mean(losses[-20:])), "heldout_accuracy": accuracy,
        "torch_threads": torch.get_num_threads(),
    }
    net.config.training = dict(record)
    record["losses"] = losses
    if out_path is not None:
        net.save(out_path)
    return net, record


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m humantune.eval.world_features --out DIR``: train and save the world-feature net."""
    import argparse

    ap = argparse.ArgumentParser(description="Train the mannequin-world feature net (world FD).")
    ap.add_argument("--n-images", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS_DIR)
    args = ap.parse_args(argv)
    _, record = train_world_feature_net(args.n_images, args.seed, args.steps, args.out, progress=True)
    record.pop("losses")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
