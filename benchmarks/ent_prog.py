"""Ent-Prog against full fine-tuning, measured side by side (papers.md §3; issue 16's claim).

Task: ``configs/ent_prog/mannequin.yaml`` — tiny-sd3's transformer adapted to 64² mannequin images, three stages of
60 steps, the same data, held-out set (fixed timesteps and noises) and step budget for every arm:

- ``full``: plain full fine-tuning (every parameter);
- ``ent-prog``: CEI ranking + adaptive schedule (supernet epoch + argmax CE(m) per stage);
- ``cei-fixed``: CEI ranking + the fixed m_k of the config (AutoProg-Zero style);
- ``random-adaptive``: a seeded random block order + adaptive schedule.

Each (seed, arm) runs as its own process (one torch thread), arms interleaved within a seed so that the shared
machine's load drifts over all of them alike. Per run: the held-out loss against wall-clock seconds (CEI time +
training steps + the supernet's per-step evaluation; measurement-only evaluations are not on the clock), the
process's peak RSS, and the training state (parameters + gradients + AdamW state + bytes autograd saved for
backward, counted with ``saved_tensors_hooks``) of the largest step. Speed-up of an arm in a seed = the time full
fine-tuning needed to first reach its own final held-out loss / the time the arm needed to reach that loss (linear
interpolation between evaluations; "not reached" if it never did), with and without CEI's one-off seconds; also
the ratio of times to 90 % of full fine-tuning's loss reduction (a target less at the mercy of one noisy
evaluation). Final quality: the held-out loss with a 95 % bootstrap interval over seeds.

Also: where a CPU step's time goes (:func:`step_breakdown`). Writes benchmarks/results/ent_prog.json and prints
the tables.

    OMP_NUM_THREADS=1 python benchmarks/ent_prog.py [--seeds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "configs" / "ent_prog" / "mannequin.yaml"
ARM_ORDER = ["full", "ent-prog", "cei-fixed", "random-adaptive"]
EXTRA = [o for o in os.environ.get("ENT_PROG_BENCH_SET", "").split() if o]
"""Extra --set overrides for every run (e.g. ENT_PROG_BENCH_SET='always_train=[norm_out,proj_out]')."""


def render_worlds(work: Path) -> list[str]:
    """Render the config's training and held-out worlds once, in this process (before torch starts threads: the
    renderer's worker pool is then safe), and return the overrides that point every run at them."""
    import yaml

    from humantune.config import load_config
    from humantune.data.mannequin.world import MannequinConfig, write_world

    raw = yaml.safe_load(CONFIG.read_text())
    overrides = []
    for name in ("train_data", "heldout_data"):
        folder = work / "data" / name
        if not (folder / "metadata.jsonl").is_file():
            write_world(load_config(MannequinConfig, base=raw[name]["world"]), folder, overwrite=True)
        overrides += [f"{name}.kind=pose_folder", f"{name}.path={folder}"]
    return overrides


def child(arm: str, seed: int, run_dir: Path, quick: bool) -> None:
    """One run in this process: the recipe with the arm's schedule and ordering, then its peak RSS."""
    from humantune.config import load_config
    from humantune.io import write_json_atomic
    from humantune.recipes.ent_prog import ARMS, EntProgConfig, train_ent_prog

    schedule, ordering = ARMS[arm]
    # one CEI measurement per seed, shared by the arms that use it (its seconds stay on each one's clock)
    overrides = [f"schedule={schedule}", f"ordering={ordering}", f"cei.seed={seed}",
                 f"cei_dir={run_dir.parent / 'cei'}"]
    for k in range(3):
        overrides.append(f"stages.{k}.train.seed={seed}")
        if quick:
            overrides += [f"stages.{k}.train.max_steps=20", f"stages.{k}.supernet_steps=6"]
    if quick:
        overrides += ["cei.samples=200", "eval_every=4"]
    overrides += EXTRA + render_worlds(run_dir.parents[1])   # already rendered by the parent: only the paths
    cfg = load_config(EntProgConfig, CONFIG, overrides)
    t0 = time.perf_counter()
    train_ent_prog(cfg, run_dir)
    write_json_atomic(run_dir / "process.json", {
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "process_seconds": time.perf_counter() - t0})


