"""The model card (``README.md``) written beside a pretrained tiny base: config, data, steps, wall time, loss curve
and a sample grid, so a checkpoint documents how to reproduce it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from humantune.config import config_to_dict
from humantune.models.families import FAMILIES
from humantune.train.engine import read_metrics


def _loss_plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    k = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    ax.plot(steps, loss, alpha=0.3, lw=0.8)
    ax.plot(steps[k - 1:], smooth, lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_model_card(model_dir: Path, cfg: Any, run_dir: Path, seconds: float, summary: dict,
                     generation: dict) -> None:
    """Write ``README.md``, ``loss.png`` and ``samples.png`` (the last validation grid) into ``model_dir``."""
    import shutil

    rows = read_metrics(run_dir / "denoiser")
    vae_rows = read_metrics(run_dir / "vae")
    if rows:
        _loss_plot(rows, model_dir / "loss.png", f"{cfg.name}: denoiser loss")
    grids = sorted((run_dir / "denoiser" / "validation").glob("samples_step_*.png"))
    if grids:
        shutil.copyfile(grids[-1], model_dir / "samples.png")
    pipeline_class = FAMILIES[cfg.family].pipeline
    absent = ", text_encoder_3=None, tokenizer_3=None" if cfg.family == "sd3" else ""  # no T5 (diffusers' T5-less usage)
    gen_args = ", ".join(f"{k}={v!r}" for k, v in generation.items())
    lines = [
        f"# {cfg.name}",
        "",
        f"A tiny `{pipeline_class}` trained from scratch by humantune on the procedurally rendered mannequin world "
        f"({cfg.world.n} images of {cfg.world.size}² px, world seed {cfg.world.seed}). It exists so every humantune "
        "recipe runs end to end on a CPU; it is not a general text-to-image model. Prompts follow the world's "
        "caption grammar, e.g. `a woman in a red shirt and blue jeans walking on the street`.",
        "",
        "```python",
        f"from diffusers import {pipeline_class}",
        f"pipe = {pipeline_class}.from_pretrained(\"PATH/TO/{cfg.name}\"{absent})",
        f"image = pipe(\"a man in a red shirt and blue jeans standing on the grass\", {gen_args}).images[0]",
        "```",
        "",
        "## Training",
        "",
        f"- wall time: {seconds / 60:.1f} min (all stages, this machine); denoiser steps: {summary.get('max_steps')}",
        f"- final denoiser loss: {rows[-1]['loss']:.4f}" if rows else "- denoiser loss: (not recorded)",
        f"- VAE: {len(vae_rows)} steps, final L1 {vae_rows[-1].get('l1', float('nan')):.4f}" if vae_rows else
        "- VAE: reused (see `vae_path` in the config)",
        "- reproduce: `humantune pretrain --config config.yaml --output-dir DIR` with the config below",
        "",
        "![loss](loss.png)" if rows else "",
        "",
        "![samples](samples.png)" if grids else "",
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(json.loads(json.dumps(config_to_dict(cfg), default=str)), sort_keys=False).rstrip(),
        "```",
        "",
    ]
    (model_dir / "README.md").write_text("\n".join(lines))
