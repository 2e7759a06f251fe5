"""Scale-out on the CPU and the engine's overhead, on a small SD-style UNet (ε-prediction, DDPM noise).

1. 1 process × micro-batch 8 vs ``accelerate launch`` 2 processes × micro-batch 4 (configs/accelerate/ddp_cpu.yaml,
   DDP over gloo): seconds per step per process, and the largest relative difference of the two loss trajectories;
2. the engine (``Trainer.fit``) against a minimal diffusers-style loop (noise, timestep, add_noise, UNet, MSE,
   backward, clip, AdamW) on identical models and batches, one process: seconds per step and their ratio
   (target ≤ 1.05).

Every process runs with OMP_NUM_THREADS=1 (two processes share the 2-core CI machine). Writes
benchmarks/results/scale_out.json and prints a table.

    python benchmarks/scale_out.py [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N, LATENT, TEXT = 64, (4, 16, 16), (8, 64)


def _setup(seed: int = 0):
    import torch
    from diffusers import DDPMScheduler

    from humantune.models import tiny

    torch.manual_seed(seed)
    unet = tiny.build_unet(tiny.UNetConfig(block_out_channels=[32, 64], attention_heads=4, norm_num_groups=8),
                           LATENT[0], LATENT[1], TEXT[1])
    g = torch.Generator().manual_seed(1)
    return unet, torch.randn(N, *LATENT, generator=g), torch.randn(N, *TEXT, generator=g), DDPMScheduler()


class UNetTask:
    """The engine task of the benchmark: ε-prediction MSE of a UNet on fixed latents and text embeddings."""

    def __init__(self):
        from humantune.losses.objectives import DDPMObjective

        self.unet, self.z0, self.text, scheduler = _setup()
        self.objective, self.times = DDPMObjective(scheduler), []

    def trainable_modules(self):
        return {"unet": self.unet}

    def frozen_modules(self):
        return {}

    def attach(self, modules):
        self.model = modules["unet"]

    def dataset(self):
        return range(N)

    def collate(self, idx):
        import torch

        return torch.tensor(idx)

    def loss(self, batch, generator):
        noised = self.objective.noise(self.z0[batch], generator)
        out = self.model(noised.noisy, noised.timesteps, self.text[batch]).sample
        return self.objective.loss(out, noised).mean(), {}

    def validate(self, step, out_dir):
        return {}

    def on_step_end(self, step, row):
        self.times.append(time.perf_counter())


def engine_worker(out: Path, batch: int, steps: int) -> None:
    from humantune.train.engine import Trainer, TrainConfig

    trainer = Trainer(out, log_with=None)
    task = UNetTask()
    cfg = TrainConfig(max_steps=steps, batch_size=batch, learning_rate=1e-4, lr_scheduler="constant",
                      checkpoint_every=0, validate_every=0, seed=0)
    t0 = time.perf_counter()
    trainer.fit(task, cfg, out, desc="bench")
    stamps = [t0] + task.times
    per_step = [b - a for a, b in zip(stamps, stamps[1:])][3:]   # warm-up steps excluded
    (out / f"timing_{trainer.accelerator.process_index}.json").write_text(json.dumps(
        {"s_per_step": statistics.median(per_step), "processes": trainer.accelerator.num_processes}))


def minimal_loop(batch: int, steps: int) -> float:
    """The diffusers training-example loop, nothing else: seconds per step (median, warm-up excluded)."""
    import numpy as np
    import torch

    unet, z0, text, scheduler = _setup()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=1e-2)
    g = torch.Generator().manual_seed(0)
    unet.train()
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        idx = torch.from_numpy(np.random.default_rng([0, step]).choice(N, batch, replace=False))
        latents = z0[idx]
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        pred = unet(scheduler.add_noise(latents, noise, t), t, text[idx]).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[3:])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--worker", type=Path)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    if args.worker:
        engine_worker(args.worker, args.batch, args.steps)
        return 0
    from humantune.train.engine import read_metrics

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        one, two = Path(tmp) / "one", Path(tmp) / "two"
        subprocess.run([sys.executable, __file__, "--worker", str(one), "--batch", "8", "--steps", str(args.steps)],
                       env=env, check=True, capture_output=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                        str(ROOT / "configs/accelerate/ddp_cpu.yaml"), "--main_process_port", str(port), __file__,
                        "--worker", str(two), "--batch", "4", "--steps", str(args.steps)],
                       env=env, check=True, capture_output=True)
        t_one = json.loads((one / "timing_0.json").read_text())["s_per_step"]
        t_two = [json.loads((two / f"timing_{r}.json").read_text())["s_per_step"] for r in (0, 1)]
        rows_one, rows_two = read_metrics(one), read_metrics(two)
        diff = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(rows_one, rows_two, strict=True))
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.argv = ['x']; "
                f"from benchmarks.scale_out import minimal_loop; print(minimal_loop(8, {args.steps}))")
        t_min = float(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                     text=True).stdout.strip().splitlines()[-1])
    result = {
        "model": "UNet2DConditionModel [32, 64], 4x16x16 latents, 8x64 text; AdamW; OMP_NUM_THREADS=1",
        "steps": args.steps, "cpus": len(os.sched_getaffinity(0)), "load_average_1min": os.getloadavg()[0],
        "one_process_batch8_s_per_step": t_one,
        "two_processes_batch4_s_per_step": t_two,
        "samples_per_s": {"1 process": 8 / t_one, "2 processes": 8 / max(t_two)},
        "max_relative_loss_difference_1_vs_2_processes": diff,
        "minimal_loop_s_per_step": t_min,
        "engine_over_minimal_loop": t_one / t_min,
    }
    out = ROOT / "benchmarks" / "results" / "scale_out.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'run':42s} {'s/step per process':>18s} {'samples/s':>10s}")
    print(f"{'engine, 1 process x batch 8':42s} {t_one:18.4f} {8 / t_one:10.1f}")
    print(f"{'engine, 2 processes x batch 4 (gloo)':42s} {max(t_two):18.4f} {8 / max(t_two):10.1f}")
    print(f"{'minimal diffusers-style loop, batch 8':42s} {t_min:18.4f} {8 / t_min:10.1f}")
    print(f"loss trajectory, 1 vs 2 processes: max relative difference {diff:.2e} over {args.steps} steps")
    print(f"engine / minimal loop: {t_one / t_min:.3f}x (target <= 1.05)   ({out})")
    return 0


if __name__ == "__main__":
    from humantune.train.processes import exit_process

    exit_process(main())
