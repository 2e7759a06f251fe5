"""Every recipe on tiny models, with one config, as a script that ``accelerate launch`` can run in several
processes (tests/recipes/test_distributed_recipes.py compares 2 processes × micro-batch b with 1 process × 2b).

    python tests/recipes/distributed_recipes.py BASE OUT --batch-size B

``BASE``: a tiny StableDiffusionPipeline directory (tests/tiny_pipelines.save_pipeline). Writes OUT/pretrain,
OUT/controlnet-pose and OUT/dreambooth-lora.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def configs(base: Path, b: int) -> dict:
    """name → (config class, run function, config) of the three recipes with micro-batch ``b`` per process."""
    from humantune.config import load_config
    from humantune.recipes import recipes
    from tests.recipes.test_pretrain import SMALL

    train = {"max_steps": 3, "batch_size": b, "checkpoint_every": 2, "lr_warmup_steps": 0, "validate_every": 0}
    data = {
        "pretrain": {**SMALL, "family": "sd", "vae_train": {**SMALL["vae_train"], "batch_size": b},
                     "train": {**SMALL["train"], **train}},
        "controlnet-pose": {
            "base_model": str(base), "train_data": {"world": {"n": 12, "size": 32, "seed": 3}},
            "heldout_data": {"world": {"n": 4, "size": 32, "seed": 4}},
            "stages": [{"name": "s1", "loss": "heatmap", "heatmap": {"w": 2.0}, "train": train}],
            "validation": {"samples": 0}, "eval": {"samples": 4, "metrics": ["ssim"], "report_samples": 1}},
        "dreambooth-lora": {
            "base_model": str(base), "instance": {"prompts": ["a man in a red shirt and blue jeans lying on the grass",
                                                               "a woman in a blue dress lying on the street"],
                                                   "images_per_prompt": 2},
            "prior": {"enabled": True, "num_class_images": 2,
                      "class_prompts": ["a girl in a pink dress walking on the street"]},
            "train": {**train, "gradient_accumulation_steps": 1},
            "validation_prompts": ["a man in a red shirt and blue jeans lying on the grass"]},
    }
    table = recipes()
    return {name: (table[name][1], load_config(table[name][0], None, [f"{k}={json.dumps(v)}" for k, v in d.items()]))
            for name, d in data.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("base", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--only", action="append", help="run only this recipe (repeatable)")
    args = p.parse_args(argv)
    for name, (run, cfg) in configs(args.base, args.batch_size).items():
        if not args.only or name in args.only:
            run(cfg, args.out / name)
    return 0


if __name__ == "__main__":
    from humantune.train.processes import exit_process

    exit_process(main())
