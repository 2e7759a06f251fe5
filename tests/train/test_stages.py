"""Declared training stages: epochs to steps, stage checks, and the runner's skip / init-source logic."""

import json
import math

import pytest

from humantune.train.engine import Trainer, TrainConfig
from humantune.train.stages import StageConfig, StageRunner, check_stages, stage_train_config, steps_for_epochs


def test_steps_for_epochs_is_the_ceiling_of_samples_over_the_global_batch():
    assert steps_for_epochs(4, 61_400, 1, 1, 1) == 245_600           # the paper's stage 1 on Captioned COCO-Pose
    assert steps_for_epochs(2, 256, 16, 1, 1) == 32
    assert steps_for_epochs(1.5, 100, 8, 2, 2) == math.ceil(150 / 32)
    assert steps_for_epochs(0.01, 10, 4, 1, 1) == 1


def test_stage_train_config_turns_epochs_into_steps_and_validates_every_epoch():
    stage = StageConfig(name="a", epochs=2.5, train=TrainConfig(batch_size=4, gradient_accumulation_steps=2))
    cfg = stage_train_config(stage, 40, processes=1)
    assert (cfg.max_steps, cfg.validate_every) == (13, 5)
    fixed = StageConfig(name="b", train=TrainConfig(max_steps=7, batch_size=4, validate_every=3))
    assert (stage_train_config(fixed, 40, 1).max_steps, stage_train_config(fixed, 40, 1).validate_every) == (7, 3)


@pytest.mark.parametrize("stages, message", [
    ([], "at least one stage"),
    ([StageConfig(name="a"), StageConfig(name="a")], r"stages\[1\]: the stage name 'a' is used twice"),
    ([StageConfig(name="a"), StageConfig(name="b", init_from="c")], r"stages\[1\]\.init_from 'c'"),
    ([StageConfig(name="a"), StageConfig(name="b", train=TrainConfig(mixed_precision="bf16"))], "mixed_precision"),
])
def test_check_stages_names_the_bad_stage(stages, message):
    with pytest.raises(ValueError, match=message):
        check_stages(stages)


def test_reserved_and_malformed_stage_names_are_refused():
    for name in ("eval", "-x", "a/b"):
        with pytest.raises(ValueError, match="name"):
            StageConfig(name=name)


def test_runner_trains_unfinished_stages_from_their_source_and_skips_finished_ones(tmp_path):
    stages = [StageConfig(name="a"), StageConfig(name="b"), StageConfig(name="c", init_from="a")]
    calls = []

    def train_stage(k, stage, source):
        calls.append((k, stage.name, source))
        (tmp_path / stage.name / "model").mkdir(parents=True)
        (tmp_path / stage.name / "model" / "done").write_text("x")
        return {"stage": stage.name, "from": source}

    runner = StageRunner(Trainer(tmp_path, log_with=None), tmp_path, "model/done")
    summaries = runner.run(stages, train_stage)
    assert calls == [(0, "a", None), (1, "b", "a"), (2, "c", "a")]
    assert json.loads((tmp_path / "b" / "summary.json").read_text()) == {"stage": "b", "from": "a"}
    # a re-run trains nothing and reads the summaries back; a lost artifact retrains only that stage
    calls.clear()
    import shutil

    shutil.rmtree(tmp_path / "b" / "model")
    assert runner.run(stages, train_stage) == summaries
    assert calls == [(1, "b", "a")]
    # resume=False trains everything again
    calls.clear()
    for s in stages:
        shutil.rmtree(tmp_path / s.name / "model")
    StageRunner(Trainer(tmp_path, log_with=None), tmp_path, "model/done", resume=False).run(stages, train_stage)
    assert [c[1] for c in calls] == ["a", "b", "c"]
