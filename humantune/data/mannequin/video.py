"""Mannequin video clips: smooth pose trajectories (walk and run cycles, dances, waves, jumps) with one person whose
appearance and background stay fixed across frames, plus per-frame keypoints, condition images and masks.

On disk (``write_video_world``)::

    DIR/manifest.json                        clips, frames, captions, per-frame keypoints (COCO-17, pixels)
    DIR/clips/000000/frames/00000.png        RGB frames
    DIR/clips/000000/conditions/00000.png    OpenPose-18 condition images
    DIR/clips/000000/masks/00000.png         person masks
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from humantune import __version__
from humantune.config import config_to_dict, option
from humantune.data.mannequin.background import render_background
from humantune.data.mannequin.body import Pose, Segment, sample_pose
from humantune.data.mannequin.render import Placement, build_parts
from humantune.data.mannequin.scene import (
    PersonSpec, _bounds, add_props, draw_scene, horizon_for, sample_background, sample_person,
)
from humantune.data.mannequin.world import _choose, _png, run_parallel, sample_rng
from humantune.data.openpose import draw_openpose
from humantune.io import new_output_dir, write_json_atomic

VIDEO_ACTIONS = ("walking", "running", "dancing", "waving", "jumping", "arms_raised")
DEFAULT_VIDEO_MIX = {"walking": 0.3, "running": 0.12, "dancing": 0.3, "waving": 0.14, "jumping": 0.07,
                     "arms_raised": 0.07}


@dataclass
class MannequinVideoConfig:
    """How to render mannequin video clips."""

    n: int = option(32, "number of clips")
    frames: int = option(16, "frames per clip")
    fps: int = option(8, "frames per second written to the manifest")
    seed: int = option(0, "random seed; the same seed gives byte-identical output")
    size: int = option(128, "frame width and height in pixels")
    supersample: int = option(2, "draw at this multiple of the size, then area-downsample")
    action_mix: dict[str, float] = option(DEFAULT_VIDEO_MIX, "relative frequency of each motion")

    def __post_init__(self) -> None:
        if self.n < 1 or self.frames < 1:
            raise ValueError(f"n and frames must be at least 1, got n={self.n}, frames={self.frames}")
        if self.seed < 0:
            raise ValueError(f"seed must be at least 0 (numpy seeds are non-negative), got {self.seed}")
        unknown = sorted(set(self.action_mix) - set(VIDEO_ACTIONS))
        if unknown:
            raise ValueError(f"action_mix has unknown motion(s) {unknown}; known: {', '.join(VIDEO_ACTIONS)}")
        if not 16 <= self.size <= 2048:
            raise ValueError(f"size must be between 16 and 2048, got {self.size}")


@dataclass
class Motion:
    """A periodic trajectory around a base pose."""

    action: str
    base: Pose
    period: float          # frames per cycle
    phase0: float
    amp: float             # main swing amplitude, degrees
    knee: float            # knee bend, degrees (gaits)
    offsets: np.ndarray    # per-angle phase offsets (dance)
    speed: float           # image-plane travel in person heights per frame (gaits)


def sample_motion(action: str, rng: np.random.Generator) -> Motion:
    base = sample_pose(action, rng)
    run = action == "running"
    return Motion(
        action=action, base=base,
        period=float(rng.uniform(10, 12) if run else rng.uniform(12, 16) if action == "walking" else rng.uniform(14, 22)),
        phase0=float(rng.uniform(0, 2 * np.pi)),
        amp=float(rng.uniform(30, 40) if run else rng.uniform(20, 30) if action == "walking" else rng.uniform(15, 30)),
        knee=float(rng.uniform(50, 75) if run else rng.uniform(15, 30)),
        offsets=rng.uniform(0, 2 * np.pi, size=17),  # two per limb segment + one for yaw
        speed=float(rng.uniform(0.04, 0.06) if run else rng.uniform(0.015, 0.025) if action == "walking" else 0.0),
    )


def pose_at(motion: Motion, t: float) -> Pose:
    """The pose at frame ``t``: a smooth (sinusoidal) function of time around the base pose."""
    p = copy.deepcopy(motion.base)
    phi = motion.phase0 + 2 * np.pi * t / motion.period
    if motion.action in ("walking", "running"):
        run = motion.action == "running"
        swing = np.sin(phi)
        for s, sign in (("l", 1.0), ("r", -1.0)):
            hip = sign * motion.amp * swing
            knee = motion.knee * (0.15 + 0.85 * (0.5 + 0.5 * np.sin(phi - sign * np.pi / 2 - np.pi / 2)) ** 2)
            p.upper[f"leg_{s}"] = Segment(p.upper[f"leg_{s}"].abduction, hip)
            p.lower[f"leg_{s}"] = Segment(p.lower[f"leg_{s}"].abduction, hip - knee)
            arm = -sign * motion.amp * swing * (0.9 if run else 0.7)
            p.upper[f"arm_{s}"] = Segment(p.upper[f"arm_{s}"].abduction, arm)
            p.lower[f"arm_{s}"] = Segment(p.lower[f"arm_{s}"].abduction, arm + (80.0 if run else 20.0))
        p.lift = 0.03 * abs(np.sin(2 * phi)) if run else 0.0
    elif motion.action == "waving":
        for s in ("l", "r"):
            lo = p.lower[f"arm_{s}"]
            if lo.abduction > 120:  # the raised forearm waves
                p.lower[f"arm_{s}"] = Segment(lo.abduction + motion.amp * np.sin(phi), lo.flexion)
    elif motion.action == "dancing":
        k = 0
        for group in (p.upper, p.lower):
            for limb, seg in group.items():
                scale = 0.5 if limb.startswith("leg") else 1.0
                group[limb] = Segment(seg.abduction + scale * motion.amp * np.sin(phi + motion.offsets[k]),
                                      seg.flexion + scale * motion.amp * 0.6 * np.sin(phi + motion.offsets[k + 1]))
                k += 2
        p.torso_side = motion.base.torso_side * np.cos(phi)
        p.yaw = motion.base.yaw + 15.0 * np.sin(phi / 2 + motion.offsets[k])
    elif motion.action == "jumping":
        up = 0.5 - 0.5 * np.cos(phi)   # crouch -> airborne -> crouch, smooth at both ends
        p.lift = 0.12 * up
        for s in ("l", "r"):
            p.upper[f"arm_{s}"] = Segment(20 + 120 * up, p.upper[f"arm_{s}"].flexion)
            p.lower[f"arm_{s}"] = Segment(25 + 125 * up, p.lower[f"arm_{s}"].flexion)
            p.upper[f"leg_{s}"] = Segment(2 + 20 * up, 0.0)
            p.lower[f"leg_{s}"] = Segment(2 + 20 * up, -5.0 * (1 - up))
    elif motion.action == "arms_raised":
        lift = 0.5 - 0.5 * np.cos(phi)
        for s in ("l", "r"):
            p.upper[f"arm_{s}"] = Segment(12 + 140 * lift, p.upper[f"arm_{s}"].flexion)
            p.lower[f"arm_{s}"] = Segment(14 + 148 * lift, p.lower[f"arm_{s}"].flexion)
    return p


def render_clip(cfg: MannequinVideoConfig, index: int) -> dict[str, Any]:
    """Render clip ``index``: returns frames, masks, keypoints and the caption."""
    rng = sample_rng(cfg.seed, index)
    action = _choose(rng, cfg.action_mix)
    spec = sample_person(action, rng)
    motion = sample_motion(action, rng)
    size = (cfg.size, cfg.size)
    background = sample_background(action, rng)

    # Scale from the widest of a few poses along the cycle; the path must stay inside the frame.
    probe = [build_parts(spec.shape, pose_at(motion, t), spec.look, Placement(1.0, (0.0, 0.0), 0.0))
             for t in np.linspace(0, motion.period, 5)]
    bounds = np.array([_bounds(p) for p in probe])
    x0, y0 = bounds[:, 0].min(), bounds[:, 1].min()
    bw, bh = bounds[:, 2].max() - x0, bounds[:, 3].max() - y0
    scale = rng.uniform(0.55, 0.8) * cfg.size / max(bw, bh)
    # ... and no larger than lets the whole path (body width plus travel) fit inside the frame.
    scale = min(scale, (cfg.size - 4) / (bw + motion.speed * (cfg.frames - 1)))
    direction = 1.0 if np.sin(np.deg2rad(motion.base.yaw)) >= 0 else -1.0
    travel = direction * motion.speed * scale * (cfg.frames - 1)
    span_w = bw * scale + abs(travel)
    left = rng.uniform(1, max(1.0, cfg.size - span_w - 1)) + (abs(travel) if direction < 0 else 0.0)
    top = rng.uniform(1, max(1.0, cfg.size - bh * scale - 1))
    start = np.array([left - x0 * scale, top - y0 * scale])
    step = np.array([direction * motion.speed * scale, 0.0])

    frames, masks, keypoints, conditions = [], [], [], []
    bg = None
    for t in range(cfg.frames):
        spec_t = PersonSpec(action, spec.shape, pose_at(motion, t), spec.look)
        person = build_parts(spec_t.shape, spec_t.pose, spec_t.look, Placement(scale, tuple(start + step * t), 0.0))
        add_props([spec_t], [person], np.random.default_rng([cfg.seed, index, t]))
        if bg is None:
            bg = render_background(background, rng, cfg.size, cfg.size, horizon_for([spec_t], [person], rng, cfg.size))
        scene = draw_scene([spec_t], [person], background, bg, cfg.supersample)
        frames.append(scene.image)
        masks.append(scene.mask)
        keypoints.append(scene.keypoints)
        conditions.append(np.asarray(draw_openpose(scene.keypoints, size)))
        caption = scene.caption
    return {"frames": frames, "masks": masks, "keypoints": keypoints, "conditions": conditions, "caption": caption,
            "action": action, "attributes": scene.attributes()}


def _clip_worker(args: tuple[MannequinVideoConfig, int, str]) -> dict[str, Any]:
    cfg, index, root = args
    clip = render_clip(cfg, index)
    rel = f"clips/{index:06d}"
    for sub in ("frames", "conditions", "masks"):
        os.makedirs(os.path.join(root, rel, sub), exist_ok=True)
    entries = []
    for t in range(cfg.frames):
        name = f"{t:05d}.png"
        for sub, arr in (("frames", clip["frames"][t]), ("conditions", clip["conditions"][t]), ("masks", clip["masks"][t])):
            with open(os.path.join(root, rel, sub, name), "wb") as f:
                f.write(_png(arr))
        entries.append({
            "image": f"{rel}/frames/{name}", "conditioning_image": f"{rel}/conditions/{name}",
            "mask": f"{rel}/masks/{name}", "keypoints": clip["keypoints"][t].round(3).tolist(),
        })
    return {"id": index, "dir": rel, "caption": clip["caption"], "action": clip["action"],
            "attributes": clip["attributes"], "frames": entries}


def write_video_world(cfg: MannequinVideoConfig, out_dir: str | os.PathLike, workers: int | None = None,
                      overwrite: bool = False, progress: bool = True) -> Path:
    """Render ``cfg.n`` clips into ``out_dir`` atomically (temporary folder that replaces ``out_dir`` at the end).

    Raises HumantuneError if ``out_dir`` exists and is not empty, unless ``overwrite``.
    """
    with new_output_dir(out_dir, overwrite) as tmp:
        jobs = [(cfg, i, str(tmp)) for i in range(cfg.n)]
        clips = run_parallel(_clip_worker, jobs, workers, "rendering clips", "clip", progress)
        write_json_atomic(tmp / "manifest.json", {
            "generator": "humantune.data.mannequin.video", "version": __version__, "config": config_to_dict(cfg),
            "fps": cfg.fps, "frames_per_clip": cfg.frames, "width": cfg.size, "height": cfg.size,
            "keypoint_format": "coco17 [x, y, v] in pixels", "clips": clips,
        })
    return Path(out_dir)
