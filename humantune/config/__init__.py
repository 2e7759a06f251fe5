"""Typed configs: plain dataclasses whose fields carry their defaults and help text, loaded from YAML and
overridden from the command line.

Define a config (``option`` keeps the default and the help together)::

    @dataclass
    class TrainConfig:
        learning_rate: float = option(1e-4, "Peak learning rate.")
        sizes: list[int] = option([512], "Training resolutions.")      # mutable defaults are copied per instance

    @dataclass
    class PretrainConfig:
        name: str = option("tiny", "Run name.")
        train: TrainConfig = option(TrainConfig(), "Optimisation settings.")

and load it::

    cfg = load_config(PretrainConfig, "configs/pretrain/tiny.yaml", ["train.learning_rate=3e-5", "name=foo"])

Precedence, lowest first: dataclass defaults, ``base``, the YAML file, the ``--set`` overrides (in order). In an
override key a whole-number part indexes a list: ``stages.1.heatmap.w=2`` sets ``w`` of the second stage.
A mapping given for a field whose type is a dataclass is merged key by key into what is already there; any other
value (including a mapping for a ``dict[str, X]`` field) replaces it. Every value is then checked against the
field types; a mistake raises :class:`~humantune.errors.ConfigError` with a one-line message naming the file
(or ``--set``), the full dotted key and what was expected.

Supported field types: ``int``, ``float`` (also accepts ints and numeric strings such as ``1e-4``, which YAML 1.1
reads as a string), ``str``, ``bool`` (real YAML booleans only), ``pathlib.Path``, ``X | None``, unions,
``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[K, V]``, ``Literal[...]``, ``Enum`` (by value), ``Any``
and nested dataclasses. A dataclass's ``__post_init__`` may raise ``ValueError`` for cross-field checks; it is
reported as a ``ConfigError`` naming the file and the dataclass's dotted key.

:func:`save_config` writes the resolved config as YAML (keys in field order); :func:`load_config` reads it back
to an equal object. :func:`describe_config` lists every key for ``--help`` epilogs.

Inside: :mod:`.fields` (``option``, what a field's type says), :mod:`.messages` (how errors name the source, key
and type), :mod:`.yaml_file` (reading YAML), :mod:`.overrides` (merging sources, applying ``--set``),
:mod:`.convert` (checking values into the dataclasses), :mod:`.loading` (load and save), :mod:`.describe`.
"""

from humantune.config.describe import describe_config
from humantune.config.fields import option
from humantune.config.loading import config_to_dict, load_config, save_config
from humantune.config.messages import OVERRIDE_LABEL

__all__ = ["option", "load_config", "config_to_dict", "save_config", "describe_config", "OVERRIDE_LABEL"]
