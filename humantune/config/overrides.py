"""Layering config sources as plain data: a mapping merged into what is already set (key by key where the field
is a dataclass), and one ``--set key=value`` override applied along its dotted key."""

from __future__ import annotations

import collections.abc
import copy
import typing
from typing import Any

import yaml

from humantune.config.fields import (
    MISSING,
    field_default,
    init_fields,
    is_dataclass_instance,
    is_dataclass_type,
    is_list_type,
    is_mapping_type,
    plain,
    type_hints,
    unwrap_optional,
)
from humantune.config.messages import OVERRIDE_LABEL, Sources, describe_value, dotted, suggest_key, type_name
from humantune.config.yaml_file import StrictLoader, yaml_problem
from humantune.errors import ConfigError


def merge(tp: Any, dst: dict, src: collections.abc.Mapping, prefix: tuple, sources: Sources, label: str) -> None:
    """Write ``src`` into ``dst``; mappings for dataclass-typed fields merge key by key, other values replace."""
    cls = unwrap_optional(tp)
    fields = init_fields(cls) if is_dataclass_type(cls) else {}
    for key, value in src.items():
        path = prefix + (key if isinstance(key, str) else str(key),)
        child_tp = type_hints(cls)[key] if key in fields else None
        if (
            isinstance(value, dict)
            and isinstance(dst.get(key), dict)
            and child_tp is not None
            and is_dataclass_type(unwrap_optional(child_tp))
        ):
            merge(child_tp, dst[key], value, path, sources, label)
        else:
            dst[key] = copy.deepcopy(value)
            sources.set(path, label)


def apply_override(cls: type, data: dict, text: str, sources: Sources) -> None:
    """Apply one ``key=value`` override. Dotted keys descend into dataclasses and dicts; a whole-number part
    indexes a list (``stages.1.heatmap.w=2``: the second stage's w)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{OVERRIDE_LABEL}: expected key=value, got '{text}'")
    parts = [p.strip() for p in key.split(".")]
    if not all(parts):
        raise ConfigError(f"{OVERRIDE_LABEL}: '{text}' has an empty part in the key '{key}'")
    try:
        value = yaml.load(raw, Loader=StrictLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{OVERRIDE_LABEL}: '{text}' has an invalid YAML value: {yaml_problem(e)[1]}") from None

    tp: Any = cls
    node: dict | list = data
    path: tuple = ()
    default: Any = MISSING  # what the value at ``path`` is when nothing sets it
    for i, part in enumerate(parts):
        inner = unwrap_optional(tp)
        last = i == len(parts) - 1
        if is_list_type(inner):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{OVERRIDE_LABEL}: '{text}': '{dotted(path)}' is a list of {len(node)}; "
                                  f"'{part}' is not an index of it (0 to {len(node) - 1})")
            index = int(part)
            args = typing.get_args(inner)
            child_tp = args[0] if args else Any
            if last:
                node[index] = copy.deepcopy(value)
                sources.set(path + (index,), OVERRIDE_LABEL)
                return
            child = plain(node[index])
            node[index] = child
            node, tp, path, default = child, child_tp, path + (index,), MISSING
            continue
        if is_dataclass_type(inner):
            fields = init_fields(inner)
            if part not in fields:
                raise ConfigError(
                    f"{OVERRIDE_LABEL}: '{text}' has an unknown key '{dotted(path + (part,))}'"
                    + suggest_key(part, fields)
                )
            child_tp = type_hints(inner)[part]
            if isinstance(default, inner):
                default = getattr(default, part)
            elif not last:
                default = field_default(fields[part])
        elif is_mapping_type(inner) or inner is Any:
            args = typing.get_args(inner)
            child_tp = args[1] if args else Any
            default = default.get(part, MISSING) if isinstance(default, collections.abc.Mapping) else MISSING
        else:
            raise ConfigError(
                f"{OVERRIDE_LABEL}: cannot set '{key}': '{dotted(path)}' is {type_name(inner)}, not a mapping"
            )
        if last:
            merge(inner, node, {part: value}, path, sources, OVERRIDE_LABEL)
            return
        child = node.get(part, MISSING)
        if is_list_type(unwrap_optional(child_tp)):
            # indexing into a list field: start from what is set, else the field's default list
            seed = child if child is not MISSING else default
            if not isinstance(seed, (list, tuple)):
                raise ConfigError(f"{OVERRIDE_LABEL}: cannot set '{key}': '{dotted(path + (part,))}' is "
                                  f"{describe_value(seed) if seed is not MISSING else 'not set'}, not a list")
            if part not in node:
                sources.set(path + (part,), OVERRIDE_LABEL)
            child = [plain(x) for x in seed]
        else:
            if is_dataclass_instance(child):
                child = plain(child)
            if not isinstance(child, dict):
                # setting a key inside a dict field nobody set yet: start from the field's default entries
                seed = child if child is not MISSING else default
                child = plain(seed) if isinstance(seed, collections.abc.Mapping) else {}
                sources.set(path + (part,), OVERRIDE_LABEL)
        node[part] = child
        node, tp, path = child, child_tp, path + (part,)
