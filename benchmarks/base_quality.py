"""Do the tiny bases draw people? Quality bar of the pretrained bases (issue 3), measured by models nobody here wrote.

Two prompt sets, both taken from captions of a held-out mannequin world (seed 1000, single person), so clothing and
backgrounds vary as in the training grammar:

- ``common``: standing / walking / waving (well represented in the training world);
- ``lying``: lying on the back or side, on the grass or the street (4 % of the training world).

For each model and set: MediaPipe Pose (mediapipe 0.10.21, bundled weights) on every generated image →
detection rate; among detected people, whether the prompt's shirt colour is the dominant colour of the detected
torso region (``humantune.eval.attributes``, CIELAB nearest named colour); and the anatomy anomaly rate
(``humantune.eval.anatomy``; a missed person counts as anomalous). Rates carry Wilson 95 % intervals. The same
numbers on the world's own renders of the same prompts are the ceiling. Generation throughput is images/s at the
model's default steps and guidance, on this machine.

Targets (issue 3): common set — detection ≥ 0.70 and shirt colour ≥ 0.60; lying set visibly worse.

Where is the limit? Two probes locate it (``--limits``):

- ``VAE round trip``: the renders encoded and decoded by the model's own VAE, scored like generated images. The
  base cannot draw better than its VAE reconstructs; this is the VAE's ceiling.
- ``img2img strength s``: each render noised to strength ``s`` (the fraction of the sampling schedule that runs,
  diffusers' img2img) and denoised with its prompt. Low strength keeps the render's layout and asks the denoiser for
  detail; strength near 1 asks it for the whole body. The strength where detection falls says which part of the
  image the denoiser cannot draw.

    python benchmarks/base_quality.py [--models tiny-sd tiny-sd3] [--n 64] [--seed 0]
    python benchmarks/base_quality.py --limits 0.25 0.5 0.75 1.0 --no-ceiling --out benchmarks/results/base_limits.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_io import print_table, write_result  # noqa: E402

from humantune.data.mannequin.prompted import parse_caption  # noqa: E402
from humantune.data.mannequin.world import MannequinConfig, render_sample  # noqa: E402
from humantune.eval.anatomy import anatomy_checks, anomaly_score  # noqa: E402
from humantune.eval.attributes import read_attributes  # noqa: E402
from humantune.eval.context import describe_estimator  # noqa: E402
from humantune.eval.pose_estimators import MediaPipePoseEstimator  # noqa: E402
from humantune.eval.preference import wilson_interval  # noqa: E402
from humantune.models.generation import generate_images, load_pipeline, model_info, resolve_model  # noqa: E402

SETS = {
    "common": {"actions": {"standing": 1.0, "walking": 1.0, "waving": 1.0}, "backgrounds": None},
    "lying": {"actions": {"lying_back": 1.0, "lying_side": 1.0}, "backgrounds": ["grass", "street"]},
}
TARGET_DETECTION, TARGET_COLOUR = 0.70, 0.60
SCHEDULERS = {"ddim": "DDIMScheduler", "dpm": "DPMSolverMultistepScheduler", "euler": "EulerDiscreteScheduler",
              "unipc": "UniPCMultistepScheduler", "flow-euler": "FlowMatchEulerDiscreteScheduler"}


def swap_scheduler(pipe, name: str):
    """The pipeline's scheduler replaced by diffusers' ``SCHEDULERS[name]`` built from the same config."""
    import diffusers

    return getattr(diffusers, SCHEDULERS[name]).from_config(pipe.scheduler.config)


def prompts_and_renders(name: str, n: int) -> tuple[list[str], list[np.ndarray]]:
    spec = SETS[name]
    kw = {"backgrounds": spec["backgrounds"]} if spec["backgrounds"] else {}
    cfg = MannequinConfig(n=n, seed=1000, action_mix=spec["actions"], second_person_prob=0.0, truncate_prob=0.0, **kw)
    scenes = [render_sample(cfg, i) for i in range(n)]
    return [s.caption for s in scenes], [s.image for s in scenes]


def score(images: list[np.ndarray], prompts: list[str], estimator) -> dict:
    detected = colour_ok = anomalous = 0
    for image, prompt in zip(images, prompts):
        est = estimator.estimate(image)
        kp = est.keypoints[0] if est.num_people else None
        anomalous += anomaly_score(anatomy_checks(kp, image_size=image.shape[1::-1])) > 1.0
        if kp is None:
            continue
        detected += 1
        wanted = parse_caption(prompt).people[0].top_color
        colour_ok += read_attributes(image, kp, min_confidence=0.5).top_color == wanted
    n = len(images)
    row = {"n": n, "detection": detected / n, "shirt_colour": colour_ok / max(detected, 1), "anomaly": anomalous / n}
    row["detection_ci"] = wilson_interval(detected, n)
    row["shirt_colour_ci"] = wilson_interval(colour_ok, max(detected, 1))
    row["anomaly_ci"] = wilson_interval(anomalous, n)
    return row


def vae_round_trip(pipe, renders: list[np.ndarray]) -> list[np.ndarray]:
    """``renders`` encoded (posterior mode) and decoded by ``pipe``'s VAE."""
    import torch

    out = []
    with torch.no_grad():
        for image in renders:
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
            latents = pipe.vae.encode(x.to(pipe.vae.dtype)).latent_dist.mode()
            y = pipe.vae.decode(latents).sample[0].clamp(-1, 1)
            out.append(((y.permute(1, 2, 0).float().numpy() + 1.0) * 127.5).round().astype(np.uint8))
    return out


