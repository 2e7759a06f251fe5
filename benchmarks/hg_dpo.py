"""Does HG-DPO's easy → normal → hard curriculum move a model toward real images beyond Diffusion-DPO on generated
pairs, and is it better than real winners from step 0? The claim of issue 15 (shared/papers.md §2), on the
mannequin world with the tiny-sd base; the world's renders are the "real photos".

Arms (``--arms``), each one ``hg-dpo`` recipe run per training seed, built from configs/hg_dpo/mannequin.yaml:

    base        the tiny-sd base (no training; evaluated once, it does not depend on the seed)
    naive       every stage hard without the statistics loss: real winners from step 0 (the paper's collapse case)
    generated   every stage easy: Diffusion-DPO on generated pairs only (a new pool from the current model per stage)
    hg-dpo      easy → normal (pixel blend, α 0.5) → hard (+ statistics-matching loss)
    no-stats    hg-dpo without the statistics-matching loss
    no-te       hg-dpo without the text-encoder LoRA
    pool2       hg-dpo with pools of N = 2 images per prompt

Every trained arm runs the same three stages of the same length and batch (same compute: same optimizer steps, same
pools per stage), with the same training seed per seed index, so arms differ only in what they compare. Stages that
are identical between arms (the generated arm's first stage is HG-DPO's easy stage; no-stats shares easy and
normal; naive's first pool is the same draw from the base) are copied from the HG-DPO run of the same seed rather
than recomputed — a cache, not a change of compute. Every model generates the same held-out prompts (mannequin world
seed 1, never trained on) with the same per-image seeds.

Metrics of the last stage's model (humantune.studies.heldout → humantune.eval.metrics): world_fd (Fréchet distance on
mannequin-world features vs the held-out renders, the offline FID), colour distance (Σ_c |Δμ_c| + |Δσ_c| of RGB in
[0, 1], all generated vs all real pixels), detected (MediaPipe detections per image), OKS vs the held-out render's
pose, attribute accuracy, anomaly rate, and reward (the mean offline mannequin reward, realism measured against the
held-out renders). Reported: each arm's mean over seeds with a 95 % t interval (n = seeds), the paired difference
arm − hg-dpo per seed with its t interval, and the preference win rate of HG-DPO over Diffusion-DPO on generated
pairs: per held-out prompt and seed, the automatic judge (the same offline mannequin reward; note it is also the
pool's training reward) prefers one image, ties counted half, Wilson 95 % interval over all judgements.

Expected direction (the paper): HG-DPO's world_fd and colour distance fall and detection rises beyond the generated
arm; naive is worse than HG-DPO; no-stats leaves a larger colour distance.

    python benchmarks/hg_dpo.py                       # core arms × 3 seeds: 47 minutes on one CPU thread (shared)
    python benchmarks/hg_dpo.py --arms base hg-dpo no-stats no-te pool2
    python benchmarks/hg_dpo.py --quick               # smoke run: tiny pools and evaluation, 1 seed

Runs are resumable (re-run the same command): each arm's run lives in ``--runs DIR/<arm>/seed_S``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_io import print_table, write_result  # noqa: E402
from controlnet_pose import t_interval  # noqa: E402

from humantune.config import load_config  # noqa: E402
from humantune.recipes.hg_dpo import HgDpoConfig, HgDpoRecipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "hg_dpo" / "mannequin.yaml"
CORE_ARMS = ("base", "naive", "generated", "hg-dpo")
ALL_ARMS = CORE_ARMS + ("no-stats", "no-te", "pool2")
ARM_OVERRIDES = {
    "hg-dpo": {}, "naive": {"curriculum": "naive"}, "generated": {"curriculum": "generated"},
    "no-stats": {"stages.2.statistics.weight": 0.0}, "no-te": {"lora.text_encoder": None},
    "pool2": {"pool.images_per_prompt": 2},
}
SHARED_WITH_HG = {"generated": ("easy",), "no-stats": ("easy", "normal"), "naive": ("easy/pool",)}
"""What an arm's run can take from the HG-DPO run of the same seed: stages (or a pool) it computes identically."""
COLUMNS = {  # column → (metric in metrics.json, key), higher is better
    "world_fd": (("world_fd", "value"), False), "detected": (("oks", "detection_rate"), True),
    "oks": (("oks", "value"), True), "attribute_accuracy": (("attribute_accuracy", "value"), True),
    "anomaly_rate": (("anomaly_rate", "value"), False),
}


