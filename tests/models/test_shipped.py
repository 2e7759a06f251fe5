"""The bases shipped in humantune/assets/models load with stock diffusers and generate at their declared size."""

import json

import pytest

from humantune.cli import main
from humantune.models.generation import load_pipeline, model_info, shipped_models
from humantune.models.shipping import check_float32_on_load

SHIPPED = shipped_models()


def test_tiny_sd_is_shipped():
    assert "tiny-sd" in SHIPPED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_loads_as_float32_and_generates(name, tmp_path, capsys):
    path = SHIPPED[name]
    check_float32_on_load(path)
    info = model_info(path)
    expected = {"sd": "StableDiffusionPipeline", "sd3": "StableDiffusion3Pipeline"}[info["family"]]
    assert json.loads((path / "model_index.json").read_text())["_class_name"] == expected
    assert type(load_pipeline(name)).__name__ == expected
    assert main(["generate", "--model", name, "--prompt", "a man in a red shirt and blue jeans standing on the grass",
                 "--n", "2", "--steps", "2", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "out" / "metadata.jsonl").read_text().splitlines()]
    from PIL import Image

    size = info["generation"]["height"]
    assert [Image.open(tmp_path / "out" / r["file_name"]).size for r in rows] == [(size, size)] * 2
    assert main(["models", "path", name]) == 0 and str(path) in capsys.readouterr().out
