import torch
from safetensors.torch import load_file

from humantune.models.generation import load_pipeline
from humantune.models.shipping import check_float32_on_load, model_size_mb, ship_model
from tests.models.test_tiny import _sd3


def test_shipping_halves_the_denoiser_and_loads_as_float32(tmp_path, tokenizer):
    pipe = _sd3(tokenizer)
    pipe.save_pretrained(tmp_path / "model")
    shipped = ship_model(tmp_path / "model", "tiny-x", assets=tmp_path / "assets")
    assert shipped == tmp_path / "assets" / "tiny-x"
    weights = load_file(shipped / "transformer" / "diffusion_pytorch_model.safetensors")
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    assert model_size_mb(shipped) < model_size_mb(tmp_path / "model")
    check_float32_on_load(shipped)
    reloaded = load_pipeline(shipped, dtype=None)
    original = pipe.transformer.state_dict()
    for k, v in reloaded.transformer.state_dict().items():
        torch.testing.assert_close(v, original[k].half().float())
