"""Every key of a config with its type, default and help, for ``--help`` epilogs."""

from __future__ import annotations

from typing import Any

import yaml

from humantune.config.fields import (
    MISSING,
    field_default,
    init_fields,
    is_dataclass_instance,
    is_dataclass_type,
    plain,
    type_hints,
    unwrap_optional,
)
from humantune.config.messages import type_name


def _inline(value: Any, limit: int = 80) -> str:
    text = yaml.safe_dump(
        plain(value), default_flow_style=True, sort_keys=False, width=10**9, allow_unicode=True
    ).strip()
    if text.endswith("\n..."):
        text = text[:-4].rstrip()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_config(cls: type, title: str | None = None) -> str:
    """Every key of config ``cls``: dotted name, type, default and help, one entry per field.

    Meant for argparse epilogs (use ``formatter_class=argparse.RawDescriptionHelpFormatter`` to keep the layout).
    """
    if is_dataclass_instance(cls):
        cls = type(cls)
    if not is_dataclass_type(cls):
        raise TypeError(f"describe_config needs a dataclass type, got {cls!r}")
    lines = [title if title is not None else f"{cls.__name__} keys (set in the YAML file or with --set KEY=VALUE):"]

    def walk(c: type, prefix: str, seen: tuple, instance: Any) -> None:
        hints = type_hints(c)
        for f in init_fields(c).values():
            name = f"{prefix}{f.name}"
            tp = hints[f.name]
            inner = unwrap_optional(tp)
            nested = is_dataclass_type(inner) and inner not in seen
            value = getattr(instance, f.name) if instance is not None else field_default(f)
            if value is MISSING:
                default = " (required)"
            elif nested and isinstance(value, inner):
                default = ""  # its keys are listed below, with the defaults this field gives them
            else:
                default = " = " + _inline(value)
            lines.append(f"  {name}: {type_name(tp)}{default}")
            for line in (f.metadata.get("help") or "").strip().splitlines():
                lines.append(f"      {line.strip()}")
            if nested:
                walk(inner, name + ".", seen + (inner,), value if isinstance(value, inner) else None)

    walk(cls, "", (cls,), None)
    return "\n".join(lines)
