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
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import difflib
import enum
import functools
import os
import re
import types
import typing
from pathlib import Path, PurePath
from typing import Any, Literal, Sequence, TypeVar, Union

import yaml

from humantune.errors import ConfigError
from humantune.io import write_text_atomic

__all__ = ["option", "load_config", "config_to_dict", "save_config", "describe_config", "OVERRIDE_LABEL"]

T = TypeVar("T")

OVERRIDE_LABEL = "--set"
"""How error messages name a value that came from a command-line override."""

BASE_LABEL = "<base>"
"""How error messages name a value that came from the ``base`` mapping of :func:`load_config`."""

_MISSING = dataclasses.MISSING
_NONE_TYPE = type(None)
_FLOAT_RE = re.compile(r"[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?")
_LIST_ORIGINS = (list, collections.abc.Sequence, collections.abc.MutableSequence)
_DICT_ORIGINS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


# --------------------------------------------------------------------------------------------------- fields


def option(default: Any = _MISSING, help: str = "", **kw: Any) -> Any:
    """A dataclass field with a default and help text (``metadata={"help": help}``).

    Mutable defaults (lists, dicts, sets, non-frozen dataclass instances) become a ``default_factory`` that
    deep-copies ``default``, so instances never share them. Without ``default`` (and without a
    ``default_factory`` in ``kw``) the field is required. Other keyword arguments go to ``dataclasses.field``.
    """
    metadata = {**kw.pop("metadata", {}), "help": help}
    if default is not _MISSING:
        if "default_factory" in kw:
            raise TypeError("option() takes a default or a default_factory, not both")
        if isinstance(default, (list, dict, set)) or type(default).__hash__ is None:
            kw["default_factory"] = functools.partial(copy.deepcopy, default)
        else:
            kw["default"] = default
    return dataclasses.field(metadata=metadata, **kw)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _is_dataclass_instance(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as e:  # a NameError from a forward reference, typically
        raise TypeError(f"cannot resolve the type annotations of {cls.__qualname__}: {e}") from e


def _init_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is _MISSING and f.default_factory is _MISSING


def _field_default(f: dataclasses.Field) -> Any:
    """The default value of a field (calling its factory), or ``MISSING``."""
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _unwrap_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not _NONE_TYPE]
        if len(args) == 1:
            return args[0]
    return tp


def _is_mapping_type(tp: Any) -> bool:
    return tp is dict or typing.get_origin(tp) in _DICT_ORIGINS


# --------------------------------------------------------------------------------------------------- formatting


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _yrepr(value: Any, limit: int = 60) -> str:
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


def _desc(value: Any) -> str:
    return "null" if value is None else f"{_kind(value)} {_yrepr(value)}"


def _tname(tp: Any) -> str:
    """A readable name for a field type: ``float``, ``list[int]``, ``path | null``, ``'a' | 'b'``."""
    if tp is Any or tp is object:
        return "any"
    if tp is _NONE_TYPE or tp is None:
        return "null"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        return " | ".join(_tname(a) for a in args)
    if origin is Literal:
        return " | ".join(_yrepr(a) for a in args)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(_yrepr(m.value) for m in tp)
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "path"
    if _is_dataclass_type(tp):
        return tp.__name__
    if tp is list or origin in _LIST_ORIGINS:
        return f"list[{_tname(args[0])}]" if args else "list"
    if tp is tuple or origin is tuple:
        if not args:
            return "tuple"
        if len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{_tname(args[0])}, ...]"
        return f"tuple[{', '.join(_tname(a) for a in args)}]"
    if _is_mapping_type(tp):
        return f"dict[{_tname(args[0])}, {_tname(args[1])}]" if args else "dict"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp)


