"""Bases v3 on a GPU (issue 17): one prepared run that trains both v3 candidates within a time budget and measures
them. Not run in CI; on a CPU the same configs take hours (``humantune pretrain --config ...``).

1. render the world of ``configs/pretrain/tiny-sd-v3.yaml`` once into ``RUNS/world`` (both bases train on it);
2. time both denoisers at once (two ``humantune pretrain`` processes sharing the device, as in step 3): each
   probe runs until ``--probe-seconds`` have passed after its first logged step, then is stopped;
3. train both at once, each with ``train.max_steps`` = its measured rate × ``--minutes`` × ``--margin`` (so the
   cosine schedule ends on time, not cut off), into ``RUNS/tiny-sd-v3`` and ``RUNS/tiny-sd3-v3``;
4. ``benchmarks/base_quality.py`` on both models; the results (``base_quality_v3.json``, ``timings.json``, the
   logs) go to ``OUT/results.tar``, each model (float16 denoiser as ``humantune models ship`` writes it, without
   the VAE, which is the shipped tiny-sd's) to ``OUT/NAME.tar.partK`` in pieces of at most 15 MiB, since the device
   tool returns at most 8 files of 16 MiB. Unpack here with
   ``cat OUT/NAME.tar.part* | tar x -C runs/v3 && cp -r $(humantune models path tiny-sd)/vae runs/v3/NAME/``.

    python benchmarks/gpu_pretrain_bases.py --minutes 5 --out "$OUT"          # device machine
    python benchmarks/gpu_pretrain_bases.py --minutes 0.2 --probe-seconds 5 --world-n 64 --n 4 --out /tmp/g  # smoke

A later call continues nothing: run it whole (about ``--minutes`` + 3 min on an H200, unmeasured).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {name: ROOT / "configs" / "pretrain" / f"{name}.yaml" for name in ("tiny-sd-v3", "tiny-sd3-v3")}


def pretrain(name: str, out: Path, world: Path, overrides: list[str], log: Path) -> subprocess.Popen:
    """``humantune pretrain`` of one v3 config on the rendered ``world`` with the shipped tiny-sd VAE."""
    n = json.loads((world / "world.json").read_text())["config"]["n"]
    cmd = ["humantune", "pretrain", "--config", str(CONFIGS[name]), "--output-dir", str(out),
           "--set", f"world_dir={world}", "--set", f"world.n={n}",
           "--set", f"vae_path={ROOT / 'humantune' / 'assets' / 'models' / 'tiny-sd' / 'vae'}"]
    for o in overrides:
        cmd += ["--set", o]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)


def logged_steps(out: Path) -> int:
    path = out / "denoiser" / "metrics.jsonl"
    return sum(1 for _ in path.open()) if path.is_file() else 0


def probe(names: list[str], runs: Path, world: Path, seconds: float, logs: Path) -> dict[str, float]:
    """Steps per second of each denoiser while all of them train at once."""
    procs = {n: pretrain(n, runs / f"probe-{n}", world, ["train.max_steps=1000000", "train.checkpoint_every=0"],
                         logs / f"probe-{n}.log") for n in names}
    start, rate = {}, {}
    deadline = time.time() + 600
    while len(rate) < len(names) and time.time() < deadline:
        time.sleep(0.5)
        for n, p in procs.items():
            if n in rate:
                continue
            if p.poll() is not None:
                raise SystemExit(f"probe of {n} ended early (rc {p.returncode}); see {logs / f'probe-{n}.log'}")
            steps = logged_steps(runs / f"probe-{n}")
            if steps and n not in start:
                start[n] = (time.time(), steps)
            elif n in start and time.time() - start[n][0] >= seconds:
                rate[n] = (steps - start[n][1]) / (time.time() - start[n][0])
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs.values():
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
    for n in names:
        shutil.rmtree(runs / f"probe-{n}", ignore_errors=True)
    if len(rate) < len(names):
        raise SystemExit(f"the probes logged no steps within 10 minutes; see {logs}")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="training time of the two bases (run at once)")
    ap.add_argument("--margin", type=float, default=0.85, help="share of the budget the step count is sized for")
    ap.add_argument("--probe-seconds", type=float, default=20.0, help="timing window of the probe")
    ap.add_argument("--world-n", type=int, help="world size (default: the v3 configs')")
    ap.add_argument("--n", type=int, default=64, help="prompts per set of base_quality.py")
    ap.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "gpu_bases")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "runs" / "gpu_bases" / "out")))
    args = ap.parse_args()
    from humantune.config import load_config
    from humantune.data.mannequin.world import write_world
    from humantune.recipes.pretrain import PretrainConfig

    t0 = time.time()
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    world_cfg = load_config(PretrainConfig, CONFIGS["tiny-sd-v3"]).world
    if args.world_n:
        world_cfg = dataclasses.replace(world_cfg, n=args.world_n)
    world = args.runs / "world"
    if not (world / "metadata.jsonl").is_file():
        write_world(world_cfg, world, overwrite=True)
    timings = {"world_s": time.time() - t0}

    rate = probe(args.models, args.runs, world, args.probe_seconds, logs)
    steps = {n: max(10, int(r * args.minutes * 60 * args.margin)) for n, r in rate.items()}
    timings.update(steps_per_s=rate, max_steps=steps)
    print(f"measured steps/s {rate} -> max_steps {steps}", flush=True)

    t1 = time.time()
    procs = {n: pretrain(n, args.runs / n, world, [f"train.max_steps={steps[n]}",
                                                    f"train.lr_warmup_steps={min(200, steps[n] // 10)}",
                                                    f"train.checkpoint_every={max(1, steps[n] // 4)}"],
                         logs / f"{n}.log") for n in args.models}
    failed = [n for n, p in procs.items() if p.wait() != 0]
    timings["train_s"] = time.time() - t1
    if failed:
        raise SystemExit(f"training failed for {failed}; see {logs}")

    models = [str(args.runs / n / "model") for n in args.models]
    subprocess.run([sys.executable, str(ROOT / "benchmarks/base_quality.py"), "--models", *models, "--n", str(args.n),
                    "--out", str(logs / "base_quality_v3.json")], check=True, cwd=ROOT)
    timings["total_s"] = time.time() - t0
    (logs / "timings.json").write_text(json.dumps(timings, indent=1))
    pack(args.runs, args.models, args.out)
    print(json.dumps(timings, indent=1))


def pack(runs: Path, names: list[str], out: Path, part_bytes: int = 15 * 2**20) -> None:
    """``out/results.tar`` (the logs folder) and, per model, its float16 copy without the VAE as
    ``out/NAME.tar.partK`` pieces of at most ``part_bytes``."""
    import io
    import tarfile

    from humantune.models.shipping import ship_model

    with tarfile.open(out / "results.tar", "w") as tar:
        tar.add(out / "logs", arcname="logs")
    for n in names:
        shipped = ship_model(runs / n / "model", n, assets=runs / "packed")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(shipped, arcname=n, filter=lambda info: None if "/vae" in info.name else info)
        data = buffer.getvalue()
        for k in range(0, len(data), part_bytes):
            (out / f"{n}.tar.part{k // part_bytes}").write_bytes(data[k:k + part_bytes])
    shutil.rmtree(out / "logs")


if __name__ == "__main__":
    main()
