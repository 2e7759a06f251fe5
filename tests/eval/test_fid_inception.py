import numpy as np
import pytest
import torch
import torch.nn.functional as F

from humantune.errors import HumantuneError
from humantune.eval.fid_inception import (
    FID_INCEPTION_WEIGHTS,
    FIDInceptionV3,
    InceptionFeatures,
    resolve_inception_weights,
)


def test_fid_inception_architecture_roundtrips_state_dict(tmp_path):
    torch.manual_seed(0)
    model = FIDInceptionV3()
    state = model.state_dict()
    # torchvision's inception_v3 has 27,161,264 parameters; without AuxLogits (3,326,696) and with the
    # 1008-way fc of the TF graph (+8·2049) that is 23,850,960.
    assert sum(p.numel() for p in model.parameters()) == 23_850_960
    assert tuple(state["Conv2d_1a_3x3.conv.weight"].shape) == (32, 3, 3, 3)
    assert tuple(state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape) == (192, 192, 1, 7)
    assert tuple(state["Mixed_7c.branch_pool.conv.weight"].shape) == (192, 2048, 1, 1)
    assert tuple(state["fc.weight"].shape) == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in state)

    path = tmp_path / FID_INCEPTION_WEIGHTS
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    features = InceptionFeatures(path)
    for k, v in features.model.state_dict().items():
        assert torch.equal(v, state[k]), k
    images = torch.rand(1, 3, 40, 56)
    got = features(images)
    assert got.shape == (1, 2048) and got.dtype == np.float64
    with torch.inference_mode():
        resized = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        expected = model.eval()(2 * resized - 1).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"outside the data range \[0, 1\]"):
        features(images * 2)


def test_inception_weights_missing_or_wrong_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(HumantuneError) as info:
        resolve_inception_weights()
    message = str(info.value)
    assert "\n" not in message
    assert FID_INCEPTION_WEIGHTS in message and "--inception-weights PATH" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message and "offline" in message
    with pytest.raises(HumantuneError, match="does not exist"):
        InceptionFeatures(tmp_path / "nowhere.pth")

    bad = tmp_path / "bad.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 5, 5)}, bad)
    with pytest.raises(HumantuneError, match=r"keys \d+ missing .*1 of the wrong shape") as info:
        InceptionFeatures(bad)
    assert "\n" not in str(info.value)
