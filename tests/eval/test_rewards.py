import numpy as np
import pytest

from humantune.data.mannequin.world import MannequinConfig, render_sample
from humantune.errors import HumantuneError
from humantune.eval.pose_estimators import MediaPipePoseEstimator
from humantune.eval.rewards import (
    AnatomyReward,
    CombinedReward,
    PoseAgreementReward,
    RewardModel,
    load_reward,
)


@pytest.fixture(scope="module")
def estimator():
    with MediaPipePoseEstimator() as est:
        yield est


def _standing(seed=5, anomaly=None):
    extra = {"anomaly_prob": 1.0, "anomaly_types": [anomaly]} if anomaly else {}
    return MannequinConfig(n=10, size=128, seed=seed, action_mix={"standing": 1.0}, second_person_prob=0.0,
                           truncate_prob=0.0, **extra)


def test_anatomy_reward_ranks_a_correct_render_above_broken_ones(estimator):
    correct = render_sample(_standing(), 3).image
    broken = [render_sample(_standing(anomaly=a), 3).image for a in ("detached_part", "extra_limb")]
    scores = AnatomyReward(estimator).score([correct, *broken])
    assert scores[0] > -1.0 >= scores[1] and scores[0] > scores[2]
    assert AnatomyReward(estimator).score([np.zeros((128, 128, 3), np.uint8)])[0] == -10.0  # nobody found


def test_pose_agreement_reward_ranks_the_right_pose_above_a_wrong_one(estimator):
    cfg = MannequinConfig(n=10, size=128, seed=1, second_person_prob=0.0, truncate_prob=0.0,
                          action_mix={"standing": 1.0, "lying_back": 1.0, "sitting": 1.0})
    scenes = [render_sample(cfg, i) for i in range(4)]
    wrong = next(s for s in scenes[1:] if s.actions != scenes[0].actions)
    reward = PoseAgreementReward(estimator)
    right_score, wrong_score = reward.score([scenes[0].image] * 2, targets=[scenes[0].keypoints, wrong.keypoints])
    assert right_score > 0.5 and right_score > wrong_score + 0.2
    with pytest.raises(HumantuneError, match="one target pose per image"):
        reward.score([scenes[0].image])


class _Constant(RewardModel):
    def __init__(self, values):
        self.values = np.asarray(values, float)

    def score(self, images, prompts=None, **kwargs):
        return self.values[: len(images)]


def test_combined_reward_is_the_weighted_sum():
    combined = CombinedReward([(_Constant([1.0, 2.0]), 0.5), (_Constant([-3.0, 4.0]), 2.0)])
    np.testing.assert_allclose(combined.score([None, None]), [0.5 - 6.0, 1.0 + 8.0])
    with pytest.raises(HumantuneError):
        CombinedReward([])


def test_load_reward_registry(estimator):
    reward = load_reward("combined", weights={"pose_agreement": 1.0, "anatomy": 0.1}, estimator=estimator)
    assert [type(r).__name__ for r, _ in reward.components] == ["PoseAgreementReward", "AnatomyReward"]
    with pytest.raises(HumantuneError, match="unknown reward 'aesthetic'; known: pose_agreement, anatomy"):
        load_reward("aesthetic")


def test_pickscore_offline_fails_in_one_line_naming_the_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HumantuneError) as err:
        load_reward("pickscore")
    assert "yuvalkirstain/PickScore_v1" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name, file_name, package", [("hpsv2", "HPS_v2.1_compressed.pt", "hpsv2"),
                                                      ("imagereward", "ImageReward.pt", "image-reward")])
def test_hpsv2_and_imagereward_fail_in_one_line(tmp_path, name, file_name, package):
    with pytest.raises(HumantuneError, match=file_name.replace(".", r"\.")) as err:
        load_reward(name, checkpoint=tmp_path / file_name)
    assert "\n" not in str(err.value)
    (tmp_path / file_name).write_bytes(b"weights")
    with pytest.raises(HumantuneError, match=f"'{package}' package") as err:
        load_reward(name, checkpoint=tmp_path / file_name)
    assert "\n" not in str(err.value)


def _renders(n=6, seed=3):
    cfg = MannequinConfig(n=n, size=128, seed=seed, second_person_prob=0.0, truncate_prob=0.0,
                          action_mix={"standing": 1.0})
    return [render_sample(cfg, i) for i in range(n)]


def test_attribute_reward_prefers_the_image_its_caption_describes(estimator):
    from humantune.eval.rewards import AttributeReward

    scenes = _renders()
    own = AttributeReward(estimator).score([s.image for s in scenes], [s.caption for s in scenes])
    swapped = AttributeReward(estimator).score([s.image for s in scenes], [s.caption for s in scenes[::-1]])
    assert own.shape == (6,) and ((0 <= own) & (own <= 1)).all()
    assert own.mean() > swapped.mean() and own.mean() >= 0.5
    assert AttributeReward(estimator).score([np.zeros((128, 128, 3), np.uint8)], [scenes[0].caption])[0] == 0.0


def test_realism_reward_scores_renders_above_noise_and_matches_its_formula():
    from humantune.eval.rewards import RealismReward, standardised_distance

    scenes = _renders(8)
    reward = RealismReward([s.image for s in scenes[:6]])
    noise = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    scores = reward.score([*(s.image for s in scenes[6:]), *noise])
    assert scores[:2].min() > scores[2:].max()
    features = reward.net.extract([scenes[6].image])
    assert scores[0] == pytest.approx(-np.sqrt(np.mean(((features[0] - reward.mean) / reward.std) ** 2)))
    np.testing.assert_allclose(standardised_distance(np.array([[1.0, 3.0]]), np.array([0.0, 1.0]),
                                                     np.array([1.0, 2.0])), [1.0])   # √((1² + 1²) / 2)
    with pytest.raises(HumantuneError, match="at least 2 reference"):
        RealismReward([scenes[0].image])


def test_mannequin_reward_is_the_weighted_sum_of_its_components(estimator):
    from humantune.eval.rewards import AttributeReward, mannequin_reward

    scenes = _renders(4)
    images, captions = [s.image for s in scenes], [s.caption for s in scenes]
    reward = mannequin_reward(images, {"anatomy": 0.5, "attributes": 2.0}, estimator=estimator)
    expected = 0.5 * AnatomyReward(estimator).score(images) + 2.0 * AttributeReward(estimator).score(images, captions)
    np.testing.assert_allclose(reward.score(images, captions), expected)
    with pytest.raises(HumantuneError, match="unknown mannequin reward component colour"):
        mannequin_reward(images, {"colour": 1.0})
