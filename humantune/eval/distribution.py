"""Distribution and perceptual metrics on network features: FID, KID, LPIPS and CLIP score
(shared/papers.md, "Evaluation facts").

The formulas are pure functions on feature arrays (:func:`frechet_distance`, :func:`feature_statistics`,
:func:`kernel_inception_distance`, :func:`lpips_distance`, :func:`clip_score`). The networks that produce the
features load only from local files, never from the network:

- :class:`~humantune.eval.fid_inception.InceptionFeatures`: the FID Inception-v3 of pytorch-fid (TF-2015 weights,
  pool3, 2048-d), re-implemented in plain torch (:mod:`humantune.eval.fid_inception`).
- :class:`LpipsMetric`: LPIPS v0.1 with an AlexNet or VGG-16 backbone (torchvision weights files) and the
  ``lpips`` package's linear-layer weights.
- :class:`ClipScoreMetric`: a transformers CLIP model from a local folder or the Hugging Face cache.

A missing weights file or model raises :class:`~humantune.errors.HumantuneError` with one line naming it.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import linalg
from torch import nn

from humantune.errors import HumantuneError
from humantune.eval.local_weights import hub_checkpoint_dir, load_state_dict_file, load_strict

# ----------------------------------------------------------------------------------------------------------------
# Fréchet distance and kernel distance (pure functions)
# ----------------------------------------------------------------------------------------------------------------


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature set, the Gaussian that FID fits.

    μ = (1/n) Σ_i f_i,  Σ = (1/(n−1)) Σ_i (f_i − μ)(f_i − μ)ᵀ  (``np.cov(features, rowvar=False)``, as pytorch-fid).

    features: (n, d) with n ≥ 2. Returns float64 μ (d,) and Σ (d, d).
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must have shape (n, d), got {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {f.shape[0]}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or infinite values")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2) (Heusel et al. 2017), the FID on Inception features.

    d² = ||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½)

    Computed in float64 with ``scipy.linalg.sqrtm``, as pytorch-fid's ``calculate_frechet_distance``: if the
    square root of a (nearly) singular product is not finite, it is recomputed as ((Σ1 + εI)(Σ2 + εI))^½ (with a
    warning); an imaginary part left by rounding is dropped, unless a diagonal imaginary part exceeds 1e-3, which
    raises ValueError. N(0, I₄) vs N(1, 4I₄) gives 8.

    mu1, mu2: (d,); sigma1, sigma2: (d, d). Raises ValueError for mismatched shapes.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be vectors of the same length, got shapes {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"covariances must have shape ({d}, {d}) to match the means, got {sigma1.shape} and {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: the covariance product is singular; adding {eps} to the diagonal of both covariances")
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"FID: the square root of Σ1·Σ2 has an imaginary part of {np.max(np.abs(covmean.imag)):.3g}; "
                "are the covariances positive semi-definite?"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def polynomial_kernel(
    x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> np.ndarray:
    """k(x, y) = (γ x·y + c)^degree for all row pairs, γ = 1/d by default (KID's kernel: (x·y/d + 1)³)."""
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    return (gamma * (x @ y.T) + coef0) ** degree


def unbiased_mmd2(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased MMD² of two samples of equal size m from their kernel matrices (Gretton et al. 2012, JMLR).

    MMD²_u = Σ_{i≠j} k(x_i, x_j)/(m(m−1)) + Σ_{i≠j} k(y_i, y_j)/(m(m−1)) − 2 Σ_{i,j} k(x_i, y_j)/m²

    (the cross term keeps its diagonal, as torch-fidelity and torchmetrics do).
    """
    m = k_xx.shape[0]
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with a polynomial kernel, over subsets.

    KID = mean over ``subsets`` draws of MMD²_u(X_s, Y_s) (:func:`unbiased_mmd2`), where X_s and Y_s are
    ``subset_size`` rows drawn without replacement from each feature set and k(x, y) = (x·y/d + 1)³ by default
    (:func:`polynomial_kernel`). Returns (mean, std) with the population std over subsets, as torch-fidelity
    and torchmetrics' ``KernelInceptionDistance``; their subset draws use other random generators, so values
    agree in distribution, not digit for digit. Draws come from ``numpy.random.default_rng(seed)``.

    features1: (n1, d), features2: (n2, d), both with at least ``subset_size`` ≥ 2 rows. Computed in float64.
    """
    f1 = np.asarray(features1, dtype=np.float64)
    f2 = np.asarray(features2, dtype=np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must have shapes (n1, d) and (n2, d), got {f1.shape} and {f2.shape}")
    if subsets < 1:
        raise ValueError(f"subsets must be at least 1, got {subsets}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be at least 2, got {subset_size}")
    if subset_size > min(f1.shape[0], f2.shape[0]):
        raise ValueError(
            f"subset_size {subset_size} exceeds the number of feature vectors ({f1.shape[0]} and {f2.shape[0]})"
        )
    rng = np.random.default_rng(seed)
    scores = np.empty(subsets)
    for s in range(subsets):
        x = f1[rng.choice(f1.shape[0], subset_size, replace=False)]
        y = f2[rng.choice(f2.shape[0], subset_size, replace=False)]
        scores[s] = unbiased_mmd2(
            polynomial_kernel(x, x, degree, gamma, coef0),
            polynomial_kernel(x, y, degree, gamma, coef0),
            polynomial_kernel(y, y, degree, gamma, coef0),
        )
    return float(scores.mean()), float(scores.std())


# ----------------------------------------------------------------------------------------------------------------
# LPIPS v0.1 (Zhang et al. 2018)
# ----------------------------------------------------------------------------------------------------------------


def lpips_distance(
    feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], lin_weights: Sequence[torch.Tensor],
    eps: float = 1e-10,
) -> torch.Tensor:
    """LPIPS from backbone features (Zhang et al. 2018, eq. 1, as the ``lpips`` package v0.1 computes it).

    d(x, y) = Σ_l (1/(H_l W_l)) Σ_{h,w} Σ_c w_lc (x̂^l_hwc − ŷ^l_hwc)²,   x̂^l = x^l / (||x^l||₂ over channels + ε)

    feats_a, feats_b: per layer l, tensors (N, C_l, H_l, W_l); lin_weights: per layer, w_l as (C_l,) or
    (1, C_l, 1, 1) (the ``linL.model.1.weight`` 1×1 convolutions of the lpips package). ε = 1e-10.
    Returns (N,).
    """
    if not (len(feats_a) == len(feats_b) == len(lin_weights)) or len(feats_a) == 0:
        raise ValueError(
            f"need the same number of layers: {len(feats_a)} and {len(feats_b)} feature maps, "
            f"{len(lin_weights)} weight vectors"
        )
    total = None
    for layer, (fa, fb, w) in enumerate(zip(feats_a, feats_b, lin_weights)):
        if fa.shape != fb.shape or fa.ndim != 4:
            raise ValueError(f"layer {layer}: feature maps must be (N, C, H, W) of one shape, got "
                             f"{tuple(fa.shape)} and {tuple(fb.shape)}")
        w = w.reshape(-1)
        if w.shape[0] != fa.shape[1]:
            raise ValueError(f"layer {layer}: {w.shape[0]} weights for {fa.shape[1]} channels")
        na = fa / (fa.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
        nb = fb / (fb.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
        per_layer = torch.einsum("nchw,c->nhw", (na - nb).pow(2), w.to(fa.dtype)).mean(dim=(1, 2))
        total = per_layer if total is None else total + per_layer
    return total


# LPIPS's ScalingLayer: inputs in [-1, 1] to the ImageNet statistics the backbones were trained on.
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)

# torchvision ``features`` layouts; LPIPS taps the ReLU outputs at these indices.
_ALEXNET_LAYERS = [("conv", 3, 64, 11, 4, 2), ("relu",), ("pool",), ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool",),
                   ("conv", 192, 384, 3, 1, 1), ("relu",), ("conv", 384, 256, 3, 1, 1), ("relu",),
                   ("conv", 256, 256, 3, 1, 1), ("relu",)]
_VGG16_CHANNELS = [64, 64, "pool", 128, 128, "pool", 256, 256, 256, "pool", 512, 512, 512, "pool", 512, 512, 512]
LPIPS_BACKBONES = {
    "alex": {"taps": (1, 4, 7, 9, 11), "channels": (64, 192, 384, 256, 256), "weights": "alexnet-owt-7be5be79.pth"},
    "vgg": {"taps": (3, 8, 15, 22, 29), "channels": (64, 128, 256, 512, 512), "weights": "vgg16-397923af.pth"},
}


def _backbone_features(net: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    if net == "alex":
        for spec in _ALEXNET_LAYERS:
            if spec[0] == "conv":
                _, cin, cout, k, s, p = spec
                layers.append(nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=p))
            elif spec[0] == "relu":
                layers.append(nn.ReLU())
            else:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
    else:
        cin = 3
        for spec in _VGG16_CHANNELS:
            if spec == "pool":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, spec, kernel_size=3, padding=1), nn.ReLU()]
                cin = spec
    return nn.Sequential(*layers)


def _installed_lpips_weights(net: str) -> Path | None:
    """The lin-layer file inside an installed ``lpips`` package, found without importing it (it imports torchvision)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"


class LpipsMetric:
    """LPIPS v0.1 distance, ``lpips.LPIPS(net=net, version="0.1")`` re-implemented without torchvision.

    Input: two float batches (N, 3, H, W), RGB in [−1, 1] (the lpips convention), or in [0, 1] with
    ``normalize=True`` (mapped by x ↦ 2x − 1). Each passes LPIPS's scaling layer, (x − shift)/scale with
    shift = (−0.030, −0.088, −0.188), scale = (0.458, 0.448, 0.450), then the backbone; the ReLU outputs of 5
    layers go to :func:`lpips_distance`. Returns (N,) distances, 0 for identical images.

    Files (nothing is downloaded): ``backbone_weights``, the torchvision ImageNet state dict
    (``alexnet-owt-7be5be79.pth`` or ``vgg16-397923af.pth``; default: the torch hub checkpoint folder; only its
    ``features.*`` tensors are used), and ``lin_weights``, the lpips package's ``weights/v0.1/{alex,vgg}.pth``
    (default: inside an installed ``lpips`` package). A missing file raises HumantuneError naming it.
    """

    def __init__(self, net: str = "alex", lin_weights: str | Path | None = None,
                 backbone_weights: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        if net not in LPIPS_BACKBONES:
            raise HumantuneError(f"LPIPS net must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
        info = LPIPS_BACKBONES[net]
        backbone_path = Path(backbone_weights).expanduser() if backbone_weights is not None \
            else hub_checkpoint_dir() / info["weights"]
        if not backbone_path.is_file():
            raise HumantuneError(
                f"LPIPS ({net}) needs the torchvision backbone weights {info['weights']} ({backbone_path} does not "
                f"exist): pass its path or put it in {hub_checkpoint_dir()} (offline: no download)"
            )
        lin_path = Path(lin_weights).expanduser() if lin_weights is not None else _installed_lpips_weights(net)
        if lin_path is None or not lin_path.is_file():
            where = f"{lin_path} does not exist" if lin_path is not None else "no lpips package is installed"
            raise HumantuneError(
                f"LPIPS ({net}) needs the lpips v0.1 linear weights {net}.pth ({where}): pass its path "
                "(offline: no download)"
            )
        self.net = net
        self.taps = info["taps"]
        self.features = _backbone_features(net)
        state = load_state_dict_file(backbone_path, f"LPIPS {net} backbone")
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        load_strict(self.features, state, backbone_path, f"LPIPS {net} backbone")
        lin_state = load_state_dict_file(lin_path, f"LPIPS {net} linear")
        keys = [f"lin{i}.model.1.weight" for i in range(len(self.taps))]
        missing = [k for k in keys if k not in lin_state]
        if missing:
            raise HumantuneError(f"LPIPS {net} linear weights {lin_path} lack {missing[0]} (not an lpips v0.1 file?)")
        self.lin_weights = [lin_state[k].float().reshape(-1) for k in keys]
        wrong = [(i, w.numel(), c) for i, (w, c) in enumerate(zip(self.lin_weights, info["channels"]))
                 if w.numel() != c]
        if wrong:
            i, got, want = wrong[0]
            raise HumantuneError(f"LPIPS {net} linear weights {lin_path}: lin{i} has {got} weights, the {net} "
                                 f"backbone gives {want} channels (weights of the other net?)")
        self.device = torch.device(device)
        self.features.to(self.device).eval().requires_grad_(False)
        self.lin_weights = [w.to(self.device) for w in self.lin_weights]
        self._shift = torch.tensor(_LPIPS_SHIFT, device=self.device).view(1, 3, 1, 1)
        self._scale = torch.tensor(_LPIPS_SCALE, device=self.device).view(1, 3, 1, 1)

    def backbone_taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 5 ReLU feature maps LPIPS compares, for (N, 3, H, W) inputs in [−1, 1]."""
        x = (x - self._shift) / self._scale
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                taps.append(x)
            if index == self.taps[-1]:
                break
        return taps

    def __call__(self, a: torch.Tensor, b: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """LPIPS distance of each pair, (N,); ``normalize`` means the inputs are in [0, 1] rather than [−1, 1]."""
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"images must be two (N, 3, H, W) batches of one shape, got {tuple(a.shape)} "
                             f"and {tuple(b.shape)}")
        low = 0.0 if normalize else -1.0
        for name, x in (("a", a), ("b", b)):
            lo, hi = float(x.min()), float(x.max())
            if not (lo >= low and hi <= 1.0):
                raise ValueError(f"{name} has values in [{lo:g}, {hi:g}], outside the data range [{low:g}, 1]")
        a = a.to(self.device, torch.float32)
        b = b.to(self.device, torch.float32)
        if normalize:
            a, b = 2 * a - 1, 2 * b - 1
        with torch.inference_mode():
            return lpips_distance(self.backbone_taps(a), self.backbone_taps(b), self.lin_weights).cpu()


# ----------------------------------------------------------------------------------------------------------------
# CLIP score
# ----------------------------------------------------------------------------------------------------------------

CLIP_SCORE_SCALES = {"torchmetrics": 100.0, "hessel": 2.5}


def _float64_array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def clip_cosines(image_embeds: np.ndarray | torch.Tensor, text_embeds: np.ndarray | torch.Tensor) -> np.ndarray:
    """cos(E_I, E_C) = E_I·E_C / (||E_I|| ||E_C||) for each (image, caption) pair; float64 (N,)."""
    img, txt = _float64_array(image_embeds), _float64_array(text_embeds)
    if img.ndim != 2 or img.shape != txt.shape:
        raise ValueError(f"embeddings must be two (N, D) arrays of one shape, got {img.shape} and {txt.shape}")
    if img.shape[0] == 0:
        raise ValueError("no embeddings: the batch is empty")
    norms = np.linalg.norm(img, axis=1) * np.linalg.norm(txt, axis=1)
    if not (norms > 0).all():
        raise ValueError("an embedding has zero norm: its cosine is undefined")
    return np.sum(img * txt, axis=1) / norms


def clip_score(image_embeds, text_embeds, scale: str = "torchmetrics") -> float:
    """CLIP score of paired image and caption embeddings, in one of two named conventions.

    - ``"torchmetrics"``: max(100 · mean_n cos(E_I,n, E_C,n), 0), torchmetrics' ``CLIPScore`` (it clamps the mean);
    - ``"hessel"``: mean_n 2.5 · max(cos(E_I,n, E_C,n), 0), CLIP-S of Hessel et al. 2021 (it clamps each pair).

    They differ by the factor 40 and, only when some cosine is negative, by where the clamp applies.
    The backbone must be reported with the value (torchmetrics defaults to openai/clip-vit-large-patch14,
    Hessel et al. used ViT-B/32). Embeddings: (N, D) arrays or tensors, rows paired.
    """
    if scale not in CLIP_SCORE_SCALES:
        raise ValueError(f"scale must be one of {sorted(CLIP_SCORE_SCALES)}, got {scale!r}")
    cos = clip_cosines(image_embeds, text_embeds)
    if scale == "torchmetrics":
        return max(100.0 * float(np.mean(cos)), 0.0)
    return float(np.mean(2.5 * np.maximum(cos, 0.0)))


class ClipScoreMetric:
    """CLIP score of images against their captions with a transformers ``CLIPModel``/``CLIPProcessor``.

    ``model_name_or_path``: a local folder or a Hub name already in the Hugging Face cache; it is loaded with
    ``local_files_only=True`` (offline: no download), and a model that cannot be loaded raises HumantuneError
    naming it. Captions longer than the text encoder's context (77 tokens) are truncated, as torchmetrics does.
    """

    def __init__(self, model_name_or_path: str | Path = "openai/clip-vit-large-patch14",
                 device: str | torch.device = "cpu") -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.name = str(model_name_or_path)
        try:
            self.model = CLIPModel.from_pretrained(self.name, local_files_only=True)
            self.processor = CLIPProcessor.from_pretrained(self.name, local_files_only=True)
        except (OSError, ValueError) as exc:
            if Path(self.name).expanduser().is_dir():
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise HumantuneError(f"CLIP model folder {self.name} could not be loaded: {reason}") from None
            raise HumantuneError(
                f"CLIP score needs the CLIP model {self.name}, which is neither a local folder nor in the Hugging "
                "Face cache: pass the path of a saved CLIPModel (offline: no download)"
            ) from None
        self.device = torch.device(device)
        self.model.to(self.device).eval().requires_grad_(False)

    def embed(self, images: Sequence, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected image and text embeddings, (N, D) each; images are PIL images or uint8 (H, W, 3) arrays."""
        if len(images) != len(captions) or len(images) == 0:
            raise ValueError(f"need one caption per image and at least one pair, got {len(images)} images and "
                             f"{len(captions)} captions")
        inputs = self.processor(text=list(captions), images=list(images), return_tensors="pt", padding=True,
                                truncation=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.model(**inputs)
        return out.image_embeds.cpu(), out.text_embeds.cpu()

    def __call__(self, images: Sequence, captions: Sequence[str], scale: str = "torchmetrics") -> float:
        """:func:`clip_score` of each image against its caption."""
        image_embeds, text_embeds = self.embed(images, captions)
        return clip_score(image_embeds, text_embeds, scale)
