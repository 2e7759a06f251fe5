"""Checks humantune.models.generation makes before diffusers loads anything: each fault in a pipeline folder, a
LoRA or a size is one line naming the file or the option."""

import json

import pytest
import torch
from safetensors.torch import save_file

from humantune.errors import HumantuneError
from humantune.models.generation import (
    check_image_size,
    check_pipeline_dir,
    read_prompts,
    resolve_model,
    shipped_models,
    size_multiple_of_dir,
)
from humantune.models.lora import check_lora


@pytest.fixture()
def model_copy(tmp_path):
    """A copy of the shipped tiny-sd whose files are symlinks (replace one to damage it)."""
    src = shipped_models()["tiny-sd"]
    dst = tmp_path / "m"
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return dst


def _replace(path, data: bytes):
    path.unlink()
    path.write_bytes(data)


def one_line(excinfo) -> str:
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_every_fault_of_a_pipeline_folder_names_its_file(model_copy):
    check_pipeline_dir(model_copy)  # intact
    unet = model_copy / "unet" / "diffusion_pytorch_model.safetensors"
    good = unet.read_bytes()
    _replace(unet, good[: len(good) // 3])
    with pytest.raises(HumantuneError) as e:
        resolve_model(model_copy)
    assert one_line(e).startswith(f"model weights file '{unet}' is damaged (truncated, empty or not a safetensors "
                                  "file: incomplete metadata")
    _replace(unet, good)
    index = json.loads((model_copy / "model_index.json").read_text())
    for change, expected in [({"_class_name": "NotAPipeline"}, "'NotAPipeline' is not a diffusers pipeline class"),
                             ({"unet": ["diffusers", "AutoencoderKL"]},
                              "says unet is AutoencoderKL, but " + str(model_copy / "unet" / "config.json")),
                             ({"controlnet": ["diffusers", "ControlNetModel"]}, "has no controlnet/ folder")]:
        _replace(model_copy / "model_index.json", json.dumps({**index, **change}).encode())
        with pytest.raises(HumantuneError, match=expected) as e:
            check_pipeline_dir(model_copy)
        one_line(e)
    _replace(model_copy / "model_index.json", b"{")
    with pytest.raises(HumantuneError, match="model_index.json: cannot read the pipeline index"):
        check_pipeline_dir(model_copy)


def test_image_sides_must_be_a_multiple_the_model_can_take():
    sd, sd3 = shipped_models()["tiny-sd"], shipped_models()["tiny-sd3"]
    assert size_multiple_of_dir(sd) == 8      # f4 VAE, and StableDiffusionPipeline checks multiples of 8
    assert size_multiple_of_dir(sd3) == 8     # f4 VAE x patch size 2
    check_image_size(sd, 128, 128)
    with pytest.raises(HumantuneError, match=r"^--size 100: the model needs image sides that are a multiple of 8 "
                                             r"\(e\.g\. 96 or 104\)$"):
        check_image_size(sd, 100, 100)
    with pytest.raises(HumantuneError, match="--size 4: .* multiple of 8 .e.g. 8 or 16"):
        check_image_size(sd3, 4, 4)


def test_damaged_or_foreign_lora_is_refused_before_loading(tmp_path):
    (tmp_path / "lora").mkdir()
    weights = tmp_path / "lora" / "pytorch_lora_weights.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}")
    with pytest.raises(HumantuneError, match=f"cannot load LoRA: weights file '{weights}' is damaged"):
        check_lora(tmp_path / "lora")
    save_file({"transformer.blocks.0.lora_A.weight": torch.zeros(2, 2)}, str(weights))
    assert check_lora(tmp_path / "lora", shipped_models()["tiny-sd3"]) == tmp_path / "lora"
    with pytest.raises(HumantuneError, match="is for components transformer, which the StableDiffusionPipeline"):
        check_lora(tmp_path / "lora", shipped_models()["tiny-sd"])


def test_prompt_files_that_cannot_be_read(tmp_path):
    (tmp_path / "p.txt").write_bytes(b"a man \xff standing\n")
    with pytest.raises(HumantuneError, match=r"prompts file '.*p.txt' is not UTF-8 text \(byte 6"):
        read_prompts(tmp_path / "p.txt")
    (tmp_path / "p.txt").write_text("# only a comment\n\n")
    with pytest.raises(HumantuneError, match="has no prompts"):
        read_prompts(tmp_path / "p.txt")
