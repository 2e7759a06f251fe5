"""Reading YAML for configs: a loader that rejects repeated keys, a config file read into a mapping, and
PyYAML's errors worded as one line."""

from __future__ import annotations

from pathlib import Path

import yaml

from humantune.config.messages import describe_value, short_repr
from humantune.errors import ConfigError


class StrictLoader(yaml.SafeLoader):
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
                        "while constructing a mapping", node.start_mark, f"duplicate key {short_repr(key)}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def yaml_problem(e: yaml.YAMLError) -> tuple[str, str]:
    """(`` at line N``, problem) for a PyYAML error."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = e.problem or e.context or "syntax error"
        return where, " ".join(str(problem).split())
    return "", " ".join(str(e).split())


def read_yaml(path: Path, label: str) -> dict:
    """The top-level mapping of the YAML file ``path``; errors (an empty file among them) name the file as
    ``label``."""
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
        data = yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as e:
        where, problem = yaml_problem(e)
        raise ConfigError(f"{label}: invalid YAML{where}: {problem}") from None
    if data is None:  # an empty file (or only comments) would silently start a run with every default
        raise ConfigError(f"config file '{label}' is empty (no keys); give at least one key, or leave out --config "
                          "to use the defaults")
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: the top level must be a mapping of keys to values, got {describe_value(data)}")
    return data
