from __future__ import annotations  # the config module must resolve string annotations

import enum
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Optional

import pytest
import yaml

from humantune.config import config_to_dict, describe_config, load_config, option, save_config
from humantune.errors import ConfigError, HumantuneError


class Pose(enum.Enum):
    STANDING = "standing"
    LYING = "lying"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class Optim:
    learning_rate: float = option(1e-4, "Peak learning rate.")
    betas: tuple[float, ...] = option((0.9, 0.999), "Adam betas.")
    steps: int = option(100, "Optimiser steps.")
    warmup_steps: int = option(0, "Linear warm-up steps.")

    def __post_init__(self):
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be <= steps ({self.steps})")


@dataclass
class World:
    action: Literal["standing", "lying"] = option("standing", "What the people do.")
    pose: Pose = option(Pose.STANDING, "Pose enum.")
    level: Level = option(Level.LOW, "An int enum.")
    mix: dict[str, float] = option({"standing": 1.0}, "Sampling weight per action.")
    sizes: list[int] = option([512], "Image sizes.")


@dataclass
class Run:
    name: str = option("run", "Run name.")
    seed: int = option(0, "Random seed.")
    fp16: bool = option(False, "Half precision.")
    out_dir: Path = option(Path("runs/default"), "Output directory.")
    init_from: Path | None = option(None, "Checkpoint to start from.")
    max_images: Optional[int] = option(None, "Cap on images.")
    size: tuple[int, int] = option((64, 48), "Width and height.")
    threshold: float | str = option(0.5, "A number or 'auto'.")
    train: Optim = option(Optim(), "Optimisation settings.")
    world: World = option(World(), "The mannequin world.")
    people: dict[str, World] = option({}, "Per-person worlds.")
    tags: list[str] = option([], "Free-form tags.")
    extra: Optim | None = option(None, "Optional second optimiser.")
    anything: Any = option(None, "Untyped.")


@dataclass
class Needs:
    model: str = option(help="Model id.")
    train: Optim = option(Optim(), "Optimisation settings.")


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error(*args, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kw)
    message = str(info.value)
    assert "\n" not in message, message
    assert isinstance(info.value, HumantuneError)
    return message


# ------------------------------------------------------------------------------------------------- option


def test_option_metadata_and_mutable_defaults():
    help_of = {f.name: f.metadata["help"] for f in fields(Run)}
    assert help_of["seed"] == "Random seed."
    a, b = Run(), Run()
    assert a.tags is not b.tags and a.world is not b.world and a.world.mix is not b.world.mix
    a.world.sizes.append(1)
    assert Run().world.sizes == [512]
    assert Run().out_dir == Path("runs/default")


def test_option_without_default_is_required():
    with pytest.raises(TypeError):
        Needs()
    with pytest.raises(TypeError):
        option(1, "x", default_factory=list)


# ------------------------------------------------------------------------------------------------- loading


def test_defaults_only():
    assert load_config(Run) == Run()
    assert load_config(Run, None, []) == Run()