def step_breakdown(out: Path, steps: int = 10) -> None:
    """Forward / backward / AdamW milliseconds of one training step (batch 8, 64² → 16² latents) of tiny-sd3's
    transformer when training everything, the top-m blocks by the CEI ranking of the benchmark's seed 0, and the
    last two blocks (the most a frozen prefix can save here): where a CPU step's time goes. Written to ``out``."""
    import torch

    from humantune.io import write_json_atomic
    from humantune.models.blocks import residual_blocks
    from humantune.models.generation import load_pipeline
    from humantune.train.progressive import ProgressiveBlocks

    d = load_pipeline("tiny-sd3").transformer
    ranking = json.loads((out.parent / "seed0" / "cei" / "cei.json").read_text())["ranking"]
    blocks = residual_blocks(d)
    pb = ProgressiveBlocks([b.name for b in blocks], [b.module for b in blocks], ranking)
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(8, 4, 16, 16, generator=g), torch.randn(8, 8, d.config.joint_attention_dim, generator=g)
    pooled, t = torch.randn(8, d.config.pooled_projection_dim, generator=g), torch.rand(8, generator=g) * 1000

    def measure(names):
        for p in d.parameters():
            p.requires_grad_(names is None)
        params = list(d.parameters()) if names is None else pb.train_only(names)
        opt = torch.optim.AdamW(params, lr=1e-5)
        total = [0.0, 0.0, 0.0]
        for i in range(steps + 2):
            t0 = time.perf_counter()
            with pb.frozen_prefix(names is not None):
                loss = d(hidden_states=x, encoder_hidden_states=c, pooled_projections=pooled, timestep=t).sample
                loss = loss.square().mean()
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            t3 = time.perf_counter()
            if i >= 2:   # two warm-up steps
                for k, v in enumerate((t1 - t0, t2 - t1, t3 - t2)):
                    total[k] += v * 1000 / steps
        return dict(zip(("forward_ms", "backward_ms", "optimizer_ms"), total), total_ms=sum(total))

    rows = {"full": measure(None)}
    for m in (len(blocks), 4, 2, 1):
        rows[f"top-{m} by CEI ({', '.join(n.split('.')[-1] for n in ranking[:m])})"] = measure(ranking[:m])
    rows["last two blocks (a frozen prefix of 4)"] = measure([n for n in pb.names[-2:]])
    write_json_atomic(out, rows)


def time_to_reach(curve: list[list[float]], target: float) -> float | None:
    """First wall-clock second at which the held-out loss curve reaches ``target`` (linear interpolation between
    evaluations); None if it never does."""
    for (t0, l0), (t1, l1) in zip(curve, curve[1:]):
        if l1 <= target:
            if l0 <= target:
                return t0
            return t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return curve[0][0] if curve and curve[0][1] <= target else None


def summarise(runs: dict[tuple[int, str], dict]) -> dict:
    from benchmarks.benchmark_io import bootstrap_ci

    seeds = sorted({s for s, _ in runs})
    per_seed = []
    for s in seeds:
        full = runs[(s, "full")]
        target = full["curve"][-1][1]   # full FT's last evaluation (the value its curve holds, to the last bit)
        t_full = time_to_reach(full["curve"], target)
        for arm in ARM_ORDER:
            r = runs[(s, arm)]
            t = time_to_reach(r["curve"], target)
            # the same without CEI's one-off measurement (amortised over every fine-tune of one model and data)
            t_train = time_to_reach([[c - r["cei_seconds"], v] for c, v in r["curve"]], target)
            # a softer target, less at the mercy of the last evaluation's noise: 90 % of full FT's loss reduction
            soft = full["curve"][0][1] - 0.9 * (full["curve"][0][1] - target)
            t_soft_full, t_soft = time_to_reach(full["curve"], soft), time_to_reach(r["curve"], soft)
            per_seed.append({"seed": s, "arm": arm, "target": target, "seconds_to_target": t,
                             "speedup": (t_full / t) if t else None,
                             "speedup_without_cei": (t_full / t_train) if t_train else None,
                             "speedup_90pct": (t_soft_full / t_soft) if t_soft else None, **{k: r[k] for k in (
                                 "final_loss", "total_seconds", "cei_seconds", "mean_step_seconds", "peak_rss_bytes",
                                 "state_bytes", "activation_bytes", "state_by_phase", "choices")}})
    arms = {}
    for arm in ARM_ORDER:
        rows = [r for r in per_seed if r["arm"] == arm]
        losses = [r["final_loss"] for r in rows]
        speed = [r["speedup"] for r in rows if r["speedup"] is not None]
        speed_train = [r["speedup_without_cei"] for r in rows if r["speedup_without_cei"] is not None]
        lo, hi = bootstrap_ci(losses)
        arms[arm] = {
            "final_heldout_loss": sum(losses) / len(losses), "final_heldout_ci95": [lo, hi],
            "speedup_mean": sum(speed) / len(speed) if speed else None, "speedups": [r["speedup"] for r in rows],
            "reached_target": f"{len(speed)}/{len(rows)}",
            "speedup_without_cei_mean": sum(speed_train) / len(speed_train) if speed_train else None,
            "speedups_without_cei": [r["speedup_without_cei"] for r in rows],
            "reached_target_without_cei": f"{len(speed_train)}/{len(rows)}",
            "speedups_90pct": [r["speedup_90pct"] for r in rows],
            "cei_seconds_mean": sum(r["cei_seconds"] for r in rows) / len(rows),
            "mean_step_seconds": sum(r["mean_step_seconds"] for r in rows) / len(rows),
            "total_seconds_mean": sum(r["total_seconds"] for r in rows) / len(rows),
            "peak_rss_mb": max(r["peak_rss_bytes"] for r in rows) / 2**20,
            "peak_state_mb": max(r["state_bytes"] for r in rows) / 2**20,
            "peak_activation_mb": max(r["activation_bytes"] for r in rows) / 2**20,
            "choices": [r["choices"] for r in rows],
            # the training state of each stage phase (largest step; supernet phases hold their largest candidate)
            "state_mb_by_phase": {k: max(r["state_by_phase"].get(k, 0) for r in rows) / 2**20
                                  for k in rows[0]["state_by_phase"]},
        }
    full = arms["full"]
    for arm in arms.values():
        arm["state_memory_vs_full"] = arm["peak_state_mb"] / full["peak_state_mb"]
        arm["rss_vs_full"] = arm["peak_rss_mb"] / full["peak_rss_mb"]
        arm["step_time_vs_full"] = arm["mean_step_seconds"] / full["mean_step_seconds"]
    return {"per_seed": per_seed, "arms": arms}


