"""Does DreamBooth-LoRA correct the people a model draws badly, without hurting other prompts? (issue 6;
``shared/papers.md`` §4)

For each shipped tiny base (tiny-sd: UNet, ε-prediction; tiny-sd3: MMDiT, flow matching) and each seed:

1. train ``humantune train dreambooth-lora`` with ``configs/dreambooth_lora/tiny-{sd,sd3}-lying.yaml`` (instance
   images: mannequin-world renders of the lying prompts, dressed as each prompt says; ``train.seed`` and
   ``instance.seed`` = the seed, so every seed also draws its own correct images);
2. ``humantune anomaly compare`` base vs base + LoRA on the same image seeds (seed·100000 + …): the target prompts
   (``configs/anomaly/lying_prompts.txt``) and the control prompts (``configs/anomaly/control_prompts.txt``,
   standing/walking in the same clothes), ``--n`` images per prompt and model, SSIM/PSNR/world_fd against that
   seed's correct images.

Anatomy: MediaPipe Pose (mediapipe 0.10.21, bundled weights) + ``humantune.eval.anatomy``; a missed person counts as
anomalous. Rates carry Wilson 95 % intervals; differences (tuned − base) Newcombe's interval; attribute accuracy
(shirt/trouser colour, background, posture) a bootstrap interval and a paired-bootstrap difference interval. Seeds
are pooled per family (all images of all seeds), and reported one by one too.

The claim checked, per family (pooled): the target anomaly rate falls by at least half (relative reduction ≥ 0.5),
while on the control prompts neither the anomaly rate nor the attribute accuracy gets worse beyond its 95 % interval
(anomaly difference interval reaches ≤ 0; attribute difference interval reaches ≥ 0).

    python benchmarks/anomaly_correction.py [--families sd sd3] [--seeds 0 1 2] [--n 32] [--quick]
        [--work-dir DIR] [--set KEY=VALUE ...] [--out FILE]

Runs in ``--work-dir`` (default: a temporary folder, deleted at the end) are resumed when the same directory is given
again. ``--quick`` is a smoke test (one seed, 2 images per prompt, 20 training steps): its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_io import print_table, write_result  # noqa: E402

from humantune.config import config_to_dict, load_config  # noqa: E402
from humantune.eval.statistics import paired_ratio_difference_interval, rate_change  # noqa: E402
from humantune.models.generation import read_prompts  # noqa: E402
from humantune.studies.anomaly.compare import compare  # noqa: E402
from humantune.recipes.dreambooth_lora import DreamBoothLoraConfig, train_dreambooth_lora  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = {"sd": "tiny-sd", "sd3": "tiny-sd3"}
TARGETS = ROOT / "configs" / "anomaly" / "lying_prompts.txt"
CONTROLS = ROOT / "configs" / "anomaly" / "control_prompts.txt"
REQUIRED_REDUCTION = 0.5
QUICK = ["train.max_steps=20", "train.checkpoint_every=20", "instance.images_per_prompt=2", "prior.num_class_images=4"]
RESULTS_QUICK = Path(__file__).resolve().parent / "results" / "anomaly_correction_quick.json"


def config_path(family: str) -> Path:
    return ROOT / "configs" / "dreambooth_lora" / f"tiny-{family}-lying.yaml"


def weights_digest(lora_dir: Path) -> str:
    """SHA-256 of the LoRA tensors (names and values), independent of the file's metadata."""
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, tensor in sorted(load_file(str(lora_dir / "pytorch_lora_weights.safetensors")).items()):
        h.update(name.encode())
        h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()


def read_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines() if line.strip()]


def pooled(compare_dirs: list[Path]) -> dict:
    """Anomaly-rate change and attribute-accuracy change over the images of all seeds of one family."""
    base = [r for d in compare_dirs for r in read_rows(d / "base")]
    tuned = [r for d in compare_dirs for r in read_rows(d / "tuned")]
    out = {}
    for set_name in ("target", "control"):
        b = [r for r in base if r["set"] == set_name]
        t = [r for r in tuned if r["set"] == set_name]
        change = rate_change([r["anomalous"] for r in b], [r["anomalous"] for r in t])
        cb, nb = np.array([r["attributes_correct"] for r in b], float), np.array([r["attributes_counted"] for r in b])
        ct, nt = np.array([r["attributes_correct"] for r in t], float), np.array([r["attributes_counted"] for r in t])
        ci = paired_ratio_difference_interval(cb, nb, ct, nt)
        out[set_name] = {
            "anomaly_rate": change,
            "attribute_accuracy": {"base": cb.sum() / max(nb.sum(), 1), "tuned": ct.sum() / max(nt.sum(), 1),
                                   "difference": ct.sum() / max(nt.sum(), 1) - cb.sum() / max(nb.sum(), 1),
                                   "difference_ci95": None if ci is None else list(ci)},
        }
    return out


def claim(p: dict) -> dict:
    target, control = p["target"], p["control"]
    reduction = target["anomaly_rate"]["relative_reduction"]
    attr_ci = control["attribute_accuracy"]["difference_ci95"]
    checks = {
        "target_rate_halved": reduction is not None and reduction >= REQUIRED_REDUCTION,
        "control_anomaly_not_worse": control["anomaly_rate"]["difference"]["ci95"][0] <= 0.0,
        "control_attributes_not_worse": attr_ci is None or attr_ci[1] >= 0.0,
    }
    return {**checks, "meets": all(checks.values())}


