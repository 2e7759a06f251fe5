"""Residual-block enumeration and the skip hook of every supported denoiser (tiny random models)."""

import pytest
import torch

from humantune.errors import HumantuneError
from humantune.models.blocks import blocks_by_name, residual_blocks, skip_block


def _sd3(num_layers=3):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=num_layers,
                                 attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                 caption_projection_dim=16, pooled_projection_dim=8, out_channels=4,
                                 pos_embed_max_size=8).eval()


def _capture(block):
    """Record the inputs and outputs of ``block.module`` during a forward pass."""
    seen = {}

    def hook(module, args, kwargs, output):
        seen.setdefault("args", (args, kwargs))
        seen.setdefault("out", output)

    return seen, block.module.register_forward_hook(hook, with_kwargs=True)


def _sd3_inputs():
    g = torch.Generator().manual_seed(1)
    return dict(hidden_states=torch.randn(2, 4, 8, 8, generator=g),
                encoder_hidden_states=torch.randn(2, 5, 16, generator=g),
                pooled_projections=torch.randn(2, 8, generator=g), timestep=torch.tensor([10.0, 500.0]))


def test_sd3_blocks_are_named_by_exact_index_and_skips_return_both_streams():
    model = _sd3(num_layers=11)
    blocks = residual_blocks(model)
    assert [b.name for b in blocks] == [f"transformer_blocks.{i}" for i in range(11)]
    assert blocks_by_name(model, ["transformer_blocks.1"])[0].module is model.transformer_blocks[1]
    with pytest.raises(HumantuneError, match="transformer_blocks.11"):
        blocks_by_name(model, ["transformer_blocks.11"])
    inputs = _sd3_inputs()
    for block in (blocks[1], blocks[-1]):   # a middle block and the context_pre_only last block
        seen, handle = _capture(block)
        with torch.no_grad(), skip_block(block):
            model(**inputs)
        handle.remove()
        kwargs = seen["args"][1]
        encoder_out, hidden_out = seen["out"]
        assert torch.equal(hidden_out, kwargs["hidden_states"])
        if block.module.context_pre_only:
            assert encoder_out is None
        else:
            assert torch.equal(encoder_out, kwargs["encoder_hidden_states"])
    # the skip is undone on exit: the block runs its own forward again
    seen, handle = _capture(blocks[1])
    with torch.no_grad():
        model(**inputs)
    handle.remove()
    assert not torch.equal(seen["out"][1], seen["args"][1]["hidden_states"])


def test_dit_and_latte_blocks_skip_to_their_hidden_input():
    from diffusers import DiTTransformer2DModel, LatteTransformer3DModel

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, num_layers=2,
                                sample_size=8, patch_size=2, num_embeds_ada_norm=1000, norm_num_groups=2).eval()
    latte = LatteTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                    num_layers=2, sample_size=8, patch_size=2, cross_attention_dim=16,
                                    video_length=3, caption_channels=16).eval()
    assert [b.name for b in residual_blocks(latte)] == ["transformer_blocks.0", "temporal_transformer_blocks.0",
                                                         "transformer_blocks.1", "temporal_transformer_blocks.1"]
    g = torch.Generator().manual_seed(2)
    runs = [(dit, dict(hidden_states=torch.randn(2, 4, 8, 8, generator=g), timestep=torch.tensor([1, 900]),
                       class_labels=torch.tensor([0, 3]))),
            (latte, dict(hidden_states=torch.randn(1, 4, 3, 8, 8, generator=g),
                         encoder_hidden_states=torch.randn(1, 4, 16, generator=g), timestep=torch.tensor([10])))]
    for model, inputs in runs:
        for block in residual_blocks(model):
            seen, handle = _capture(block)
            with torch.no_grad(), skip_block(block):
                model(**inputs)
            handle.remove()
            args, kwargs = seen["args"]
            first = args[0] if args else kwargs["hidden_states"]
            assert torch.equal(seen["out"], first), block.name


def test_unet_units_skip_to_input_or_shortcut():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
                                attention_head_dim=2, norm_num_groups=4).eval()
    names = [b.name for b in residual_blocks(unet)]
    assert names[:3] == ["down_blocks.0.resnets.0", "down_blocks.0.attentions.0", "down_blocks.1.resnets.0"]
    assert names[3:6] == ["mid_block.resnets.0", "mid_block.attentions.0", "mid_block.resnets.1"]
    g = torch.Generator().manual_seed(3)
    inputs = (torch.randn(1, 4, 8, 8, generator=g), torch.tensor([5]), torch.randn(1, 3, 8, generator=g))
    for block in residual_blocks(unet):
        seen, handle = _capture(block)
        with torch.no_grad(), skip_block(block):
            unet(*inputs)
        handle.remove()
        args, kwargs = seen["args"]
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("input_tensor"))
        out = seen["out"][0] if isinstance(seen["out"], tuple) else getattr(seen["out"], "sample", seen["out"])
        if block.kind == "resnet" and block.module.conv_shortcut is not None:
            with torch.no_grad():   # a channel-changing resnet keeps only its shortcut path
                assert torch.allclose(out, block.module.conv_shortcut(x) / block.module.output_scale_factor)
        else:
            assert torch.equal(out, x), block.name


def test_unsupported_model_is_a_one_line_error():
    with pytest.raises(HumantuneError, match="Linear"):
        residual_blocks(torch.nn.Linear(2, 2))
