"""Does the heatmap-guided loss make a pose ControlNet follow the pose better than the same compute of the plain
loss? The fair ablation of issue 5 (shared/papers.md §1), on the mannequin world with the tiny-sd base.

For each training seed (default 0 1 2) one ``controlnet-pose`` run (configs/controlnet_pose/mannequin.yaml) with
three stages:

    stage1  E epochs of the plain loss, from ControlNetModel.from_unet(tiny-sd's UNet)
    arm_a   stage1 + K epochs of the plain loss
    arm_b   stage1 + K epochs of the heatmap-guided loss, W = w·H + 1

Arms A and B start from the same stage-1 ControlNet and run the same number of steps with the same training seed,
so they see the same data order and the same noise and timesteps at every step (the engine draws all of it from
(seed, step)): they differ only in the loss. Every model generates the same held-out poses and prompts (mannequin
world seed 1, never trained on) with the same per-image seeds; the base without a ControlNet does not depend on the
training seed and is evaluated once.

Metrics (humantune.eval.metrics): mean OKS and COCO keypoint AP of MediaPipe detections against the target poses
(and ``detected``, MediaPipe detections per image: with a weak base the estimator often finds nobody), attribute
accuracy (prompt colours, background, posture read off the image), world_fd (Fréchet distance on the
mannequin-world features, the offline FID substitute) and SSIM against the held-out renders of the same poses.
Reported: each model's mean over seeds with a 95 % t interval (n = number of seeds), the paired difference B − A
per seed with its 95 % t interval, and the per-image paired OKS difference B − A pooled over seeds with a
bootstrap interval over images (it ignores the clustering of images within a seed, so it is the narrower one).

Expected direction (the paper): B has higher OKS than A with image quality (SSIM, world_fd, attribute accuracy)
not worse.

    python benchmarks/controlnet_pose.py                 # about 90 minutes on 2 CPU cores
    python benchmarks/controlnet_pose.py --quick         # CI-sized smoke run, under 3 minutes
    python benchmarks/controlnet_pose.py --w 4 --placement outside    # Stable-Pose's α = 5 weighting
    python benchmarks/controlnet_pose.py --sweep gaussian:4@0,1,2 mask:1 skeleton_blur:1 --sweep-seeds 0

``--sweep KIND:W[@SEED,...] ...`` adds a short sweep of the heatmap: for each variant and sweep seed, arm B is
trained again from that seed's stage-1 ControlNet (``controlnet_init``) with heatmap kind KIND and weight w = W, with
the seed's data order and noise, and scored on the same held-out set; it is compared with the seed's arm A per
image (paired bootstrap over images). Each variant costs one arm (K epochs) and one evaluation.

Runs are resumable (re-run the same command): each seed's recipe run lives in ``--runs DIR/seed_S``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import get_args, get_type_hints

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_io import bootstrap_ci, print_table, write_result  # noqa: E402

from humantune.config import config_to_dict, load_config  # noqa: E402
from humantune.data.mannequin.world import write_world  # noqa: E402
from humantune.eval.context import describe_estimator  # noqa: E402
from humantune.losses.heatmap import HeatmapConfig  # noqa: E402
from humantune.recipes.controlnet_pose import ControlNetPoseConfig, ControlNetPoseRecipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "controlnet_pose" / "mannequin.yaml"
MODELS = ("base", "stage1", "arm_a", "arm_b")
METRICS = {  # column → (metric in metrics.json, key inside it)
    "oks": ("oks", "value"), "ap": ("oks", "ap"), "detected": ("oks", "detection_rate"),
    "attribute_accuracy": ("attribute_accuracy", "value"), "world_fd": ("world_fd", "value"), "ssim": ("ssim", "value"),
}
HEATMAP_KINDS = get_args(get_type_hints(HeatmapConfig)["kind"])
HIGHER_IS_BETTER = {"oks": True, "ap": True, "detected": True, "attribute_accuracy": True, "world_fd": False,
                    "ssim": True}


def t_interval(values) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval of the mean of ``values`` (NaN interval for fewer than two)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def settings(args) -> dict:
    """What the benchmark runs: defaults from configs/controlnet_pose/mannequin.yaml, or the quick smoke sizes."""
    if args.quick:
        base = dict(world_n=64, heldout_n=8, eval_n=8, stage1_epochs=1.0, k_epochs=1.0, batch_size=16,
                    inference_steps=4, validation_samples=2, seeds=[0, 1],
                    metrics=["oks", "attribute_accuracy", "ssim"])   # world_fd needs more than 128 images
    else:
        base = dict(world_n=None, heldout_n=None, eval_n=None, stage1_epochs=None, k_epochs=None, batch_size=None,
                    inference_steps=None, validation_samples=None, seeds=[0, 1, 2], metrics=None)
    for key in list(base):
        given = getattr(args, key, None)
        if given is not None:
            base[key] = given
    return base


def recipe_config(args, s: dict, seed: int, include_base: bool, worlds: dict[str, Path]) -> ControlNetPoseConfig:
    """The recipe config of one seed: the mannequin config with the three ablation stages."""
    template = load_config(ControlNetPoseConfig, args.config)
    plain, heat = config_to_dict(template.stages[0]), config_to_dict(template.stages[-1])
    if s["batch_size"]:
        plain["train"]["batch_size"] = heat["train"]["batch_size"] = s["batch_size"]
    if args.lr:
        plain["train"]["learning_rate"] = heat["train"]["learning_rate"] = args.lr
    for key, value in (("w", args.w), ("kind", args.heatmap_kind), ("placement", args.placement)):
        if value is not None:
            heat["heatmap"][key] = value
    stage1_epochs = s["stage1_epochs"] or template.stages[0].epochs
    k_epochs = s["k_epochs"] or template.stages[-1].epochs
    stages = [
        {**plain, "name": "stage1", "loss": "plain", "epochs": stage1_epochs, "init_from": None},
        {**plain, "name": "arm_a", "loss": "plain", "epochs": k_epochs, "init_from": "stage1"},
        {**heat, "name": "arm_b", "loss": "heatmap", "epochs": k_epochs, "init_from": "stage1"},
    ]
    for stage in stages:
        stage["train"] = {**stage["train"], "seed": seed}
    overrides = [
        "stages=" + json.dumps(stages),
        "train_data=" + json.dumps({"kind": "pose_folder", "path": str(worlds["train"])}),
        "heldout_data=" + json.dumps({"kind": "pose_folder", "path": str(worlds["heldout"])}),
        f"eval.include_base={json.dumps(include_base)}",
    ]
    if s["eval_n"] is not None:
        overrides.append(f"eval.samples={s['eval_n']}")
        overrides.append(f"eval.report_samples={min(8, s['eval_n'])}")
    if s["metrics"] is not None:
        overrides.append("eval.metrics=" + json.dumps(s["metrics"]))
    if s["inference_steps"] is not None:
        overrides.append(f"generation.num_inference_steps={s['inference_steps']}")
    if s["validation_samples"] is not None:
        overrides.append(f"validation.samples={s['validation_samples']}")
    return load_config(ControlNetPoseConfig, args.config, overrides)


def render_worlds(args, s: dict) -> dict[str, Path]:
    """The training and held-out worlds of the config (sizes overridable), rendered once for every seed."""
    template = load_config(ControlNetPoseConfig, args.config)
    worlds = {}
    for split, src, n in (("train", template.train_data, s["world_n"]), ("heldout", template.heldout_data,
                                                                       s["heldout_n"])):
        world = src.world if n is None else type(src.world)(**{**config_to_dict(src.world), "n": n})
        folder = args.runs / "data" / split
        meta = folder / "world.json"
        if not meta.is_file() or json.loads(meta.read_text())["config"] != config_to_dict(world):
            write_world(world, folder, overwrite=True)
        worlds[split] = folder
    if json.loads((worlds["train"] / "world.json").read_text())["config"]["seed"] == \
            json.loads((worlds["heldout"] / "world.json").read_text())["config"]["seed"]:
        raise SystemExit("the held-out world must use another seed than the training world")
    return worlds


def parse_variant(text: str) -> tuple[str, float, list[int] | None]:
    """``KIND:W`` or ``KIND:W@S,S`` of ``--sweep`` → (heatmap kind, w, its seeds or None for ``--sweep-seeds``)."""
    spec, _, seeds = text.partition("@")
    kind, _, w = spec.partition(":")
    try:
        value = float(w)
        seed_list = [int(x) for x in seeds.split(",")] if seeds else None
    except ValueError:
        value, seed_list = float("nan"), None
    if kind not in HEATMAP_KINDS or not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"--sweep variant '{text}': expected KIND:W or KIND:W@SEED,SEED with KIND one of "
            f"{', '.join(HEATMAP_KINDS)} and W a weight >= 0, e.g. gaussian:2@0,1,2")
    return kind, value, seed_list


def sweep_config(args, s: dict, seed: int, kind: str, w: float, worlds: dict[str, Path]) -> ControlNetPoseConfig:
    """Arm B of ``seed`` again with heatmap ``kind`` and weight ``w``, from that seed's stage-1 ControlNet."""
    full = recipe_config(args, s, seed, include_base=False, worlds=worlds)
    arm_b = config_to_dict(full.stages[-1])
    arm_b.update(init_from=None, heatmap={**arm_b["heatmap"], "kind": kind, "w": w})
    return load_config(ControlNetPoseConfig, args.config, [
        "stages=" + json.dumps([arm_b]),
        "controlnet_init=" + json.dumps(str(args.runs / f"seed_{seed}" / "stage1" / "controlnet")),
        "train_data=" + json.dumps(config_to_dict(full.train_data)),
        "heldout_data=" + json.dumps(config_to_dict(full.heldout_data)),
        "eval=" + json.dumps({**config_to_dict(full.eval), "include_base": False}),
        "generation=" + json.dumps(config_to_dict(full.generation)),
        "validation.samples=0",
    ])