def reference_means(per_seed: list[dict]) -> dict:
    """SSIM / PSNR / world_fd of base and tuned target images against the correct images, mean over seeds."""
    out = {}
    for arm in ("base", "tuned"):
        refs = [s["reference"][arm] for s in per_seed if s.get("reference")]
        for key, short in (("ssim", "ssim"), ("psnr", "psnr"), ("world_fd", "wfd")):
            values = [r[key]["value"] if isinstance(r[key], dict) else r[key] for r in refs if r.get(key) is not None]
            out[f"{short}_{arm}"] = float(np.mean(values)) if values else None
    return out


def row_for(family: str, seed: str, p: dict, per_seed: list[dict]) -> dict:
    t, c = p["target"], p["control"]
    return {**reference_means(per_seed),
        "family": family, "seed": seed,
        "target_base": t["anomaly_rate"]["base"]["rate"], "target_tuned": t["anomaly_rate"]["tuned"]["rate"],
        "reduction": t["anomaly_rate"]["relative_reduction"],
        "control_base": c["anomaly_rate"]["base"]["rate"], "control_tuned": c["anomaly_rate"]["tuned"]["rate"],
        "control_diff_ci": "[{:+.3f}, {:+.3f}]".format(*c["anomaly_rate"]["difference"]["ci95"]),
        "attr_base": c["attribute_accuracy"]["base"], "attr_tuned": c["attribute_accuracy"]["tuned"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=32, help="images per prompt and model in each comparison")
    ap.add_argument("--quick", action="store_true", help="smoke test: seed 0, n=2, 20 training steps")
    ap.add_argument("--work-dir", type=Path, help="keep (and resume) runs here instead of a temporary folder")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a dreambooth-lora config value for every run (e.g. prior.enabled=true)")
    ap.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/anomaly_correction.json; "
                                             "with --quick anomaly_correction_quick.json)")
    args = ap.parse_args()
    seeds, n = ([args.seeds[0]], 2) if args.quick else (args.seeds, args.n)
    overrides = (QUICK if args.quick else []) + args.overrides
    targets, controls = read_prompts(TARGETS), read_prompts(CONTROLS)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="anomaly_correction_"))
    t_start = time.perf_counter()
    families, rows = {}, []
    try:
        for family in args.families:
            per_seed, dirs = [], []
            for seed in seeds:
                run = work / family / f"seed{seed}"
                cfg = load_config(DreamBoothLoraConfig, config_path(family),
                                  [f"train.seed={seed}", f"instance.seed={seed}"] + overrides)
                t0 = time.perf_counter()
                lora_dir = train_dreambooth_lora(cfg, run)
                t_train = time.perf_counter() - t0
                t0 = time.perf_counter()
                # A resumed work dir reuses a comparison made with the same LoRA weights, n and seed.
                stamp = {"n": n, "seed": seed * 100_000, "lora_sha256": weights_digest(lora_dir)}
                done = run / "compare_stamp.json"
                if done.is_file() and json.loads(done.read_text()) == stamp:
                    result = json.loads((run / "compare" / "compare.json").read_text())
                else:
                    result = compare(FAMILIES[family], lora_dir, targets, controls, n=n, seed=seed * 100_000,
                                     out=run / "compare", reference_dir=run / "instance_images", overwrite=True)
                    done.write_text(json.dumps(stamp))
                t_compare = time.perf_counter() - t0
                dirs.append(run / "compare")
                p = pooled([run / "compare"])
                per_seed.append({"seed": seed, "train_seconds": t_train, "compare_seconds": t_compare,
                                 "pooled": p, "reference": result.get("reference"),
                                 "attribute_accuracy": result["attribute_accuracy"],
                                 "anomaly_rate": result["anomaly_rate"]})
                rows.append(row_for(family, str(seed), p, per_seed[-1:]))
            p = pooled(dirs)
            families[family] = {"base_model": FAMILIES[family], "config": str(config_path(family).relative_to(ROOT)),
                                "resolved_config": config_to_dict(load_config(
                                    DreamBoothLoraConfig, config_path(family), [f"train.seed={seeds[0]}"] + overrides)),
                                "pooled": p, "claim": claim(p), "reference_mean_over_seeds": reference_means(per_seed),
                                "seeds": per_seed}
            rows.append({**row_for(family, "pooled", p, per_seed), "meets": "yes" if claim(p)["meets"] else "NO"})
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    path = write_result("anomaly_correction", {
        "summary": {
            "families": list(families), "seeds": seeds, "n_per_prompt": n, "quick": args.quick,
            "overrides": overrides, "target_prompts": targets, "control_prompts": controls,
            "estimator": "mediapipe==0.10.21 model_complexity=1; no detection = anomalous",
            "claim": f"pooled target relative reduction >= {REQUIRED_REDUCTION}; control anomaly difference 95% CI "
                     "lower bound <= 0; control attribute-accuracy difference 95% CI upper bound >= 0",
            "seconds": time.perf_counter() - t_start,
        },
        "families": families,
    }, args.out or (RESULTS_QUICK if args.quick else None))
    print_table(rows, ["family", "seed", "target_base", "target_tuned", "reduction", "control_base", "control_tuned",
                       "control_diff_ci", "attr_base", "attr_tuned", "ssim_base", "ssim_tuned", "wfd_base", "wfd_tuned",
                       "meets"])
    print(f"\n{time.perf_counter() - t_start:.0f} s -> {path}")


if __name__ == "__main__":
    main()
