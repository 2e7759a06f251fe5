"""LoRA adapters: which layers get them, that they start as a no-op, and that what humantune saves is loaded by stock
diffusers' ``load_lora_weights`` into a pipeline that then computes exactly what the adapted modules computed."""

import pytest
import torch
from diffusers import DiffusionPipeline

from humantune.errors import HumantuneError
from humantune.models import lora
from tests.tiny_pipelines import TEXT, TRANSFORMER, build_pipeline, save_pipeline

PROMPT = "a man in a red shirt and blue jeans lying on the grass"


def _wrapped(model) -> set[str]:
    """Names of the layers peft actually wrapped (they own a lora_A)."""
    return {name for name, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)}


def test_unet_targets_are_the_attention_projections():
    unet = build_pipeline("sd").unet
    names = lora.matching_modules(unet, lora.UNET_ATTENTION)
    # tiny UNet: 1 cross-attn down block, 1 up block (layers_per_block + 1 = 2 transformers), 1 mid block = 4
    # transformer blocks, each with attn1 (self) and attn2 (cross), each with 4 projections.
    assert len(names) == 4 * 2 * 4
    suffixes = {"to_out.0" if n.endswith("to_out.0") else n.rsplit(".", 1)[-1] for n in names}
    assert suffixes == set(lora.UNET_ATTENTION)
    assert not any("ff." in n or "proj_in" in n or n.endswith("to_out.1") for n in names)
    wrapped = lora.add_lora(unet, rank=2)
    assert set(wrapped) == set(names) == _wrapped(unet)
    unet = build_pipeline("sd").unet
    extra = lora.matching_modules(unet, lora.UNET_ATTENTION + lora.UNET_TRANSFORMER_EXTRA)
    assert len(extra) == len(names) + 4 * 2 + 4 * 2  # + ff.net.0.proj, ff.net.2 per block; proj_in/out per transformer
    assert isinstance(unet.get_submodule(next(n for n in extra if n.endswith("proj_in"))), torch.nn.Conv2d)
    assert set(lora.add_lora(unet, 2, target_modules=lora.UNET_ATTENTION + lora.UNET_TRANSFORMER_EXTRA)) \
        == set(extra) == _wrapped(unet)


def test_sd3_targets_image_stream_by_default_and_text_stream_on_request():
    transformer = build_pipeline("sd3").transformer
    names = lora.matching_modules(transformer, lora.SD3_ATTENTION)
    assert len(names) == TRANSFORMER.num_layers * 4
    assert all(n.startswith("transformer_blocks.") and ".attn." in n for n in names)
    context = lora.matching_modules(transformer, lora.SD3_CONTEXT)
    # the last joint block is context_pre_only: it has add_q/k/v_proj but no to_add_out
    assert len(context) == TRANSFORMER.num_layers * 3 + (TRANSFORMER.num_layers - 1)
    wrapped = lora.add_lora(transformer, 4, target_modules=lora.SD3_ATTENTION + lora.SD3_CONTEXT)
    assert set(wrapped) == set(names) | set(context) == _wrapped(transformer)


@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_clip_targets_are_the_self_attention_projections(family):
    encoder = build_pipeline(family).text_encoder
    names = lora.matching_modules(encoder, lora.default_target_modules(encoder))
    assert len(names) == TEXT.num_hidden_layers * 4
    assert {n.rsplit(".", 1)[-1] for n in names} == {"q_proj", "k_proj", "v_proj", "out_proj"}
    assert not any("mlp" in n for n in names)


