"""Ent-Prog against full fine-tuning, measured side by side (papers.md §3; issue 16's claim).

Task: ``configs/ent_prog/pose_image.yaml`` — the paper's setting in miniature: fine-tune a pretrained model to a new
conditional task. The base is an 8-layer pose-guided Latte model (``configs/pose_video/ent_prog_base.yaml``) pretrained
here once in the paper's phase 1 (subject-driven image from a reference frame); every arm then trains phase 2
(reference + OpenPose frame → image) for three stages of 120 steps, with the same data, held-out set (fixed
timesteps and noises) and step budget:

- ``full``: plain full fine-tuning (every parameter the pose phase trains);
- ``ent-prog``: CEI ranking + adaptive schedule (a 24-step supernet epoch + argmax CE(m) per stage);
- ``cei-fixed``: CEI ranking + the fixed m_k of the config (AutoProg-Zero style);
- ``random-adaptive``: a seeded random block order + adaptive schedule.

CEI is a one-off per (model, data): it is measured once for the benchmark (``cei.seed`` 0, cached in WORK/cei) and its
seconds are put on the clock of every CEI arm of every seed in the "with CEI" figures; the "without CEI" figures
amortise it over fine-tunes. How many CEI samples give a stable ranking is measured too (:func:`cei_stability`:
Kendall τ of the priorities from 64 / 128 / 256 samples against 1,000, on independent draws).

Each (seed, arm) runs as its own process (one torch thread), arms interleaved within a seed so that the shared
machine's load drifts over all of them alike. Per run: the held-out loss against wall-clock seconds (CEI time +
training steps + the supernet's per-step evaluation; measurement-only evaluations are not on the clock), the
process's peak RSS, and the training state (parameters + gradients + AdamW state + bytes autograd saved for
backward, counted with ``saved_tensors_hooks``) of the largest step. Speed-up of an arm in a seed = the time full
fine-tuning needed to first reach its own final held-out loss / the time the arm needed to reach that loss (linear
interpolation between evaluations; "not reached" if it never did), with and without CEI's one-off seconds; also
the ratio of times to 90 % of full fine-tuning's loss reduction (a target less at the mercy of one noisy
evaluation). Final quality: the held-out loss with a 95 % bootstrap interval over seeds.

Also: where a CPU step's time goes (:func:`step_breakdown`) and where the CEI ranking puts the trained blocks (the
first trained block of each stage's choice: a frozen prefix exists only when it is not block 0 — here the pose
enters through the patch embedding, which trains in every stage, so there is none by construction). Writes
benchmarks/results/ent_prog.json and prints the tables.

    OMP_NUM_THREADS=1 python benchmarks/ent_prog.py [--seeds 3] [--quick] [--work DIR]
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
CONFIG = ROOT / "configs" / "ent_prog" / "pose_image.yaml"
BASE_CONFIG = ROOT / "configs" / "pose_video" / "ent_prog_base.yaml"
ARM_ORDER = ["full", "ent-prog", "cei-fixed", "random-adaptive"]
CEI_SAMPLES = (64, 128, 256, 1000)
EXTRA = [o for o in os.environ.get("ENT_PROG_BENCH_SET", "").split() if o]
"""Extra --set overrides for every run (e.g. ENT_PROG_BENCH_SET='search_heldout_batches=1')."""


def prepare(work: Path, env: dict) -> list[str]:
    """Render the video worlds once, in this process (no torch threads: the renderer's worker pool is then safe),
    write WORK/pose_video.yaml (the base config pointing at them), pretrain the phase-1 base once (WORK/base), and
    return the overrides that point every run at them."""
    import yaml

    from humantune.config import load_config
    from humantune.data.mannequin.video import MannequinVideoConfig, write_video_world

    raw = yaml.safe_load(BASE_CONFIG.read_text())
    for name in ("train_data", "heldout_data"):
        folder = work / "data" / name
        if not (folder / "manifest.json").is_file():
            write_video_world(load_config(MannequinVideoConfig, base=raw[name]["world"]), folder, workers=1,
                              overwrite=True, progress=False)
        raw[name] = {"path": str(folder)}
    (work / "pose_video.yaml").write_text(yaml.safe_dump(raw))
    base = work / "base" / "subject" / "pipeline"
    if not base.is_dir():
        print("pretraining the phase-1 base ...", flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "humantune.cli", "train", "pose-video", "--config",
                        str(work / "pose_video.yaml"), "--output-dir", str(work / "base")], check=True, env=env,
                       cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (work / "base_seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - t0}))
    return [f"base_model={base}", f"pose_video={work / 'pose_video.yaml'}"]


def load_cfg(work: Path, overrides: list[str]):
    from humantune.config import load_config
    from humantune.recipes.ent_prog import EntProgConfig

    base = json.loads((work / "overrides.json").read_text())
    return load_config(EntProgConfig, CONFIG, base + EXTRA + overrides)


def child(arm: str, seed: int, run_dir: Path, quick: bool) -> None:
    """One run in this process: the recipe with the arm's schedule and ordering, then its peak RSS."""
    from humantune.io import write_json_atomic
    from humantune.recipes.ent_prog import ARMS, train_ent_prog

    schedule, ordering = ARMS[arm]
    work = run_dir.parents[1]
    # one CEI measurement for the whole benchmark (the model's property), shared by every CEI arm of every seed;
    # its seconds stay on each one's "with CEI" clock. The random arm's block order is drawn per seed.
    overrides = [f"schedule={schedule}", f"ordering={ordering}", f"cei_dir={work / 'cei'}",
                 f"cei.seed={seed if ordering == 'random' else 0}"]
    for k in range(3):
        overrides.append(f"stages.{k}.train.seed={seed}")
        if quick:
            overrides += [f"stages.{k}.train.max_steps=16", f"stages.{k}.supernet_steps=6"]
    if quick:
        overrides += ["cei.samples=64", "eval_every=4"]
    cfg = load_cfg(work, overrides)
    t0 = time.perf_counter()
    train_ent_prog(cfg, run_dir)
    write_json_atomic(run_dir / "process.json", {
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "process_seconds": time.perf_counter() - t0})


def _setup(work: Path, out: Path):
    import torch

    from humantune.recipes.ent_prog_tasks import setup_task

    cfg = load_cfg(work, [])
    return cfg, setup_task(cfg, out, torch.device("cpu"))


def cei_stability(work: Path, out: Path, quick: bool = False) -> None:
    """CEI priorities of the benchmark's base from 64 / 128 / 256 / 1,000 samples on independent draws (seeds 1 …),
    and Kendall τ of each against the 1,000-sample one (and the 1,000-sample seconds): how few samples give the
    same ranking. Written to ``out``."""
    from scipy.stats import kendalltau

    from humantune.io import write_json_atomic
    from humantune.studies.entprog_cei import CeiConfig, block_priorities, reading_key

    cfg, s = _setup(work, work / "cei_stability")
    sizes = (16, 32, 64) if quick else CEI_SAMPLES
    rows = {}
    for k, n in enumerate(sizes):
        c = CeiConfig(samples=n, batch_size=cfg.cei.batch_size, seed=k + 1)
        t0 = time.perf_counter()
        result = block_priorities(s.denoiser, s.predict, s.cei_batches(c), s.blocks, progress=False)
        pri = result["priorities"][reading_key(cfg.cei)]
        rows[n] = {"seconds": time.perf_counter() - t0, "priorities": pri,
                   "ranking": sorted(pri, key=lambda b: -pri[b])}
    ref = rows[sizes[-1]]["priorities"]
    names = list(ref)
    for n, r in rows.items():
        r["kendall_tau_vs_largest"] = float(kendalltau([r["priorities"][b] for b in names],
                                                       [ref[b] for b in names]).statistic)
        r["top3_same_as_largest"] = set(r["ranking"][:3]) == set(rows[sizes[-1]]["ranking"][:3])
    write_json_atomic(out, {"reading": reading_key(cfg.cei), "by_samples": {str(n): r for n, r in rows.items()}})


def step_breakdown(work: Path, out: Path, steps: int = 8) -> None:
    """Forward / backward / AdamW milliseconds of one training step (batch 16) of the benchmark's base when training
    what full fine-tuning trains, and the top-m blocks by the benchmark's CEI ranking (+ ``always_train``) for each m
    Ent-Prog's stages can choose: where a CPU step's time goes. Written to ``out``."""
    import torch

    from humantune.io import write_json_atomic
    from humantune.recipes.ent_prog import _under
    from humantune.train.progressive import ProgressiveBlocks
    from humantune.train.sampling import GeneratorDraws

    cfg, s = _setup(work, work / "breakdown")
    d = s.denoiser
    ranking = json.loads((work / "cei" / "cei.json").read_text())["ranking"]
    pb = ProgressiveBlocks([b.name for b in s.blocks], [b.module for b in s.blocks], ranking)
    task = s.train_task
    batch = task.collate(list(task.dataset())[:cfg.stages[0].train.batch_size])

    def measure(names):
        for name, p in d.named_parameters():
            p.requires_grad_(_under(name, s.full_trainable) if names is None and s.full_trainable else names is None)
        if names is not None:
            pb.train_only(names)
            for name, p in d.named_parameters():
                if _under(name, cfg.always_train):
                    p.requires_grad_(True)
        opt = torch.optim.AdamW([p for p in d.parameters() if p.requires_grad], lr=1e-5)
        total = [0.0, 0.0, 0.0]
        for i in range(steps + 2):
            draws = GeneratorDraws(torch.Generator().manual_seed(i))
            t0 = time.perf_counter()
            with pb.frozen_prefix(names is not None and cfg.frozen_prefix):
                loss = task.loss(batch, draws)[0]
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
    for m in sorted({m for st in cfg.stages for m in st.candidates if m <= len(pb.names)}, reverse=True):
        rows[f"top-{m} by CEI ({', '.join(n.split('.')[-1] for n in ranking[:m])}) + {cfg.always_train}"] = \
            measure(ranking[:m])
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
                                 "state_bytes", "activation_bytes", "state_by_phase", "choices", "base_loss",
                                 "first_trained_block")}})
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
            "first_trained_block": [r["first_trained_block"] for r in rows],
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
            "choices": [v.get("choice", {}).get("m") for v in res["stages"].values()],
            "ranking": res["ranking"], "base_loss": res["base_heldout_loss"],
            # forward index of the first block each stage's training phase trained (0: no frozen prefix possible)
            "first_trained_block": [_first_block(v["phases"].get("train", {}).get("trained"))
                                    for v in res["stages"].values()]}


