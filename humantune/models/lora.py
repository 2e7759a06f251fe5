"""LoRA adapters on the stock diffusers / transformers modules, saved in the format stock diffusers loads.

A LoRA (Hu et al. 2021) replaces a frozen linear layer W by W + (α / r)·B·A with A ∈ R^{r×k}, B ∈ R^{d×r} and
B = 0 at initialisation, so the adapted model starts out equal to the base; only A and B are trained. peft does the
wrapping (``model.add_adapter(LoraConfig(...))``, the path diffusers' own DreamBooth-LoRA scripts take), and the
pipelines' ``save_lora_weights`` writes ``pytorch_lora_weights.safetensors``, so ``pipe.load_lora_weights(DIR)``
in stock diffusers reads what humantune trains (tested for the sd, sdxl and sd3 families, text encoders
included).

Which layers get adapters (:func:`matching_modules`) follows peft's rule for a list of ``target_modules``: a module
is wrapped when its full name equals an entry or ends with ``"." + entry``. The defaults:

- ``UNet2DConditionModel`` (SD1.5 and SDXL families): the attention projections ``to_q``, ``to_k``, ``to_v``,
  ``to_out.0`` of every self- and cross-attention layer (:data:`UNET_ATTENTION`); :data:`UNET_TRANSFORMER_EXTRA`
  adds the transformer blocks' feed-forward and in/out projections.
- ``SD3Transformer2DModel`` (MMDiT): the image stream's ``to_q``/``to_k``/``to_v``/``to_out.0``
  (:data:`SD3_ATTENTION`, the reference setting of ``shared/papers.md`` §4); :data:`SD3_CONTEXT` adds the text
  stream's ``add_q_proj``/``add_k_proj``/``add_v_proj``/``to_add_out`` of the joint attention.
- CLIP text encoders: ``q_proj``/``k_proj``/``v_proj``/``out_proj`` (:data:`CLIP_ATTENTION`).

``target_modules: no_text`` (:data:`TARGET_PRESETS`, resolved per class by :func:`resolve_target_modules`) adapts
only projections whose input is not the text embedding, so the adapter cannot re-map what the prompt's words mean
(DreamBooth's language drift onto the instance prompts' words): in a UNet every self-attention projection
(``attn1.*``) and the cross-attention's query and output (``attn2.to_q``, ``attn2.to_out.0``) but not
``attn2.to_k``/``attn2.to_v`` (:data:`UNET_NO_TEXT`); in an MMDiT the image stream's projections
(:data:`SD3_ATTENTION`, the default) and none of the text stream's :data:`SD3_CONTEXT`. The preset is a plain
suffix list, so peft's own rule applies and stock ``load_lora_weights`` reads the result back (tested).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import torch

from humantune.config import option
from humantune.errors import HumantuneError
from humantune.io import atomic_path

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
"""The file diffusers' ``save_lora_weights`` writes and ``load_lora_weights(DIR)`` looks for."""

UNET_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
UNET_TRANSFORMER_EXTRA = ("proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
SD3_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
SD3_CONTEXT = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
CLIP_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")
UNET_NO_TEXT = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_out.0")
"""A UNet's attention projections that do not read the text embedding (cross-attention's to_k/to_v do)."""

DEFAULT_TARGETS = {
    "UNet2DConditionModel": UNET_ATTENTION,
    "SD3Transformer2DModel": SD3_ATTENTION,
    "CLIPTextModel": CLIP_ATTENTION,
    "CLIPTextModelWithProjection": CLIP_ATTENTION,
}
"""Default ``target_modules`` per model class."""

TARGET_PRESETS = {
    "no_text": {"UNet2DConditionModel": UNET_NO_TEXT, "SD3Transformer2DModel": SD3_ATTENTION},
}
"""Named ``target_modules``: preset name → model class → the suffix list it stands for."""

TargetPreset = Literal["no_text"]

LoraInit = Literal["gaussian", "default"]


def default_target_modules(model: torch.nn.Module) -> tuple[str, ...]:
    """The default LoRA target module names for ``model``'s class (:data:`DEFAULT_TARGETS`)."""
    name = type(model).__name__
    if name not in DEFAULT_TARGETS:
        raise HumantuneError(f"no default LoRA targets for {name}; give target_modules explicitly "
                             f"(known classes: {', '.join(DEFAULT_TARGETS)})")
    return DEFAULT_TARGETS[name]


def resolve_target_modules(model: torch.nn.Module, target_modules: Sequence[str] | str | None) -> tuple[str, ...]:
    """The suffix list peft gets for ``model``: None → :func:`default_target_modules`; a preset name
    (:data:`TARGET_PRESETS`) → that preset's list for ``model``'s class; a list → itself. HumantuneError (one line)
    for an unknown preset or a class the preset has no list for."""
    if target_modules is None:
        return default_target_modules(model)
    if isinstance(target_modules, str):
        if target_modules not in TARGET_PRESETS:
            raise HumantuneError(f"unknown LoRA target_modules preset '{target_modules}' (presets: "
                                 f"{', '.join(TARGET_PRESETS)}; or give a list of layer names)")
        by_class, name = TARGET_PRESETS[target_modules], type(model).__name__
        if name not in by_class:
            raise HumantuneError(f"LoRA target_modules preset '{target_modules}' has no layers for {name} "
                                 f"(it covers {', '.join(by_class)}); give a list of layer names")
        return by_class[name]
    return tuple(target_modules)


ADAPTABLE = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Embedding)
"""Layer types peft's LoRA wraps (a UNet's proj_in/proj_out are 1×1 convolutions unless use_linear_projection)."""