def run_sweep(args, s: dict, worlds: dict[str, Path], per_seed: dict) -> list[dict]:
    """The ``--sweep`` variants: arm B retrained per (kind, w) and sweep seed, scored against the seed's arm A."""
    rows = []
    for kind, w, own_seeds in args.sweep:
        seeds = own_seeds or args.sweep_seeds or s["seeds"][:1]
        diffs, scores = [], {}
        for seed in seeds:
            if seed not in per_seed:
                raise SystemExit(f"sweep seed {seed}: not among --seeds {s['seeds']} (its stage 1 is needed)")
            run = args.runs / "sweep" / f"{kind}_w{w:g}" / f"seed_{seed}"
            ControlNetPoseRecipe(sweep_config(args, s, seed, kind, w, worlds), run).run()
            scores[seed] = model_scores(json.loads((run / "results.json").read_text())["metrics"]["arm_b"])
            d = per_image_oks(run, "arm_b") - per_image_oks(args.runs / f"seed_{seed}", "arm_a")
            diffs.extend(d[np.isfinite(d)].tolist())
        row = {"heatmap": kind, "w": w, "seeds": seeds}
        for col in METRICS:
            values = [scores[seed][col] for seed in seeds if scores[seed][col] is not None]
            if values:
                row[col] = float(np.mean(values))
                row[f"{col}_arm_a"] = float(np.mean([per_seed[seed]["arm_a"][col] for seed in seeds]))
        lo, hi = bootstrap_ci(diffs)
        row["oks_b_minus_a_per_image"] = {"mean": float(np.mean(diffs)) if diffs else float("nan"), "ci95": [lo, hi],
                                          "n_images": len(diffs)}
        rows.append(row)
    return rows