def _first_block(trained) -> int | None:
    if not isinstance(trained, list):   # "all" (full fine-tuning) or no training phase
        return 0 if trained == "all" else None
    return min(int(name.rsplit(".", 1)[-1]) for name in trained)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="16-step stages, 64 CEI samples (a smoke run)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/ent_prog.json)")
    parser.add_argument("--child", nargs=3, metavar=("ARM", "SEED", "RUN_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=3, metavar=("WHAT", "WORK", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), Path(args.child[2]), args.quick)
        return
    if args.measure:
        what, work, out = args.measure
        (step_breakdown(Path(work), Path(out)) if what == "breakdown" else
         cei_stability(Path(work), Path(out), args.quick))
        return
    from benchmarks.benchmark_io import print_table, write_result

    work = (args.work or Path(tempfile.mkdtemp(prefix="ent_prog_bench_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    (work / "overrides.json").write_text(json.dumps(prepare(work, env)))
    runs = {}
    for seed in range(args.seeds):
        for arm in ARM_ORDER:
            run_dir = work / f"seed{seed}" / arm
            if not (run_dir / "process.json").is_file():
                cmd = [sys.executable, __file__, "--child", arm, str(seed), str(run_dir)]
                cmd += ["--quick"] if args.quick else []
                print(f"seed {seed} {arm} ...", flush=True)
                subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            runs[(seed, arm)] = read_run(run_dir)
    summary = summarise(runs)
    for what in ("breakdown", "cei_stability"):
        if not (work / f"{what}.json").is_file():
            print(f"{what} ...", flush=True)
            subprocess.run([sys.executable, __file__, "--measure", what, str(work), str(work / f"{what}.json")]
                           + (["--quick"] if args.quick else []), check=True, env=env, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    summary["cei_stability"] = json.loads((work / "cei_stability.json").read_text())
    summary["ranking"] = runs[(0, "ent-prog")]["ranking"]
    summary["base_pretraining_seconds"] = json.loads((work / "base_seconds.json").read_text())["seconds"] \
        if (work / "base_seconds.json").is_file() else None
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
             "m per stage": str(a["choices"]), "first trained block": str(a["first_trained_block"])}
            for arm, a in summary["arms"].items()]
    path = write_result("ent_prog", {
        "settings": {"config": str(CONFIG.relative_to(ROOT)), "base_config": str(BASE_CONFIG.relative_to(ROOT)),
                     "seeds": args.seeds, "quick": args.quick,
                     "threads": 1, "wall_seconds": time.perf_counter() - t0,
                     "run_process_seconds": sum(r["process_seconds"] for r in runs.values()),
                     "note": "wall_seconds: this invocation (finished runs in --work are read back, not rerun); "
                             "run_process_seconds: all runs' processes",
                     "optimizer": "Trainer.fit builds a new AdamW per engine phase (each stage, and a stage's "
                                  "continuation after its supernet epoch); with carry_optimizer (the configs' "
                                  "default, every arm including full) the state of every parameter trained before "
                                  "is handed on (train.progressive.OptimizerCarry), newly trained blocks start "
                                  "fresh"},
        **summary}, args.out)
    print_table(rows, list(rows[0]))
    print(f"\nCEI ranking: {summary['ranking']}")
    stab = summary["cei_stability"]["by_samples"]
    print("CEI ranking vs samples: " + ", ".join(f"{n}: tau {r['kendall_tau_vs_largest']:.2f} ({r['seconds']:.0f} s)"
                                                 for n, r in stab.items()))
    print("\none step (batch 16), ms:")
    breakdown = summary["step_breakdown_ms"]
    print_table([{"trained": k, **{c: f"{v:.0f}" for c, v in r.items()}} for k, r in breakdown.items()],
                ["trained", "forward_ms", "backward_ms", "optimizer_ms", "total_ms"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
