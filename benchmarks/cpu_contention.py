"""How much two torch training processes on one CPU slow each other, with torch's default threads and with the
threads humantune chooses when OMP_NUM_THREADS is not set (humantune/threads.py: the CPUs minus the 1-minute load
average, at least 1).

A worker trains a tiny-sd-sized UNet (the pretrain recipe's default architecture, 16² latents, batch 8) for a fixed
number of steps and reports seconds per step. Each setting runs one worker alone, then two at once; the slowdown is
(seconds per step beside the other job) / (seconds per step alone). Writes benchmarks/results/cpu_contention.json
and prints a table.

    OMP_NUM_THREADS= python benchmarks/cpu_contention.py [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CPUS = len(os.sched_getaffinity(0))
SETTINGS = {
    "torch default (a thread per CPU)": {"OMP_NUM_THREADS": str(CPUS)},
    "humantune's choice (CPUs minus load, >= 1)": {},
    "OMP_WAIT_POLICY=PASSIVE, a thread per CPU": {"OMP_NUM_THREADS": str(CPUS), "OMP_WAIT_POLICY": "PASSIVE"},
}
"""Environment of each setting's workers (on top of a copy without OMP_NUM_THREADS / OMP_WAIT_POLICY). The default
row names torch's default explicitly because humantune would otherwise apply its own choice."""


def worker(steps: int) -> None:
    import humantune  # noqa: F401  (applies humantune's thread settings before torch loads)
    import torch

    from humantune.models import tiny

    torch.manual_seed(0)
    unet = tiny.build_unet(tiny.UNetConfig(), 4, 16, 128)
    opt = torch.optim.AdamW(unet.parameters(), 1e-4)
    x, c = torch.randn(8, 4, 16, 16), torch.randn(8, 16, 128)
    t = torch.randint(0, 1000, (8,))
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        loss = (unet(x, t, c).sample - x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"s_per_step": sorted(times[2:])[len(times[2:]) // 2], "threads": torch.get_num_threads()}))


def run(env_extra: dict, copies: int, steps: int) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--steps", str(steps)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--worker", action="store_true")
    args = p.parse_args()
    if args.worker:
        worker(args.steps)
        return 0
    rows = []
    for name, env in SETTINGS.items():
        alone = run(env, 1, args.steps)[0]
        shared = run(env, 2, args.steps)
        together = max(r["s_per_step"] for r in shared)
        rows.append({"setting": name, "threads": alone["threads"], "alone_s_per_step": alone["s_per_step"],
                     "beside_one_other_s_per_step": together, "slowdown": together / alone["s_per_step"]})
    result = {"cpus": len(os.sched_getaffinity(0)), "load_average_1min_at_end": os.getloadavg()[0],
              "steps": args.steps, "rows": rows}
    out = ROOT / "benchmarks" / "results" / "cpu_contention.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'setting':52s} {'threads':>7s} {'alone s/step':>12s} {'shared s/step':>13s} {'slowdown':>8s}")
    for r in rows:
        print(f"{r['setting']:52s} {r['threads']:7d} {r['alone_s_per_step']:12.3f} "
              f"{r['beside_one_other_s_per_step']:13.3f} {r['slowdown']:8.2f}x")
    print(f"({result['cpus']} CPUs; 1-min load average at the end {result['load_average_1min_at_end']:.1f}; {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