def _suggest(key: Any, choices: collections.abc.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a mistyped key, or a list of the valid keys when nothing is close."""
    choices = list(choices)
    close = difflib.get_close_matches(str(key), choices, n=3, cutoff=0.6)
    if close:
        return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
    if choices and len(choices) <= 12:
        return " (valid keys: " + ", ".join(choices) + ")"
    return ""


def _problem(e: yaml.YAMLError) -> tuple[str, str]:
    """(`` at line N``, problem) for a PyYAML error."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = e.problem or e.context or "syntax error"
        return where, " ".join(str(problem).split())
    return "", " ".join(str(e).split())


# --------------------------------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key repeated in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable key: let PyYAML report it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, f"duplicate key {_yrepr(key)}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, label: str) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file '{label}' not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file '{label}' is a directory, not a file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: not a UTF-8 text file") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file '{label}': {e.strerror or e}") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        where, problem = _problem(e)
        raise ConfigError(f"{label}: invalid YAML{where}: {problem}") from None
    if data is None:  # empty file (or only comments)
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: the top level must be a mapping of keys to values, got {_desc(data)}")
    return data


# --------------------------------------------------------------------------------------------------- sources


class _Sources:
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


def _merge(tp: Any, dst: dict, src: collections.abc.Mapping, prefix: tuple, sources: _Sources, label: str) -> None:
    """Write ``src`` into ``dst``; mappings for dataclass-typed fields merge key by key, other values replace."""
    cls = _unwrap_optional(tp)
    fields = _init_fields(cls) if _is_dataclass_type(cls) else {}
    for key, value in src.items():
        path = prefix + (key if isinstance(key, str) else str(key),)
        child_tp = _hints(cls)[key] if key in fields else None
        if (
            isinstance(value, dict)
            and isinstance(dst.get(key), dict)
            and child_tp is not None
            and _is_dataclass_type(_unwrap_optional(child_tp))
        ):
            _merge(child_tp, dst[key], value, path, sources, label)
        else:
            dst[key] = copy.deepcopy(value)
            sources.set(path, label)


def _is_list_type(tp: Any) -> bool:
    return tp is list or typing.get_origin(tp) in _LIST_ORIGINS


def _apply_override(cls: type, data: dict, text: str, sources: _Sources) -> None:
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
        value = yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{OVERRIDE_LABEL}: '{text}' has an invalid YAML value: {_problem(e)[1]}") from None

    tp: Any = cls
    node: dict | list = data
    path: tuple = ()
    default: Any = _MISSING  # what the value at ``path`` is when nothing sets it
    for i, part in enumerate(parts):
        inner = _unwrap_optional(tp)
        last = i == len(parts) - 1
        if _is_list_type(inner):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{OVERRIDE_LABEL}: '{text}': '{_dotted(path)}' is a list of {len(node)}; "
                                  f"'{part}' is not an index of it (0 to {len(node) - 1})")
            index = int(part)
            args = typing.get_args(inner)
            child_tp = args[0] if args else Any
            if last:
                node[index] = copy.deepcopy(value)
                sources.set(path + (index,), OVERRIDE_LABEL)
                return
            child = _plain(node[index])
            node[index] = child
            node, tp, path, default = child, child_tp, path + (index,), _MISSING
            continue
        if _is_dataclass_type(inner):
            fields = _init_fields(inner)
            if part not in fields:
                raise ConfigError(
                    f"{OVERRIDE_LABEL}: '{text}' has an unknown key '{_dotted(path + (part,))}'"
                    + _suggest(part, fields)
                )
            child_tp = _hints(inner)[part]
            if isinstance(default, inner):
                default = getattr(default, part)
            elif not last:
                default = _field_default(fields[part])
        elif _is_mapping_type(inner) or inner is Any:
            args = typing.get_args(inner)
            child_tp = args[1] if args else Any
            default = default.get(part, _MISSING) if isinstance(default, collections.abc.Mapping) else _MISSING
        else:
            raise ConfigError(
                f"{OVERRIDE_LABEL}: cannot set '{key}': '{_dotted(path)}' is {_tname(inner)}, not a mapping"
            )
        if last:
            _merge(inner, node, {part: value}, path, sources, OVERRIDE_LABEL)
            return
        child = node.get(part, _MISSING)
        if _is_list_type(_unwrap_optional(child_tp)):
            # indexing into a list field: start from what is set, else the field's default list
            seed = child if child is not _MISSING else default
            if not isinstance(seed, (list, tuple)):
                raise ConfigError(f"{OVERRIDE_LABEL}: cannot set '{key}': '{_dotted(path + (part,))}' is "
                                  f"{_desc(seed) if seed is not _MISSING else 'not set'}, not a list")
            if part not in node:
                sources.set(path + (part,), OVERRIDE_LABEL)
            child = [_plain(x) for x in seed]
        else:
            if _is_dataclass_instance(child):
                child = _plain(child)
            if not isinstance(child, dict):
                # setting a key inside a dict field nobody set yet: start from the field's default entries
                seed = child if child is not _MISSING else default
                child = _plain(seed) if isinstance(seed, collections.abc.Mapping) else {}
                sources.set(path + (part,), OVERRIDE_LABEL)
        node[part] = child
        node, tp, path = child, child_tp, path + (part,)