def test_every_type_from_yaml(tmp_path):
    p = write(tmp_path, """
name: tiny
seed: 3
fp16: true
out_dir: runs/tiny
init_from: ckpt/model.safetensors
max_images: 10
size: [128, 96]
threshold: auto
train:
  learning_rate: 1e-4      # YAML 1.1 reads this as the string '1e-4'
  betas: [0.8, 0.9]
  steps: 10
world:
  action: lying
  pose: lying
  level: 2
  mix: {standing: 1, lying: 0.5}
  sizes: [256, 512]
people:
  alice: {action: lying}
tags: [a, b]
extra: {steps: 5}
anything: {free: [form]}
""")
    cfg = load_config(Run, p)
    assert cfg.name == "tiny" and cfg.seed == 3 and cfg.fp16 is True
    assert cfg.out_dir == Path("runs/tiny") and isinstance(cfg.out_dir, Path)
    assert cfg.init_from == Path("ckpt/model.safetensors")
    assert cfg.max_images == 10
    assert cfg.size == (128, 96)
    assert cfg.threshold == "auto"
    assert cfg.train.learning_rate == 1e-4 and type(cfg.train.learning_rate) is float
    assert cfg.train.betas == (0.8, 0.9) and cfg.train.steps == 10
    assert cfg.world.action == "lying" and cfg.world.pose is Pose.LYING and cfg.world.level is Level.HIGH
    assert cfg.world.mix == {"standing": 1.0, "lying": 0.5}
    assert all(type(v) is float for v in cfg.world.mix.values())
    assert cfg.world.sizes == [256, 512]
    assert cfg.people == {"alice": World(action="lying")}
    assert cfg.tags == ["a", "b"]
    assert cfg.extra == Optim(steps=5)
    assert cfg.anything == {"free": ["form"]}


def test_missing_nested_keys_take_defaults(tmp_path):
    cfg = load_config(Run, write(tmp_path, "train:\n  steps: 7\n"))
    assert cfg.train == Optim(steps=7)
    assert cfg.world == World()


def test_empty_file_is_an_error_and_nulls(tmp_path):
    # An empty config file used to give the defaults, silently starting the full default run (issue 19).
    for text in ("", "# nothing\n", "\n\n   \n"):
        path = write(tmp_path, text)
        with pytest.raises(ConfigError, match=f"config file '{path}' is empty"):
            load_config(Run, path)
    assert load_config(Run, write(tmp_path, "{}\n")) == Run()   # an explicit empty mapping is a choice
    cfg = load_config(Run, write(tmp_path, "init_from: null\nmax_images: ~\nextra: null\n"))
    assert cfg.init_from is None and cfg.max_images is None and cfg.extra is None


def test_float_accepts_ints_and_numeric_strings(tmp_path):
    cfg = load_config(Run, write(tmp_path, "train: {learning_rate: 1}\nthreshold: 2\n"))
    assert cfg.train.learning_rate == 1.0 and type(cfg.train.learning_rate) is float
    assert cfg.threshold == 2.0
    for text in ["3e-5", "1E4", "-2.5e-3", ".5"]:
        assert load_config(Run, overrides=[f"train.learning_rate='{text}'"]).train.learning_rate == float(text)


def test_required_key(tmp_path):
    assert load_config(Needs, write(tmp_path, "model: sd15\n")).model == "sd15"
    assert load_config(Needs, overrides=["model=sd15"]).model == "sd15"
    message = error(Needs, write(tmp_path, "train: {steps: 3}\n"))
    assert message == "x.yaml: missing required key 'model' (str)".replace("x.yaml", str(tmp_path / "x.yaml"))


# ------------------------------------------------------------------------------------------------- overrides


def test_override_value_types():
    cfg = load_config(Run, overrides=[
        "train.learning_rate=1e-4", "name=foo", "world.mix={standing: 1, lying: 0.1}", "world.sizes=[1,2]",
        "seed=5", "fp16=true", "out_dir=/tmp/out", "size=[8, 8]", "tags=[]", "max_images=null",
    ])
    assert cfg.train.learning_rate == 1e-4 and type(cfg.train.learning_rate) is float
    assert cfg.name == "foo"
    assert cfg.world.mix == {"standing": 1.0, "lying": 0.1}
    assert cfg.world.sizes == [1, 2]
    assert cfg.seed == 5 and cfg.fp16 is True and cfg.out_dir == Path("/tmp/out") and cfg.size == (8, 8)
    assert cfg.tags == [] and cfg.max_images is None


def test_overrides_beat_file_and_apply_in_order(tmp_path):
    p = write(tmp_path, "seed: 1\ntrain: {steps: 50, learning_rate: 0.1}\n")
    cfg = load_config(Run, p, ["seed=2", "train.steps=60", "seed=3"])
    assert cfg.seed == 3 and cfg.train.steps == 60 and cfg.train.learning_rate == 0.1


