"""Put a trained pipeline into ``humantune/assets/models/NAME`` (what ``humantune models list`` shows).

The denoiser's weights (``unet/`` or ``transformer/``, most of a tiny base's bytes) are stored in float16 to halve
the repository size; every other component stays float32. diffusers up-casts a float16 checkpoint to the model's
float32 parameters on load, so ``from_pretrained`` with no dtype gives an all-float32 pipeline that runs on a CPU.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from humantune.errors import HumantuneError
from humantune.io import atomic_path
from humantune.models.generation import ASSETS

DENOISERS = ("unet", "transformer")
WEIGHTS = "diffusion_pytorch_model.safetensors"


def ship_model(model_dir: str | os.PathLike, name: str, assets: Path = ASSETS) -> Path:
    """Copy ``model_dir`` to ``assets/name`` with float16 denoiser weights; return the new directory."""
    src = Path(model_dir)
    if not (src / "model_index.json").is_file():
        raise HumantuneError(f"'{src}' is not a pipeline directory (no model_index.json)")
    dst = assets / name
    with atomic_path(dst) as tmp:
        shutil.copytree(src, tmp)
        for sub in DENOISERS:
            path = tmp / sub / WEIGHTS
            if path.is_file():
                state = load_file(path)
                save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path,
                          metadata={"format": "pt"})
    return dst


def model_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def check_float32_on_load(path: Path) -> None:
    """Raise unless every module of the shipped pipeline loads as float32 with a plain ``from_pretrained``."""
    from humantune.models.generation import load_pipeline

    pipe = load_pipeline(path, dtype=None)
    bad = {k: str(m.dtype) for k, m in pipe.components.items()
           if isinstance(m, torch.nn.Module) and m.dtype != torch.float32}
    if bad:
        raise HumantuneError(f"{path}: components load in a dtype other than float32: {bad}")