def limit_rows(model: str, pipe, defaults: dict, data: dict, strengths: list[float], seed: int, estimator) -> list:
    """The ``--limits`` probes of one model: its VAE round trip, then img2img from the renders at each strength."""
    from diffusers import AutoPipelineForImage2Image
    from PIL import Image

    rows = []
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    kwargs = {k: v for k, v in defaults.items() if k not in ("height", "width")}
    for name, (prompts, renders) in data.items():
        rows.append({"model": f"{model} VAE round trip", "set": name,
                     **score(vae_round_trip(pipe, renders), prompts, estimator)})
        for strength in strengths:
            images = generate_images(img2img, prompts, seed=seed, image=[Image.fromarray(r) for r in renders],
                                     strength=strength, **kwargs)
            rows.append({"model": f"{model} img2img strength {strength:g}", "set": name, "strength": strength,
                         **score([np.asarray(im) for im in images], prompts, estimator),
                         "steps": defaults.get("num_inference_steps"), "guidance": defaults.get("guidance_scale"),
                         "scheduler": type(img2img.scheduler).__name__})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny-sd", "tiny-sd3"], help="shipped names or directories")
    ap.add_argument("--n", type=int, default=64, help="prompts per set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS), help="prompt sets to measure")
    ap.add_argument("--guidance", type=float, help="CFG scale (default: the model's own, from humantune.json)")
    ap.add_argument("--steps", type=int, help="sampler steps (default: the model's own)")
    ap.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="swap the sampler (default: the model's own)")
    ap.add_argument("--limits", type=float, nargs="+", metavar="STRENGTH",
                    help="instead of generating from noise: the VAE round trip and img2img from the renders at "
                         "these strengths (0 < s <= 1)")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the world-render rows (probes)")
    ap.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/base_quality.json)")
    args = ap.parse_args()
    if args.limits and not all(0 < v <= 1 for v in args.limits):
        ap.error(f"--limits: strengths must be in (0, 1], got {args.limits}")

    data = {name: prompts_and_renders(name, args.n) for name in args.sets}
    rows = []
    with MediaPipePoseEstimator() as estimator:
        scored_by = describe_estimator(estimator)
        for name, (prompts, renders) in data.items():
            if not args.no_ceiling:
                rows.append({"model": "world renders (ceiling)", "set": name, **score(renders, prompts, estimator)})
        for model in args.models:
            pipe = load_pipeline(model)
            defaults = dict(model_info(Path(resolve_model(model))).get("generation", {}))
            if args.guidance is not None:
                defaults["guidance_scale"] = args.guidance
            if args.steps is not None:
                defaults["num_inference_steps"] = args.steps
            if args.scheduler:
                pipe.scheduler = swap_scheduler(pipe, args.scheduler)
            if args.limits:
                rows.extend(limit_rows(str(model), pipe, defaults, data, args.limits, args.seed, estimator))
                continue
            for name, (prompts, _) in data.items():
                t0 = time.perf_counter()
                images = [np.asarray(im) for im in generate_images(pipe, prompts, seed=args.seed, **defaults)]
                dt = time.perf_counter() - t0
                rows.append({"model": str(model), "set": name, **score(images, prompts, estimator),
                             "images_per_s": len(images) / dt, "steps": defaults.get("num_inference_steps"),
                             "guidance": defaults.get("guidance_scale"),
                             "scheduler": type(pipe.scheduler).__name__})
    for r in rows:
        if r["set"] == "common" and r["model"] in map(str, args.models):
            r["meets"] = "yes" if r["detection"] >= TARGET_DETECTION and r["shirt_colour"] >= TARGET_COLOUR else "NO"
    path = write_result("base_quality", {
        "summary": {"n_per_set": args.n, "seed": args.seed, "command": " ".join(sys.argv),
                    "estimator": scored_by,
                    "targets": {"common_detection": TARGET_DETECTION, "common_shirt_colour": TARGET_COLOUR}},
        "rows": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()} for r in rows],
    }, args.out)
    print_table(rows, ["model", "set", "n", "guidance", "steps", "scheduler", "detection", "shirt_colour", "anomaly",
                       "images_per_s", "meets"])
    print(f"\n-> {path}")


if __name__ == "__main__":
    main()