def recipe_config(args, arm: str, seed: int, include_base: bool) -> HgDpoConfig:
    template = load_config(HgDpoConfig, args.config)
    sets = {"eval_stages": "last", "eval.include_base": include_base, "pool.seed": 1000 + 100 * seed,
            "generation.seed": 0}
    for k in range(len(template.stages)):
        sets[f"stages.{k}.train.seed"] = seed
        if args.steps is not None:
            sets[f"stages.{k}.train.max_steps"] = args.steps
    if args.quick:
        sets.update({"real_data.world.n": 3, "pool.images_per_prompt": 2, "eval.samples": 8,
                     "heldout_data.world.n": 8, "eval.metrics": ["oks", "attribute_accuracy", "anomaly_rate"],
                     "generation.num_inference_steps": 4})
        for k in range(len(template.stages)):
            sets[f"stages.{k}.train.max_steps"] = 2
    if args.prompts is not None:
        sets["real_data.world.n"] = args.prompts
    if args.eval_n is not None:
        sets["eval.samples"] = sets["heldout_data.world.n"] = args.eval_n
    sets.update(ARM_OVERRIDES[arm])
    return load_config(HgDpoConfig, args.config, [f"{k}={json.dumps(v)}" for k, v in sets.items()])


def share_from_hg(runs: Path, arm: str, seed: int) -> None:
    """Copy what ``arm`` computes identically from the HG-DPO run of ``seed`` (see :data:`SHARED_WITH_HG`)."""
    source, target = runs / "hg-dpo" / f"seed_{seed}", runs / arm / f"seed_{seed}"
    for part in SHARED_WITH_HG.get(arm, ()):
        if (source / part).is_dir() and not (target / part).exists():
            shutil.copytree(source / part, target / part)


def held_out_rewards(run: Path, label: str, reward) -> np.ndarray:
    """The judge's reward of every held-out image of ``label`` (cached in the run's eval folder)."""
    cache = run / "eval" / label / "judge_rewards.json"
    if cache.is_file():
        return np.array(json.loads(cache.read_text()), np.float64)
    from PIL import Image

    rows = [json.loads(line) for line in (run / "eval" / label / "images" / "metadata.jsonl").read_text().splitlines()]
    images = [Image.open(run / "eval" / label / "images" / r["file_name"]).convert("RGB") for r in rows]
    scores = np.asarray(reward.score(images, [r["text"] for r in rows]), np.float64)
    cache.write_text(json.dumps(scores.tolist()))
    return scores


