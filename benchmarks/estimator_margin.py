"""Does MediaPipe miss generated people because they fill the frame? The estimator's ``margin`` (the image extended
on every side by that fraction of its longer side, edge pixels repeated, before BlazePose runs) measured on images
with exact answers:

- ``renders``: mannequin-world renders (world seed 1, one person, not truncated) of common actions (standing,
  walking, waving), sitting and lying: detection rate and OKS against the exact keypoints (a miss scores 0). A
  margin must not make these worse.
- ``no person``: the world's backgrounds alone (grass, street, indoor, beach, sky): any detection is a false one.
  A margin must not invent people.
- ``generated``: the images a ControlNet benchmark run generated for its held-out poses (``--run``, e.g.
  ``runs/benchmarks/controlnet_pose/seed_0``: the base without a ControlNet and each stage), scored against the
  poses they were asked for (OKS against the best-matching target person; the benchmark's own COCO matching
  over all target people gives slightly lower numbers, e.g. 0.200 instead of 0.226 for stage 1 at margin 0.25).

    python benchmarks/estimator_margin.py --run runs/benchmarks/controlnet_pose/seed_0 [--margins 0 0.1 0.25 0.5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_io import bootstrap_ci, print_table, write_result  # noqa: E402

from humantune.data.mannequin.background import render_background  # noqa: E402
from humantune.data.mannequin.world import MannequinConfig, render_sample  # noqa: E402
from humantune.eval.oks import object_keypoint_similarity  # noqa: E402
from humantune.eval.pose_estimators import MediaPipePoseEstimator  # noqa: E402
from humantune.eval.preference import wilson_interval  # noqa: E402

GROUPS = {"common": {"standing": 1.0, "walking": 1.0, "waving": 1.0}, "sitting": {"sitting": 1.0},
          "lying": {"lying_back": 1.0, "lying_side": 1.0}}
BACKGROUNDS = ("grass", "street", "indoor", "beach", "sky")


def best_oks(estimate, keypoints: np.ndarray, areas: np.ndarray) -> float:
    """OKS of the detected person against the best-matching target person (0 when nobody is detected)."""
    if estimate.num_people == 0:
        return 0.0
    return max(object_keypoint_similarity(estimate.keypoints[0], kp, float(a)) for kp, a in zip(keypoints, areas))


def row(name: str, margin: float, detected: list[bool], oks: list[float] | None) -> dict:
    n = len(detected)
    out = {"set": name, "margin": margin, "n": n, "detected": float(np.mean(detected)),
           "detected_ci95": list(wilson_interval(int(sum(detected)), n))}
    if oks is not None:
        out["oks"] = float(np.mean(oks))
        out["oks_ci95"] = list(bootstrap_ci(oks))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.1, 0.25, 0.5])
    ap.add_argument("--n", type=int, default=64, help="renders per action group and person-free images")
    ap.add_argument("--run", type=Path, help="a controlnet-pose run whose eval/ images to re-score (optional)")
    ap.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/estimator_margin.json)")
    args = ap.parse_args()
    t0 = time.perf_counter()

    renders = {}
    for group, mix in GROUPS.items():
        cfg = MannequinConfig(n=args.n, seed=1, action_mix=mix, second_person_prob=0.0, truncate_prob=0.0)
        renders[group] = [render_sample(cfg, i) for i in range(args.n)]
    rng = np.random.default_rng(0)
    empty = [render_background(BACKGROUNDS[i % len(BACKGROUNDS)], rng, 128, 128, rng.uniform(0.3, 0.7))
             .clip(0, 255).astype(np.uint8) for i in range(args.n)]
    generated = {}
    if args.run:
        world = json.loads((args.run.parent / "data" / "heldout" / "world.json").read_text())["config"]
        heldout = MannequinConfig(**{k: v for k, v in world.items() if k in MannequinConfig.__dataclass_fields__})
        for label_dir in sorted(p for p in (args.run / "eval").iterdir() if (p / "images").is_dir()):
            files = sorted(f for f in (label_dir / "images").glob("*.png") if f.stem.isdigit())
            generated[label_dir.name] = [(np.asarray(Image.open(f).convert("RGB")), int(f.stem)) for f in files]
        targets = {i: render_sample(heldout, i) for i in
                   sorted({i for images in generated.values() for _, i in images})}

    rows = []
    for margin in args.margins:
        with MediaPipePoseEstimator(margin=margin) as estimator:
            for group, scenes in renders.items():
                ests = [estimator.estimate(s.image) for s in tqdm(scenes, desc=f"{group} m={margin}", leave=False)]
                rows.append(row(f"renders: {group}", margin, [e.num_people > 0 for e in ests],
                                [best_oks(e, s.keypoints, s.areas) for e, s in zip(ests, scenes)]))
            ests = [estimator.estimate(im) for im in empty]
            rows.append(row("no person (false detections)", margin, [e.num_people > 0 for e in ests], None))
            for label, images in generated.items():
                ests = [estimator.estimate(im) for im, _ in tqdm(images, desc=f"{label} m={margin}", leave=False)]
                rows.append(row(f"generated: {label}", margin, [e.num_people > 0 for e in ests],
                                [best_oks(e, targets[i].keypoints, targets[i].areas)
                                 for e, (_, i) in zip(ests, images)]))
    path = write_result("estimator_margin", {
        "summary": {"estimator": "mediapipe==0.10.21 model_complexity=1, upscaled to 256 px after the margin",
                    "command": " ".join(sys.argv), "n": args.n, "run": str(args.run) if args.run else None,
                    "oks": "COCO OKS against the exact keypoints, area = visible segment area, a miss scores 0",
                    "seconds": time.perf_counter() - t0},
        "rows": rows,
    }, args.out)
    print_table(rows, ["set", "margin", "n", "detected", "oks"])
    print(f"\n-> {path}")


if __name__ == "__main__":
    main()
