"""Declared training stages, run in sequence on the engine: ControlNet's plain → heatmap stages, HG-DPO's
easy → normal → hard curriculum, Ent-Prog's progressive stages.

A stage has a name (its directory ``OUT/<name>/`` and its label in reports), a length (``epochs`` or
``train.max_steps``), the stage it starts from (``init_from``; default the previous one) and its own
:class:`~humantune.train.engine.TrainConfig`. :class:`StageRunner` runs them: a stage whose final artifact exists is
skipped on a re-run (its ``summary.json`` is read back), an interrupted stage resumes inside the engine from its last
checkpoint, and every finished stage leaves ``OUT/<name>/summary.json``. A recipe subclasses :class:`StageConfig` to
add what its stages choose (a loss, a curriculum level) and gives the runner one function that trains a stage.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from humantune.config import option
from humantune.io import write_json_atomic
from humantune.train.engine import Trainer, TrainConfig

RESERVED_STAGE_NAMES = ("base", "data", "eval", "logs", "checkpoints")
"""Directory names a recipe's output folder uses for other things."""
_STAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class StageConfig:
    """One training stage."""

    name: str = option("stage1", "stage name: its directory OUT/<name> and its label in the report")
    epochs: float | None = option(None, "passes over the training set; sets train.max_steps to "
                                        "ceil(epochs·N / (batch_size·gradient_accumulation_steps·processes))")
    init_from: str | None = option(None, "name of an earlier stage whose weights this stage starts from (null: the "
                                         "previous stage; the first stage starts from the recipe's initial model)")
    train: TrainConfig = option(TrainConfig(), "optimisation (validate_every 0: every epoch)")

    def __post_init__(self) -> None:
        if not _STAGE_NAME_RE.match(self.name) or self.name in RESERVED_STAGE_NAMES:
            raise ValueError(f"name {self.name!r} must be letters, digits, '_', '-', '.' (not starting with a "
                             f"symbol) and not one of {', '.join(RESERVED_STAGE_NAMES)}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")


def check_stages(stages: Sequence[StageConfig]) -> None:
    """ValueError (naming ``stages[k]``) unless there is at least one stage, names are unique, every ``init_from``
    names an earlier stage, and all stages share the first one's mixed precision (one accelerator per run)."""
    if not stages:
        raise ValueError("stages must name at least one stage")
    names = [s.name for s in stages]
    for k, stage in enumerate(stages):
        if stage.name in names[:k]:
            raise ValueError(f"stages[{k}]: the stage name {stage.name!r} is used twice")
        if stage.init_from is not None and stage.init_from not in names[:k]:
            raise ValueError(f"stages[{k}].init_from {stage.init_from!r} must name an earlier stage "
                             f"({', '.join(names[:k]) or 'none before the first'})")
        if stage.train.mixed_precision != stages[0].train.mixed_precision:
            raise ValueError(f"stages[{k}].train.mixed_precision must equal the first stage's (one accelerator "
                             "per run)")


def steps_for_epochs(epochs: float, n: int, batch_size: int, accumulation: int, processes: int) -> int:
    """Optimizer steps of ``epochs`` passes over ``n`` samples:  ceil(epochs·N / (batch·accumulation·processes))."""
    return max(1, math.ceil(epochs * n / (batch_size * accumulation * processes) - 1e-9))


def stage_train_config(stage: StageConfig, n: int, processes: int) -> TrainConfig:
    """The stage's TrainConfig for ``n`` training samples: ``epochs`` turned into steps, and validation every
    epoch unless ``train.validate_every`` says otherwise."""
    t = stage.train
    per_epoch = steps_for_epochs(1.0, n, t.batch_size, t.gradient_accumulation_steps, processes)
    steps = t.max_steps if stage.epochs is None else steps_for_epochs(
        stage.epochs, n, t.batch_size, t.gradient_accumulation_steps, processes)
    return dataclasses.replace(t, max_steps=steps, validate_every=t.validate_every or per_epoch)


class StageRunner:
    """Runs declared stages in order under ``out``; ``artifact`` is the file (relative to a stage's directory)
    whose presence means the stage is finished, e.g. ``controlnet/config.json``."""

    def __init__(self, trainer: Trainer, out: str | Path, artifact: str, resume: bool = True) -> None:
        self.trainer, self.out, self.artifact, self.resume = trainer, Path(out), artifact, resume

    @staticmethod
    def init_source(stages: Sequence[StageConfig], k: int) -> str | None:
        """The stage whose weights stage ``k`` starts from: its ``init_from``, else the previous stage (None for
        the first)."""
        return stages[k].init_from or (stages[k - 1].name if k > 0 else None)

    def is_done(self, stage: StageConfig) -> bool:
        return self.resume and (self.out / stage.name / self.artifact).is_file()

    def run(self, stages: Sequence[StageConfig],
            train_stage: Callable[[int, StageConfig, str | None], dict]) -> dict[str, dict]:
        """``train_stage(k, stage, init_source)`` for every stage not finished yet (it trains and saves the
        artifact, and returns a summary); returns every stage's summary by name, finished stages' read back."""
        summaries = {}
        for k, stage in enumerate(stages):
            stage_dir = self.out / stage.name
            if self.is_done(stage):
                if self.trainer.is_main:
                    tqdm.write(f"{stage.name}: done ({stage_dir / Path(self.artifact).parts[0]}), skipped")
                path = stage_dir / "summary.json"
                summaries[stage.name] = json.loads(path.read_text()) if path.is_file() else {}
                continue
            summary = train_stage(k, stage, self.init_source(stages, k))
            if self.trainer.is_main:
                write_json_atomic(stage_dir / "summary.json", summary)
            self.trainer.accelerator.wait_for_everyone()
            summaries[stage.name] = summary
        return summaries
