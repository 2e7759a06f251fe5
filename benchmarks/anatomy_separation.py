"""Does the keypoint anatomy score (humantune.eval.anatomy) tell broken mannequins from correct ones?

Renders N correct single people (``anomaly_prob=0``) and N broken ones per anomaly type (``anomaly_prob=1``,
``anomaly_types=[type]``, ``second_person_prob=0``) at the world's default size, and scores each person three ways:

- ``gt``: the ground-truth keypoints (an upper bound: what the checks can see when keypoints are exact);
- ``gt+mask``: the same plus the person's silhouette (adds the mask checks);
- ``mediapipe``: keypoints detected by MediaPipe Pose (the real use: generated images have no ground truth);
  a missed person counts as anomalous (score ∞).

Reports, per source: ROC AUC of ``anomaly_score`` (correct vs all broken, and per type), the false-positive rate on
correct people and the detection rate per anomaly type (flagged = score > 1), with Wilson 95% intervals.

    python benchmarks/anatomy_separation.py [--n 150] [--size 128] [--seed 0] [--min-confidence 0.5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_io import print_table, write_result  # noqa: E402

from humantune.data.mannequin.anomalies import ANOMALY_TYPES  # noqa: E402
from humantune.data.mannequin.world import MannequinConfig, render_sample  # noqa: E402
from humantune.eval.anatomy import anatomy_checks, anomaly_rate, anomaly_score, roc_auc, violations  # noqa: E402
from humantune.eval.context import describe_estimator  # noqa: E402
from humantune.eval.pose_estimators import MediaPipePoseEstimator  # noqa: E402

SOURCES = ("gt", "gt+mask", "mediapipe")


def score_people(cfg: MannequinConfig, n: int, estimator: MediaPipePoseEstimator, min_confidence: float,
                 desc: str) -> dict[str, list[dict]]:
    """anatomy_checks of the first person of samples 0..n−1, per source."""
    out: dict[str, list[dict]] = {s: [] for s in SOURCES}
    size = (cfg.size, cfg.size)
    for i in tqdm(range(n), desc=desc, leave=False):
        scene = render_sample(cfg, i)
        out["gt"].append(anatomy_checks(scene.keypoints[0], image_size=size))
        out["gt+mask"].append(anatomy_checks(scene.keypoints[0], mask=scene.mask == 1))
        est = estimator.estimate(scene.image)
        detected = est.keypoints[0] if est.num_people else None
        out["mediapipe"].append(anatomy_checks(detected, min_confidence=min_confidence, image_size=size))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=150, help="correct people, and broken people per anomaly type")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-confidence", type=float, default=0.5, help="MediaPipe visibility to count a keypoint")
    ap.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/anatomy_separation.json)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    common = dict(n=args.n, size=args.size, second_person_prob=0.0)
    groups: dict[str, dict[str, list[dict]]] = {}
    with MediaPipePoseEstimator() as estimator:
        scored_by = describe_estimator(estimator)
        groups["correct"] = score_people(MannequinConfig(seed=args.seed, anomaly_prob=0.0, **common), args.n,
                                         estimator, args.min_confidence, "correct")
        for k, kind in enumerate(ANOMALY_TYPES):
            cfg = MannequinConfig(seed=args.seed + 1 + k, anomaly_prob=1.0, anomaly_types=[kind], **common)
            groups[kind] = score_people(cfg, args.n, estimator, args.min_confidence, kind)

    rows, fired = [], {}
    for source in SOURCES:
        correct = [anomaly_score(c) for c in groups["correct"][source]]
        broken = [anomaly_score(c) for kind in ANOMALY_TYPES for c in groups[kind][source]]
        fp = anomaly_rate(groups["correct"][source])
        row = {
            "source": source,
            "auc": roc_auc(correct + broken, [0] * len(correct) + [1] * len(broken)),
            "fp_rate": fp.rate, "fp_ci95": f"[{fp.ci95_lo:.3f}, {fp.ci95_hi:.3f}]",
        }
        for kind in ANOMALY_TYPES:
            rate = anomaly_rate(groups[kind][source])
            scores = [anomaly_score(c) for c in groups[kind][source]]
            row[f"{kind}"] = rate.rate
            row[f"{kind}_ci95"] = [rate.ci95_lo, rate.ci95_hi]
            row[f"{kind}_auc"] = roc_auc(correct + scores, [0] * len(correct) + [1] * len(scores))
        rows.append(row)
        fired[source] = {
            group: {name: sum(name in violations(c) for c in results[source]) for name in
                    sorted({k for c in results[source] for k in c})}
            for group, results in groups.items()
        }
    summary = {
        "n_correct": args.n, "n_broken_per_type": args.n, "size": args.size, "seed": args.seed,
        "estimator": scored_by,
        "min_confidence": args.min_confidence, "flagged": "anomaly_score > 1; a missed person scores inf",
        "seconds": time.perf_counter() - t0,
    }
    path = write_result("anatomy_separation", {"summary": summary, "sources": rows, "checks_fired": fired}, args.out)
    print_table(rows, ["source", "auc", "fp_rate", "fp_ci95", *ANOMALY_TYPES])
    print("\nper-type ROC AUC (vs correct):")
    print_table(rows, ["source", *[f"{k}_auc" for k in ANOMALY_TYPES]])
    print(f"\n{summary['seconds']:.0f} s -> {path}")


if __name__ == "__main__":
    main()
