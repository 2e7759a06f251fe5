"""The pose-guided video denoiser (stock LatteTransformer3DModel) and its pipeline: save/load round trip, that the
pose and the reference reach the output, reference tokens and guidance against hand computations, identity of
zero-initialised temporal blocks, and clips of the requested length."""

import numpy as np
import pytest
import torch
from diffusers import LatteTransformer3DModel

from humantune.errors import HumantuneError
from humantune.models import pose_video as pv
from humantune.models import tiny

LATENT = 8


def _denoiser(frames: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    cfg = pv.DenoiserConfig(num_layers=2, num_attention_heads=2, attention_head_dim=8, frames=frames)
    model = pv.build_denoiser(cfg, 4, LATENT)
    with torch.no_grad():  # the stock init starts proj_out near zero; make the output depend on the input visibly
        model.proj_out.weight.normal_(0, 0.2)
    return model.eval()


def _pipeline(temporal: bool, frames: int = 2):
    vae = tiny.build_vae(tiny.VaeConfig(block_out_channels=[8, 16], norm_num_groups=4))   # f2: 16² frames
    pipe = pv.PoseVideoPipeline(_denoiser(frames), vae.eval(), tiny.ddpm_schedulers()[1])
    pipe.settings = pv.ConditioningSettings(latent_channels=4, pose_channels=3, reference_patch_size=2,
                                            resolution=2 * LATENT, temporal=temporal, num_inference_steps=2,
                                            guidance_scale=2.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _inputs(b=1, t=2, seed=0):
    """noisy latents, timesteps, pose maps, reference tokens, reference latent."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn((b, 4, t, LATENT, LATENT), generator=g), torch.tensor([500] * b),
            torch.rand((b, 3, t, LATENT, LATENT), generator=g), torch.randn((b, 16, 16), generator=g),
            torch.randn((b, 4, LATENT, LATENT), generator=g))


def test_stock_class_in_and_out_channels():
    model = _denoiser()
    assert type(model) is LatteTransformer3DModel
    assert model.config.in_channels == 4 + pv.POSE_CHANNELS + 4 and model.config.out_channels == 4
    assert pv.takes_reference_input(model)
    assert model.config.caption_channels == 2 * 2 * 4
    assert pv.denoiser_blocks(model) == {"spatial": ["transformer_blocks.0", "transformer_blocks.1"],
                                         "temporal": ["temporal_transformer_blocks.0", "temporal_transformer_blocks.1"]}


def test_pose_and_reference_change_the_output():
    model = _denoiser()
    noisy, t, pose, ref, latent = _inputs()
    with torch.no_grad():
        base = pv.denoise(model, noisy, t, pose, ref, True, latent)
        no_pose = pv.denoise(model, noisy, t, torch.zeros_like(pose), ref, True, latent)
        other_tokens = pv.denoise(model, noisy, t, pose, torch.zeros_like(ref), True, latent)
        other_latent = pv.denoise(model, noisy, t, pose, ref, True, torch.zeros_like(latent))
        again = pv.denoise(model, noisy, t, pose, ref, True, latent)
    assert base.shape == noisy.shape
    assert torch.equal(base, again)
    for changed in (no_pose, other_tokens, other_latent):
        assert (base - changed).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="reference_latent"):
        pv.denoise(model, noisy, t, pose, ref, True)


def test_reference_tokens_by_hand():
    latents = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    tokens = pv.reference_tokens(latents, 2)
    assert tokens.shape == (1, 4, 8)
    # token 1 = patch at rows 0-1, columns 2-3; order (channel, dy, dx)
    assert tokens[0, 1].tolist() == [2, 3, 6, 7, 18, 19, 22, 23]
    with pytest.raises(ValueError, match="multiple"):
        pv.reference_tokens(torch.zeros(1, 2, 5, 4), 2)


def test_guided_noise_and_windows_by_hand():
    u, c = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 1.0])
    assert pv.guided_noise(u, c, 4.0).tolist() == [9.0, -2.0]      # u + 4(c − u)
    assert pv.frame_windows(5, 2) == [[0, 1], [2, 3], [4, 4]]
    assert pv.frame_windows(3, 4) == [[0, 1, 2, 2]]


def test_pose_maps_area_average():
    cond = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    cond[0, 0, :2, :2] = 255
    maps = pv.pose_maps(cond, 2)
    assert maps.shape == (1, 3, 2, 2)
    assert maps[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]] and maps[0, 1:].abs().sum() == 0


def test_zero_initialised_temporal_blocks_are_identity():
    model = _denoiser()
    pv.zero_init_temporal(model)
    x = torch.randn(3, 2, 16)
    ts, _ = model.adaln_single(torch.tensor([10, 10, 10]), {"resolution": None, "aspect_ratio": None}, batch_size=3,
                               hidden_dtype=x.dtype)
    for block in model.temporal_transformer_blocks:
        with torch.no_grad():
            assert torch.equal(block(x, None, None, None, ts), x)


def test_pipeline_round_trip(tmp_path):
    pipe = _pipeline(temporal=True)
    pipe.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / pv.SETTINGS_NAME).is_file() and (tmp_path / "p" / "model_index.json").is_file()
    loaded = pv.PoseVideoPipeline.from_pretrained(tmp_path / "p")
    assert type(loaded.transformer) is LatteTransformer3DModel and loaded.settings == pipe.settings
    plain = LatteTransformer3DModel.from_pretrained(tmp_path / "p" / "transformer")   # stock class, no humantune
    for a, b in zip(pipe.transformer.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)
    ref, poses = np.full((16, 16, 3), 90, np.uint8), [np.zeros((16, 16, 3), np.uint8)] * 2
    a = pipe(ref, poses, generator=torch.Generator().manual_seed(3))
    b = loaded(ref, poses, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("temporal,frames", [(True, 5), (False, 3), (True, 1)])
def test_pipeline_generates_requested_length(temporal, frames):
    pipe = _pipeline(temporal)
    rng = np.random.default_rng(0)
    poses = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(frames)]
    out = pipe(np.zeros((20, 20, 3), np.uint8), poses, generator=torch.Generator().manual_seed(0))
    assert out.shape == (frames, 16, 16, 3) and out.dtype == np.uint8


def test_pipeline_errors(tmp_path):
    with pytest.raises(HumantuneError, match="humantune_pose_video.json"):
        pv.PoseVideoPipeline.from_pretrained(tmp_path)
    with pytest.raises(HumantuneError, match="at least one"):
        _pipeline(False)(np.zeros((16, 16, 3), np.uint8), [])


def test_adapt_pretrained_latte_starts_as_the_source():
    """A learned-sigma Latte (out = 2 × latent channels, caption width 16 = 2²·4) adapted: on all-zero pose channels
    its output is the source's ε half, and the clip length follows ``frames``."""
    torch.manual_seed(1)
    source = LatteTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                     num_layers=1, cross_attention_dim=16, sample_size=LATENT, patch_size=2,
                                     norm_type="ada_norm_single", caption_channels=16, video_length=3,
                                     activation_fn="gelu-approximate", norm_elementwise_affine=False,
                                     norm_eps=1e-6).eval()
    with torch.no_grad():
        source.proj_out.weight.normal_(0, 0.2)
    adapted = pv.adapt_latte(source, reference_patch=2, frames=3).eval()
    assert adapted.config.in_channels == 4 + 3 + 4 and adapted.config.out_channels == 4
    noisy, t, pose, ref, latent = _inputs(t=3)
    with torch.no_grad():
        expected = source(noisy, timestep=t, encoder_hidden_states=ref, return_dict=False)[0][:, :4]
        got = pv.denoise(adapted, noisy, t, torch.zeros_like(pose), ref, True, torch.zeros_like(latent))
        posed = pv.denoise(adapted, noisy, t, pose, ref, True, latent)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(posed, got)          # zero-initialised new input weights: pose and latent have no effect yet
    assert pv.adapt_latte(source, 2, reference_input=False).config.in_channels == 7


def test_reference_condition_tells_positions_apart():
    latents = torch.ones(1, 4, 4, 4)                     # every patch shows the same thing
    plain, placed = pv.reference_tokens(latents, 2), pv.reference_condition(latents, 2)
    assert torch.equal(plain[0, 0], plain[0, 3])
    assert not torch.allclose(placed[0, 0], placed[0, 3])
    assert torch.allclose(placed - plain, pv.reference_condition(torch.zeros(1, 4, 4, 4), 2), atol=1e-6)  # additive