def matching_modules(model: torch.nn.Module, target_modules: Sequence[str]) -> list[str]:
    """Full names of the layers of ``model`` that peft wraps for ``target_modules``: layers of an
    :data:`ADAPTABLE` type whose name equals an entry or ends with ``"." + entry`` (peft's rule for a list)."""
    targets = tuple(target_modules)
    return [name for name, module in model.named_modules()
            if isinstance(module, ADAPTABLE) and any(name == t or name.endswith("." + t) for t in targets)]


def add_lora(model: torch.nn.Module, rank: int, alpha: float | None = None, dropout: float = 0.0,
             init: LoraInit = "gaussian", target_modules: Sequence[str] | str | None = None) -> list[str]:
    """Freeze ``model`` and add a LoRA adapter (peft ``LoraConfig`` via ``model.add_adapter``); return the names of
    the wrapped layers.

    rank r, alpha α (None: α = r, i.e. scale 1, as diffusers' scripts), dropout on the adapter input, init:
    ``gaussian`` (A ~ N(0, 1/r), diffusers' scripts) or ``default`` (peft's Kaiming-uniform A); B = 0 in both, so
    the adapted model equals the base until it is trained. target_modules: a list, a preset name or None
    (:func:`resolve_target_modules`).
    HumantuneError when no layer matches, naming the class and the targets.
    """
    from peft import LoraConfig

    if rank < 1:
        raise HumantuneError(f"LoRA rank must be at least 1, got {rank}")
    targets = resolve_target_modules(model, target_modules)
    names = matching_modules(model, targets)
    if not names:
        raise HumantuneError(f"LoRA target_modules {list(targets)} match no layer of {type(model).__name__} "
                             f"(defaults for it: {list(DEFAULT_TARGETS.get(type(model).__name__, ()))})")
    model.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=float(alpha if alpha is not None else rank), lora_dropout=dropout,
                        init_lora_weights="gaussian" if init == "gaussian" else True, target_modules=list(targets))
    model.add_adapter(config)
    return names


@dataclass
class LoraConfig:
    """The LoRA adapter of one module group (the denoiser, or the text encoders): ΔW = (α/r)·B·A on its target
    layers, trained at its own learning rate."""

    rank: int = option(4, "LoRA rank r")
    alpha: float | None = option(None, "LoRA α (update scale α/r); null: α = r")
    dropout: float = option(0.0, "dropout on the adapter input")
    init: LoraInit = option("gaussian", "A ~ N(0, 1/r) (diffusers' scripts) or peft's Kaiming-uniform; B = 0 either "
                                        "way")
    target_modules: list[str] | TargetPreset | None = option(
        None, "layer names (suffixes) to adapt; null: the class's default (UNet and MMDiT: to_q, to_k, to_v, "
              "to_out.0; add SD3's text stream with add_q_proj, add_k_proj, add_v_proj, to_add_out; CLIP: q_proj, "
              "k_proj, v_proj, out_proj); no_text: only projections that do not read the text embedding (UNet: "
              "attn1.*, attn2.to_q, attn2.to_out.0; MMDiT: to_q, to_k, to_v, to_out.0)")
    learning_rate: float | None = option(None, "peak learning rate of this group (same schedule shape); null: the "
                                               "run's train.learning_rate")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be within [0, 1), got {self.dropout}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")