def arm_rows(per_seed: dict[str, dict[int, dict]], arms: list[str]) -> tuple[list[dict], dict]:
    """Table rows (mean [95 % t interval] over seeds) and the JSON summary of every arm."""
    rows, summary = [], {}
    for arm in arms:
        values = {c: [m.get(c) for m in per_seed[arm].values()] for c in [*COLUMNS, "colour_distance", "reward"]}
        stats = {c: t_interval(v) for c, v in values.items()}
        summary[arm] = {c: {"mean": s[0], "ci95": [s[1], s[2]], "per_seed": values[c]} for c, s in stats.items()}
        rows.append({"arm": arm, "seeds": len(per_seed[arm]),
                     **{c: f"{s[0]:.3f} [{s[1]:.3f}, {s[2]:.3f}]" if np.isfinite(s[1]) else f"{s[0]:.3f}"
                        for c, s in stats.items()}})
    return rows, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", nargs="+", choices=ALL_ARMS, default=list(CORE_ARMS), help="arms to run")
    ap.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2; quick: 0)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 prompts, pools of 2, 2-step stages, 8 "
                                                          "held-out prompts, no world_fd")
    ap.add_argument("--config", type=Path, default=CONFIG, help="recipe config the arms are built from")
    ap.add_argument("--steps", type=int, help="optimizer steps of every stage (default: the config's)")
    ap.add_argument("--prompts", type=int, help="real images / prompts of the pool (default: the config's)")
    ap.add_argument("--eval-n", type=int, help="held-out prompts (default: the config's; world_fd needs > 128)")
    ap.add_argument("--runs", type=Path, help="run directory (default runs/benchmarks/hg_dpo[_quick])")
    ap.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/hg_dpo[_quick].json)")
    ap.add_argument("--note", default="", help="how the runs read here were made, when not all by this invocation "
                    "(recorded in the result)")
    args = ap.parse_args()
    name = "hg_dpo_quick" if args.quick else "hg_dpo"
    args.runs = args.runs or ROOT / "runs" / "benchmarks" / name
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    trained = [a for a in args.arms if a != "base"]
    order = (["hg-dpo"] if "hg-dpo" in trained or any(a in SHARED_WITH_HG for a in trained) else []) + \
        [a for a in trained if a != "hg-dpo"]
    if "base" in args.arms and not order:
        order = ["hg-dpo"]

    from humantune.eval.rewards import mannequin_reward

    t0 = time.perf_counter()
    per_seed: dict[str, dict[int, dict]] = {arm: {} for arm in order + ["base"]}
    judged: dict[str, dict[int, np.ndarray]] = {arm: {} for arm in order + ["base"]}
    seconds, reward = {}, None
    for n, seed in enumerate(seeds):
        for arm in order:
            run = args.runs / arm / f"seed_{seed}"
            include_base = "base" in args.arms and n == 0 and arm == order[0]
            cfg = recipe_config(args, arm, seed, include_base)
            start = time.perf_counter()
            recipe = HgDpoRecipe(cfg, run)
            try:
                recipe.setup()   # opens (or checks) the run folder, then the shared stages go in
                share_from_hg(args.runs, arm, seed)
                recipe.evaluate(recipe.train())
            finally:
                recipe.close()
            seconds[f"{arm}/seed_{seed}"] = time.perf_counter() - start
            results = json.loads((run / "results.json").read_text())
            if reward is None:   # the judge: realism against the held-out renders
                reward = mannequin_reward([s.image for s in recipe.heldout])
            last = cfg.stages[-1].name
            for label, key in ((last, arm), ("base", "base")):
                if label not in results["metrics"] or (key == "base" and not include_base):
                    continue
                m = results["metrics"][label]
                if "oks" in m:
                    m["oks"]["detection_rate"] = m["oks"]["num_detections"] / max(1, m["oks"]["num_images"])
                row = {c: m.get(metric, {}).get(field) for c, ((metric, field), _) in COLUMNS.items()}
                row["colour_distance"] = results["colour_statistics_distance"].get(label)
                judged[key][seed] = held_out_rewards(run, label, reward)
                row["reward"] = float(np.nanmean(judged[key][seed]))
                per_seed[key][seed] = row
            print(f"{arm} seed {seed}: {seconds[f'{arm}/seed_{seed}']:.0f} s, {per_seed[arm][seed]}", flush=True)
    if reward is not None:
        reward.close()
    arms = [a for a in ALL_ARMS if a in args.arms and per_seed.get(a)]
    rows, summary = arm_rows(per_seed, arms)
    columns = ["arm", "seeds", "world_fd", "colour_distance", "detected", "oks", "attribute_accuracy", "anomaly_rate",
               "reward"]
    print_table(rows, columns)

    differences = {}
    for arm in arms:
        if arm in ("hg-dpo", "base") or "hg-dpo" not in per_seed:
            continue
        common = sorted(set(per_seed[arm]) & set(per_seed["hg-dpo"]))
        differences[f"{arm} - hg-dpo"] = {
            c: dict(zip(("mean", "lo", "hi"), t_interval([per_seed[arm][s][c] - per_seed["hg-dpo"][s][c]
                                                          for s in common if per_seed[arm][s][c] is not None
                                                          and per_seed["hg-dpo"][s][c] is not None])))
            for c in [*COLUMNS, "colour_distance", "reward"]}
    win = None
    if judged.get("hg-dpo") and judged.get("generated"):
        from humantune.eval.preference import wilson_interval

        a = np.concatenate([judged["hg-dpo"][s] for s in sorted(judged["hg-dpo"]) if s in judged["generated"]])
        b = np.concatenate([judged["generated"][s] for s in sorted(judged["hg-dpo"]) if s in judged["generated"]])
        wins, ties, losses = int((a > b).sum()), int((a == b).sum()), int((a < b).sum())
        rate = (wins + 0.5 * ties) / max(1, len(a))
        win = {"hg_dpo_vs_generated": {"wins": wins, "ties": ties, "losses": losses, "win_rate": rate,
                                       "wilson95": list(wilson_interval(wins + 0.5 * ties, len(a)))}}
        print(f"\nwin rate HG-DPO vs Diffusion-DPO (generated pairs): {rate:.3f} "
              f"[{win['hg_dpo_vs_generated']['wilson95'][0]:.3f}, {win['hg_dpo_vs_generated']['wilson95'][1]:.3f}] "
              f"({wins} wins, {ties} ties, {losses} losses)")
    out = write_result(name, {
        "command": " ".join(sys.argv), "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT)
                                                     else args.config),
        "arms": arms, "seeds": seeds, "settings": {"steps": args.steps, "prompts": args.prompts,
                                                  "eval_n": args.eval_n, "quick": args.quick},
        "summary": summary, "differences_vs_hg_dpo": differences, "preference": win, "per_seed": per_seed,
        "note": args.note, "seconds": seconds, "total_seconds": time.perf_counter() - t0,
        "seconds_note": "wall time of this invocation per run; a run that finished earlier is only read",
    }, args.out)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
