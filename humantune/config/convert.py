"""Checking plain config data against the field types and converting it into the typed dataclasses; a mistake is
a one-line :class:`~humantune.errors.ConfigError` naming the source and the dotted key."""

from __future__ import annotations

import collections.abc
import copy
import enum
import re
import typing
from pathlib import PurePath
from typing import Any, Literal

from humantune.config.fields import (
    NONE_TYPE,
    field_default,
    init_fields,
    is_dataclass_type,
    is_list_type,
    is_mapping_type,
    is_required,
    is_union,
    type_hints,
    unwrap_optional,
)
from humantune.config.messages import Sources, describe_value, dotted, short_repr, suggest_key, type_name
from humantune.errors import ConfigError

_FLOAT_RE = re.compile(r"[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?")


def _fail(sources: Sources, path: tuple, message: str) -> typing.NoReturn:
    raise ConfigError(f"{sources.label(path)}: {message}")


def _expects(sources: Sources, path: tuple, tp: Any, value: Any, nullable: bool, hint: str = "") -> typing.NoReturn:
    expected = type_name(tp) + (" or null" if nullable else "")
    _fail(sources, path, f"'{dotted(path)}' expects {expected}, got {describe_value(value)}{hint}")


def _choices(sources: Sources, path: tuple, choices: list, value: Any, nullable: bool) -> typing.NoReturn:
    text = ", ".join(short_repr(c) for c in choices) + (", null" if nullable else "")
    _fail(sources, path, f"'{dotted(path)}' must be one of {text}; got {short_repr(value)}")


def convert(
    tp: Any, value: Any, path: tuple, sources: Sources, nullable: bool = False, default: Any = None
) -> Any:
    """Check ``value`` against ``tp`` and convert it (str -> Path, list -> tuple, value -> Enum, ...).

    ``default`` is the field's default; when it is a dataclass instance, keys missing from a mapping take
    their values from it (rather than from the dataclass's own field defaults).
    """
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    if is_union(tp):
        members = [a for a in args if a is not NONE_TYPE]
        allows_none = len(members) < len(args)
        if value is None and allows_none:
            return None
        if len(members) == 1:
            return convert(members[0], value, path, sources, nullable or allows_none, default)
        for member in members:
            try:
                return convert(member, value, path, sources)
            except ConfigError:
                pass
        _expects(sources, path, tp, value, nullable)

    if tp is NONE_TYPE or tp is None:
        if value is None:
            return None
        _expects(sources, path, NONE_TYPE, value, False)

    if origin is Literal:
        for choice in args:
            if type(choice) is type(value) and choice == value:
                return choice
        _choices(sources, path, list(args), value, nullable)

    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for member in tp:
            if type(member.value) is type(value) and member.value == value:
                return member
        _choices(sources, path, [m.value for m in tp], value, nullable)

    if is_dataclass_type(tp):
        return build(tp, value, path, sources, nullable, default if isinstance(default, tp) else None)

    if tp is bool:
        if isinstance(value, bool):
            return value
        _expects(sources, path, tp, value, nullable, " (use true or false)")

    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        _expects(sources, path, tp, value, nullable)

    if tp is float:
        if isinstance(value, float) and value != value:  # NaN: never a setting, and every comparison passes it
            _expects(sources, path, tp, value, nullable, " (NaN is not a value a config can hold)")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value.strip())  # YAML 1.1 reads 1e-4 (no dot) as a string
        _expects(sources, path, tp, value, nullable)

    if tp is str:
        if isinstance(value, str):
            return value
        hint = " (quote it to make it a string)" if not isinstance(value, (list, dict)) and value is not None else ""
        _expects(sources, path, tp, value, nullable, hint)

    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, (str, PurePath)) and str(value) != "":
            return tp(value)
        _expects(sources, path, tp, value, nullable)

    if is_list_type(tp):
        if not isinstance(value, (list, tuple)):
            _expects(sources, path, tp, value, nullable)
        item_tp = args[0] if args else Any
        return [convert(item_tp, v, path + (i,), sources) for i, v in enumerate(value)]

    if tp is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            _expects(sources, path, tp, value, nullable)
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item_tp = args[0] if args else Any
            return tuple(convert(item_tp, v, path + (i,), sources) for i, v in enumerate(value))
        if args == ((),):  # tuple[()]
            args = ()
        if len(value) != len(args):
            _fail(sources, path, f"'{dotted(path)}' expects {type_name(tp)} ({len(args)} items), "
                                 f"got {len(value)} items {short_repr(value)}")
        return tuple(convert(a, v, path + (i,), sources) for i, (a, v) in enumerate(zip(args, value)))

    if is_mapping_type(tp):
        if not isinstance(value, collections.abc.Mapping):
            _expects(sources, path, tp, value, nullable)
        key_tp, value_tp = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            child = path + (k if isinstance(k, str) else str(k),)
            if key_tp is str and not isinstance(k, str):
                _fail(sources, child, f"'{dotted(path)}' keys must be str, got {describe_value(k)}")
            out[convert(key_tp, k, child, sources)] = convert(value_tp, v, child, sources)
        return out

    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        _expects(sources, path, tp, value, nullable)
    raise TypeError(f"unsupported config field type {tp!r} at '{dotted(path)}'")


def build(
    cls: type, value: Any, path: tuple, sources: Sources, nullable: bool = False, defaults: Any = None
) -> Any:
    """The dataclass ``cls`` from the mapping ``value``: unknown keys and missing required ones are errors,
    ``defaults`` (an instance) fills keys the mapping leaves out, and a ``ValueError`` from ``__post_init__`` is
    reported naming every source that set something under ``path``."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, collections.abc.Mapping):
        expected = f"a mapping ({cls.__name__})" + (" or null" if nullable else "")
        _fail(sources, path, f"'{dotted(path)}' expects {expected}, got {describe_value(value)}")
    fields, hints = init_fields(cls), type_hints(cls)
    for key in value:
        if key not in fields:
            name = key if isinstance(key, str) else short_repr(key)
            child = path + (name,)
            _fail(sources, child, f"unknown key '{dotted(child)}'" + suggest_key(name, fields))
    kwargs = {}
    for key, v in value.items():
        default = None
        if isinstance(v, collections.abc.Mapping) and is_dataclass_type(unwrap_optional(hints[key])):
            default = getattr(defaults, key) if defaults is not None else field_default(fields[key])
        kwargs[key] = convert(hints[key], v, path + (key,), sources, default=default)
    for name, f in fields.items():
        if name in kwargs:
            continue
        if defaults is not None:  # the enclosing field's default instance, e.g. option(World(action="lying"))
            kwargs[name] = copy.deepcopy(getattr(defaults, name))
            continue
        if not is_required(f):
            continue
        if is_dataclass_type(hints[name]):  # a required nested config whose fields all have defaults
            kwargs[name] = build(hints[name], {}, path + (name,), sources)
        else:
            _fail(sources, path, f"missing required key '{dotted(path + (name,))}' ({type_name(hints[name])})")
    try:
        return cls(**kwargs)
    except ValueError as e:
        where = f"'{dotted(path)}' ({cls.__name__})" if path else cls.__name__
        message = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"{sources.labels_under(path)}: invalid {where}: {message}") from e
