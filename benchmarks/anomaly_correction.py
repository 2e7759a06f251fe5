"""Does DreamBooth-LoRA correct the people a model draws badly, without hurting other prompts? (issues 6 and 17;
``shared/papers.md`` §4)

For each shipped tiny base (tiny-sd: UNet, ε-prediction; tiny-sd3: MMDiT, flow matching) and each seed:

1. train ``humantune train dreambooth-lora`` with ``configs/dreambooth_lora/tiny-{sd,sd3}-lying.yaml`` (instance
   images: mannequin-world renders of the lying prompts, dressed as each prompt says; ``train.seed`` and
   ``instance.seed`` = the seed, so every seed also draws its own correct images). The shipped configs carry the
   fixes the first run suggested: rank 4, ``target_modules: no_text`` (no projection that reads the text
   embedding), ``prior.class_prompts: same_clothing`` (the instance clothes standing / walking / sitting);
   ``--previous-settings`` adds the overrides that bring back the first run's (:data:`PREVIOUS_SETTINGS`);
2. ``humantune anomaly compare`` base vs base + LoRA on the same image seeds (seed·100000 + …) for three prompt
   sets: the target prompts (``configs/anomaly/lying_prompts.txt``), the controls in the same clothes
   (``configs/anomaly/control_prompts.txt``, standing/walking) and the held-out controls
   (``configs/anomaly/heldout_control_prompts.txt``: clothing colours and backgrounds in neither the instance nor
   the class prompts); ``--n`` images per prompt and model, SSIM/PSNR/world_fd against that seed's correct images.
   One comparison generates all three sets (the held-out prompts go in as controls); this script splits the
   images back into the sets by prompt.

Anatomy: MediaPipe Pose (mediapipe 0.10.21, bundled weights) + ``humantune.eval.anatomy``; a missed person counts as
anomalous. Beside that rate, the three body states of the anatomy judge (``humantune.eval.anatomy_judge``): no person
found, person found but judged broken, person found and whole. Rates carry Wilson 95 % intervals; differences
(tuned − base) Newcombe's interval; attribute accuracy (shirt/trouser colour, background, posture) a paired-bootstrap
difference interval. Seeds are pooled per family (all images of all seeds), and reported one by one too.

The claim checked, per family (pooled): the target anomaly rate falls by at least half (relative reduction ≥ 0.5),
while on both control sets neither the anomaly rate nor the attribute accuracy gets worse beyond its 95 % interval
(anomaly difference interval reaches ≤ 0; attribute difference interval reaches ≥ 0). The judged-broken rate's
relative reduction on the targets is reported beside it.

    python benchmarks/anomaly_correction.py [--families sd sd3] [--seeds 0 1 2] [--n 32] [--quick]
        [--previous-settings] [--work-dir DIR] [--set KEY=VALUE ...] [--out FILE]

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
from humantune.eval.context import describe_estimator  # noqa: E402
from humantune.eval.statistics import paired_ratio_difference_interval, rate_change  # noqa: E402
from humantune.models.generation import read_prompts  # noqa: E402
from humantune.studies.anomaly.compare import body_state_change, compare  # noqa: E402
from humantune.recipes.dreambooth_lora import (  # noqa: E402
    DEFAULT_CLASS_PROMPTS, DreamBoothLoraConfig, train_dreambooth_lora,
)

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = {"sd": "tiny-sd", "sd3": "tiny-sd3"}
TARGETS = ROOT / "configs" / "anomaly" / "lying_prompts.txt"
CONTROLS = ROOT / "configs" / "anomaly" / "control_prompts.txt"
HELDOUT = ROOT / "configs" / "anomaly" / "heldout_control_prompts.txt"
SETS = ("target", "control", "heldout")
"""The prompt sets: lying targets, standing/walking controls in the targets' clothes, held-out controls."""
REQUIRED_REDUCTION = 0.5
QUICK = ["train.max_steps=20", "train.checkpoint_every=20", "instance.images_per_prompt=2", "prior.num_class_images=4"]
PREVIOUS_SETTINGS = ["lora.denoiser.rank=16", "lora.denoiser.target_modules=[to_q, to_k, to_v, to_out.0]",
                     f"prior.class_prompts={json.dumps(DEFAULT_CLASS_PROMPTS)}"]
"""Overrides that bring back the first run's settings (rank 16, every attention projection, class prompts in other
people's clothes)."""
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


