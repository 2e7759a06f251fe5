"""Held-out evaluation and report of the pose-video recipe (:mod:`humantune.recipes.pose_video`).

Every stage's pipeline, and the trivial baseline ``reference`` that repeats the reference image for every frame,
generates the held-out clips (reference: frame 0; poses: frames 1…T). Scores against the ground-truth frames 1…T:

- per-frame L1 / SSIM / PSNR (:func:`humantune.eval.video.clip_set_frame_metrics`);
- pose: mean OKS per frame of MediaPipe's detection against the true keypoints (bbox area convention) and the
  temporal jitter with the true motion removed (:func:`humantune.eval.video.temporal_pose_jitter`); the ground-truth
  frames are scored too (``ground truth``: the detector's ceiling on these small frames);
- ``video_kd``: the offline stand-in for FVD / FID-VID — the unbiased kernel distance (KID's MMD², polynomial kernel)
  between generated and ground-truth clips of :func:`clip_world_features` on the shipped world-feature network;
- ``frame_change``: the mean absolute change between consecutive frames (:func:`frame_change`), to read beside the
  ground truth's (flicker shows as a larger value, a frozen clip as a smaller one).

Whether a model uses the pose is measured directly, independent of the pose detector (which finds few people in
blurry 64² frames): the last stage also generates every held-out clip from its own reference with *another* clip's
pose sequence (``<stage> · other poses``); if the pose steers the figure, its errors against the ground truth are
larger than with the right poses.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from humantune.config import config_to_dict
from humantune.data.prepare import keypoint_boxes
from humantune.io import write_json_atomic
from humantune.report.html import HtmlReport

BASELINE = "reference"
GROUND_TRUTH = "ground truth"


def clip_world_features(frame_features: np.ndarray) -> np.ndarray:
    """One clip's feature vector from its frames' world features f_t (T, D):
    [ (1/T) Σ_t f_t ;  (1/(T−1)) Σ_t |f_{t+1} − f_t| ]  (2D,) — appearance and the magnitude of its change per frame
    (zeros for a single frame)."""
    f = np.asarray(frame_features, np.float64)
    motion = np.abs(np.diff(f, axis=0)).mean(axis=0) if len(f) > 1 else np.zeros(f.shape[1])
    return np.concatenate([f.mean(axis=0), motion])


def video_kernel_distance(generated: Sequence[np.ndarray], reference: Sequence[np.ndarray], net=None) -> float:
    """Unbiased MMD² (KID's kernel (x·y/d + 1)³) between the :func:`clip_world_features` of two equal-size clip sets
    (uint8 (T, H, W, 3) each), on the shipped world-feature network (``net``). Needs at least 2 clips per set."""
    from humantune.eval.distribution import kernel_inception_distance
    from humantune.eval.world_features import WorldFeatureNet

    net = net or WorldFeatureNet.load()
    gen = np.stack([clip_world_features(net.extract(list(c))) for c in generated])
    ref = np.stack([clip_world_features(net.extract(list(c))) for c in reference])
    m = min(len(gen), len(ref))
    return kernel_inception_distance(gen, ref, subsets=1, subset_size=m)[0]


def frame_change(clips: Sequence[np.ndarray]) -> float:
    """Mean over clips, frames and pixels of |x_{t+1} − x_t| (uint8 units), frames (T, H, W, 3) per clip."""
    diffs = [np.abs(np.diff(np.asarray(c, np.float64), axis=0)).mean() for c in clips if len(c) > 1]
    return float(np.mean(diffs)) if diffs else float("nan")


def frame_oks(estimator, clips: Sequence[np.ndarray], keypoints: Sequence[np.ndarray]) -> float:
    """Mean over all frames of the OKS of MediaPipe's best match to the true person (0 when nobody is found)."""
    from humantune.eval.pose_metrics import PoseGroundTruth, pose_agreement

    images = [frame for clip in clips for frame in clip]
    targets = [PoseGroundTruth(kp[None].astype(np.float64), keypoint_boxes(kp[None]).astype(np.float64))
               for clip_kp in keypoints for kp in clip_kp]
    return pose_agreement(estimator.estimate_batch(images), targets, "bbox").mean_oks


def score(generated: Sequence[np.ndarray], truth: Sequence[np.ndarray], keypoints: Sequence[np.ndarray],
          estimator, net) -> dict:
    """All video metrics of one model's clips against the ground truth (see the module docstring)."""
    from humantune.eval.video import clip_set_frame_metrics, temporal_pose_jitter

    m = clip_set_frame_metrics(generated, truth)
    out = {k: m[k] for k in ("l1", "ssim", "psnr", "num_clips", "num_frames")}
    out["psnr_per_clip"] = m["psnr_per_clip"]
    out["frame_change"] = frame_change(generated)
    if estimator is not None:
        out["oks"] = frame_oks(estimator, generated, keypoints)
        refs = [np.asarray(kp, np.float64) for kp in keypoints]
        out["jitter"] = temporal_pose_jitter(estimator, generated, refs)["jitter"]
    if net is not None and len(generated) >= 2:
        out["video_kd"] = video_kernel_distance(generated, truth, net)
    return out


def save_gif(frames: np.ndarray, path: Path, fps: int = 4) -> bytes:
    """Write uint8 frames (T, H, W, 3) as a looping animated GIF; returns its bytes."""
    buf = io.BytesIO()
    images = [Image.fromarray(f) for f in frames]
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


class VideoReport(HtmlReport):
    """An HtmlReport that can also embed animated GIFs."""

    def animations(self, items: list[tuple[bytes, str]], columns: int, size: int) -> None:
        parts = [f'<div class="grid" style="grid-template-columns: repeat({columns}, max-content)">']
        for data, caption in items:
            caption = html.escape(caption)
            uri = "data:image/gif;base64," + base64.b64encode(data).decode("ascii")
            parts.append(f'<figure><img src="{uri}" width="{size}" height="{size}" alt="{caption}">'
                         f"<figcaption>{caption}</figcaption></figure>")
        parts.append("</div>")
        self._blocks.append("".join(parts))


def evaluate(recipe, summaries: dict[str, dict]) -> Path:
    """Generate and score the held-out clips with every stage and the baseline; write results.json and
    report.html under the recipe's output folder; return the report's path."""
    from humantune.models.pose_video import PoseVideoPipeline
    from humantune.train.engine import read_metrics, read_validation

    cfg, out = recipe.cfg, recipe.out
    e = cfg.eval
    clips = recipe.heldout[:e.clips]
    if not recipe.trainer.is_main:
        return out / "report.html"
    truth = [c.frames[1:e.frames + 1] for c in clips]
    keypoints = [c.keypoints[1:e.frames + 1] for c in clips]
    generated: dict[str, list[np.ndarray]] = {GROUND_TRUTH: truth, BASELINE: [
        np.repeat(c.frames[:1], e.frames, axis=0) for c in clips]}
    for stage in cfg.stages:
        pipe = PoseVideoPipeline.from_pretrained(out / stage.name / "pipeline").to(recipe.trainer.device)
        pipe.set_progress_bar_config(disable=True)
        generated[stage.name] = recipe.generate(pipe, clips, e.frames)
    if len(clips) >= 2:   # the last stage with each clip's reference but the next clip's poses
        swapped = [dataclasses.replace(c, conditions=clips[(i + 1) % len(clips)].conditions)
                   for i, c in enumerate(clips)]
        generated[f"{cfg.stages[-1].name} · other poses"] = recipe.generate(pipe, swapped, e.frames)
    metrics: dict[str, dict] = {}
    if clips:
        estimator = net = None
        if e.pose_metrics:
            from humantune.eval.pose_estimators import load_pose_estimator

            estimator = load_pose_estimator("mediapipe")
        if e.video_distance:
            from humantune.eval.world_features import WorldFeatureNet

            net = WorldFeatureNet.load()
        try:
            for label, videos in generated.items():
                metrics[label] = score(videos, truth, keypoints, estimator, net)
        finally:
            if estimator is not None:
                estimator.close()
    gifs = {label: [save_gif(v, out / "eval" / "clips" / label.replace(" ", "_") / f"{i:03d}.gif")
                    for i, v in enumerate(videos[:e.report_clips])] for label, videos in generated.items()}
    write_json_atomic(out / "results.json", {
        "recipe": "pose-video", "resolution": recipe.resolution, "eval_clips": len(clips), "eval_frames": e.frames,
        "generation": config_to_dict(cfg.generation), "training": summaries, "metrics": metrics,
        "validation": {s.name: read_validation(out / s.name) for s in cfg.stages}, "config": config_to_dict(cfg),
    })
    return _report(recipe, summaries, metrics, gifs, [c.conditions[1:e.frames + 1] for c in clips[:e.report_clips]],
                   read_metrics)


def _report(recipe, summaries, metrics, gifs, conditions, read_metrics) -> Path:
    from humantune.report.curves import StageCurves, stage_curves_figure
    from humantune.train.engine import read_validation

    cfg, out = recipe.cfg, recipe.out
    report = VideoReport(f"pose-video: {out.name}")
    report.paragraph(
        f"LatteTransformer3DModel denoiser at {recipe.resolution}² (latent {recipe.latent_size}²), reference image as "
        "cross-attention tokens (and input channels), OpenPose frames as input channels; phases: subject → pose → "
        "video (temporal blocks only). Training clips: {len(recipe.train_clips.raw)} × {recipe.train_clips.num_frames} frames. Generation: "
        f"{cfg.generation.num_inference_steps} DDIM steps, guidance {cfg.generation.guidance_scale}.")
    report.heading("Stages")
    report.table([{"stage": s.name, "phase": s.phase, "frames": summaries.get(s.name, {}).get("frames"),
                   "steps": summaries.get(s.name, {}).get("steps"), "lr": s.train.learning_rate,
                   "trained / all parameters": f"{summaries.get(s.name, {}).get('trained_parameters')} / "
                                               f"{summaries.get(s.name, {}).get('parameters')}",
                   "final loss": summaries.get(s.name, {}).get("final_loss"),
                   "seconds": summaries.get(s.name, {}).get("seconds")} for s in cfg.stages])
    if metrics:
        report.heading(f"Held-out clips ({cfg.eval.clips} clips × {cfg.eval.frames} frames)")
        report.table([{"model": label, **{k: m.get(k) for k in ("l1", "ssim", "psnr", "oks", "jitter", "video_kd",
                                                                 "frame_change")}}
                      for label, m in metrics.items()])
        report.paragraph(
            "l1 (0–255) / ssim / psnr (dB): per frame against the ground truth; oks: MediaPipe's detection on each "
            "frame against the true keypoints (bbox area), 0 when nobody is found; jitter: second difference of the "
            "detected keypoints minus the true motion, per body scale (lower is steadier); video_kd: kernel "
            "distance of world-feature clip features (mean frame feature ⊕ mean frame-to-frame change) to the "
            "ground-truth clips, the offline FVD stand-in. 'reference' repeats the reference image (frame 0) for "
            "every frame; 'ground truth' is the real clip; '· other poses' is the last stage given another clip's "
            "poses (worse scores than with the right poses = the pose steers the figure); frame_change: mean "
            "|x_{t+1} − x_t| (0–255), to compare with the ground truth's.")
    if conditions:
        report.heading("Clips (looping GIFs)", 3)
        labels = list(gifs)
        items = []
        for i, cond in enumerate(conditions):
            items.append((save_gif(cond, out / "eval" / "conditions" / f"{i:03d}.gif"), f"{i}: pose"))
            items += [(gifs[label][i], f"{i}: {label}") for label in labels]
        report.animations(items, columns=len(labels) + 1, size=128)
    report.heading("Training curves")
    report.figure(stage_curves_figure([
        StageCurves(s.name, f"{s.name} ({s.phase})", read_metrics(out / s.name), [("loss", "-", "loss")],
                    read_validation(out / s.name)) for s in cfg.stages], "psnr", "validation PSNR (dB)"))
    last = cfg.stages[-1].name
    report.heading("Load the result")
    report.code("from humantune.models.pose_video import PoseVideoPipeline\n"
                f"pipe = PoseVideoPipeline.from_pretrained({str(out / last / 'pipeline')!r})\n"
                "frames = pipe(reference_image, pose_frames)  # OpenPose images → uint8 (T, H, W, 3)")
    return report.save(out / "report.html")
