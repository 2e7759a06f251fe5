"""Train (or, with ``--eval-only``, evaluate) the anatomy judge and measure it on held-out mannequin renders.

Training (:func:`humantune.eval.anatomy_judge.train_anatomy_judge`): ``--n-pairs`` twin renders of world seed
``--seed`` (each scene once correct and once broken, every broken type in turn), plus the first ``--n-vae`` pairs
passed through the shipped tiny-sd VAE; the judge is written to ``--out`` (default: the shipped asset folder).
Held-out: samples 0..``--heldout``−1 of the plain world with ``anomaly_prob=0.5`` and seed ``--seed + 1``, as
rendered, and the first ``--heldout-vae`` of them VAE-passed.
Reports ROC AUC of P(broken) for correct vs all broken images and vs each broken type, and the false/true positive
rates at the judge's threshold (Wilson 95 % intervals).

    OMP_NUM_THREADS=1 python benchmarks/anatomy_judge.py               # reproduces the shipped judge
    OMP_NUM_THREADS=1 python benchmarks/anatomy_judge.py --eval-only   # measures the shipped judge
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_io import print_table, write_result  # noqa: E402

from humantune.eval.anatomy_judge import CLASSES, DEFAULT_WEIGHTS_DIR, AnatomyJudge, evaluate_anatomy_judge, \
    train_anatomy_judge  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-pairs", type=int, default=10000, help="twin renders (correct, broken) to train on")
    ap.add_argument("--n-vae", type=int, default=1250, help="of those pairs, how many are also added VAE-passed")
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=0, help="training world seed and torch seed; held-out is seed + 1")
    ap.add_argument("--heldout", type=int, default=2000)
    ap.add_argument("--heldout-vae", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS_DIR, help="where to write the trained judge")
    ap.add_argument("--eval-only", action="store_true", help="evaluate the judge in --judge instead of training")
    ap.add_argument("--judge", default=None, help="judge folder for --eval-only (default: the shipped one)")
    ap.add_argument("--result", type=Path, help="result JSON (default: benchmarks/results/anatomy_judge.json)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    if args.eval_only:
        judge = AnatomyJudge.load(args.judge)
        evaluation = evaluate_anatomy_judge(judge, args.heldout, args.heldout_vae, args.seed + 1, progress=True)
        summary = {"mode": "eval-only", "judge": str(args.judge or DEFAULT_WEIGHTS_DIR), "heldout_seed": args.seed + 1,
                   "training": judge.config.training and {k: v for k, v in judge.config.training.items()
                                                          if not k.startswith("heldout")}}
    else:
        judge, record = train_anatomy_judge(args.n_pairs, args.n_vae, args.seed, args.steps, heldout=args.heldout,
                                            heldout_vae=args.heldout_vae, out_path=args.out, progress=True)
        losses = record.pop("losses")
        evaluation = {k: record.pop(k) for k in ("heldout", "heldout_vae") if k in record}
        summary = {"mode": "train", "out": str(args.out), **record,
                   "loss_curve": [round(sum(losses[i:i + 50]) / len(losses[i:i + 50]), 4)
                                  for i in range(0, len(losses), 50)]}
    summary["threshold"] = judge.config.threshold
    summary["parameters"] = sum(p.numel() for p in judge.parameters())
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    rows = []
    for name, ev in evaluation.items():
        fp, tp = ev["false_positive_rate"], ev["true_positive_rate"]
        rows.append({"images": name, "n": ev["n"], "auc": ev["auc"]["overall"],
                     **{k: ev["auc"].get(k, float("nan")) for k in CLASSES[1:]},
                     "fp_rate": fp["rate"], "tp_rate": tp["rate"]})
    path = write_result("anatomy_judge", {"summary": summary, "evaluation": evaluation}, args.result)
    print_table(rows, ["images", "n", "auc", *CLASSES[1:], "fp_rate", "tp_rate"])
    print(f"\n(ROC AUC of P(broken), correct vs all broken and vs each type; rates at P(broken) > "
          f"{judge.config.threshold})\n{summary['seconds']:.0f} s -> {path}")


if __name__ == "__main__":
    main()