def split_sets(rows: list[dict], heldout: set[str]) -> dict[str, list[dict]]:
    """The images of one arm by prompt set: compare's ``target`` rows, its ``control`` rows whose prompt is a held-out
    control (``heldout``) and the other ``control`` rows (``control``)."""
    out = {name: [] for name in SETS}
    for r in rows:
        out["target" if r["set"] == "target" else "heldout" if r["text"] in heldout else "control"].append(r)
    return out


def pooled(compare_dirs: list[Path], heldout: set[str]) -> dict:
    """Per prompt set: anomaly-rate change, body-state changes and attribute-accuracy change over the images of all
    ``compare_dirs`` (the seeds of one family)."""
    base = split_sets([r for d in compare_dirs for r in read_rows(d / "base")], heldout)
    tuned = split_sets([r for d in compare_dirs for r in read_rows(d / "tuned")], heldout)
    out = {}
    for set_name in SETS:
        b, t = base[set_name], tuned[set_name]
        if not b:
            continue
        cb, nb = np.array([r["attributes_correct"] for r in b], float), np.array([r["attributes_counted"] for r in b])
        ct, nt = np.array([r["attributes_correct"] for r in t], float), np.array([r["attributes_counted"] for r in t])
        ci = paired_ratio_difference_interval(cb, nb, ct, nt)
        out[set_name] = {
            "prompts": list(dict.fromkeys(r["text"] for r in b)),
            "anomaly_rate": rate_change([r["anomalous"] for r in b], [r["anomalous"] for r in t]),
            "body_rates": body_state_change([r["body_state"] for r in b], [r["body_state"] for r in t]),
            "attribute_accuracy": {"base": cb.sum() / max(nb.sum(), 1), "tuned": ct.sum() / max(nt.sum(), 1),
                                   "difference": ct.sum() / max(nt.sum(), 1) - cb.sum() / max(nb.sum(), 1),
                                   "difference_ci95": None if ci is None else list(ci)},
        }
    return out


def claim(p: dict) -> dict:
    """The pass/fail checks of the module docstring, and the judged-broken reduction on the targets."""
    checks = {"target_rate_halved": (p["target"]["anomaly_rate"]["relative_reduction"] or 0.0) >= REQUIRED_REDUCTION}
    for set_name in ("control", "heldout"):
        c = p[set_name]
        attr_ci = c["attribute_accuracy"]["difference_ci95"]
        checks[f"{set_name}_anomaly_not_worse"] = c["anomaly_rate"]["difference"]["ci95"][0] <= 0.0
        checks[f"{set_name}_attributes_not_worse"] = attr_ci is None or attr_ci[1] >= 0.0
    return {**checks, "meets": all(checks.values()),
            "target_judged_broken_relative_reduction": p["target"]["body_rates"]["broken"]["relative_reduction"]}


def reference_means(per_seed: list[dict]) -> dict:
    """SSIM / PSNR / world_fd of base and tuned target images against the correct images, mean over seeds."""
    out = {}
    for arm in ("base", "tuned"):
        refs = [s["reference"][arm] for s in per_seed if s.get("reference")]
        for key, short in (("ssim", "ssim"), ("psnr", "psnr"), ("world_fd", "wfd")):
            values = [r[key]["value"] if isinstance(r[key], dict) else r[key] for r in refs if r.get(key) is not None]
            out[f"{short}_{arm}"] = float(np.mean(values)) if values else None
    return out


def _change(entry: dict) -> str:
    """'base→tuned' of a rate_change entry."""
    return f"{entry['base']['rate']:.3f}→{entry['tuned']['rate']:.3f}"


