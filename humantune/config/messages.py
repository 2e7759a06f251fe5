"""How config errors read: one line naming the source (file, ``--set`` or ``<base>``), the dotted key, the
expected type and the value got; :class:`Sources` remembers which source set each key."""

from __future__ import annotations

import collections.abc
import difflib
import enum
import typing
from pathlib import PurePath
from typing import Any, Literal, Sequence

from humantune.config.fields import NONE_TYPE, is_dataclass_type, is_list_type, is_mapping_type, is_union

OVERRIDE_LABEL = "--set"
"""How error messages name a value that came from a command-line override."""

BASE_LABEL = "<base>"
"""How error messages name a value that came from the ``base`` mapping of :func:`load_config`."""


def dotted(path: Sequence[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def short_repr(value: Any, limit: int = 60) -> str:
    """A short YAML-flavoured repr for messages: ``null``, ``true``, ``'abc'``, ``1.5``, ``[1, 2]``."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = repr(value)
    text = " ".join(text.split())  # messages stay on one line
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, collections.abc.Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def describe_value(value: Any) -> str:
    """``null``, or the value's YAML kind and short repr: ``list [1, 2]``, ``str 'abc'``."""
    return "null" if value is None else f"{_kind(value)} {short_repr(value)}"


def type_name(tp: Any) -> str:
    """A readable name for a field type: ``float``, ``list[int]``, ``path | null``, ``'a' | 'b'``."""
    if tp is Any or tp is object:
        return "any"
    if tp is NONE_TYPE or tp is None:
        return "null"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if is_union(tp):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(short_repr(a) for a in args)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(short_repr(m.value) for m in tp)
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "path"
    if is_dataclass_type(tp):
        return tp.__name__
    if is_list_type(tp):
        return f"list[{type_name(args[0])}]" if args else "list"
    if tp is tuple or origin is tuple:
        if not args:
            return "tuple"
        if len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{type_name(args[0])}, ...]"
        return f"tuple[{', '.join(type_name(a) for a in args)}]"
    if is_mapping_type(tp):
        return f"dict[{type_name(args[0])}, {type_name(args[1])}]" if args else "dict"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp)


def suggest_key(key: Any, choices: collections.abc.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a mistyped key, or a list of the valid keys when nothing is close."""
    choices = list(choices)
    close = difflib.get_close_matches(str(key), choices, n=3, cutoff=0.6)
    if close:
        return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
    if choices and len(choices) <= 12:
        return " (valid keys: " + ", ".join(choices) + ")"
    return ""


class Sources:
    """Which source (file name, ``--set``, ``<base>``) set each dotted key, for error messages."""

    def __init__(self) -> None:
        self.origin: dict[tuple, str] = {}
        self.order: list[str] = []  # labels in the order applied (lowest precedence first)
        self.default = "config"

    def set(self, path: tuple, label: str) -> None:
        n = len(path)
        for p in [p for p in self.origin if len(p) > n and p[:n] == path]:
            del self.origin[p]
        self.origin[path] = label
        if label not in self.order:
            self.order.append(label)

    def label(self, path: Sequence) -> str:
        path = tuple(path)
        for n in range(len(path), -1, -1):
            label = self.origin.get(path[:n])
            if label is not None:
                return label
        return self.default

    def labels_under(self, path: tuple) -> str:
        """All sources that set something at or below ``path`` (e.g. ``configs/x.yaml, --set``)."""
        n = len(path)
        found = {label for p, label in self.origin.items() if p[:n] == path or path[: len(p)] == p}
        labels = [label for label in self.order if label in found]
        return ", ".join(labels) if labels else self.label(path)
