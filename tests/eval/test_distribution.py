import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import linalg
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.kid import poly_mmd

from humantune.errors import HumantuneError
from humantune.eval import distribution
from humantune.eval.distribution import (
    ClipScoreMetric,
    LpipsMetric,
    clip_cosines,
    clip_score,
    feature_statistics,
    frechet_distance,
    kernel_inception_distance,
    lpips_distance,
)

# ---------------------------------------------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------------------------------------------


def test_frechet_distance_closed_form_gaussians():
    # N(0, I₄) vs N(1, 4I₄): ||μ1 − μ2||² = 4, Tr(I + 4I − 2·(4I)^½) = 4·(1 + 4 − 4) = 4 → 8.
    assert frechet_distance(np.zeros(4), np.eye(4), np.ones(4), 4 * np.eye(4)) == pytest.approx(8.0, abs=1e-12)
    # 1-D: N(0, 1) vs N(3, 9): 9 + 1 + 9 − 2·3 = 13.
    assert frechet_distance([0.0], [[1.0]], [3.0], [[9.0]]) == pytest.approx(13.0, abs=1e-12)


def test_frechet_distance_from_large_samples():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, size=(200_000, 4))
    y = rng.normal(1.0, 2.0, size=(200_000, 4))
    fid = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    # sampling error of the means (±0.005/dim) and covariances (±0.01) moves the estimate by a few hundredths
    assert fid == pytest.approx(8.0, abs=0.08)


def test_frechet_distance_matches_torchmetrics_compute_fid():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 24)) @ rng.normal(size=(24, 24))
    b = rng.normal(0.3, 1.2, size=(250, 24)) @ rng.normal(size=(24, 24))
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    expected = _compute_fid(*(torch.from_numpy(t) for t in (mu1, s1, mu2, s2))).item()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # fewer samples than dimensions: singular covariances, still agrees
    mu3, s3 = feature_statistics(a[:10])
    expected = _compute_fid(*(torch.from_numpy(t) for t in (mu3, s3, mu2, s2))).item()
    assert frechet_distance(mu3, s3, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_adds_eps_when_sqrtm_is_not_finite(monkeypatch):
    calls = []
    real_sqrtm = linalg.sqrtm

    def flaky_sqrtm(m):
        calls.append(m.copy())
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(distribution.linalg, "sqrtm", flaky_sqrtm)
    with pytest.warns(UserWarning, match="adding 1e-06 to the diagonal"):
        value = frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2))
    np.testing.assert_allclose(calls[1], (1 + 1e-6) ** 2 * np.eye(2))
    # Tr(I + I − 2(1 + ε)I) = −4ε
    assert value == pytest.approx(-4e-6, abs=1e-12)


def test_feature_statistics_uses_sample_covariance():
    f = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
    mu, sigma = feature_statistics(f)
    np.testing.assert_allclose(mu, [2.0, 2.0])
    # Σ = Σ_i (f_i − μ)(f_i − μ)ᵀ / (n − 1): var x = 8/2, var y = 6/2, cov = (2 + 0 + 4)/2
    np.testing.assert_allclose(sigma, [[4.0, 3.0], [3.0, 3.0]])


def test_fid_errors_name_shapes():
    with pytest.raises(ValueError, match=r"\(3,\) and \(4,\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"shape \(3, 3\) to match the means, got \(3, 3\) and \(2, 2\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        feature_statistics(np.zeros((1, 5)))


# ---------------------------------------------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------------------------------------------


def _hand_mmd2(x, y):
    """Unbiased MMD² with k(a, b) = (a·b/d + 1)³, written as the double sums."""
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_single_full_subset_equals_hand_mmd_and_torchmetrics():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 5))
    y = rng.normal(0.5, 1.0, size=(12, 5))
    mean, std = kernel_inception_distance(x, y, subsets=1, subset_size=12)
    assert mean == pytest.approx(_hand_mmd2(x, y), rel=1e-12)  # MMD² does not depend on row order
    assert std == 0.0
    assert mean == pytest.approx(poly_mmd(torch.from_numpy(x), torch.from_numpy(y)).item(), rel=1e-12)


def test_kid_subsets_mean_and_population_std():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 4))
    y = rng.normal(0.2, 1.3, size=(25, 4))
    mean, std = kernel_inception_distance(x, y, subsets=4, subset_size=8, seed=7)
    draws = np.random.default_rng(7)
    scores = []
    for _ in range(4):
        xs = x[draws.choice(30, 8, replace=False)]
        ys = y[draws.choice(25, 8, replace=False)]
        scores.append(_hand_mmd2(xs, ys))
    assert mean == pytest.approx(np.mean(scores), rel=1e-12)
    assert std == pytest.approx(np.sqrt(np.mean((np.array(scores) - np.mean(scores)) ** 2)), rel=1e-10)