# --------------------------------------------------------------------------------------------------- checking


def _fail(sources: _Sources, path: tuple, message: str) -> typing.NoReturn:
    raise ConfigError(f"{sources.label(path)}: {message}")


def _expects(sources: _Sources, path: tuple, tp: Any, value: Any, nullable: bool, hint: str = "") -> typing.NoReturn:
    expected = _tname(tp) + (" or null" if nullable else "")
    _fail(sources, path, f"'{_dotted(path)}' expects {expected}, got {_desc(value)}{hint}")


def _choices(sources: _Sources, path: tuple, choices: list, value: Any, nullable: bool) -> typing.NoReturn:
    text = ", ".join(_yrepr(c) for c in choices) + (", null" if nullable else "")
    _fail(sources, path, f"'{_dotted(path)}' must be one of {text}; got {_yrepr(value)}")


def _convert(
    tp: Any, value: Any, path: tuple, sources: _Sources, nullable: bool = False, default: Any = None
) -> Any:
    """Check ``value`` against ``tp`` and convert it (str -> Path, list -> tuple, value -> Enum, ...).

    ``default`` is the field's default; when it is a dataclass instance, keys missing from a mapping take
    their values from it (rather than from the dataclass's own field defaults).
    """
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    if _is_union(tp):
        members = [a for a in args if a is not _NONE_TYPE]
        allows_none = len(members) < len(args)
        if value is None and allows_none:
            return None
        if len(members) == 1:
            return _convert(members[0], value, path, sources, nullable or allows_none, default)
        for member in members:
            try:
                return _convert(member, value, path, sources)
            except ConfigError:
                pass
        _expects(sources, path, tp, value, nullable)

    if tp is _NONE_TYPE or tp is None:
        if value is None:
            return None
        _expects(sources, path, _NONE_TYPE, value, False)

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

    if _is_dataclass_type(tp):
        return _build(tp, value, path, sources, nullable, default if isinstance(default, tp) else None)

    if tp is bool:
        if isinstance(value, bool):
            return value
        _expects(sources, path, tp, value, nullable, " (use true or false)")

    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        _expects(sources, path, tp, value, nullable)

    if tp is float:
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

    if tp is list or origin in _LIST_ORIGINS:
        if not isinstance(value, (list, tuple)):
            _expects(sources, path, tp, value, nullable)
        item_tp = args[0] if args else Any
        return [_convert(item_tp, v, path + (i,), sources) for i, v in enumerate(value)]

    if tp is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            _expects(sources, path, tp, value, nullable)
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item_tp = args[0] if args else Any
            return tuple(_convert(item_tp, v, path + (i,), sources) for i, v in enumerate(value))
        if args == ((),):  # tuple[()]
            args = ()
        if len(value) != len(args):
            _fail(sources, path, f"'{_dotted(path)}' expects {_tname(tp)} ({len(args)} items), "
                                 f"got {len(value)} items {_yrepr(value)}")
        return tuple(_convert(a, v, path + (i,), sources) for i, (a, v) in enumerate(zip(args, value)))

    if _is_mapping_type(tp):
        if not isinstance(value, collections.abc.Mapping):
            _expects(sources, path, tp, value, nullable)
        key_tp, value_tp = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            child = path + (k if isinstance(k, str) else str(k),)
            if key_tp is str and not isinstance(k, str):
                _fail(sources, child, f"'{_dotted(path)}' keys must be str, got {_desc(k)}")
            out[_convert(key_tp, k, child, sources)] = _convert(value_tp, v, child, sources)
        return out

    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        _expects(sources, path, tp, value, nullable)
    raise TypeError(f"unsupported config field type {tp!r} at '{_dotted(path)}'")


