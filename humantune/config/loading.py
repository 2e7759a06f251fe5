"""Loading a config (defaults, ``base``, the YAML file, ``--set`` overrides, then checked) and saving it back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from humantune.config.convert import build
from humantune.config.fields import is_dataclass_instance, is_dataclass_type, plain
from humantune.config.messages import BASE_LABEL, OVERRIDE_LABEL, Sources
from humantune.config.overrides import apply_override, merge
from humantune.config.yaml_file import read_yaml
from humantune.io import write_text_atomic

T = TypeVar("T")


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    *,
    base: dict | None = None,
) -> T:
    """Build a ``cls`` from its defaults, ``base``, the YAML file at ``path`` and ``key=value`` overrides.

    ``overrides`` are ``key=value`` or ``a.b.c=value`` strings, applied in order; the value is parsed with
    YAML (``lr=1e-4`` is a float, ``name=foo`` a string, ``mix={standing: 1}`` a mapping, ``sizes=[1,2]`` a
    list, ``x=null`` None). ``base`` is a mapping (or a ``cls`` instance) applied beneath the file.
    Raises :class:`ConfigError` (one line, naming the file or ``--set`` and the dotted key) on any mistake.
    """
    if not is_dataclass_type(cls):
        raise TypeError(f"load_config needs a dataclass type, got {cls!r}")
    if isinstance(overrides, str):
        overrides = [overrides]
    sources = Sources()
    data: dict = {}
    if base is not None:
        base = plain(base)
        if not isinstance(base, dict):
            raise TypeError(f"base must be a mapping or a {cls.__name__}, got {type(base).__name__}")
        merge(cls, data, base, (), sources, BASE_LABEL)
        sources.default = BASE_LABEL
    if path is not None:
        label = os.fspath(path)
        merge(cls, data, read_yaml(Path(path), label), (), sources, label)
        sources.default = label
    for text in overrides:
        apply_override(cls, data, text, sources)
    if path is None and overrides:
        sources.default = OVERRIDE_LABEL
    return build(cls, data, (), sources)


def config_to_dict(cfg: Any) -> dict:
    """``cfg`` as plain YAML-able data, keys in field order: Paths -> str, tuples -> lists, enums -> values."""
    if not is_dataclass_instance(cfg):
        raise TypeError(f"config_to_dict needs a dataclass instance, got {type(cfg).__name__}")
    return plain(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved ``cfg`` to ``path`` as YAML, atomically; ``load_config(type(cfg), path)`` reads it back."""
    body = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True)
    header = f"# {type(cfg).__module__}.{type(cfg).__qualname__}: resolved config\n"
    write_text_atomic(path, header + body)