def test_override_mapping_merges_into_dataclass_but_replaces_dict(tmp_path):
    p = write(tmp_path, "train: {steps: 50, learning_rate: 0.1}\nworld: {mix: {standing: 1, lying: 2}}\n")
    cfg = load_config(Run, p, ["train={steps: 70}", "world.mix={sitting: 3}"])
    assert cfg.train.steps == 70 and cfg.train.learning_rate == 0.1  # merged
    assert cfg.world.mix == {"sitting": 3.0}  # replaced


def test_override_into_dict_of_dataclasses_and_none_optional():
    cfg = load_config(Run, overrides=["people.bob.action=lying", "people.bob.sizes=[8]", "extra.steps=9"])
    assert cfg.people == {"bob": World(action="lying", sizes=[8])}
    assert cfg.extra == Optim(steps=9)
    assert load_config(Run, overrides=["world.mix.lying=0.25"]).world.mix == {"standing": 1.0, "lying": 0.25}


def test_override_value_with_equals_sign():
    assert load_config(Run, overrides=["name=a=b"]).name == "a=b"


def test_base_is_beneath_file(tmp_path):
    p = write(tmp_path, "seed: 1\n")
    cfg = load_config(Run, p, ["train.steps=3"], base={"seed": 9, "name": "b", "train": {"learning_rate": 0.5}})
    assert cfg.seed == 1 and cfg.name == "b" and cfg.train == Optim(learning_rate=0.5, steps=3)
    cfg = load_config(Run, base=Run(seed=4, out_dir=Path("o")))
    assert cfg == Run(seed=4, out_dir=Path("o"))
    assert "<base>: 'seed' expects int" in error(Run, base={"seed": "x"})


# ------------------------------------------------------------------------------------------------- errors


def test_unknown_key_did_you_mean(tmp_path):
    p = write(tmp_path, "train:\n  lerning_rate: 0.1\n", name="tiny.yaml")
    assert error(Run, p) == f"{p}: unknown key 'train.lerning_rate' (did you mean 'learning_rate'?)"
    message = error(Run, write(tmp_path, "wrld: {}\n"))
    assert "unknown key 'wrld'" in message and "did you mean 'world'?" in message
    message = error(Run, write(tmp_path, "train: {zzzzzzzz: 1}\n"))
    assert "unknown key 'train.zzzzzzzz' (valid keys: learning_rate, betas, steps, warmup_steps)" in message


def test_relative_file_name_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs" / "pretrain").mkdir(parents=True)
    Path("configs/pretrain/tiny.yaml").write_text("train:\n  lerning_rate: 1\n")
    assert error(Run, "configs/pretrain/tiny.yaml") == (
        "configs/pretrain/tiny.yaml: unknown key 'train.lerning_rate' (did you mean 'learning_rate'?)"
    )


