"""The residual blocks of the denoisers users fine-tune, as named units, and a hook that skips one.

Ent-Prog (``shared/papers.md`` §3) ranks residual blocks by how much skipping each one inflates the entropy of the
predicted noise (CEI) and then trains only the top-ranked ones. :func:`residual_blocks` lists a denoiser's units
in forward order, each named by its exact module path (``transformer_blocks.1`` is never ``transformer_blocks.10``:
names are compared whole, not by prefix, unlike AutoProg-Zero's patterns):

- ``SD3Transformer2DModel``: ``transformer_blocks.i`` (JointTransformerBlock; returns the pair (encoder_hidden,
  hidden), the last block with ``context_pre_only`` returns (None, hidden));
- ``Transformer2DModel`` / ``DiTTransformer2DModel`` / ``PixArtTransformer2DModel``: ``transformer_blocks.i``
  (BasicTransformerBlock, returns hidden);
- ``LatteTransformer3DModel``: ``transformer_blocks.i`` (spatial) and ``temporal_transformer_blocks.i`` as separate
  units, interleaved in forward order (spatial i, temporal i, spatial i+1, …);
- ``UNet2DConditionModel``: every ``resnets.j`` and ``attentions.j`` inside ``down_blocks`` / ``mid_block`` /
  ``up_blocks`` (in forward order: a mid block runs resnet 0, then (attention j, resnet j+1));
- ``WanTransformer3DModel``: ``blocks.i`` (returns hidden).

:func:`skip_block` makes a unit return its input(s) unchanged — the identity in place of the residual branch. A
ResnetBlock2D that changes the channel count or resolution cannot return its input; its skip returns its shortcut
path (the up/downsampled input through ``conv_shortcut``), i.e. the residual branch removed.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from humantune.errors import HumantuneError


@dataclass
class Block:
    """One residual unit: its exact module path ``name``, the module, and ``kind`` (how it is skipped)."""

    name: str
    module: torch.nn.Module
    kind: str


def _indexed(prefix: str, modules, kind: str) -> list[Block]:
    return [Block(f"{prefix}.{i}", m, kind) for i, m in enumerate(modules)]


def _unet_blocks(unet) -> list[Block]:
    blocks: list[Block] = []
    for part, items in (("down_blocks", list(enumerate(unet.down_blocks))), ("mid_block", [(None, unet.mid_block)]),
                        ("up_blocks", list(enumerate(unet.up_blocks)))):
        for i, block in items:
            if block is None:
                continue
            prefix = part if i is None else f"{part}.{i}"
            resnets = list(block.resnets)
            attentions = list(getattr(block, "attentions", None) or [])
            if part == "mid_block":   # resnet 0, then (attention j, resnet j + 1)
                order = [("resnets", 0, resnets[0])]
                for j, attention in enumerate(attentions):
                    order += [("attentions", j, attention), ("resnets", j + 1, resnets[j + 1])]
            else:                     # (resnet j, attention j) pairs
                order = []
                for j, resnet in enumerate(resnets):
                    order.append(("resnets", j, resnet))
                    if j < len(attentions):
                        order.append(("attentions", j, attentions[j]))
            for what, j, module in order:
                blocks.append(Block(f"{prefix}.{what}.{j}", module, "resnet" if what == "resnets" else "spatial"))
    return blocks


def residual_blocks(model: torch.nn.Module) -> list[Block]:
    """The residual units of a supported denoiser, in forward order (see the module docstring); HumantuneError
    naming the class otherwise."""
    name = type(model).__name__
    if name == "SD3Transformer2DModel":
        return _indexed("transformer_blocks", model.transformer_blocks, "joint")
    if name in ("Transformer2DModel", "DiTTransformer2DModel", "PixArtTransformer2DModel"):
        return _indexed("transformer_blocks", model.transformer_blocks, "hidden")
    if name == "LatteTransformer3DModel":
        blocks = []
        for i, (spatial, temporal) in enumerate(zip(model.transformer_blocks, model.temporal_transformer_blocks)):
            blocks += [Block(f"transformer_blocks.{i}", spatial, "hidden"),
                       Block(f"temporal_transformer_blocks.{i}", temporal, "hidden")]
        return blocks
    if name == "UNet2DConditionModel":
        return _unet_blocks(model)
    if name == "WanTransformer3DModel":
        return _indexed("blocks", model.blocks, "hidden")
    raise HumantuneError(f"Ent-Prog does not know the residual blocks of a {name}; supported: SD3Transformer2DModel, "
                         "Transformer2DModel/DiT/PixArt, LatteTransformer3DModel, UNet2DConditionModel, "
                         "WanTransformer3DModel")


def blocks_by_name(model: torch.nn.Module, names: list[str]) -> list[Block]:
    """The units named exactly ``names`` (HumantuneError naming an unknown one)."""
    known = {b.name: b for b in residual_blocks(model)}
    missing = [n for n in names if n not in known]
    if missing:
        raise HumantuneError(f"no residual block named {missing[0]!r} in the {type(model).__name__} (its blocks: "
                             f"{', '.join(list(known)[:4])}, …)")
    return [known[n] for n in names]


# ---------------------------------------------------------------------------------------------------------- skipping


def _joint_skip(module, hidden_states, encoder_hidden_states, *args, **kwargs):
    """JointTransformerBlock: return both streams unchanged (None for the text stream of a context_pre_only block,
    as the block itself returns)."""
    return (None if module.context_pre_only else encoder_hidden_states), hidden_states


def _hidden_skip(module, hidden_states, *args, **kwargs):
    return hidden_states


def _spatial_skip(module, hidden_states, *args, **kwargs):
    """Transformer2DModel inside a UNet: its output is hidden + the attention branch; return hidden."""
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    signature = inspect.signature(type(module).forward).bind(module, hidden_states, *args, **kwargs)
    if not signature.arguments.get("return_dict", True):
        return (hidden_states,)
    return Transformer2DModelOutput(sample=hidden_states)


def _resnet_skip(module, input_tensor, *args, **kwargs):
    """ResnetBlock2D: (shortcut(x) + F(x)) / s with F removed: the input, up/downsampled and through conv_shortcut
    when the block changes resolution or channels."""
    x = input_tensor
    if module.upsample is not None:
        x = module.upsample(x)
    elif module.downsample is not None:
        x = module.downsample(x)
    if module.conv_shortcut is not None:
        x = module.conv_shortcut(x)
    return x / module.output_scale_factor


SKIPS: dict[str, Callable] = {"joint": _joint_skip, "hidden": _hidden_skip, "spatial": _spatial_skip,
                              "resnet": _resnet_skip}


@contextlib.contextmanager
def skip_block(block: Block) -> Iterator[None]:
    """Within the context, ``block.module`` returns its input(s) unchanged (its residual branch is not run at all:
    the module's ``forward`` is replaced on the instance, so gradient checkpointing wrappers call the skip too)."""
    module, skip = block.module, SKIPS[block.kind]
    module.forward = lambda *args, **kwargs: skip(module, *args, **kwargs)
    try:
        yield
    finally:
        del module.forward