def rows_for(family: str, seed: str, p: dict, per_seed: list[dict]) -> list[dict]:
    """Table rows, one per prompt set: anomaly rate, the three body states and attribute accuracy, base → tuned;
    the distances to the correct images on the target row."""
    rows = []
    for set_name, s in p.items():
        a, b, attr = s["anomaly_rate"], s["body_rates"], s["attribute_accuracy"]
        ci = attr["difference_ci95"]
        rows.append({
            **(reference_means(per_seed) if set_name == "target" else {}),
            "family": family, "seed": seed, "set": set_name, "n": a["base"]["n"],
            "anomaly": _change(a), "reduction": a["relative_reduction"],
            "anomaly_diff_ci": "[{:+.3f}, {:+.3f}]".format(*a["difference"]["ci95"]),
            "no_person": _change(b["no_person"]), "broken": _change(b["broken"]), "whole": _change(b["whole"]),
            "attributes": f"{attr['base']:.3f}→{attr['tuned']:.3f}",
            "attr_diff_ci": "—" if ci is None else "[{:+.3f}, {:+.3f}]".format(*ci),
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=32, help="images per prompt and model in each comparison")
    ap.add_argument("--quick", action="store_true", help="smoke test: seed 0, n=2, 20 training steps")
    ap.add_argument("--previous-settings", action="store_true",
                    help="the first run's settings: rank 16, every attention projection, class prompts in other "
                         "people's clothes (PREVIOUS_SETTINGS, before any --set)")
    ap.add_argument("--work-dir", type=Path, help="keep (and resume) runs here instead of a temporary folder")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a dreambooth-lora config value for every run (e.g. prior.enabled=true)")
    ap.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/anomaly_correction.json; "
                                             "with --quick anomaly_correction_quick.json)")
    args = ap.parse_args()
    seeds, n = ([args.seeds[0]], 2) if args.quick else (args.seeds, args.n)
    overrides = (QUICK if args.quick else []) + (PREVIOUS_SETTINGS if args.previous_settings else []) + args.overrides
    targets, controls, heldout = read_prompts(TARGETS), read_prompts(CONTROLS), read_prompts(HELDOUT)
    if set(heldout) & set(controls):
        raise SystemExit(f"{HELDOUT.name} and {CONTROLS.name} share prompts: {sorted(set(heldout) & set(controls))}")
    estimator = describe_estimator("mediapipe")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="anomaly_correction_"))
    t_start = time.perf_counter()
    families, rows, conventions = {}, [], None
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
                # A resumed work dir reuses a comparison made with the same LoRA weights, prompts, n, seed and
                # pose-estimator settings.
                stamp = {"n": n, "seed": seed * 100_000, "lora_sha256": weights_digest(lora_dir),
                         "prompts": [targets, controls, heldout], "estimator": estimator}
                done = run / "compare_stamp.json"
                if done.is_file() and json.loads(done.read_text()) == stamp:
                    result = json.loads((run / "compare" / "compare.json").read_text())
                else:
                    result = compare(FAMILIES[family], lora_dir, targets, controls + heldout, n=n,
                                     seed=seed * 100_000, out=run / "compare", reference_dir=run / "instance_images",
                                     overwrite=True)
                    done.write_text(json.dumps(stamp))
                conventions = result["conventions"]
                t_compare = time.perf_counter() - t0
                dirs.append(run / "compare")
                p = pooled([run / "compare"], set(heldout))
                per_seed.append({"seed": seed, "train_seconds": t_train, "compare_seconds": t_compare,
                                 "sets": p, "reference": result.get("reference")})
                rows += rows_for(family, str(seed), p, per_seed[-1:])
            p = pooled(dirs, set(heldout))
            verdict = claim(p)
            families[family] = {"base_model": FAMILIES[family], "config": str(config_path(family).relative_to(ROOT)),
                                "resolved_config": config_to_dict(load_config(
                                    DreamBoothLoraConfig, config_path(family), [f"train.seed={seeds[0]}"] + overrides)),
                                "pooled": p, "claim": verdict, "reference_mean_over_seeds": reference_means(per_seed),
                                "seeds": per_seed}
            pooled_rows = rows_for(family, "pooled", p, per_seed)
            pooled_rows[0]["meets"] = "yes" if verdict["meets"] else "NO"
            rows += pooled_rows
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    path = write_result("anomaly_correction", {
        "summary": {
            "families": list(families), "seeds": seeds, "n_per_prompt": n, "quick": args.quick,
            "previous_settings": args.previous_settings, "overrides": overrides, "target_prompts": targets,
            "control_prompts": controls, "heldout_control_prompts": heldout,
            "estimator": estimator + "; no detection = anomalous",
            "conventions": conventions,
            "claim": f"pooled target relative reduction >= {REQUIRED_REDUCTION}; for control and heldout: anomaly "
                     "difference 95% CI lower bound <= 0 and attribute-accuracy difference 95% CI upper bound >= 0",
            "seconds": time.perf_counter() - t_start,
        },
        "families": families,
    }, args.out or (RESULTS_QUICK if args.quick else None))
    print_table(rows, ["family", "seed", "set", "n", "anomaly", "reduction", "anomaly_diff_ci", "no_person", "broken",
                       "whole", "attributes", "attr_diff_ci", "ssim_base", "ssim_tuned", "wfd_base", "wfd_tuned",
                       "meets"])
    print(f"\n{time.perf_counter() - t_start:.0f} s -> {path}")


if __name__ == "__main__":
    main()
