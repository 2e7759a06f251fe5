"""Run folders tell the truth: a changed config is refused (or recorded when allowed), an unrelated folder is
refused, a failed setup leaves nothing behind, SIGTERM interrupts like Ctrl-C."""

import json
import os
import signal
import time
from dataclasses import dataclass, field

import pytest

from humantune.config import option
from humantune.errors import HumantuneError
from humantune.train.engine import TrainConfig
from humantune.train.run_folder import RecipeRun, changed_keys, flatten, prepare_run_folder, sigterm_as_interrupt


@dataclass
class Stage:
    name: str = option("s1", "name")
    train: TrainConfig = option(TrainConfig(max_steps=4), "optimisation")


@dataclass
class Toy:
    base_model: str = option("tiny-sd", "base")
    stages: list[Stage] = option([Stage()], "stages")
    train: TrainConfig = option(TrainConfig(), "optimisation")
    prompts: list[str] = field(default_factory=lambda: ["a", "b"])


def _open(out, cfg, **kw):
    with prepare_run_folder(out, cfg, **kw) as folder:
        folder.commit()
    return folder


def test_flatten_names_nested_keys_and_list_items():
    flat = flatten({"a": {"b": 1}, "stages": [{"name": "x", "t": {"lr": 2}}], "prompts": ["p", "q"]})
    assert flat == {"a.b": 1, "stages[0].name": "x", "stages[0].t.lr": 2, "prompts": ["p", "q"]}
    assert changed_keys({"train": {"seed": 0, "log_every": 1}, "eval": {"samples": 4}},
                        {"train": {"seed": 1, "log_every": 5}, "eval": {"samples": 8}}) == {"train.seed": (0, 1)}


def test_same_config_resumes_and_a_changed_one_is_refused_with_the_keys(tmp_path):
    out = tmp_path / "run"
    _open(out, Toy())
    assert (out / "config.yaml").is_file()
    _open(out, Toy())                                                         # identical: resumes
    changed = Toy(train=TrainConfig(seed=3, batch_size=2), stages=[Stage(train=TrainConfig(learning_rate=0.5))])
    with pytest.raises(HumantuneError) as e:
        _open(out, changed)
    message = str(e.value)
    assert "\n" not in message
    assert "changed: stages[0].train.learning_rate, stages[0].train.max_steps, train.batch_size, train.seed" in message
    assert "--allow-config-change" in message and "--no-resume" in message
    # keys that do not change the trained weights may change silently, and are recorded in config.yaml
    _open(out, Toy(train=TrainConfig(log_every=1, checkpoint_every=7, num_workers=2)))
    assert "checkpoint_every: 7" in (out / "config.yaml").read_text() and not (out / "config_changes.jsonl").exists()


def test_an_allowed_change_is_recorded_and_becomes_the_recorded_config(tmp_path):
    out = tmp_path / "run"
    _open(out, Toy())
    _open(out, Toy(train=TrainConfig(seed=3)), allow_config_change=True)
    rows = [json.loads(x) for x in (out / "config_changes.jsonl").read_text().splitlines()]
    assert rows[0]["changed"] == {"train.seed": {"from": 0, "to": 3}} and rows[0]["how"] == "--allow-config-change"
    _open(out, Toy(train=TrainConfig(seed=3)))                                # now the recorded config
    _open(out, Toy(), resume=False)                                           # starting over is recorded too
    rows = [json.loads(x) for x in (out / "config_changes.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[1]["how"].startswith("--no-resume")


def test_a_recipe_run_opens_its_folder_with_its_own_resume_settings(tmp_path):
    out = tmp_path / "run"
    with RecipeRun(Toy(), str(out)).open_folder() as folder:
        folder.commit()
    assert (out / "config.yaml").is_file()
    changed = Toy(train=TrainConfig(seed=5))
    with pytest.raises(HumantuneError, match="changed: train.seed"):
        with RecipeRun(changed, out).open_folder():
            pass
    with RecipeRun(changed, out, allow_config_change=True).open_folder() as folder:   # recorded, then continued
        folder.commit()
    assert "train.seed" in (out / "config_changes.jsonl").read_text()


def test_a_folder_that_is_not_a_run_or_another_recipes_run_is_refused(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "me.jpg").write_bytes(b"x")
    with pytest.raises(HumantuneError, match="'.*photos' is not empty and holds no humantune run"):
        _open(tmp_path / "photos", Toy())
    assert os.listdir(tmp_path / "photos") == ["me.jpg"]
    _open(tmp_path / "run", Stage())
    with pytest.raises(HumantuneError, match="holds a Stage run, not a Toy one"):
        _open(tmp_path / "run", Toy())


def test_a_failed_setup_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(HumantuneError, match="bad input"):
        with prepare_run_folder(out, Toy()):
            (out / "data").mkdir()
            raise HumantuneError("bad input")
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HumantuneError):
        with prepare_run_folder(empty, Toy()):
            (empty / "data").mkdir()
            raise HumantuneError("bad input")
    assert empty.is_dir() and not any(empty.iterdir())
    # a folder with a run in it is never removed, and neither is one whose setup completed
    _open(out, Toy())
    with pytest.raises(HumantuneError):
        with prepare_run_folder(out, Toy()) as folder:
            folder.commit()
            raise HumantuneError("failed while training")
    assert (out / "config.yaml").is_file()


def test_sigterm_raises_keyboard_interrupt_inside_the_block_only():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)                                 # interrupted at once
    assert signal.getsignal(signal.SIGTERM) == before
