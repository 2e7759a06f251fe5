"""How well does humantune.eval.attributes read the world's attributes back off its own renders?

Renders two sets and scores every image against its own caption (so a perfect reader scores 1):

- ``easy``: single, untruncated people standing / walking / waving;
- ``world``: the default world (all 11 actions, 10 % two-person images, 5 % truncated).

with two sources of keypoints: the ground truth (``gt``) and MediaPipe Pose detections (``mediapipe``; a miss
counts as wrong for every attribute). Reports per-attribute accuracy with a Wilson 95 % interval and the most
frequent confusions. Target (the brief): top-colour accuracy >= 0.9 on ``easy`` with ground-truth keypoints.

    python benchmarks/attribute_accuracy.py [--n 400] [--seed 21]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_io import print_table, write_result  # noqa: E402

from humantune.data.mannequin.world import DEFAULT_ACTION_MIX, MannequinConfig, render_sample  # noqa: E402
from humantune.eval.attributes import ATTRIBUTES, attribute_accuracy, confusion_summary  # noqa: E402
from humantune.eval.context import describe_estimator  # noqa: E402
from humantune.eval.pose_estimators import MediaPipePoseEstimator  # noqa: E402
from humantune.eval.preference import wilson_interval  # noqa: E402

SETS = {
    "easy": dict(action_mix={"standing": 1.0, "walking": 1.0, "waving": 1.0}, second_person_prob=0.0,
                 truncate_prob=0.0),
    "world": dict(action_mix=DEFAULT_ACTION_MIX),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="images per set")
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/attribute_accuracy.json)")
    args = ap.parse_args()

    rows, confusions = [], {}
    t0 = time.perf_counter()
    with MediaPipePoseEstimator() as estimator:
        scored_by = describe_estimator(estimator)
        for set_name, overrides in SETS.items():
            cfg = MannequinConfig(n=args.n, seed=args.seed, **overrides)
            scenes = [render_sample(cfg, i) for i in range(args.n)]
            images, captions = [s.image for s in scenes], [s.caption for s in scenes]
            detected = [estimator.estimate(im).keypoints for im in tqdm(images, desc=set_name, leave=False)]
            for source, detections in (("gt", [s.keypoints for s in scenes]), ("mediapipe", detected)):
                result = attribute_accuracy(images, captions, detections)
                for a in ATTRIBUTES:
                    lo, hi = wilson_interval(result.correct[a], result.counted[a])
                    rows.append({"set": set_name, "keypoints": source, "attribute": a, "n": result.counted[a],
                                 "accuracy": result.accuracy[a], "ci95_lo": lo, "ci95_hi": hi})
                    confusions[f"{set_name}/{source}/{a}"] = [
                        {"requested": w, "read": g, "count": c} for w, g, c in confusion_summary(result.confusion[a])]
    easy_top = next(r for r in rows if r["set"] == "easy" and r["keypoints"] == "gt" and r["attribute"] == "top_color")
    summary = {
        "n_per_set": args.n, "seed": args.seed, "seconds": time.perf_counter() - t0,
        "colour_space": "CIELAB (OpenCV float), CIE76 nearest prototype, majority vote, skin pixels rejected",
        "detector": scored_by,
        "misses": "a missed detection is wrong for every attribute",
        "target_easy_gt_top_color": 0.9, "meets_target": easy_top["accuracy"] >= 0.9,
    }
    path = write_result("attribute_accuracy", {"summary": summary, "results": rows, "top_confusions": confusions},
                        args.out)
    print_table(rows, ["set", "keypoints", "attribute", "n", "accuracy", "ci95_lo", "ci95_hi"])
    for key, pairs in confusions.items():
        if pairs:
            print(f"{key}: " + ", ".join(f"{p['requested']}->{p['read']} x{p['count']}" for p in pairs))
    print(f"\ntarget met: {summary['meets_target']} -> {path}")


if __name__ == "__main__":
    main()