def test_kid_is_near_zero_for_one_distribution_and_rejects_bad_sizes():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    mean, std = kernel_inception_distance(x, y, subsets=20, subset_size=100)
    assert abs(mean) < 3 * std / math.sqrt(20) + 1e-3
    with pytest.raises(ValueError, match="subset_size 500 exceeds the number of feature vectors"):
        kernel_inception_distance(x, y, subset_size=500)
    with pytest.raises(ValueError, match=r"\(400, 8\) and \(400, 7\)"):
        kernel_inception_distance(x, y[:, :7], subset_size=10)


# ---------------------------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------------------------


def _hand_lpips(feats_a, feats_b, weights, eps=1e-10):
    n = feats_a[0].shape[0]
    total = np.zeros(n)
    for fa, fb, w in zip(feats_a, feats_b, weights):
        fa, fb, w = fa.double().numpy(), fb.double().numpy(), w.reshape(-1).double().numpy()
        for i in range(n):
            acc = 0.0
            for h in range(fa.shape[2]):
                for x in range(fa.shape[3]):
                    va, vb = fa[i, :, h, x], fb[i, :, h, x]
                    diff = va / (np.sqrt(np.sum(va**2)) + eps) - vb / (np.sqrt(np.sum(vb**2)) + eps)
                    acc += np.sum(w * diff**2)
            total[i] += acc / (fa.shape[2] * fa.shape[3])
    return total


def test_lpips_distance_matches_hand_computation():
    torch.manual_seed(1)
    shapes = [(2, 4, 3, 3), (2, 6, 2, 1)]
    fa = [torch.randn(s) for s in shapes]
    fb = [torch.randn(s) for s in shapes]
    weights = [torch.rand(1, 4, 1, 1), torch.rand(6)]
    got = lpips_distance(fa, fb, weights)
    np.testing.assert_allclose(got.numpy(), _hand_lpips(fa, fb, weights), rtol=1e-5)
    assert torch.all(lpips_distance(fa, fa, weights) == 0)
    with pytest.raises(ValueError, match="3 weights for 4 channels"):
        lpips_distance(fa, fb, [torch.rand(3), torch.rand(6)])
    with pytest.raises(ValueError, match="same number of layers"):
        lpips_distance(fa, fb[:1], weights)


# torchvision ``features`` layouts, written out independently of the module: (index, stride, padding), ReLU taps.
_ALEX_CONVS = {0: (4, 2), 3: (1, 2), 6: (1, 1), 8: (1, 1), 10: (1, 1)}
_ALEX_POOLS_AFTER = {1, 4}
_ALEX_TAPS = [1, 4, 7, 9, 11]


def _hand_alex_taps(state, x):
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    x = (x - shift) / scale
    taps = []
    for index, (stride, padding) in _ALEX_CONVS.items():
        x = F.relu(F.conv2d(x, state[f"features.{index}.weight"], state[f"features.{index}.bias"], stride, padding))
        taps.append(x)
        if index + 1 in _ALEX_POOLS_AFTER:
            x = F.max_pool2d(x, 3, 2)
    return taps


def _save_lpips_files(tmp_path, net, backbone_shapes, channels):
    backbone = {f"features.{i}.weight": torch.randn(s) * 0.05 for i, s in backbone_shapes.items()}
    backbone.update({f"features.{i}.bias": torch.randn(s[0]) * 0.05 for i, s in backbone_shapes.items()})
    backbone["classifier.1.weight"] = torch.zeros(4, 4)  # classifier tensors are ignored
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(channels)}
    torch.save(backbone, tmp_path / f"{net}_backbone.pth")
    torch.save(lin, tmp_path / f"{net}.pth")
    return backbone, lin


def test_lpips_metric_alex_matches_hand_pipeline(tmp_path):
    torch.manual_seed(2)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    backbone, lin = _save_lpips_files(tmp_path, "alex", shapes, (64, 192, 384, 256, 256))
    metric = LpipsMetric("alex", lin_weights=tmp_path / "alex.pth", backbone_weights=tmp_path / "alex_backbone.pth")
    a = torch.rand(2, 3, 64, 64) * 2 - 1
    b = (a + 0.2 * torch.randn_like(a)).clamp(-1, 1)
    got = metric(a, b)
    with torch.inference_mode():
        ta, tb = _hand_alex_taps(backbone, a), _hand_alex_taps(backbone, b)
    weights = [lin[f"lin{i}.model.1.weight"] for i in range(5)]
    np.testing.assert_allclose(got.numpy(), lpips_distance(ta, tb, weights).numpy(), rtol=1e-5)
    assert got.shape == (2,) and torch.all(got > 0)
    assert torch.all(metric(a, a) == 0)
    np.testing.assert_allclose(metric((a + 1) / 2, (b + 1) / 2, normalize=True).numpy(), got.numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match=r"outside the data range \[0, 1\]"):
        metric(a, b, normalize=True)