@pytest.mark.parametrize("text, expected", [
    ("train: {learning_rate: abc}", "'train.learning_rate' expects float, got str 'abc'"),
    ("train: {learning_rate: true}", "'train.learning_rate' expects float, got bool true"),
    ("seed: 1.5", "'seed' expects int, got float 1.5"),
    ("seed: true", "'seed' expects int, got bool true"),
    ("seed: '3'", "'seed' expects int, got str '3'"),
    ("fp16: 1", "'fp16' expects bool, got int 1 (use true or false)"),
    ("fp16: 'yes'", "'fp16' expects bool, got str 'yes' (use true or false)"),
    ("name: 123", "'name' expects str, got int 123 (quote it to make it a string)"),
    ("name: null", "'name' expects str, got null"),
    ("out_dir: 5", "'out_dir' expects path, got int 5"),
    ("init_from: [a]", "'init_from' expects path or null, got list ['a']"),
    ("max_images: x", "'max_images' expects int or null, got str 'x'"),
    ("threshold: [1]", "'threshold' expects float | str, got list [1]"),
    ("world: {action: flying}", "'world.action' must be one of 'standing', 'lying'; got 'flying'"),
    ("world: {pose: sitting}", "'world.pose' must be one of 'standing', 'lying'; got 'sitting'"),
    ("world: {level: 3}", "'world.level' must be one of 1, 2; got 3"),
    ("world: {sizes: [1, x]}", "'world.sizes[1]' expects int, got str 'x'"),
    ("world: {sizes: 5}", "'world.sizes' expects list[int], got int 5"),
    ("world: {mix: {lying: x}}", "'world.mix.lying' expects float, got str 'x'"),
    ("world: {mix: {1: 2}}", "'world.mix' keys must be str, got int 1"),
    ("world: {mix: [1]}", "'world.mix' expects dict[str, float], got list [1]"),
    ("size: [1, 2, 3]", "'size' expects tuple[int, int] (2 items), got 3 items [1, 2, 3]"),
    ("size: 4", "'size' expects tuple[int, int], got int 4"),
    ("train: {betas: [0.9, x]}", "'train.betas[1]' expects float, got str 'x'"),
    ("train: 3", "'train' expects a mapping (Optim), got int 3"),
    ("extra: 3", "'extra' expects a mapping (Optim) or null, got int 3"),
    ("people: {bob: {action: x}}", "'people.bob.action' must be one of 'standing', 'lying'; got 'x'"),
])
def test_file_type_errors(tmp_path, text, expected):
    p = write(tmp_path, text + "\n")
    assert error(Run, p) == f"{p}: {expected}"


@pytest.mark.parametrize("override, expected", [
    ("train.steps=1.5", "--set: 'train.steps' expects int, got float 1.5"),
    ("world.action=flying", "--set: 'world.action' must be one of 'standing', 'lying'; got 'flying'"),
    ("foo=bar", "--set: 'foo=bar' has an unknown key 'foo'"),
    ("train.lerning_rate=1", "--set: 'train.lerning_rate=1' has an unknown key 'train.lerning_rate' "
                             "(did you mean 'learning_rate'?)"),
    ("foo", "--set: expected key=value, got 'foo'"),
    ("=3", "--set: expected key=value, got '=3'"),
    ("train..steps=1", "--set: 'train..steps=1' has an empty part in the key 'train..steps'"),
    ("seed.x=1", "--set: cannot set 'seed.x': 'seed' is int, not a mapping"),
    ("train={lerning_rate: 1}", "--set: unknown key 'train.lerning_rate' (did you mean 'learning_rate'?)"),
])
def test_override_errors(override, expected):
    message = error(Run, overrides=[override])
    assert message.startswith(expected), message


def test_override_invalid_yaml_value():
    message = error(Run, overrides=["world.sizes=[1,"])
    assert message.startswith("--set: 'world.sizes=[1,' has an invalid YAML value: ")


def test_errors_name_the_source_of_each_value(tmp_path):
    p = write(tmp_path, "seed: 1\ntrain: {steps: 5}\n")
    assert error(Run, p, ["seed=x"]).startswith("--set: 'seed'")
    assert error(Run, write(tmp_path, "seed: x\n"), ["name=ok"]).startswith(f"{p}: 'seed'")


def test_missing_file(tmp_path):
    assert error(Run, "nope/x.yaml") == "config file 'nope/x.yaml' not found"
    assert error(Run, tmp_path) == f"config file '{tmp_path}' is a directory, not a file"


def test_invalid_yaml_names_line(tmp_path):
    p = write(tmp_path, "seed: 1\nname: a\n  bad: [\n")
    message = error(Run, p)
    assert message.startswith(f"{p}: invalid YAML at line 3: "), message
    p = write(tmp_path, "seed: 1\ntrain:\n  steps: [1, 2\n")
    assert error(Run, p).startswith(f"{p}: invalid YAML at line ")


