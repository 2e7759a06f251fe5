"""The engine's toy regression (tests/train/test_engine.py's ``Regression``) as a script, for runs in other processes:
under ``accelerate launch`` (several processes, or two "machines" on localhost) and as a plain subprocess that a
test interrupts with SIGTERM.

    python tests/train/distributed_toy.py OUT --batch-size B --max-steps S [--sleep SECONDS] [--heldout]

Every process records the samples it trained on in ``OUT/seen_<rank>.json``; with ``--heldout`` the processes then
generate a 5-sample held-out set through :func:`humantune.studies.heldout.evaluate_models` (each its shard, recorded
in ``OUT/shard_<rank>.json``) and the main process scores it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.train.test_engine import Regression  # noqa: E402


def toy_config(max_steps: int, batch_size: int):
    """The toy run's TrainConfig: 2 micro-batches per step, cosine schedule with warm-up, clipping, checkpoints
    every 3 steps."""
    from humantune.train.engine import TrainConfig

    return TrainConfig(max_steps=max_steps, batch_size=batch_size, gradient_accumulation_steps=2, learning_rate=0.1,
                       lr_scheduler="cosine", lr_warmup_steps=2, checkpoint_every=3, checkpoints_total_limit=3,
                       validate_every=0, seed=7)


class Recorded(Regression):
    """Regression that records its batches (and can be slowed down, to be interrupted mid-run)."""

    def __init__(self, sleep: float = 0.0):
        super().__init__()
        self.sleep, self.seen = sleep, []

    def loss(self, batch, generator):
        self.seen.append(batch.tolist())
        time.sleep(self.sleep)
        return super().loss(batch, generator)


def heldout(out: Path, rank: int) -> None:
    import numpy as np
    from PIL import Image

    from humantune.studies.heldout import HeldoutSet, evaluate_models, write_reference

    colours = [np.full((16, 16, 3), 40 * i, np.uint8) for i in range(5)]
    held = HeldoutSet(captions=[f"sample {i}" for i in range(5)], seeds=list(range(5)), images=colours)
    reference = out / "eval" / "reference"
    if rank == 0:
        write_reference(held, reference, {"n": 5})

    def generate(indices):
        (out / f"shard_{rank}.json").write_text(json.dumps(list(indices)))
        return [Image.fromarray(colours[i]) for i in indices]

    from humantune.train.processes import process_state

    process_state().wait_for_everyone()
    results = evaluate_models({"toy": generate}, held, out / "eval", {"toy": {"v": 1}}, reference,
                              progress=False, metrics=["ssim"])
    (out / f"results_{rank}.json").write_text(json.dumps(results["toy"]["metrics"]["ssim"]["value"]))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--max-steps", type=int, required=True)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--heldout", action="store_true")
    args = p.parse_args()

    from humantune.train.engine import Trainer

    trainer = Trainer(args.out, log_with=None)
    task = Recorded(args.sleep)
    rank = trainer.accelerator.process_index
    try:
        summary = trainer.fit(task, toy_config(args.max_steps, args.batch_size), args.out, desc="toy")
    except KeyboardInterrupt:
        print("toy: interrupted", file=sys.stderr)
        return 130
    finally:
        (args.out / f"seen_{rank}.json").write_text(json.dumps(task.seen))
    if rank == 0:
        (args.out / "summary.json").write_text(json.dumps({**summary, "processes": trainer.accelerator.num_processes}))
    if args.heldout:
        heldout(args.out, rank)
    return 0


if __name__ == "__main__":
    from humantune.train.processes import exit_process

    exit_process(main())
