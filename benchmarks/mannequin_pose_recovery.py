"""Does a pose estimator nobody here wrote (MediaPipe Pose, bundled in the wheel) recover the mannequins' ground truth?

For each action, render single, untruncated people at the world's default size, run MediaPipe on each image and
score the detection against the exact keypoints with COCO OKS (area = the person's segment area, the area stored in
the world's COCO JSON). A missed detection scores 0. Reports mean OKS with a 95% bootstrap interval and the
detection rate.

Targets (issue 2): mean OKS >= 0.75 on standing / walking / waving and >= 0.6 on sitting / lying.

    python benchmarks/mannequin_pose_recovery.py [--n 100] [--size 128] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_io import bootstrap_ci, print_table, write_result  # noqa: E402

from humantune.data.mannequin.body import ACTIONS  # noqa: E402
from humantune.data.mannequin.world import MannequinConfig, render_sample  # noqa: E402
from humantune.eval.context import describe_estimator  # noqa: E402
from humantune.eval.oks import object_keypoint_similarity  # noqa: E402
from humantune.eval.pose_estimators import MediaPipePoseEstimator  # noqa: E402

TARGETS = {"standing": 0.75, "walking": 0.75, "waving": 0.75, "sitting": 0.6, "lying_back": 0.6, "lying_side": 0.6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="images per action")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--actions", nargs="*", default=list(ACTIONS))
    ap.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/mannequin_pose_recovery.json)")
    args = ap.parse_args()

    rows, per_action = [], {}
    t0 = time.perf_counter()
    with MediaPipePoseEstimator() as estimator:
        scored_by = describe_estimator(estimator)
        for action in args.actions:
            cfg = MannequinConfig(n=args.n, seed=args.seed, size=args.size, action_mix={action: 1.0},
                                  second_person_prob=0.0, truncate_prob=0.0)
            scores, detected = [], 0
            for i in tqdm(range(args.n), desc=action, leave=False):
                scene = render_sample(cfg, i)
                est = estimator.estimate(scene.image)
                if est.num_people == 0:
                    scores.append(0.0)
                    continue
                detected += 1
                scores.append(object_keypoint_similarity(est.keypoints[0], scene.keypoints[0], float(scene.areas[0])))
            lo, hi = bootstrap_ci(scores)
            target = TARGETS.get(action)
            row = {
                "action": action, "n": args.n, "mean_oks": float(np.mean(scores)), "ci95_lo": lo, "ci95_hi": hi,
                "median_oks": float(np.median(scores)), "detection_rate": detected / args.n,
                "target": target if target is not None else "-",
                "meets": ("yes" if np.mean(scores) >= target else "NO") if target is not None else "-",
            }
            rows.append(row)
            per_action[action] = scores
    summary = {
        "estimator": scored_by,
        "oks": "COCO OKS, sigmas of pycocotools, area = visible segment area, misses score 0",
        "size": args.size, "seed": args.seed, "seconds": time.perf_counter() - t0,
        "all_targets_met": all(r["meets"] != "NO" for r in rows),
    }
    path = write_result("mannequin_pose_recovery", {"summary": summary, "actions": rows}, args.out)
    print_table(rows, ["action", "n", "mean_oks", "ci95_lo", "ci95_hi", "median_oks", "detection_rate", "target", "meets"])
    print(f"\nall targets met: {summary['all_targets_met']} -> {path}")


if __name__ == "__main__":
    main()
