"""Tiny bases are stock diffusers pipelines: built here, saved, reloaded with the stock classes, and encoded the way
the pipelines encode prompts."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline, StableDiffusionPipeline

from humantune.models import tiny
from humantune.models.generation import generate_images, load_pipeline

TEXT = tiny.TextEncoderConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                              projection_dim=16, max_length=16)
VAE = tiny.VaeConfig(block_out_channels=[8, 16], norm_num_groups=4)


def _sd(tokenizer, vae=VAE):
    torch.manual_seed(0)
    _, ddim = tiny.ddpm_schedulers()
    unet = tiny.build_unet(tiny.UNetConfig(block_out_channels=[16, 32], attention_heads=2, norm_num_groups=4), 4, 8,
                           TEXT.hidden_size)
    return tiny.assemble_sd(tiny.build_vae(vae), tiny.build_text_encoder(TEXT, tokenizer), tokenizer, unet, ddim)


def _sd3(tokenizer):
    torch.manual_seed(0)
    tr = tiny.build_transformer(tiny.TransformerConfig(num_layers=1, num_attention_heads=2, attention_head_dim=8,
                                                       pos_embed_max_size=8, max_sequence_length=4), 4, 8, TEXT)
    return tiny.assemble_sd3(tiny.build_vae(VAE, shift_factor=0.0), tiny.build_text_encoder_with_projection(TEXT, tokenizer),
                             tokenizer, tiny.build_text_encoder_with_projection(TEXT, tokenizer), tokenizer, tr,
                             FlowMatchEulerDiscreteScheduler())


def test_sd_encoding_matches_the_pipeline(tokenizer):
    pipe = _sd(tokenizer)
    ids = tokenizer(["a man in red"], padding="max_length", max_length=16, return_tensors="pt").input_ids
    with torch.no_grad():
        ours = tiny.encode_prompt_sd(pipe.text_encoder, ids)
        theirs, _ = pipe.encode_prompt("a man in red", "cpu", 1, False)
    torch.testing.assert_close(ours, theirs)


def test_sd3_encoding_matches_the_pipeline(tokenizer):
    pipe = _sd3(tokenizer)
    ids = tokenizer(["a man lying"], padding="max_length", max_length=16, return_tensors="pt").input_ids
    with torch.no_grad():
        embeds, pooled = tiny.encode_prompt_sd3(pipe.text_encoder, pipe.text_encoder_2, ids, ids,
                                                pipe.transformer.config.joint_attention_dim, 4)
        theirs, _, theirs_pooled, _ = pipe.encode_prompt("a man lying", None, None, do_classifier_free_guidance=False,
                                                         max_sequence_length=4)
    assert embeds.shape == (1, 16 + 4, 2 * TEXT.hidden_size)
    torch.testing.assert_close(embeds, theirs)
    torch.testing.assert_close(pooled, theirs_pooled)


@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_saved_pipelines_reload_with_stock_classes_and_generate(tokenizer, tmp_path, family):
    pipe = _sd(tokenizer) if family == "sd" else _sd3(tokenizer)
    pipe.save_pretrained(tmp_path / "model")
    cls = StableDiffusionPipeline if family == "sd" else StableDiffusion3Pipeline
    extra = {} if family == "sd" else {"text_encoder_3": None, "tokenizer_3": None}   # diffusers' T5-less loading
    stock = cls.from_pretrained(tmp_path / "model", **extra)
    ours = load_pipeline(tmp_path / "model")                                        # finds the absent T5 itself
    assert type(ours) is cls
    kw = dict(num_inference_steps=2, height=16, width=16, guidance_scale=2.0)
    if family == "sd3":
        kw["max_sequence_length"] = 4
    a = generate_images(stock, ["a man in red", "a man lying"], seed=5, progress=False, **kw)
    b = generate_images(ours, ["a man lying"], seed=6, progress=False, **kw)
    assert [im.size for im in a] == [(16, 16), (16, 16)]
    assert list(a[1].getdata()) == list(b[0].getdata())      # image i uses seed + i, whatever the batch


def test_generate_with_a_pose_controlnet_writes_images_and_metadata(tokenizer, tmp_path):
    import json

    from diffusers import ControlNetModel

    from humantune.models.generation import generate

    pipe = _sd(tokenizer, tiny.VaeConfig(block_out_channels=[8, 8, 8, 8], norm_num_groups=4))   # 8x, as ControlNet assumes
    pipe.save_pretrained(tmp_path / "model")
    ControlNetModel.from_unet(pipe.unet).save_pretrained(tmp_path / "controlnet")
    kp = [[8.0, 3.0, 2.0]] * 17
    (tmp_path / "pose.json").write_text(json.dumps(kp))
    n = generate(tmp_path / "model", ["a man in red"], tmp_path / "out", n=2, seed=3, pose=str(tmp_path / "pose.json"),
                 controlnet=str(tmp_path / "controlnet"), steps=2, size=64, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "out" / "metadata.jsonl").read_text().splitlines()]
    assert n == 2 and [r["seed"] for r in rows] == [3, 4] and rows[0]["keypoints"] == [kp]
    assert all((tmp_path / "out" / r["file_name"]).is_file() for r in rows)
