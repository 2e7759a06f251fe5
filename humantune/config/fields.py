"""Config fields: :func:`option` (a dataclass field with its default and help), what a field's type says (union,
optional, list, mapping, nested dataclass), and a config as plain YAML-able data."""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import enum
import functools
import types
import typing
from pathlib import PurePath
from typing import Any, Union

MISSING = dataclasses.MISSING
NONE_TYPE = type(None)
_LIST_ORIGINS = (list, collections.abc.Sequence, collections.abc.MutableSequence)
_DICT_ORIGINS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def option(default: Any = MISSING, help: str = "", **kw: Any) -> Any:
    """A dataclass field with a default and help text (``metadata={"help": help}``).

    Mutable defaults (lists, dicts, sets, non-frozen dataclass instances) become a ``default_factory`` that
    deep-copies ``default``, so instances never share them. Without ``default`` (and without a
    ``default_factory`` in ``kw``) the field is required. Other keyword arguments go to ``dataclasses.field``.
    """
    metadata = {**kw.pop("metadata", {}), "help": help}
    if default is not MISSING:
        if "default_factory" in kw:
            raise TypeError("option() takes a default or a default_factory, not both")
        if isinstance(default, (list, dict, set)) or type(default).__hash__ is None:
            kw["default_factory"] = functools.partial(copy.deepcopy, default)
        else:
            kw["default"] = default
    return dataclasses.field(metadata=metadata, **kw)


def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def is_dataclass_instance(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


@functools.lru_cache(maxsize=None)
def type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as e:  # a NameError from a forward reference, typically
        raise TypeError(f"cannot resolve the type annotations of {cls.__qualname__}: {e}") from e


def init_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def is_required(f: dataclasses.Field) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def field_default(f: dataclasses.Field) -> Any:
    """The default value of a field (calling its factory), or ``MISSING``."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def unwrap_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not NONE_TYPE]
        if len(args) == 1:
            return args[0]
    return tp


def is_mapping_type(tp: Any) -> bool:
    return tp is dict or typing.get_origin(tp) in _DICT_ORIGINS


def is_list_type(tp: Any) -> bool:
    return tp is list or typing.get_origin(tp) in _LIST_ORIGINS


def plain(value: Any) -> Any:
    """``value`` as plain YAML-able data: dataclasses -> dicts (init fields, in order), enums -> their values,
    Paths -> str, tuples -> lists."""
    if is_dataclass_instance(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, collections.abc.Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