@dataclass
class PipelineLoraConfig:
    """The LoRA adapters of a text-to-image pipeline, one group per module kind, each with its own rank, targets and
    learning rate (HG-DPO: rank 8 on the UNet's attention, rank 64 on the text encoder)."""

    denoiser: LoraConfig = option(LoraConfig(), "the denoiser's adapter (UNet or MMDiT)")
    text_encoder: LoraConfig | None = option(None, "one adapter config for each CLIP text encoder (null: the text "
                                                   "encoders stay frozen)")

    def groups(self, family) -> dict[str, LoraConfig]:
        """Pipeline component name → its adapter config, for a :class:`~humantune.models.families.Family`."""
        groups = {family.denoiser: self.denoiser}
        if self.text_encoder is not None:
            groups.update({name: self.text_encoder for name in family.text_encoders})
        return groups


def add_adapters(components: dict[str, torch.nn.Module], groups: dict[str, LoraConfig]) -> dict[str, list[str]]:
    """Add the LoRA of ``groups[name]`` to ``components[name]`` for every named component (:func:`add_lora`), with
    the adapter weights in float32 (the optimizer's precision, whatever the frozen base's); return the wrapped
    layer names per component."""
    adapted = {}
    for name, cfg in groups.items():
        adapted[name] = add_lora(components[name], cfg.rank, cfg.alpha, cfg.dropout, cfg.init, cfg.target_modules)
        for p in lora_parameters(components[name]):
            p.data = p.data.float()
    return adapted


def lora_param_groups(components: dict[str, torch.nn.Module], groups: dict[str, LoraConfig],
                      learning_rate: float) -> list[dict]:
    """The engine's optimizer groups (``{"params", "lr_scale"}``): one per distinct learning rate, in the order of
    ``groups``; a group's scale is its ``learning_rate`` (null: the run's) over the run's ``learning_rate``."""
    by_scale: dict[float, list[torch.nn.Parameter]] = {}
    for name, cfg in groups.items():
        scale = (cfg.learning_rate or learning_rate) / learning_rate
        by_scale.setdefault(scale, []).extend(lora_parameters(components[name]))
    return [{"params": params, "lr_scale": scale} for scale, params in by_scale.items()]


def lora_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable LoRA parameters (A and B matrices) of ``model``."""
    return [p for name, p in model.named_parameters() if "lora_" in name and p.requires_grad]


def has_lora(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "peft_config", None))


def lora_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights of ``model`` (peft's ``get_peft_model_state_dict``), float32 on the CPU."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in get_peft_model_state_dict(model).items()}


def save_lora(pipeline_class: type | object, out_dir: str | os.PathLike,
              components: dict[str, torch.nn.Module]) -> Path:
    """Write the adapters of ``components`` (pipeline component name → module with a LoRA, e.g. ``{"transformer":
    ..., "text_encoder": ...}``) with the pipeline class's own ``save_lora_weights``, atomically, into ``out_dir``.

    Each module's ``LoraConfig`` goes along as adapter metadata, so a loader rebuilds the same rank and α.
    ``pipe.load_lora_weights(out_dir)`` of a stock pipeline of that class loads the result. ``out_dir`` is replaced
    whole. Returns the ``.safetensors`` path.
    """
    cls = pipeline_class if isinstance(pipeline_class, type) else type(pipeline_class)
    kwargs = {}
    for name, module in components.items():
        if not has_lora(module):
            raise HumantuneError(f"component '{name}' ({type(module).__name__}) has no LoRA adapter to save")
        kwargs[f"{name}_lora_layers"] = lora_state_dict(module)
        # sets (target_modules) as sorted lists: the file's bytes must not depend on the process's hash seed
        kwargs[f"{name}_lora_adapter_metadata"] = {k: sorted(v) if isinstance(v, set) else v
                                                   for k, v in module.peft_config["default"].to_dict().items()}
    if not kwargs:
        raise HumantuneError("no LoRA components to save")
    out = Path(out_dir)
    with atomic_path(out) as tmp:
        cls.save_lora_weights(save_directory=str(tmp), safe_serialization=True, **kwargs)
    return out / LORA_WEIGHTS_NAME


def resolve_lora_dir(path: str | os.PathLike) -> Path:
    """The directory holding ``pytorch_lora_weights.safetensors`` for ``path``: the directory itself, its ``lora/``
    subdirectory (a ``humantune train dreambooth-lora`` output directory), or the parent of the file.
    HumantuneError (one line) when there is none."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".safetensors":
        return p.parent
    for candidate in (p, p / "lora"):
        if (candidate / LORA_WEIGHTS_NAME).is_file():
            return candidate
    raise HumantuneError(f"no LoRA weights at '{p}': expected {LORA_WEIGHTS_NAME} in it or in its lora/ folder "
                         "(the output of `humantune train dreambooth-lora`)")


