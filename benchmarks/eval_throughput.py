"""How fast is ``humantune eval``? Images per second of each metric on N rendered mannequin images.

Renders N images of the mannequin world (the reference), writes a perturbed copy of each (Gaussian noise σ = 8
levels: the "generated" set), runs :func:`humantune.studies.evaluation.evaluate` with every metric that needs no
downloaded weights, and reads the throughput it records: a metric's images/s counts its own time plus the shared
stages it uses (pose detection on the generated and reference images), so it is the rate of computing that metric
alone. Stages are listed separately.

    python benchmarks/eval_throughput.py [--n 64] [--size 128] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_io import print_table, write_result  # noqa: E402

from humantune.data.mannequin.world import MannequinConfig, write_world  # noqa: E402
from humantune.studies.evaluation import evaluate  # noqa: E402

METRICS = ["oks", "oks_debiased", "pck", "anomaly_rate", "ssim", "psnr", "l1", "attribute_accuracy", "world_fd"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="number of images")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/eval_throughput.json)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        reference = write_world(MannequinConfig(n=args.n, size=args.size, seed=args.seed), root / "reference",
                                workers=1, progress=False)
        generated = root / "generated"
        generated.mkdir()
        rng = np.random.default_rng(args.seed)
        for path in sorted((reference / "images").glob("*.png")):
            image = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
            noisy = np.clip(image + rng.normal(0, 8, size=image.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(generated / path.name)
        t0 = time.perf_counter()
        result = evaluate(generated, reference, out_dir=root / "eval", metrics=METRICS, report=True)
        total = time.perf_counter() - t0
    summary = result.summary
    rows = [{"metric": name, "value": m["value"], "seconds_own": m["seconds"],
             "stages": "+".join(m["shared_stages"]) or "-", "images_per_s": m["images_per_s"]}
            for name, m in summary["metrics"].items()]
    rows += [{"metric": f"[stage] {name}", "value": "-", "seconds_own": s["seconds"], "stages": "-",
              "images_per_s": s["images_per_s"]} for name, s in summary["stages"].items()]
    payload = {"n": args.n, "size": args.size, "seed": args.seed, "estimator": summary["estimator"],
               "seconds_total_including_report": total, "metrics": rows}
    path = write_result("eval_throughput", payload, args.out)
    print_table(rows, ["metric", "value", "seconds_own", "stages", "images_per_s"])
    print(f"\n{args.n} images of {args.size}², total {total:.1f} s (with report) -> {path}")


if __name__ == "__main__":
    main()
