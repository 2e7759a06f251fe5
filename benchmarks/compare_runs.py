"""Compare two folders of ``benchmarks/behaviour_check.sh`` runs: the ControlNet results.json numbers, validation
and evaluation metrics, every stage's loss trajectory and weights, the DreamBooth-LoRA trajectories and adapter
tensors, and the anomaly comparison. Prints SAME/DIFF per item (timings and paths ignored); exits 1 on a difference.

    python benchmarks/compare_runs.py RUNS_BEFORE RUNS_AFTER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

TIMING_KEYS = ("seconds", "config", "date", "images_per_s", "seconds_with_stages", "wall_s", "path", "out_dir")


def strip(obj, before: Path, after: Path):
    """``obj`` without timings and with the two run folders' paths made equal."""
    if isinstance(obj, dict):
        return {k: strip(v, before, after) for k, v in obj.items() if k not in TIMING_KEYS and not k.endswith("_s")}
    if isinstance(obj, list):
        return [strip(v, before, after) for v in obj]
    if isinstance(obj, str):
        return obj.replace(str(before), "RUN").replace(str(after), "RUN")
    return obj


def diff(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'after' if k in b else 'before'}")
            else:
                out += diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [line for i, (x, y) in enumerate(zip(a, b)) for line in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def same_tensors(a: Path, b: Path) -> list[str]:
    ta, tb = load_file(str(a)), load_file(str(b))
    if set(ta) != set(tb):
        return ["different tensor names"]
    return [f"{k} differs by up to {(ta[k] - tb[k]).abs().max().item():.3g}" for k in ta if not torch.equal(ta[k], tb[k])]


def main(before: Path, after: Path) -> int:
    def read(path: str):
        return json.loads((before / path).read_text()), json.loads((after / path).read_text())

    def lines(path: str):
        return (before / path).read_text().splitlines(), (after / path).read_text().splitlines()

    checks: dict[str, list[str]] = {}
    rb, ra = read("cn/results.json")
    checks["controlnet results.json metrics"] = diff(rb["metrics"], ra["metrics"])
    checks["controlnet results.json validation"] = diff(rb["validation"], ra["validation"])
    checks["controlnet results.json training"] = diff(strip(rb["training"], before, after),
                                                      strip(ra["training"], before, after))
    for stage in ("stage1", "stage2"):
        checks[f"controlnet {stage} metrics.jsonl"] = diff(*lines(f"cn/{stage}/metrics.jsonl"))
        weights = f"cn/{stage}/controlnet/diffusion_pytorch_model.safetensors"
        checks[f"controlnet {stage} weights"] = same_tensors(before / weights, after / weights)
    for label in ("base", "stage1", "stage2"):
        mb, ma = read(f"cn/eval/{label}/metrics/metrics.json")
        checks[f"controlnet eval/{label} metrics.json"] = diff(strip(mb["metrics"], before, after),
                                                               strip(ma["metrics"], before, after))
    for run in ("db-sd", "db-sd3"):
        checks[f"{run} metrics.jsonl"] = diff(*lines(f"{run}/dreambooth/metrics.jsonl"))
        lora = f"{run}/lora/pytorch_lora_weights.safetensors"
        checks[f"{run} LoRA tensors"] = same_tensors(before / lora, after / lora)
    cb, ca = read("cmp-sd/compare.json")
    checks["anomaly compare.json"] = diff(strip(cb, before, after), strip(ca, before, after))
    for name, problems in checks.items():
        print(("SAME " if not problems else "DIFF ") + name)
        for line in problems[:8]:
            print("     ", line)
    equal = not any(checks.values())
    print("ALL EQUAL" if equal else "DIFFERENCES FOUND")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()))
