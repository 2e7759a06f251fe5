"""Shared fixtures: small generated folders (flat-colour PNGs + metadata.jsonl) and studies made from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from humantune.studies.preference.study import StudyConfig, create_study

PROMPTS = ["a man waving on the beach", "a woman sitting on the grass", "a boy running on the street"]


def make_generated(folder: Path, colour: tuple[int, int, int], prompts=PROMPTS, seeds=(0, 1),
                   size: int = 16) -> Path:
    """A folder like `humantune generate` writes: one flat-colour image per (prompt, seed)."""
    folder.mkdir(parents=True)
    rows = []
    for prompt in prompts:
        for seed in seeds:
            name = f"{len(rows):05d}.png"
            Image.new("RGB", (size, size), colour).save(folder / name)
            rows.append({"file_name": name, "text": prompt, "seed": seed})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture
def systems(tmp_path: Path) -> dict[str, Path]:
    return {"base": make_generated(tmp_path / "gen" / "base", (200, 40, 40)),
            "tuned": make_generated(tmp_path / "gen" / "tuned", (40, 200, 40))}


@pytest.fixture
def attention_dirs(tmp_path: Path) -> tuple[Path, Path]:
    return (make_generated(tmp_path / "gen" / "good", (250, 250, 250), prompts=PROMPTS[:2], seeds=(0,)),
            make_generated(tmp_path / "gen" / "bad", (0, 0, 0), prompts=PROMPTS[:2], seeds=(0,)))


@pytest.fixture
def study(tmp_path: Path, systems, attention_dirs):
    """A study of 6 items (3 prompts × 2 seeds), 3 participants, 1 repeat and 1 attention check each."""
    return create_study(systems, tmp_path / "study",
                        StudyConfig(participants=3, repeats=1, attention_checks=1, seed=0),
                        attention=attention_dirs)
