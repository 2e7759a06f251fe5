"""Ent-Prog's pose-guided tasks (``task: pose_image | pose_video``): the LatteTransformer3DModel of
:mod:`humantune.recipes.pose_video` in its ``pose`` phase (reference + pose → image; the spatial blocks are the
eligible units) or its ``video`` phase (clips of the model's frame count; the temporal blocks are the eligible
units, as the paper trains only the temporal layers in phase 3).

The data, VAE, objective and pipeline come from that recipe's own setup, run in ``OUT/pose_video`` with the config
``pose_video`` names (``configs/pose_video/*.yaml``; null: its defaults); the denoiser is ``base_model`` (a
PoseVideoPipeline folder, e.g. a pose-video run's ``pose/pipeline``) or, with ``base_model: new``, the recipe's
initial one (temporal blocks zero-initialised for the video task). Report samples are held-out clips generated
from their reference frame and poses (looping GIFs)."""

from __future__ import annotations

from pathlib import Path

import torch

from humantune.config import config_to_dict, load_config
from humantune.models.blocks import residual_blocks
from humantune.models.encoding import digest
from humantune.train.sampling import GeneratorDraws


def pose_setup(cfg, out: Path, device):
    from humantune.losses.objectives import sample_latents
    from humantune.models.pose_video import denoise, zero_init_temporal
    from humantune.recipes.ent_prog_tasks import TaskSetup
    from humantune.recipes.pose_video import (
        PoseVideoConfig, PoseVideoRecipe, VideoClips, initial_denoiser, phase_task, phase_trainable,
    )

    pv = load_config(PoseVideoConfig, cfg.pose_video, [] if cfg.base_model == "new" else
                     [f"base_model={cfg.base_model}"])
    video = cfg.task == "pose_video"
    phase = "video" if video else "pose"
    recipe = PoseVideoRecipe(pv, out / "pose_video")
    recipe.setup()
    model = initial_denoiser(pv, recipe.vae.config.latent_channels, recipe.latent_size).to(device)
    if video and cfg.base_model == "new":
        zero_init_temporal(model)
    kind = "temporal_transformer_blocks." if video else "transformer_blocks."
    blocks = [b for b in residual_blocks(model) if b.name.startswith(kind)]
    names = [b.name for b in blocks]
    train_task = phase_task(phase, model, recipe.train_clips, recipe.objective, trainable=names)
    heldout = VideoClips(recipe.heldout, recipe.vae, recipe.latent_size, recipe.reference_patch)
    heldout_task = phase_task(phase, model, heldout, recipe.objective, trainable=names, reference_dropout=0.0,
                              pose_dropout=0.0)
    data = recipe.train_clips

    def cei_batches(cei_cfg):
        items = train_task.dataset()
        g = torch.Generator().manual_seed(cei_cfg.seed)
        pick = torch.randint(0, len(items), (cei_cfg.samples,), generator=g).tolist()
        batches = []
        for i in range(0, len(pick), cei_cfg.batch_size):
            batch = train_task.collate([items[j] for j in pick[i:i + cei_cfg.batch_size]])
            draws = GeneratorDraws(g)
            noised = recipe.objective.noise(sample_latents(batch["latents"], draws, data.shift, data.scale), draws)
            batches.append((noised.noisy, noised.timesteps, batch["pose"], batch["reference"],
                            batch["reference_latent"]))
        return batches

    def predict(batch):
        noisy, t, pose, reference, reference_latent = (x.to(device) for x in batch)
        return denoise(model, noisy, t, pose, reference, video, reference_latent)

    def samples(n: int, steps: int, guidance: float):
        clips = recipe.heldout[:n]
        frames = min(pv.eval.frames, model.config.video_length) if video else min(pv.eval.frames, 4)
        pipe = recipe.pipeline(model, video)
        model.eval()
        try:
            out = []
            for i, clip in enumerate(clips):
                gen = torch.Generator().manual_seed(pv.generation.seed + i)
                out.append((f"held-out clip {i}", list(pipe(clip.frames[0], list(clip.conditions[1:frames + 1]),
                                                            num_inference_steps=steps, guidance_scale=guidance,
                                                            generator=gen))))
            return out
        finally:
            model.train()

    key = digest(repr(config_to_dict(pv.train_data)), str(cfg.base_model), phase)
    return TaskSetup(model, blocks, train_task, heldout_task, predict, cei_batches, key, cfg.heldout_batch_size,
                     cfg.heldout_seed, device, samples, phase_trainable(model, phase))