def check_lora(path: str | os.PathLike, model: str | os.PathLike | None = None) -> Path:
    """The LoRA directory of ``path`` (:func:`resolve_lora_dir`), checked before any model loads: its weights file
    complete, and, when ``model`` is a local pipeline directory, made for that pipeline's components (an SD3 LoRA's
    ``transformer.*`` weights do not fit a UNet pipeline). HumantuneError (one line, naming the file) otherwise."""
    from safetensors import safe_open

    from humantune.models.generation import check_weights_file

    directory = resolve_lora_dir(path)
    weights = directory / LORA_WEIGHTS_NAME
    check_weights_file(weights, "cannot load LoRA: weights")
    index = Path(model) / "model_index.json" if model is not None else None
    if index is not None and index.is_file():
        with safe_open(str(weights), "pt") as f:
            prefixes = sorted({k.split(".", 1)[0] for k in f.keys()})
        components = json.loads(index.read_text())
        if prefixes and not any(isinstance(components.get(p), list) and components[p][1] for p in prefixes):
            raise HumantuneError(f"LoRA '{weights}' is for components {', '.join(prefixes)}, which the "
                                 f"{components.get('_class_name', 'pipeline')} '{model}' does not have (a LoRA of "
                                 "another model family?)")
    return directory


def load_lora(pipe, path: str | os.PathLike, fuse: bool = False, scale: float = 1.0):
    """Load the LoRA at ``path`` (:func:`resolve_lora_dir`) onto ``pipe`` with stock ``pipe.load_lora_weights``;
    with ``fuse``, merge it into the weights (W + scale·ΔW) and drop the adapter layers. Returns ``pipe``.
    HumantuneError (one line) when the weights do not fit the pipeline."""
    directory = check_lora(path)
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    before = sum(len(getattr(m, "peft_config", None) or {}) for m in modules)
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()   # "no LoRA keys for text_encoder" notices; a real misfit is checked below
    try:
        pipe.load_lora_weights(str(directory), weight_name=LORA_WEIGHTS_NAME)
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HumantuneError(f"cannot load LoRA '{directory}' onto {type(pipe).__name__}: {first}") from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
    if sum(len(getattr(m, "peft_config", None) or {}) for m in modules) == before:
        # diffusers skips keys of components the pipeline does not have, silently
        from safetensors import safe_open

        with safe_open(str(directory / LORA_WEIGHTS_NAME), "pt") as f:
            prefixes = sorted({k.split(".", 1)[0] for k in f.keys()})
        raise HumantuneError(f"cannot load LoRA '{directory}' onto {type(pipe).__name__}: none of its weights "
                             f"({', '.join(prefixes)}) fit this pipeline's components")
    if fuse:
        pipe.fuse_lora(lora_scale=scale)
        pipe.unload_lora_weights()
    elif scale != 1.0:
        pipe.set_adapters(pipe.get_active_adapters(), adapter_weights=scale)
    return pipe


@contextlib.contextmanager
def adapters_disabled(*models: torch.nn.Module) -> Iterator[None]:
    """Run the block with the LoRA adapters of ``models`` switched off (the base model), then switch them back on.
    Models without an adapter are left alone."""
    active = [m for m in models if has_lora(m)]
    for m in active:
        m.disable_adapters()
    try:
        yield
    finally:
        for m in active:
            m.enable_adapters()