def test_lpips_metric_vgg_loads_torchvision_layout(tmp_path):
    torch.manual_seed(3)
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    shapes, index, cin = {}, 0, 3
    for c in cfg:
        if c == "M":
            index += 1
        else:
            shapes[index] = (c, cin, 3, 3)
            cin, index = c, index + 2
    assert max(shapes) == 28  # the last conv of torchvision's vgg16.features
    _save_lpips_files(tmp_path, "vgg", shapes, (64, 128, 256, 512, 512))
    metric = LpipsMetric("vgg", lin_weights=tmp_path / "vgg.pth", backbone_weights=tmp_path / "vgg_backbone.pth")
    a = torch.rand(1, 3, 32, 32) * 2 - 1
    taps = metric.backbone_taps(a)
    assert [t.shape[1:] for t in taps] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]
    assert metric(a, torch.zeros_like(a)).item() > 0


def test_lpips_missing_files_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(HumantuneError, match="alexnet-owt-7be5be79.pth") as info:
        LpipsMetric("alex")
    assert "\n" not in str(info.value) and "offline" in str(info.value)
    torch.save({}, tmp_path / "backbone.pth")
    with pytest.raises(HumantuneError, match=r"lpips v0.1 linear weights vgg.pth \(.*nope.pth does not exist\)"):
        LpipsMetric("vgg", lin_weights=tmp_path / "nope.pth", backbone_weights=tmp_path / "backbone.pth")
    with pytest.raises(HumantuneError, match="net must be one of"):
        LpipsMetric("squeeze")


# ---------------------------------------------------------------------------------------------------------------
# CLIP score
# ---------------------------------------------------------------------------------------------------------------


def test_clip_score_conventions_hand_values():
    img = np.array([[1.0, 0.0], [0.0, 2.0]])
    txt = np.array([[1.0, 1.0], [0.0, 5.0]])
    # cosines: 1/√2 and 1
    np.testing.assert_allclose(clip_cosines(img, txt), [1 / math.sqrt(2), 1.0])
    assert clip_score(img, txt) == pytest.approx(100 * (1 / math.sqrt(2) + 1) / 2)
    assert clip_score(torch.from_numpy(img), torch.from_numpy(txt), "hessel") == pytest.approx(
        2.5 * (1 / math.sqrt(2) + 1) / 2
    )
    # cosines 0.5 and −0.9: torchmetrics clamps the mean (−0.2 → 0), Hessel et al. clamp each pair.
    img = np.array([[1.0, 0.0], [1.0, 0.0]])
    txt = np.array([[0.5, math.sqrt(0.75)], [-0.9, math.sqrt(0.19)]])
    assert clip_score(img, txt, "torchmetrics") == 0.0
    assert clip_score(img, txt, "hessel") == pytest.approx(2.5 * 0.5 / 2)
    with pytest.raises(ValueError, match="scale must be one of"):
        clip_score(img, txt, "openai")
    with pytest.raises(ValueError, match=r"\(2, 2\) and \(1, 2\)"):
        clip_score(img, txt[:1])


def _tiny_clip_folder(tmp_path):
    """A random 1-layer CLIP with humantune's offline CLIP tokenizer, saved as a transformers folder."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    from humantune.models.tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(["a", "person", "dancing", "child"], tmp_path / "tokenizer", 77)
    vocab = tokenizer.get_vocab()
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"], **small),
        vision_config=dict(image_size=32, patch_size=8, **small),
        projection_dim=16,
    )
    torch.manual_seed(4)
    model = CLIPModel(config)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    folder = tmp_path / "tiny-clip"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


def test_clip_score_metric_on_a_local_tiny_model(tmp_path):
    folder, model, processor = _tiny_clip_folder(tmp_path)
    metric = ClipScoreMetric(folder)
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8) for _ in range(3)]
    captions = ["a person dancing", "two people shaking hands", "a child"]
    inputs = processor(text=captions, images=images, return_tensors="pt", padding=True)
    with torch.inference_mode():
        image_embeds = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        text_embeds = model.get_text_features(input_ids=inputs["input_ids"],
                                              attention_mask=inputs["attention_mask"]).pooler_output
    cos = F.cosine_similarity(image_embeds, text_embeds, dim=-1).double().numpy()
    assert metric(images, captions) == pytest.approx(max(100 * cos.mean(), 0.0), rel=1e-5, abs=1e-4)
    assert metric(images, captions, scale="hessel") == pytest.approx(2.5 * np.maximum(cos, 0).mean(), rel=1e-5,
                                                                    abs=1e-6)
    with pytest.raises(ValueError, match="3 images and 2 captions"):
        metric(images, captions[:2])


def test_clip_score_metric_missing_model_is_one_line_error(tmp_path):
    with pytest.raises(HumantuneError) as info:
        ClipScoreMetric("nobody-here/clip-that-does-not-exist")
    message = str(info.value)
    assert "\n" not in message
    assert "nobody-here/clip-that-does-not-exist" in message and "offline" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(HumantuneError, match="could not be loaded") as info:
        ClipScoreMetric(tmp_path / "empty")
    assert "\n" not in str(info.value)
