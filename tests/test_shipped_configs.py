"""Every config file under configs/ loads into its typed config (a typo or a stale key there would otherwise only
surface when a user runs it)."""

from pathlib import Path

import pytest

from humantune.config import load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FILES = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.glob("*/*.yaml"))


def config_class(name: str) -> type:
    from humantune.data.mannequin.video import MannequinVideoConfig
    from humantune.data.mannequin.world import MannequinConfig
    from humantune.recipes.controlnet_pose import ControlNetPoseConfig
    from humantune.recipes.dreambooth_lora import DreamBoothLoraConfig
    from humantune.recipes.pretrain import PretrainConfig

    folder = Path(name).parts[0]
    if folder == "data":
        return MannequinVideoConfig if "video" in name else MannequinConfig
    return {"pretrain": PretrainConfig, "controlnet_pose": ControlNetPoseConfig,
            "dreambooth_lora": DreamBoothLoraConfig}[folder]


def test_every_config_folder_is_covered():
    assert {Path(f).parts[0] for f in FILES} == {"pretrain", "controlnet_pose", "dreambooth_lora", "data"}


@pytest.mark.parametrize("name", FILES)
def test_config_file_loads(name):
    cls = config_class(name)
    assert type(load_config(cls, CONFIGS / name)) is cls
