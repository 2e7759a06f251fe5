import numpy as np
import pytest
import torch

from humantune.data.mannequin.world import MannequinConfig, render_sample
from humantune.errors import HumantuneError
from humantune.eval.distribution import feature_statistics, frechet_distance
from humantune.eval.world_features import (
    FEATURE_DIM,
    WORLD_HEADS,
    WorldFeatureNet,
    preprocess,
    train_world_feature_net,
    world_frechet_distance,
)


@pytest.fixture(scope="module")
def net():
    return WorldFeatureNet.load()


def _render(n, seed, **overrides):
    cfg = MannequinConfig(n=n, seed=seed, **overrides)
    return [render_sample(cfg, i).image for i in range(n)]


def test_shipped_weights_load_with_their_record(net):
    assert net.config.training["seed"] == 0 and net.config.training["steps"] == 1600
    assert set(net.config.heads) == set(WORLD_HEADS)
    assert not net.training


def test_preprocess_area_resize_to_unit_range():
    image = np.zeros((128, 128, 3), np.uint8)
    image[:, :64] = 255  # left half white: area averaging keeps the edge exact at 64 px
    x = preprocess([image])
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    assert float(x[0, :, :, :32].min()) == 1.0 and float(x[0, :, :, 32:].max()) == 0.0
    with pytest.raises(ValueError, match="image 0: expected a uint8"):
        preprocess([image.astype(np.float32)])


def test_features_shape_and_determinism(net):
    images = _render(6, 0)
    f = net.extract(images)
    assert f.shape == (6, FEATURE_DIM) and f.dtype == np.float64
    np.testing.assert_array_equal(f, net.extract(images))
    # each image's features do not depend on its batch
    np.testing.assert_allclose(net.extract(images[2:3])[0], f[2], rtol=1e-5, atol=1e-5)


def test_fd_of_a_sample_with_itself_is_zero(net):
    # more images than feature dimensions: with a singular covariance sqrtm's rounding reaches ~1e-4
    images = _render(150, 1)
    assert world_frechet_distance(images, images, net) == pytest.approx(0.0, abs=1e-6)


def test_fd_orders_same_world_below_lying_world_and_blur(net):
    import cv2

    reference, disjoint = _render(60, 2), _render(60, 3)
    lying = _render(60, 4, action_mix={"lying_back": 1.0, "lying_side": 1.0})
    stats = feature_statistics(net.extract(reference))

    def fd(images):
        return frechet_distance(*stats, *feature_statistics(net.extract(images)))

    same = fd(disjoint)
    assert fd(lying) > 1.5 * same
    blurred = [fd([cv2.GaussianBlur(im, (0, 0), s) for im in disjoint]) for s in (2.0, 4.0)]
    assert same < blurred[0] < blurred[1]


def test_missing_weights_is_a_one_line_humantune_error(tmp_path):
    with pytest.raises(HumantuneError, match="config.json does not exist") as err:
        WorldFeatureNet.load(tmp_path)
    assert "\n" not in str(err.value)


def test_corrupt_world_feature_files_are_one_line_errors(tmp_path):
    import json
    import shutil

    from humantune.eval.world_features import CONFIG_NAME, DEFAULT_WEIGHTS_DIR, WEIGHTS_NAME

    shutil.copytree(DEFAULT_WEIGHTS_DIR, tmp_path / "wf")
    weights, config = tmp_path / "wf" / WEIGHTS_NAME, tmp_path / "wf" / CONFIG_NAME
    good = weights.read_bytes()
    for data in (good[: len(good) // 2], b"", b"\x00" * 64):
        weights.write_bytes(data)
        with pytest.raises(HumantuneError, match=f"world-feature weights {weights} could not be read") as err:
            WorldFeatureNet.load(tmp_path / "wf")
        assert "\n" not in str(err.value)
    weights.write_bytes(good)
    record = json.loads(config.read_text())
    for text in ("[1, 2]", "{oops", json.dumps({**record, "channels": "abc"})):
        config.write_text(text)
        with pytest.raises(HumantuneError, match=f"world-feature (config {config} is not valid|weights .* do not "
                                                 "match)") as err:
            WorldFeatureNet.load(tmp_path / "wf")
        assert "\n" not in str(err.value)


def test_training_runs_reduces_loss_and_round_trips(tmp_path):
    torch.set_num_threads(1)
    trained, record = train_world_feature_net(n_images=16, seed=0, steps=25, out_path=tmp_path, batch_size=16,
                                              heldout=0, render_size=64)
    losses = record["losses"]
    assert len(losses) == 25
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    loaded = WorldFeatureNet.load(tmp_path)
    assert loaded.config.training["steps"] == 25
    images = _render(3, 9)
    np.testing.assert_array_equal(trained.extract(images), loaded.extract(images))
