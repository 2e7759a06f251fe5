"""What makes a zero-initialised ControlNet follow the pose within ~200 steps? (issue 17: the README's quick job)

Runs each probe config in ``benchmarks/controlnet_quick_levers/`` (variants of ``configs/controlnet_pose/quick.yaml``
on the shipped tiny-sd, 512 training poses, 48 held-out poses of another world seed, 10 sampling steps) into
``--work-dir`` (resumed when present), then reports per probe (48 held-out poses, 128 in probes 6 and 7):

- held-out OKS (MediaPipe, bootstrap 95 % interval) of the base alone, after stage 1 and after stage 2;
- the pose's effect on the denoiser: ‖ε(pose A) − ε(pose B)‖ / ‖ε(no ControlNet)‖ for the final ControlNet, the
  same noisy latent, prompt and timestep, two held-out poses (t = 900 and 500; mean over 4 latents) — how much the
  prediction depends on the skeleton at all. A ControlNet that ignores the condition scores 0.

    OMP_NUM_THREADS=1 python benchmarks/controlnet_quick_levers.py --work-dir runs/cn-levers [--only 4_...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_io import print_table, write_result  # noqa: E402

from humantune.config import load_config  # noqa: E402
from humantune.recipes.controlnet_pose import ControlNetPoseConfig, train_controlnet_pose  # noqa: E402

PROBES = Path(__file__).resolve().parent / "controlnet_quick_levers"
TIMESTEPS = (900, 500)
PROMPT = "a man in a red shirt and blue jeans walking on the street"


def pose_effect(run: Path, base_model: str, latents: int = 4) -> dict[str, float]:
    """‖ε(pose A) − ε(pose B)‖ / ‖ε_base‖ per timestep for ``run``'s last ControlNet (see the module docstring)."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    from humantune.models.generation import resolve_model

    last = sorted(p.parent for p in run.glob("*/controlnet/config.json"))[-1]  # stage2/controlnet
    controlnet = ControlNetModel.from_pretrained(last)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(resolve_model(base_model), controlnet=controlnet,
                                                             safety_checker=None)
    size = pipe.unet.config.sample_size
    pixels = size * pipe.vae_scale_factor
    conditions = sorted((run / "eval" / "reference").glob("*_condition.png"))[1:4:2]
    cond = [torch.from_numpy(np.array(Image.open(c).convert("RGB").resize((pixels, pixels)))).permute(2, 0, 1)
            [None].float() / 255 for c in conditions]
    ids = pipe.tokenizer([PROMPT], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         return_tensors="pt").input_ids
    out = {}
    with torch.no_grad():
        emb = pipe.text_encoder(ids)[0]
        for t in TIMESTEPS:
            ratios = []
            for k in range(latents):
                x = torch.randn(1, pipe.unet.config.in_channels, size, size, generator=torch.Generator().manual_seed(k))
                tt = torch.tensor([t])
                base = pipe.unet(x, tt, encoder_hidden_states=emb).sample
                eps = []
                for c in cond:
                    down, mid = controlnet(x, tt, encoder_hidden_states=emb, controlnet_cond=c, return_dict=False)
                    eps.append(pipe.unet(x, tt, encoder_hidden_states=emb, down_block_additional_residuals=down,
                                         mid_block_additional_residual=mid).sample)
                ratios.append(float((eps[0] - eps[1]).norm() / base.norm()))
            out[f"t{t}"] = float(np.mean(ratios))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, required=True, help="probe runs go (and resume) here")
    ap.add_argument("--only", nargs="+", help="probe config names (without .yaml)")
    ap.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/controlnet_quick_levers.json)")
    args = ap.parse_args()

    rows = []
    for path in sorted(PROBES.glob("*.yaml")):
        if args.only and path.stem not in args.only:
            continue
        cfg = load_config(ControlNetPoseConfig, path)
        run = args.work_dir / path.stem
        # allow_config_change: runs made before an option existed record it as a change to its default
        train_controlnet_pose(cfg, run, allow_config_change=True)
        results = json.loads((run / "results.json").read_text())
        row = {"probe": path.stem, "held_out": results["eval_samples"],
               "steps": sum(s["steps_run"] for s in results["training"].values()),
               "train_seconds": round(sum(s["seconds"] for s in results["training"].values()), 1)}
        for model, metrics in results["metrics"].items():
            row[f"oks_{model}"] = metrics["oks"]["value"]
            row[f"oks_{model}_ci"] = metrics["oks"]["ci95"]
            row[f"detected_{model}"] = metrics["oks"]["num_detections"]
        row.update({f"pose_effect_{k}": v for k, v in pose_effect(run, cfg.base_model).items()})
        rows.append(row)
    path = write_result("controlnet_quick_levers", {
        "summary": {"command": " ".join(sys.argv), "probes": str(PROBES.relative_to(PROBES.parent.parent)),
                    "pose_effect": "||eps(pose A) - eps(pose B)|| / ||eps base||, mean over 4 latents"},
        "rows": rows,
    }, args.out)
    print_table(rows, ["probe", "held_out", "steps", "train_seconds", "oks_base", "oks_stage1", "oks_stage2",
                       "pose_effect_t900", "pose_effect_t500"])
    print(f"\n-> {path}")


if __name__ == "__main__":
    main()
