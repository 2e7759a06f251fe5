"""The layer picture of the README's Architecture section, checked on the imports: nothing imports upward, and
eval holds metrics and statistics only."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "humantune"

LAYERS = {
    "cli": 0, "cli_checks": 0, "__main__": 0,
    "recipes": 1, "studies": 1,
    "eval": 2, "losses": 2, "models": 2, "report": 2,
    "data": 3, "train": 3,
    "config": 4, "io": 4, "errors": 4, "threads": 4, "__init__": 4,
}
"""Top (0) to bottom (4): a module may import its own layer and the ones below it."""

EVAL_MAY_NOT_IMPORT = ("humantune.models.generation", "humantune.models.lora", "humantune.report", "humantune.studies")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, parts


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("humantune"):
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.startswith("humantune")]
    return names


def _layer(top: str) -> int:
    assert top in LAYERS, f"humantune/{top} is in no layer of tests/test_layers.py (and of the README's picture)"
    return LAYERS[top]


def test_every_package_module_has_a_layer():
    for _, parts in _modules():
        _layer(parts[0])


@pytest.mark.parametrize("path, parts", list(_modules()), ids=lambda p: "/".join(p) if isinstance(p, tuple) else "")
def test_no_module_imports_a_layer_above_its_own(path, parts):
    own = _layer(parts[0])
    for name in _imports(path):
        target = name.split(".")
        if len(target) < 2 or target[1] not in LAYERS:
            continue
        assert _layer(target[1]) >= own, f"humantune/{'/'.join(parts)}.py imports {name} from a layer above it"
        if parts[0] == "eval":
            assert not name.startswith(EVAL_MAY_NOT_IMPORT), f"eval/{'/'.join(parts[1:])}.py imports {name}"
