"""The model families humantune trains, in one table: which diffusers pipeline class, which component is the
denoiser, which text encoders and tokenizers feed it. Models, recipes and studies read it instead of naming
components themselves."""

from __future__ import annotations

from dataclasses import dataclass

from humantune.errors import HumantuneError


@dataclass(frozen=True)
class Family:
    """One family: ``name`` (a config value), its ``pipeline`` class name, the ``denoiser`` component, the
    ``text_encoders`` and ``tokenizers`` components (in the order the prompt encoding consumes them) and the
    ``objective`` it is trained with (``ddpm``: ε/v-prediction; ``flow``: rectified flow)."""

    name: str
    pipeline: str
    denoiser: str
    text_encoders: tuple[str, ...]
    tokenizers: tuple[str, ...]
    objective: str

    @property
    def trainable(self) -> tuple[str, ...]:
        """The components a from-scratch base trains: the denoiser and the text encoders."""
        return (self.denoiser,) + self.text_encoders


FAMILIES = {
    "sd": Family("sd", "StableDiffusionPipeline", "unet", ("text_encoder",), ("tokenizer",), "ddpm"),
    "sd3": Family("sd3", "StableDiffusion3Pipeline", "transformer", ("text_encoder", "text_encoder_2"),
                  ("tokenizer", "tokenizer_2"), "flow"),
}
"""SD1.5-style UNet pipelines and SD3-style MMDiT pipelines (T5, when present, is only used to cache embeddings)."""


def family_of(pipe, what: str = "the model") -> Family:
    """The :class:`Family` of a pipeline instance or class; HumantuneError naming ``what`` and the known classes
    otherwise."""
    name = pipe.__name__ if isinstance(pipe, type) else type(pipe).__name__
    for family in FAMILIES.values():
        if family.pipeline == name:
            return family
    raise HumantuneError(f"{what} is a {name}; expected one of {', '.join(f.pipeline for f in FAMILIES.values())}")