def _build(
    cls: type, value: Any, path: tuple, sources: _Sources, nullable: bool = False, defaults: Any = None
) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, collections.abc.Mapping):
        expected = f"a mapping ({cls.__name__})" + (" or null" if nullable else "")
        _fail(sources, path, f"'{_dotted(path)}' expects {expected}, got {_desc(value)}")
    fields, hints = _init_fields(cls), _hints(cls)
    for key in value:
        if key not in fields:
            name = key if isinstance(key, str) else _yrepr(key)
            child = path + (name,)
            _fail(sources, child, f"unknown key '{_dotted(child)}'" + _suggest(name, fields))
    kwargs = {}
    for key, v in value.items():
        default = None
        if isinstance(v, collections.abc.Mapping) and _is_dataclass_type(_unwrap_optional(hints[key])):
            default = getattr(defaults, key) if defaults is not None else _field_default(fields[key])
        kwargs[key] = _convert(hints[key], v, path + (key,), sources, default=default)
    for name, f in fields.items():
        if name in kwargs:
            continue
        if defaults is not None:  # the enclosing field's default instance, e.g. option(World(action="lying"))
            kwargs[name] = copy.deepcopy(getattr(defaults, name))
            continue
        if not _is_required(f):
            continue
        if _is_dataclass_type(hints[name]):  # a required nested config whose fields all have defaults
            kwargs[name] = _build(hints[name], {}, path + (name,), sources)
        else:
            _fail(sources, path, f"missing required key '{_dotted(path + (name,))}' ({_tname(hints[name])})")
    try:
        return cls(**kwargs)
    except ValueError as e:
        where = f"'{_dotted(path)}' ({cls.__name__})" if path else cls.__name__
        message = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"{sources.labels_under(path)}: invalid {where}: {message}") from e


# --------------------------------------------------------------------------------------------------- public API


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
    if not _is_dataclass_type(cls):
        raise TypeError(f"load_config needs a dataclass type, got {cls!r}")
    if isinstance(overrides, str):
        overrides = [overrides]
    sources = _Sources()
    data: dict = {}
    if base is not None:
        base = _plain(base)
        if not isinstance(base, dict):
            raise TypeError(f"base must be a mapping or a {cls.__name__}, got {type(base).__name__}")
        _merge(cls, data, base, (), sources, BASE_LABEL)
        sources.default = BASE_LABEL
    if path is not None:
        label = os.fspath(path)
        _merge(cls, data, _read_yaml(Path(path), label), (), sources, label)
        sources.default = label
    for text in overrides:
        _apply_override(cls, data, text, sources)
    if path is None and overrides:
        sources.default = OVERRIDE_LABEL
    return _build(cls, data, (), sources)


def _plain(value: Any) -> Any:
    if _is_dataclass_instance(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, collections.abc.Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_to_dict(cfg: Any) -> dict:
    """``cfg`` as plain YAML-able data, keys in field order: Paths -> str, tuples -> lists, enums -> values."""
    if not _is_dataclass_instance(cfg):
        raise TypeError(f"config_to_dict needs a dataclass instance, got {type(cfg).__name__}")
    return _plain(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved ``cfg`` to ``path`` as YAML, atomically; ``load_config(type(cfg), path)`` reads it back."""
    body = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True)
    header = f"# {type(cfg).__module__}.{type(cfg).__qualname__}: resolved config\n"
    write_text_atomic(path, header + body)


def _inline(value: Any, limit: int = 80) -> str:
    text = yaml.safe_dump(
        _plain(value), default_flow_style=True, sort_keys=False, width=10**9, allow_unicode=True
    ).strip()
    if text.endswith("\n..."):
        text = text[:-4].rstrip()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_config(cls: type, title: str | None = None) -> str:
    """Every key of config ``cls``: dotted name, type, default and help, one entry per field.

    Meant for argparse epilogs (use ``formatter_class=argparse.RawDescriptionHelpFormatter`` to keep the layout).
    """
    if _is_dataclass_instance(cls):
        cls = type(cls)
    if not _is_dataclass_type(cls):
        raise TypeError(f"describe_config needs a dataclass type, got {cls!r}")
    lines = [title if title is not None else f"{cls.__name__} keys (set in the YAML file or with --set KEY=VALUE):"]

    def walk(c: type, prefix: str, seen: tuple, instance: Any) -> None:
        hints = _hints(c)
        for f in _init_fields(c).values():
            name = f"{prefix}{f.name}"
            tp = hints[f.name]
            inner = _unwrap_optional(tp)
            nested = _is_dataclass_type(inner) and inner not in seen
            value = getattr(instance, f.name) if instance is not None else _field_default(f)
            if value is _MISSING:
                default = " (required)"
            elif nested and isinstance(value, inner):
                default = ""  # its keys are listed below, with the defaults this field gives them
            else:
                default = " = " + _inline(value)
            lines.append(f"  {name}: {_tname(tp)}{default}")
            for line in (f.metadata.get("help") or "").strip().splitlines():
                lines.append(f"      {line.strip()}")
            if nested:
                walk(inner, name + ".", seen + (inner,), value if isinstance(value, inner) else None)

    walk(cls, "", (cls,), None)
    return "\n".join(lines)