def test_duplicate_key_is_an_error(tmp_path):
    p = write(tmp_path, "seed: 1\ntrain:\n  steps: 1\n  steps: 2\n")
    assert error(Run, p) == f"{p}: invalid YAML at line 4: duplicate key 'steps'"
    # YAML merge keys are not duplicates
    p = write(tmp_path, "anything:\n  a: &d {x: 1}\n  b:\n    <<: *d\n    x: 2\n")
    assert load_config(Run, p).anything == {"a": {"x": 1}, "b": {"x": 2}}


@pytest.mark.parametrize("text, got", [("- 1\n- 2\n", "list [1, 2]"), ("just text\n", "str 'just text'")])
def test_top_level_must_be_mapping(tmp_path, text, got):
    p = write(tmp_path, text)
    assert error(Run, p) == f"{p}: the top level must be a mapping of keys to values, got {got}"


def test_post_init_value_error_is_wrapped(tmp_path):
    p = write(tmp_path, "train: {steps: 5, warmup_steps: 10}\n")
    assert error(Run, p) == f"{p}: invalid 'train' (Optim): warmup_steps (10) must be <= steps (5)"
    message = error(Run, p, ["train.steps=6"])
    assert message.startswith(f"{p}, --set: invalid 'train' (Optim): ")
    assert error(Run, overrides=["extra.warmup_steps=500"]).startswith("--set: invalid 'extra' (Optim): ")
    assert error(Optim, overrides=["warmup_steps=1000"]) == (
        "--set: invalid Optim: warmup_steps (1000) must be <= steps (100)"
    )


# ------------------------------------------------------------------------------------------------- saving


def test_config_to_dict_is_plain_and_ordered():
    cfg = Run(out_dir=Path("o"), people={"a": World(pose=Pose.LYING)}, extra=Optim())
    d = config_to_dict(cfg)
    assert list(d) == [f.name for f in fields(Run)]
    assert d["out_dir"] == "o" and d["size"] == [64, 48] and d["train"]["betas"] == [0.9, 0.999]
    assert d["world"]["pose"] == "standing" and d["world"]["level"] == 1 and type(d["world"]["level"]) is int
    assert d["people"]["a"]["pose"] == "lying"
    assert yaml.safe_load(yaml.safe_dump(d)) == d
    with pytest.raises(TypeError):
        config_to_dict(Run)


def test_save_load_round_trip(tmp_path):
    cfg = load_config(Run, overrides=[
        "name='yes'", "train.learning_rate=3e-7", "init_from=ckpt.pt", "world.pose=lying", "world.level=2",
        "people.a.mix={x: 0.5}", "tags=['1e-4', 'null', '']", "extra.steps=4", "threshold=auto", "max_images=3",
        "anything={k: [1, 2]}",
    ])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert load_config(Run, out) == cfg
    text = out.read_text()
    assert text.index("name:") < text.index("seed:") < text.index("train:") < text.index("world:")
    assert not list(out.parent.glob("*.tmp"))
    assert load_config(Run, out).tags == ["1e-4", "null", ""]


def test_round_trip_defaults(tmp_path):
    save_config(Run(), tmp_path / "c.yaml")
    assert load_config(Run, tmp_path / "c.yaml") == Run()


# ------------------------------------------------------------------------------------------------- describe


def test_describe_config():
    text = describe_config(Run)
    assert text.splitlines()[0].startswith("Run keys")
    assert "  seed: int = 0\n      Random seed." in text
    assert "  train.learning_rate: float = 0.0001\n      Peak learning rate." in text
    assert "  train: Optim\n      Optimisation settings." in text
    assert "  world.action: 'standing' | 'lying' = standing" in text
    assert "  world.mix: dict[str, float] = {standing: 1.0}" in text
    assert "  init_from: path | null = null" in text
    assert "  size: tuple[int, int] = [64, 48]" in text
    assert "  extra: Optim | null = null" in text and "  extra.steps: int = 100" in text
    assert "  people: dict[str, World] = {}" in text
    assert "  model: str (required)" in describe_config(Needs)
    assert describe_config(Run(), title="T").startswith("T\n")


