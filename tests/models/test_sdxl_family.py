"""The sdxl family: the table entry, the one conditioning function of every family's denoiser call (SDXL's pooled
text_embeds + time_ids as the pipeline feeds its UNet), and prompt encoding equal to the pipeline's encode_prompt
with frozen and with trained text encoders."""

import pytest
import torch

from humantune.models import tiny
from humantune.models.encoding import PromptConditioning
from humantune.models.families import FAMILIES, denoise, denoiser_conditioning, family_of, sdxl_time_ids
from humantune.models.lora import LoraConfig, PipelineLoraConfig, add_adapters
from humantune.models.tokenizer import tokenize
from tests.tiny_pipelines import SIZE, build_sdxl_pipeline

PROMPTS = ["a man in a red shirt and blue jeans lying on the grass", "a woman in a blue dress walking on the street"]


@pytest.fixture(scope="module")
def pipe():
    return build_sdxl_pipeline()


def test_the_sdxl_family_names_components_the_pipeline_has(pipe):
    family = family_of(pipe)
    assert family is FAMILIES["sdxl"] and family_of(type(pipe)) is family
    assert (family.denoiser, family.objective, family.pooled) == ("unet", "ddpm", "text_time")
    for component in (family.denoiser,) + family.text_encoders + family.tokenizers:
        assert pipe.components[component] is not None, component
    assert family.trainable == ("unet", "text_encoder", "text_encoder_2")


def test_time_ids_are_original_size_crop_and_target_size():
    ids = sdxl_time_ids(1024, 768, 3)
    assert ids.shape == (3, 6) and ids.dtype == torch.float32
    assert ids.tolist() == [[1024.0, 768.0, 0.0, 0.0, 1024.0, 768.0]] * 3


def test_conditioning_keywords_per_family():
    embeds, pooled = torch.zeros(2, 5, 8), torch.ones(2, 4)
    assert denoiser_conditioning(FAMILIES["sd"], embeds, None).keys() == {"encoder_hidden_states"}
    sd3 = denoiser_conditioning(FAMILIES["sd3"], embeds, pooled)
    assert sd3.keys() == {"encoder_hidden_states", "pooled_projections"} and sd3["pooled_projections"] is pooled
    xl = denoiser_conditioning(FAMILIES["sdxl"], embeds.half(), pooled, (32, 48))
    assert xl["added_cond_kwargs"]["text_embeds"] is pooled
    assert xl["added_cond_kwargs"]["time_ids"].dtype == torch.float16                 # the embeddings' dtype
    assert xl["added_cond_kwargs"]["time_ids"].tolist() == [[32, 48, 0, 0, 32, 48]] * 2
    with pytest.raises(ValueError, match="image size"):
        denoiser_conditioning(FAMILIES["sdxl"], embeds, pooled)
    with pytest.raises(ValueError, match="pooled"):
        denoiser_conditioning(FAMILIES["sd3"], embeds, None)


def test_denoise_feeds_the_unet_what_the_pipeline_feeds_it(pipe):
    """Capture the UNet's inputs during a stock pipeline call (guidance 1: no unconditional half) and recompute
    the output with :func:`denoise` from PromptConditioning's embeddings: the same numbers."""
    seen = []
    hook = pipe.unet.register_forward_hook(lambda m, args, kwargs, out: seen.append((args, kwargs, out.sample
                                                                                      if hasattr(out, "sample")
                                                                                      else out[0])),
                                           with_kwargs=True)
    try:
        pipe(prompt=PROMPTS, num_inference_steps=1, guidance_scale=1.0, height=SIZE, width=SIZE, output_type="latent",
             generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    (args, kwargs, out), = seen
    noisy, t = args[0], args[1]
    text = PromptConditioning(pipe, FAMILIES["sdxl"], PROMPTS, trained=False)
    embeds, pooled = text(torch.tensor([0, 1]))
    torch.testing.assert_close(kwargs["encoder_hidden_states"], embeds)
    torch.testing.assert_close(kwargs["added_cond_kwargs"]["time_ids"], sdxl_time_ids(SIZE, SIZE, 2))
    with torch.no_grad():
        ours = denoise(FAMILIES["sdxl"], pipe.unet, noisy, t, embeds, pooled, (SIZE, SIZE))
    torch.testing.assert_close(ours, out, rtol=1e-5, atol=1e-5)
    with torch.no_grad():   # the time_ids matter: another size gives another output
        other = denoise(FAMILIES["sdxl"], pipe.unet, noisy, t, embeds, pooled, (2 * SIZE, SIZE))
    assert (other - out).abs().max() > 1e-4


def test_encode_prompt_sdxl_matches_the_pipeline(pipe):
    ids = tokenize(pipe.tokenizer, PROMPTS)
    with torch.no_grad():
        embeds, pooled = tiny.encode_prompt_sdxl(pipe.text_encoder, pipe.text_encoder_2, ids,
                                                 tokenize(pipe.tokenizer_2, PROMPTS))
        theirs, _, theirs_pooled, _ = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False)
    assert embeds.shape == (2, pipe.tokenizer.model_max_length, pipe.unet.config.cross_attention_dim)
    assert pooled.shape == (2, pipe.text_encoder_2.config.projection_dim)
    torch.testing.assert_close(embeds, theirs)
    torch.testing.assert_close(pooled, theirs_pooled)


@pytest.mark.parametrize("trained", [False, True])
def test_prompt_conditioning_equals_the_pipelines_encode_prompt(trained):
    pipe = build_sdxl_pipeline(seed=1)
    family = FAMILIES["sdxl"]
    if trained:   # adapters with non-zero B on both encoders: the trained path must see them
        add_adapters(pipe.components, PipelineLoraConfig(text_encoder=LoraConfig(rank=2)).groups(family))
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name in family.text_encoders:
                for n, p in pipe.components[name].named_parameters():
                    if "lora_B" in n:
                        p.copy_(torch.randn(p.shape, generator=g))
    captions = [PROMPTS[1], PROMPTS[0], PROMPTS[1]]
    text = PromptConditioning(pipe, family, captions, trained)
    samples = torch.tensor([2, 0, 1])
    with torch.no_grad():
        cond, pooled = text(samples, {k: pipe.components[k] for k in family.text_encoders})
        want, _, want_pooled, _ = pipe.encode_prompt([captions[i] for i in samples.tolist()],
                                                     do_classifier_free_guidance=False)
    torch.testing.assert_close(cond, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, want_pooled, rtol=1e-5, atol=1e-5)
    assert (text.token_ids is not None) == trained
    if trained:   # the trained path re-encodes: other encoder weights, other embeddings
        with torch.no_grad():
            for p in pipe.text_encoder_2.parameters():
                p.add_(0.05)
            moved, moved_pooled = text(samples, {k: pipe.components[k] for k in family.text_encoders})
        assert (moved - cond).abs().max() > 1e-3 and (moved_pooled - pooled).abs().max() > 1e-3
