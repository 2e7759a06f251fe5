"""Encoding once: the digest, the on-disk cache, VAE posteriors by sample index and prompt conditioning that equals
the pipeline's own encode_prompt."""

import pytest
import torch

from humantune.models.encoding import PromptConditioning, cached_tensors, digest, encode_latent_stats
from humantune.models.families import FAMILIES
from tests.tiny_pipelines import TRANSFORMER, build_pipeline

PROMPTS = ["a man in a red shirt and blue jeans lying on the grass", "a woman in a blue dress walking on the street"]


def test_digest_changes_with_weights_and_inputs():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    x = torch.zeros(3)
    assert digest(a, x, "s") == digest(a, x.clone(), "s")
    assert digest(a, x, "s") != digest(b, x, "s") != digest(a, x + 1, "s")
    assert digest(a, [x, "s"]) == digest(a, x, "s")


def test_cached_tensors_compute_once_and_again_when_the_key_changes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3.0) + len(calls)}

    path = tmp_path / "c.safetensors"
    first = cached_tensors(path, "k1", compute)
    assert torch.equal(cached_tensors(path, "k1", compute)["x"], first["x"]) and len(calls) == 1
    assert torch.equal(cached_tensors(path, "k2", compute)["x"], torch.arange(3.0) + 2) and len(calls) == 2
    cached_tensors(None, "k", compute)
    assert len(calls) == 3


def test_latent_stats_are_the_posterior_of_each_image_in_order():
    vae = build_pipeline("sd").vae
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    stats = encode_latent_stats(vae, images, batch_size=2)
    with torch.no_grad():
        d = vae.encode(images[3:4].float() / 127.5 - 1).latent_dist
    assert stats.shape == (5, 2, 4, 16, 16)
    torch.testing.assert_close(stats[3, 0], d.mean[0])
    torch.testing.assert_close(stats[3, 1], d.std[0])


@pytest.mark.parametrize("family", ["sd", "sd3"])
@pytest.mark.parametrize("trained", [False, True])
def test_prompt_conditioning_equals_the_pipelines_encode_prompt(family, trained):
    pipe = build_pipeline(family)
    length = TRANSFORMER.max_sequence_length if family == "sd3" else 0
    captions = [PROMPTS[1], PROMPTS[0], PROMPTS[1]]
    text = PromptConditioning(pipe, FAMILIES[family], captions, trained, length)
    samples = torch.tensor([2, 0, 1])
    with torch.no_grad():
        cond, pooled = text(samples, {k: pipe.components[k] for k in FAMILIES[family].text_encoders})
        wanted = [captions[i] for i in samples.tolist()]
        if family == "sd":
            want, _ = pipe.encode_prompt(wanted, "cpu", 1, False)
            assert pooled is None
        else:
            want, _, want_pooled, _ = pipe.encode_prompt(wanted, None, None, do_classifier_free_guidance=False,
                                                         max_sequence_length=length)
            torch.testing.assert_close(pooled, want_pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cond, want, rtol=1e-5, atol=1e-5)
    assert (text.token_ids is not None) == trained