def model_scores(metrics: dict) -> dict:
    """The :data:`METRICS` columns of one model's metrics (results.json), with ``detected``: MediaPipe detections
    per image, how often the estimator finds anyone at all."""
    oks = metrics.get("oks")
    detected = {"detection_rate": oks["num_detections"] / max(1, oks["num_images"])} if oks else {}
    return {col: {**metrics.get(m, {}), **(detected if m == "oks" else {})}.get(k) for col, (m, k) in METRICS.items()}


def per_image_oks(run: Path, label: str) -> np.ndarray:
    rows = [json.loads(line) for line in
            (run / "eval" / label / "metrics" / "per_image.jsonl").read_text().splitlines() if line.strip()]
    return np.array([np.nan if r.get("oks") is None else r["oks"] for r in rows], np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized smoke run (tiny world, 1-epoch stages, 2 seeds)")
    ap.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2; quick: 0 1)")
    ap.add_argument("--config", type=Path, default=CONFIG, help="recipe config the stages are built from")
    ap.add_argument("--runs", type=Path, help="run directory (default runs/benchmarks/controlnet_pose[_quick])")
    ap.add_argument("--stage1-epochs", type=float, help="epochs of stage 1 (default: the config's stage 1)")
    ap.add_argument("--k-epochs", type=float, help="epochs of each arm (default: the config's stage 2)")
    ap.add_argument("--w", type=float, help="heatmap weight w of arm B (default: the config's)")
    ap.add_argument("--heatmap-kind", choices=HEATMAP_KINDS, help="H of arm B")
    ap.add_argument("--placement", choices=["inside", "outside"], help="W inside the norm (paper) or outside")
    ap.add_argument("--lr", type=float, help="learning rate of every stage (default: the config's)")
    ap.add_argument("--batch-size", type=int, help="batch size of every stage (default: the config's)")
    ap.add_argument("--world-n", type=int, help="training world size (default: the config's)")
    ap.add_argument("--heldout-n", type=int, help="held-out world size (default: the config's)")
    ap.add_argument("--eval-n", type=int, help="held-out samples evaluated (default: the config's)")
    ap.add_argument("--inference-steps", type=int, help="sampling steps (default: the config's)")
    ap.add_argument("--validation-samples", type=int, help="validation samples per epoch (default: the config's)")
    ap.add_argument("--sweep", type=parse_variant, nargs="+", default=[], metavar="KIND:W[@SEEDS]",
                    help="heatmap variants of arm B to sweep, e.g. gaussian:4@0,1,2 mask:1 (@: the variant's own "
                         "seeds)")
    ap.add_argument("--sweep-seeds", type=int, nargs="+", help="seeds the sweep runs on (default: the first seed)")
    ap.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/controlnet_pose[_quick].json)")
    args = ap.parse_args()
    name = "controlnet_pose_quick" if args.quick else "controlnet_pose"
    args.runs = args.runs or ROOT / "runs" / "benchmarks" / name
    s = settings(args)
    if s["heldout_n"] is None and s["eval_n"] is not None:
        s["heldout_n"] = max(s["eval_n"], s["validation_samples"] or 0)

    t0 = time.perf_counter()
    worlds = render_worlds(args, s)
    per_seed, seconds, oks_diff = {}, {}, []
    base_metrics = None
    for n, seed in enumerate(s["seeds"]):
        run = args.runs / f"seed_{seed}"
        cfg = recipe_config(args, s, seed, include_base=n == 0, worlds=worlds)
        start = time.perf_counter()
        ControlNetPoseRecipe(cfg, run).run()
        seconds[seed] = time.perf_counter() - start
        results = json.loads((run / "results.json").read_text())
        metrics = results["metrics"]
        if n == 0:
            base_metrics = metrics.get("base")
        elif base_metrics is not None:
            metrics["base"] = base_metrics            # the base does not depend on the training seed
        per_seed[seed] = {label: model_scores(metrics[label]) for label in MODELS if label in metrics}
        if "oks" in cfg.eval.metrics:
            d = per_image_oks(run, "arm_b") - per_image_oks(run, "arm_a")
            oks_diff.extend(d[np.isfinite(d)].tolist())
    columns = [c for c in METRICS if any(per_seed[seed]["arm_a"].get(c) is not None for seed in per_seed)]

    rows = []
    for label in MODELS:
        row = {"model": label, "seeds": len(per_seed) if label != "base" else 1}
        for col in columns:
            mean, lo, hi = t_interval([per_seed[seed][label][col] for seed in per_seed if label in per_seed[seed]]
                                      if label != "base" else [per_seed[s["seeds"][0]]["base"][col]])
            row[col], row[f"{col}_ci95"] = mean, [lo, hi]
        rows.append(row)
    paired = {}
    for col in columns:
        diffs = [per_seed[seed]["arm_b"][col] - per_seed[seed]["arm_a"][col] for seed in per_seed
                 if per_seed[seed]["arm_b"][col] is not None and per_seed[seed]["arm_a"][col] is not None]
        mean, lo, hi = t_interval(diffs)
        better = (mean > 0) == HIGHER_IS_BETTER[col] if np.isfinite(mean) and abs(mean) > 1e-9 else None
        paired[col] = {"per_seed": diffs, "mean": mean, "ci95": [lo, hi], "b_better": better,
                       "ci_excludes_zero": bool(np.isfinite(lo) and (lo > 0 or hi < 0))}
    image_level = {}
    if oks_diff:
        lo, hi = bootstrap_ci(oks_diff)
        image_level = {"mean": float(np.mean(oks_diff)), "ci95": [lo, hi], "n_images": len(oks_diff)}

    sweep = run_sweep(args, s, worlds, per_seed) if args.sweep else []

    total = time.perf_counter() - t0
    template = recipe_config(args, s, s["seeds"][0], True, worlds)
    path = write_result(name, {
        "summary": {
            "question": "arm B (stage1 + K epochs heatmap loss) vs arm A (stage1 + K epochs plain loss), same steps, "
                        "data order and noise",
            "base_model": template.base_model, "seeds": s["seeds"],
            "stages": {st.name: {"loss": st.loss, "epochs": st.epochs, "init_from": st.init_from,
                                 "batch_size": st.train.batch_size, "learning_rate": st.train.learning_rate,
                                 **({"heatmap": config_to_dict(st.heatmap)} if st.loss == "heatmap" else {})}
                       for st in template.stages},
            "train_world": json.loads((worlds["train"] / "world.json").read_text())["config"],
            "heldout_world": json.loads((worlds["heldout"] / "world.json").read_text())["config"],
            "eval_samples": template.eval.samples, "metrics": template.eval.metrics,
            "generation": config_to_dict(template.generation), "estimator": describe_estimator("mediapipe"),
            "intervals": "models: 95 % Student-t over seeds; paired B − A: 95 % t over per-seed differences; "
                         "image-level OKS B − A: percentile bootstrap over images pooled across seeds",
            "quick": args.quick, "seconds_total": total, "seconds_per_seed": seconds,
        },
        "models": rows, "paired_b_minus_a": paired, "image_level_oks_b_minus_a": image_level,
        "per_seed": {str(k): v for k, v in per_seed.items()},
        "heatmap_sweep": sweep,
    }, args.out)
    print_table(rows, ["model", "seeds"] + columns)
    print()
    print_table([{"B − A": col, "mean": p["mean"], "ci95": f"[{p['ci95'][0]:.4f}, {p['ci95'][1]:.4f}]",
                  "B better": p["b_better"], "CI excludes 0": p["ci_excludes_zero"]} for col, p in paired.items()],
                ["B − A", "mean", "ci95", "B better", "CI excludes 0"])
    if image_level:
        print(f"\nper-image OKS B − A (pooled over seeds, {image_level['n_images']} images): "
              f"{image_level['mean']:.4f} [{image_level['ci95'][0]:.4f}, {image_level['ci95'][1]:.4f}]")
    if sweep:
        print()
        print_table([{"heatmap": f"{r['heatmap']} w={r['w']:g}", "seeds": " ".join(map(str, r["seeds"])),
                      "OKS": r.get("oks"), "OKS arm A": r.get("oks_arm_a"),
                      "per-image B − A": "{:.4f} [{:.4f}, {:.4f}]".format(
                          r["oks_b_minus_a_per_image"]["mean"], *r["oks_b_minus_a_per_image"]["ci95"]),
                      "SSIM": r.get("ssim"), "attribute acc": r.get("attribute_accuracy")} for r in sweep],
                    ["heatmap", "seeds", "OKS", "OKS arm A", "per-image B − A", "SSIM", "attribute acc"])
    print(f"\n{total / 60:.1f} min -> {path}")


if __name__ == "__main__":
    main()
