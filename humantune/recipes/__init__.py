"""Recipes: one file per method. ``RECIPES`` maps the name used by ``humantune train NAME`` to the recipe's config
class and its entry point ``run(cfg, output_dir, resume, allow_config_change) -> Path``."""

from __future__ import annotations

from typing import Any, Callable


def recipes() -> dict[str, tuple[type, Callable[..., Any], str]]:
    """name → (config class, run function, one-line description); imported lazily so ``--help`` stays fast."""
    from humantune.recipes import (
        controlnet_pose, diffusion_dpo, dreambooth_lora, ent_prog, hg_dpo, pose_video, pretrain,
    )

    return {
        "pretrain": (pretrain.PretrainConfig, pretrain.pretrain,
                     "tiny text-to-image base from scratch on the mannequin world (sd or sd3 family)"),
        "controlnet-pose": (controlnet_pose.ControlNetPoseConfig, controlnet_pose.train_controlnet_pose,
                            "multi-stage ControlNet pose fine-tuning with the heatmap-guided loss (papers.md §1)"),
        "dreambooth-lora": (dreambooth_lora.DreamBoothLoraConfig, dreambooth_lora.train_dreambooth_lora,
                            "correct anomalous people for failing prompts with DreamBooth + LoRA (papers.md §4)"),
        "pose-video": (pose_video.PoseVideoConfig, pose_video.train_pose_video,
                       "pose-guided human video model in three phases: subject, pose, temporal (papers.md §3)"),
        "diffusion-dpo": (diffusion_dpo.DiffusionDpoConfig, diffusion_dpo.train_diffusion_dpo,
                          "Diffusion-DPO on preference pairs (Pick-a-Pic parquet/folder or offline mannequin pairs)"),
        "hg-dpo": (hg_dpo.HgDpoConfig, hg_dpo.train_hg_dpo,
                   "Diffusion-DPO with real images: easy -> normal -> hard curriculum (papers.md §2)"),
        "ent-prog": (ent_prog.EntProgConfig, ent_prog.train_ent_prog,
                     "Ent-Prog: CEI-prioritized progressive fine-tuning with an adaptive schedule (papers.md §3)"),
    }
