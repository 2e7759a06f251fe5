"""Does the pose-guided video model use the pose and the time axis? Runs ``humantune train pose-video`` on a config
(default the quick one) — or reads a finished run with ``--run DIR`` — and records its held-out metrics beside the
trivial baseline that repeats the reference image for every frame, and beside the last phase given *another*
clip's poses (a detector-free check that the pose steers the figure).

    python benchmarks/pose_video.py                                          # configs/pose_video/quick.yaml, ~3-6 min
    python benchmarks/pose_video.py --config configs/pose_video/mannequin.yaml --name pose_video_mannequin  # ~40 min

Writes ``benchmarks/results/<name>.json`` (rows: per-frame L1 / SSIM / PSNR vs the ground-truth clip, MediaPipe OKS per
frame, pose jitter, frame-to-frame change, the world-feature clip kernel distance; per-clip PSNR intervals) and prints
the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_io import bootstrap_ci, print_table, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["model", "l1", "ssim", "psnr", "psnr_ci95", "oks", "jitter", "frame_change", "video_kd"]


def rows_of(results: dict) -> list[dict]:
    rows = []
    for label, m in results["metrics"].items():
        per_clip = m.get("psnr_per_clip") or []
        lo, hi = bootstrap_ci(per_clip) if len(per_clip) > 1 else (float("nan"), float("nan"))
        rows.append({"model": label, **{k: m.get(k) for k in COLUMNS[1:] if k != "psnr_ci95"},
                     "psnr_ci95": f"[{lo:.2f}, {hi:.2f}]"})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs/pose_video/quick.yaml"))
    ap.add_argument("--run", type=Path, default=None, help="read this finished run instead of training")
    ap.add_argument("--name", default="pose_video", help="result file name under benchmarks/results/")
    ap.add_argument("--note", default="", help="how the run read with --run was made (recorded in the result)")
    args = ap.parse_args()
    started = time.time()
    if args.run is None:
        work = Path(tempfile.mkdtemp(prefix="pose_video_bench_"))
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        subprocess.run([sys.executable, "-m", "humantune", "train", "pose-video", "--config", args.config,
                        "--output-dir", str(work / "run")], check=True, env=env)
        run = work / "run"
    else:
        run = args.run
    results = json.loads((run / "results.json").read_text())
    rows = rows_of(results)
    training = {k: {f: v.get(f) for f in ("steps", "frames", "final_loss", "seconds", "trained_parameters",
                                           "parameters", "start_step")}
                for k, v in results.get("training", {}).items()}
    path = write_result(args.name, {"config": os.path.relpath(args.config, ROOT), "trained_here": args.run is None,
                                    "note": args.note, "run": str(run), "seconds": time.time() - started,
                                    "eval_clips": results.get("eval_clips"), "eval_frames": results.get("eval_frames"),
                                    "generation": results.get("generation"), "training": training, "rows": rows})
    print_table(rows, COLUMNS)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
