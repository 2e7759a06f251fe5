import numpy as np
import pytest
import torch

from humantune.data.mannequin.video import MannequinVideoConfig, render_clip, write_video_world
from humantune.errors import HumantuneError
from humantune.eval import image_metrics
from humantune.eval.anatomy import body_scale
from humantune.eval.pose_estimators import MediaPipePoseEstimator
from humantune.eval.video import (
    VIDEO_NETWORKS,
    ClipSampling,
    VideoFeatureNetwork,
    clip_set_frame_metrics,
    detect_clip,
    frame_metrics,
    load_video_network,
    pose_jitter,
    read_clips,
    sample_clips,
)


def _trajectory(t, fast=False):
    """A smooth person-like keypoint track: 17 points around a torso of ~40 px, each swinging sinusoidally."""
    base = np.stack([np.linspace(40, 80, 17), np.linspace(20, 120, 17)], axis=1)
    base[5], base[6], base[11], base[12] = [50, 50], [70, 50], [52, 90], [68, 90]  # shoulders, hips
    amp = 20.0 if fast else 5.0
    xy = base + amp * np.sin(0.6 * t + np.arange(17))[:, None]
    return np.concatenate([xy, np.full((17, 1), 2.0)], axis=1)


def test_smooth_track_has_less_jitter_than_a_noisy_one():
    smooth = np.stack([_trajectory(t) for t in range(16)])
    noisy = smooth.copy()
    noisy[:, :, :2] += np.random.default_rng(0).normal(0, 2.0, size=noisy[:, :, :2].shape)
    assert pose_jitter(smooth) < pose_jitter(noisy)
    assert pose_jitter(noisy) > 3 * pose_jitter(smooth)


def test_ground_truth_motion_is_removed():
    truth = np.stack([_trajectory(t, fast=True) for t in range(16)])
    assert pose_jitter(truth) > 0.05  # fast motion has large accelerations on its own
    assert pose_jitter(truth, reference=truth) == 0.0
    shaky = truth.copy()
    shaky[::2, :, 0] += 3.0  # every other frame shifted by 3 px: alternating ±6 px second difference
    # |Δ²| = 6 px for every keypoint and frame, divided by the median body scale of the true poses
    scale = np.median([body_scale(frame) for frame in truth])
    assert pose_jitter(shaky, reference=truth) == pytest.approx(6.0 / scale)


def test_jitter_is_nan_without_enough_frames_or_detections():
    track = np.stack([_trajectory(t) for t in range(2)])
    assert np.isnan(pose_jitter(track))
    missed = np.stack([_trajectory(t) for t in range(5)])
    missed[:, :, 2] = 0.0
    assert np.isnan(pose_jitter(missed))


def test_rendered_clip_scores_smoother_than_a_shaken_copy():
    cfg = MannequinVideoConfig(n=1, frames=8, seed=2, size=128)
    clip = render_clip(cfg, 0)
    frames = np.stack(clip["frames"])
    truth = np.stack([k[0] for k in clip["keypoints"]])
    shifts = np.random.default_rng(1).integers(-5, 6, size=(len(frames), 2))
    shaken = np.stack([np.roll(f, tuple(s), axis=(0, 1)) for f, s in zip(frames, shifts)])
    with MediaPipePoseEstimator() as estimator:
        smooth_jitter = pose_jitter(detect_clip(estimator, frames), truth)
        shaken_jitter = pose_jitter(detect_clip(estimator, shaken), truth)
    assert np.isfinite(smooth_jitter) and shaken_jitter > 1.5 * smooth_jitter


def test_frame_metrics_equal_image_metrics():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(4, 24, 24, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, size=a.shape), 0, 255).astype(np.uint8)
    m = frame_metrics(a, b)
    np.testing.assert_allclose(m["ssim"], image_metrics.ssim_per_image(a, b, 255.0))
    np.testing.assert_allclose(m["l1"], image_metrics.l1_error_per_image(a, b))
    same = clip_set_frame_metrics([a, a], [a, a])
    assert same["psnr"] == 100.0 and same["ssim"] == pytest.approx(1.0) and same["num_frames"] == 8
    with pytest.raises(ValueError, match="one shape"):
        frame_metrics(a, b[:3])