@dataclass
class Outer:
    world: World = option(World(action="lying", sizes=[7]), "A world whose default differs from World().")
    worlds: dict[str, World] = option({"a": World(sizes=[3])}, "Named worlds.")


def test_nested_default_instance_supplies_missing_keys(tmp_path):
    expected = World(action="lying", sizes=[7], level=Level.HIGH)
    assert load_config(Outer, overrides=["world.level=2"]).world == expected
    assert load_config(Outer, write(tmp_path, "world: {level: 2}\n")).world == expected
    cfg = load_config(Outer, overrides=["world.mix.lying=0.5", "worlds.a.level=2"])
    assert cfg.world.mix == {"standing": 1.0, "lying": 0.5} and cfg.world.action == "lying"
    assert cfg.worlds == {"a": World(sizes=[3], level=Level.HIGH)}
    assert load_config(Outer) == Outer()
    text = describe_config(Outer)
    assert "  world.action: 'standing' | 'lying' = lying" in text and "  world.sizes: list[int] = [7]" in text
    assert "  worlds: dict[str, World] = {a: {action: standing, pose: standing" in text


@dataclass
class Stage:
    name: str = option("s", "Stage name.")
    optim: Optim = option(Optim(), "Its optimisation.")


@dataclass
class Staged:
    stages: list[Stage] = option([Stage(name="a"), Stage(name="b", optim=Optim(steps=7))], "Stages in order.")
    sizes: list[int] = option([1, 2, 3], "Sizes.")


def test_override_indexes_lists_of_dataclasses_and_scalars(tmp_path):
    cfg = load_config(Staged, None, ["stages.1.optim.learning_rate=0.5", "sizes.2=9"])
    assert cfg.stages[1].optim.learning_rate == 0.5 and cfg.stages[1].optim.steps == 7   # the rest of the element kept
    assert cfg.stages[0].optim.learning_rate == 1e-4 and cfg.sizes == [1, 2, 9]
    path = tmp_path / "c.yaml"
    path.write_text("stages:\n  - {name: x}\n  - {name: y, optim: {steps: 3}}\n  - {name: z}\n")
    cfg = load_config(Staged, path, ["stages.2.name=w", "stages.1.optim.warmup_steps=2"])
    assert [s.name for s in cfg.stages] == ["x", "y", "w"] and cfg.stages[1].optim.warmup_steps == 2
    with pytest.raises(ConfigError, match=r"'stages' is a list of 3; '3' is not an index"):
        load_config(Staged, path, ["stages.3.name=v"])
    with pytest.raises(ConfigError, match=r"unknown key 'stages\[0\].nme'"):
        load_config(Staged, path, ["stages.0.nme=v"])
    # a cross-field error inside an element names both sources (file and --set) and the element's full key
    with pytest.raises(ConfigError, match=r"c.yaml, --set: invalid 'stages\[1\].optim' \(Optim\): warmup_steps \(9\)"):
        load_config(Staged, path, ["stages.1.optim.warmup_steps=9"])


def test_nan_is_never_a_config_value(tmp_path):
    path = write(tmp_path, "train: {learning_rate: .nan}\n")
    with pytest.raises(ConfigError, match=r"'train\.learning_rate' expects float, got .*NaN is not a value"):
        load_config(Run, path)
    with pytest.raises(ConfigError, match="--set.*'threshold' expects float"):
        load_config(Run, overrides=["threshold=.NaN"])
    assert load_config(Run, overrides=["threshold=.inf"]).threshold == float("inf")   # infinity can be a bound
