"""Recipes: one file per method, registered here by the name ``humantune train NAME`` uses.

:data:`RECIPES` names each recipe's module, config class, entry point ``run(cfg, output_dir, resume,
allow_config_change) -> Path`` and one-line description as strings, so listing them (``humantune --help``) imports
no recipe; :func:`load_recipe` imports one."""

from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple


class RecipeEntry(NamedTuple):
    module: str
    config: str
    run: str
    description: str


RECIPES: dict[str, RecipeEntry] = {
    "pretrain": RecipeEntry("pretrain", "PretrainConfig", "pretrain",
                            "tiny text-to-image base from scratch on the mannequin world (sd or sd3 family)"),
    "controlnet-pose": RecipeEntry("controlnet_pose", "ControlNetPoseConfig", "train_controlnet_pose",
                                   "multi-stage ControlNet pose fine-tuning with the heatmap-guided loss "
                                   "(papers.md §1)"),
    "diffusion-dpo": RecipeEntry("diffusion_dpo", "DiffusionDpoConfig", "train_diffusion_dpo",
                                 "Diffusion-DPO on preference pairs (Pick-a-Pic parquet/folder or offline mannequin "
                                 "pairs)"),
    "hg-dpo": RecipeEntry("hg_dpo", "HgDpoConfig", "train_hg_dpo",
                          "Diffusion-DPO with real images: easy -> normal -> hard curriculum (papers.md §2)"),
    "ent-prog": RecipeEntry("ent_prog", "EntProgConfig", "train_ent_prog",
                            "Ent-Prog: CEI-prioritized progressive fine-tuning with an adaptive schedule "
                            "(papers.md §3)"),
    "pose-video": RecipeEntry("pose_video", "PoseVideoConfig", "train_pose_video",
                              "pose-guided human video model in three phases: subject, pose, temporal "
                              "(papers.md §3)"),
    "dreambooth-lora": RecipeEntry("dreambooth_lora", "DreamBoothLoraConfig", "train_dreambooth_lora",
                                   "correct anomalous people for failing prompts with DreamBooth + LoRA "
                                   "(papers.md §4)"),
}


def load_recipe(name: str) -> tuple[type, Callable[..., Any], str]:
    """(config class, run function, description) of one recipe, importing only its module."""
    entry = RECIPES[name]
    module = importlib.import_module(f"humantune.recipes.{entry.module}")
    return getattr(module, entry.config), getattr(module, entry.run), entry.description


def recipes() -> dict[str, tuple[type, Callable[..., Any], str]]:
    """name → (config class, run function, one-line description) of every recipe (imports them all)."""
    return {name: load_recipe(name) for name in RECIPES}