def read_run(run_dir: Path) -> dict:
    res = json.loads((run_dir / "results.json").read_text())
    proc = json.loads((run_dir / "process.json").read_text())
    state = res["peak_state_bytes"]
    return {"curve": res["curve"], "final_loss": res["heldout_loss"]["mean"], "total_seconds": res["curve"][-1][0],
            "cei_seconds": res["cei_seconds"], "mean_step_seconds": state["mean_step_seconds"],
            "peak_rss_bytes": proc["peak_rss_bytes"], "process_seconds": proc["process_seconds"],
            "state_bytes": state["total"],
            "activation_bytes": state["max_activations"], "state_by_phase": state["by_phase"],
            "choices": [v.get("choice", {}).get("m") for v in res["stages"].values()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20-step stages, 200 CEI samples (a smoke run)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/ent_prog.json)")
    parser.add_argument("--child", nargs=3, metavar=("ARM", "SEED", "RUN_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--breakdown", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), Path(args.child[2]), args.quick)
        return
    if args.breakdown:
        step_breakdown(args.breakdown)
        return
    from benchmarks.benchmark_io import print_table, write_result

    work = args.work or Path(tempfile.mkdtemp(prefix="ent_prog_bench_"))
    render_worlds(work)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs, t0 = {}, time.perf_counter()
    for seed in range(args.seeds):
        for arm in ARM_ORDER:
            run_dir = work / f"seed{seed}" / arm
            if not (run_dir / "process.json").is_file():
                cmd = [sys.executable, __file__, "--child", arm, str(seed), str(run_dir)]
                cmd += ["--quick"] if args.quick else []
                print(f"seed {seed} {arm} ...", flush=True)
                subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
            runs[(seed, arm)] = read_run(run_dir)
    summary = summarise(runs)
    if not (work / "breakdown.json").is_file():
        subprocess.run([sys.executable, __file__, "--breakdown", str(work / "breakdown.json")], check=True, env=env,
                       cwd=ROOT, stdout=subprocess.DEVNULL)
    summary["step_breakdown_ms"] = json.loads((work / "breakdown.json").read_text())
    rows = [{"arm": arm, "final held-out (95% CI)": f"{a['final_heldout_loss']:.4f} [{a['final_heldout_ci95'][0]:.4f}, "
                                                  f"{a['final_heldout_ci95'][1]:.4f}]",
             "speed-up": "-" if a["speedup_mean"] is None else f"{a['speedup_mean']:.2f}x",
             "reached": a["reached_target"],
             "w/o CEI": "-" if a["speedup_without_cei_mean"] is None else f"{a['speedup_without_cei_mean']:.2f}x",
             "reached w/o CEI": a["reached_target_without_cei"], "seconds": f"{a['total_seconds_mean']:.0f}",
             "step time": f"{a['step_time_vs_full']:.2f}",
             "state MB": f"{a['peak_state_mb']:.1f} ({a['state_memory_vs_full']:.2f})",
             "activations MB": f"{a['peak_activation_mb']:.1f}", "peak RSS MB": f"{a['peak_rss_mb']:.0f}",
             "m per stage": str(a["choices"])}
            for arm, a in summary["arms"].items()]
    path = write_result("ent_prog", {
        "settings": {"config": str(CONFIG.relative_to(ROOT)), "seeds": args.seeds, "quick": args.quick,
                     "threads": 1, "wall_seconds": time.perf_counter() - t0,
                     "run_process_seconds": sum(r["process_seconds"] for r in runs.values()),
                     "note": "wall_seconds: this invocation (finished runs in --work are read back, not rerun); "
                             "run_process_seconds: all runs' processes"},
        **summary}, args.out)
    print_table(rows, list(rows[0]))
    print("\none step (batch 8), ms:")
    breakdown = summary["step_breakdown_ms"]
    print_table([{"trained": k, **{c: f"{v:.0f}" for c, v in r.items()}} for k, r in breakdown.items()],
                ["trained", "forward_ms", "backward_ms", "optimizer_ms", "total_ms"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
