"""Every config file under configs/ loads into its typed config (a typo or a stale key there would otherwise only
surface when a user runs it)."""

from pathlib import Path

import pytest

from humantune.config import load_config
from humantune.recipes import recipes

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FILES = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.glob("*/*.yaml") if p.parent.name != "accelerate")
"""humantune's config files; configs/accelerate/ holds accelerate's (tests/train/test_accelerate_configs.py)."""


def recipe_folders() -> dict[str, type]:
    """configs/<folder> of every recipe (``humantune train NAME`` with - as _) → its config class."""
    return {name.replace("-", "_"): entry[0] for name, entry in recipes().items()}


def config_class(name: str) -> type:
    from humantune.data.mannequin.video import MannequinVideoConfig
    from humantune.data.mannequin.world import MannequinConfig

    folder = Path(name).parts[0]
    if folder == "data":
        return MannequinVideoConfig if "video" in name else MannequinConfig
    return recipe_folders()[folder]


def test_every_config_folder_is_covered():
    assert {Path(f).parts[0] for f in FILES} == {"data", *recipe_folders()}


@pytest.mark.parametrize("name", FILES)
def test_config_file_loads(name):
    cls = config_class(name)
    assert type(load_config(cls, CONFIGS / name)) is cls