def test_new_adapter_is_a_no_op_and_only_it_trains():
    pipe = build_pipeline("sd3")
    x = torch.randn(1, 4, 16, 16)
    kw = dict(encoder_hidden_states=torch.randn(1, 20, 64), pooled_projections=torch.randn(1, 32),
              timestep=torch.tensor([500.0]))
    with torch.no_grad():
        before = pipe.transformer(hidden_states=x, **kw).sample
    lora.add_lora(pipe.transformer, rank=4, alpha=8)
    trainable = [n for n, p in pipe.transformer.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert len(lora.lora_parameters(pipe.transformer)) == len(trainable) == 2 * TRANSFORMER.num_layers * 4
    with torch.no_grad():
        after = pipe.transformer(hidden_states=x, **kw).sample
    torch.testing.assert_close(after, before, rtol=0, atol=0)        # B = 0 at initialisation


def test_targets_that_match_nothing_are_a_one_line_error():
    with pytest.raises(HumantuneError, match="match no layer of SD3Transformer2DModel"):
        lora.add_lora(build_pipeline("sd3").transformer, 4, target_modules=["q_proj"])
    with pytest.raises(HumantuneError, match="rank must be at least 1"):
        lora.add_lora(build_pipeline("sd").unet, 0)


def _randomise(*models):
    g = torch.Generator().manual_seed(1)
    for m in models:
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.data = torch.randn(p.shape, generator=g) * 0.5


def _outputs(pipe, family):
    """The denoiser's output on a fixed input, conditioned on the pipeline's own prompt encoding."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 16, 16, generator=g)
    with torch.no_grad():
        if family == "sd":
            cond, _ = pipe.encode_prompt(PROMPT, "cpu", 1, False)
            return pipe.unet(x, torch.tensor([300]), cond).sample, cond
        cond, _, pooled, _ = pipe.encode_prompt(PROMPT, None, None, do_classifier_free_guidance=False,
                                                max_sequence_length=TRANSFORMER.max_sequence_length)
        return pipe.transformer(hidden_states=x, encoder_hidden_states=cond, pooled_projections=pooled,
                                timestep=torch.tensor([300.0])).sample, cond


@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_saved_lora_loads_with_stock_diffusers_and_reproduces_the_adapted_outputs(tmp_path, family):
    base_dir = save_pipeline(family, tmp_path / "base")
    pipe = DiffusionPipeline.from_pretrained(base_dir, **({} if family == "sd" else
                                                          {"text_encoder_3": None, "tokenizer_3": None}))
    denoiser = "unet" if family == "sd" else "transformer"
    encoders = ["text_encoder"] + (["text_encoder_2"] if family == "sd3" else [])
    base_out, base_cond = _outputs(pipe, family)
    lora.add_lora(pipe.components[denoiser], rank=4, alpha=2.0)            # α ≠ r: the metadata must carry it
    for k in encoders:
        lora.add_lora(pipe.components[k], rank=2)
    _randomise(*(pipe.components[k] for k in [denoiser] + encoders))
    tuned_out, tuned_cond = _outputs(pipe, family)
    assert (tuned_out - base_out).abs().max() > 1e-2 and (tuned_cond - base_cond).abs().max() > 1e-2

    path = lora.save_lora(pipe, tmp_path / "lora", {k: pipe.components[k] for k in [denoiser] + encoders})
    assert path.name == "pytorch_lora_weights.safetensors" and path.is_file()

    fresh = DiffusionPipeline.from_pretrained(base_dir, **({} if family == "sd" else
                                                           {"text_encoder_3": None, "tokenizer_3": None}))
    fresh.load_lora_weights(str(tmp_path / "lora"))                        # stock diffusers
    got_out, got_cond = _outputs(fresh, family)
    torch.testing.assert_close(got_cond, tuned_cond, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_out, tuned_out, rtol=1e-5, atol=1e-5)

    fused = lora.load_lora(DiffusionPipeline.from_pretrained(
        base_dir, **({} if family == "sd" else {"text_encoder_3": None, "tokenizer_3": None})), tmp_path, fuse=True)
    assert not lora.has_lora(fused.components[denoiser]) or not fused.get_active_adapters()
    fused_out, _ = _outputs(fused, family)
    torch.testing.assert_close(fused_out, tuned_out, rtol=1e-4, atol=1e-4)


def test_lora_dir_resolution_and_bad_weights_are_one_line_errors(tmp_path):
    (tmp_path / "run" / "lora").mkdir(parents=True)
    (tmp_path / "run" / "lora" / lora.LORA_WEIGHTS_NAME).write_bytes(b"not safetensors")
    assert lora.resolve_lora_dir(tmp_path / "run") == tmp_path / "run" / "lora"
    assert lora.resolve_lora_dir(tmp_path / "run" / "lora" / lora.LORA_WEIGHTS_NAME) == tmp_path / "run" / "lora"
    with pytest.raises(HumantuneError, match="no LoRA weights at"):
        lora.resolve_lora_dir(tmp_path / "nowhere")
    with pytest.raises(HumantuneError, match="cannot load LoRA") as e:
        lora.load_lora(build_pipeline("sd"), tmp_path / "run")
    assert "\n" not in str(e.value)


def test_pipeline_lora_config_gives_each_module_group_its_own_rank_and_learning_rate():
    from humantune.models.families import FAMILIES

    pipe = build_pipeline("sd3")
    cfg = lora.PipelineLoraConfig(denoiser=lora.LoraConfig(rank=8),
                                  text_encoder=lora.LoraConfig(rank=64, learning_rate=5e-6))
    groups = cfg.groups(FAMILIES["sd3"])
    assert list(groups) == ["transformer", "text_encoder", "text_encoder_2"]
    adapted = lora.add_adapters(pipe.components, groups)
    assert set(adapted) == set(groups)
    assert pipe.transformer.peft_config["default"].r == 8 and pipe.text_encoder_2.peft_config["default"].r == 64
    assert all(p.dtype == torch.float32 for k in groups for p in lora.lora_parameters(pipe.components[k]))
    param_groups = lora.lora_param_groups(pipe.components, groups, learning_rate=1e-4)
    assert [g["lr_scale"] for g in param_groups] == [1.0, pytest.approx(0.05)]
    text = {id(p) for k in ("text_encoder", "text_encoder_2") for p in lora.lora_parameters(pipe.components[k])}
    assert {id(p) for p in param_groups[1]["params"]} == text
    assert lora.PipelineLoraConfig().groups(FAMILIES["sd"]) == {"unet": lora.LoraConfig()}   # text encoders frozen


def test_lora_config_rejects_bad_values():
    for bad in ({"rank": 0}, {"dropout": 1.0}, {"learning_rate": 0.0}):
        with pytest.raises(ValueError):
            lora.LoraConfig(**bad)