def test_sample_clips_follows_length_and_strides():
    video = np.arange(40)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    clips = sample_clips(video, ClipSampling(clip_length=16, frame_stride=1, clip_stride=16))
    assert clips.shape == (2, 16, 2, 2, 3) and clips[1, 0, 0, 0, 0] == 16
    strided = sample_clips(video, ClipSampling(clip_length=16, frame_stride=2, clip_stride=4))
    assert strided.shape[0] == 3 and strided[2, :, 0, 0, 0].tolist() == list(range(8, 40, 2))
    assert sample_clips(video[:10], ClipSampling()).shape[0] == 0


def test_missing_video_weights_fail_in_one_line(tmp_path):
    with pytest.raises(HumantuneError) as err:
        load_video_network("i3d", tmp_path / "nope.pt")
    assert "i3d_torchscript.pt" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(HumantuneError, match="r3d50_K_200ep_features.pt"):
        load_video_network("resnet3d50", tmp_path / "nope.pt")


class _MeanColour(torch.nn.Module):
    """A stand-in feature network with the I3D TorchScript's call signature: per-channel mean and std."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)


def test_frechet_video_distance_on_a_torchscript_network(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(_MeanColour()).save(str(path))
    net = VideoFeatureNetwork(VIDEO_NETWORKS["i3d"], path)
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8) for _ in range(6)]
    darker = [(v // 2).astype(np.uint8) for v in videos]
    sampling = ClipSampling(size=32)
    same = net.features(videos, sampling)
    from humantune.eval.video import frechet_video_distance, fvd

    assert same.shape == (6, 6) and frechet_video_distance(same, same) == pytest.approx(0.0, abs=1e-9)
    result = fvd(darker, videos, path, sampling)
    assert result["value"] > 0.1 and result["clip_length"] == 16 and result["num_clips"] == [6, 6]


def test_read_clips_from_a_video_world(tmp_path):
    root = write_video_world(MannequinVideoConfig(n=2, frames=3, size=64), tmp_path / "video", workers=1,
                             progress=False)
    clips = read_clips(root)
    assert [len(c.frames) for c in clips] == [3, 3] and clips[0].keypoints.shape == (3, 1, 17, 3)
    assert clips[1].load().shape == (3, 64, 64, 3)


class _MeanColourPlain(torch.nn.Module):
    """The 3D ResNet-50 stand-in: called as net(x), pooled features per clip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)


def test_fid_vid_runs_end_to_end_on_a_torchscript_resnet3d_stand_in(tmp_path):
    from humantune.eval.video import fid_vid

    path = tmp_path / "r3d50_K_200ep_features.pt"
    torch.jit.script(_MeanColourPlain()).save(str(path))
    rng = np.random.default_rng(1)
    videos = [rng.integers(0, 256, size=(16, 24, 24, 3), dtype=np.uint8) for _ in range(5)]
    sampling = ClipSampling(size=24)
    assert fid_vid(videos, videos, path, sampling)["value"] == pytest.approx(0.0, abs=1e-6)
    darker = [(v // 3).astype(np.uint8) for v in videos]
    result = fid_vid(darker, videos, path, sampling)
    assert result["value"] > 0.1 and result["num_clips"] == [5, 5]


def test_temporal_pose_jitter_detects_each_clip_and_averages_the_defined_values():
    from humantune.eval.pose_estimators import PoseEstimate, PoseEstimator
    from humantune.eval.video import temporal_pose_jitter

    class Replay(PoseEstimator):
        """Returns the given tracks' keypoints frame by frame (confidence 1)."""

        def __init__(self, tracks):
            self.frames = [kp for track in tracks for kp in track]

        def estimate(self, image):
            kp = self.frames.pop(0).copy()
            kp[:, 2] = 1.0
            return PoseEstimate(kp[None], np.ones(1, np.float32))

    smooth = np.stack([_trajectory(t) for t in range(8)])
    shaky = smooth.copy()
    shaky[::2, :, 0] += 4.0
    clips = [np.zeros((8, 16, 16, 3), np.uint8)] * 2
    result = temporal_pose_jitter(Replay([smooth, shaky]), clips)
    assert result["per_clip"][0] == pytest.approx(pose_jitter(smooth))
    assert result["per_clip"][1] == pytest.approx(pose_jitter(shaky))
    assert result["jitter"] == pytest.approx(np.mean(result["per_clip"])) and result["num_clips"] == 2
    with_truth = temporal_pose_jitter(Replay([smooth, shaky]), clips, references=[smooth, smooth])
    assert with_truth["per_clip"][0] == pytest.approx(0.0) and with_truth["per_clip"][1] > 0
