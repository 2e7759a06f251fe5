"""Where a recipe's samples come from, as a config: the mannequin world (rendered on demand), a humantune pose
folder, a COCO keypoints JSON with its images, or Captioned COCO-Pose parquet files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

from humantune.config import config_to_dict, option
from humantune.data.captioned_coco_pose import CaptionedCocoPoseDataset
from humantune.data.coco import CocoKeypointsDataset
from humantune.data.loaders import PoseFolderDataset
from humantune.data.mannequin.world import MannequinConfig, write_world
from humantune.data.prepare import Head
from humantune.data.sample import PoseSample
from humantune.errors import DataError


@dataclass
class DataSource:
    """Where samples come from."""

    kind: Literal["mannequin", "pose_folder", "coco", "parquet"] = option(
        "mannequin", "mannequin: render `world`; pose_folder: a humantune pose folder at `path`; coco: a COCO "
                     "keypoints JSON at `path` with `image_dir` (and `captions`); parquet: Captioned COCO-Pose "
                     "parquet file(s) at `path` (a file, a folder or a glob)")
    world: MannequinConfig = option(MannequinConfig(n=1000, seed=0), "kind mannequin: the world to render")
    path: str | None = option(None, "pose_folder / coco / parquet: where the data is")
    image_dir: Path | None = option(None, "coco: the image folder")
    captions: Path | None = option(None, "coco: captions (JSONL, {file_name: caption} or COCO captions JSON); "
                                         "null: each image's 'caption' field")
    caption_column: str | None = option(None, "parquet: caption column (null: caption, then prompt, then text)")
    max_samples: int | None = option(None, "use only the first N samples")

    def __post_init__(self) -> None:
        if self.kind != "mannequin" and not self.path:
            raise ValueError(f"kind {self.kind} needs 'path'")
        if self.kind == "coco" and self.image_dir is None:
            raise ValueError("kind coco needs 'image_dir' (the images of the COCO JSON)")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, got {self.max_samples}")

    def identity(self) -> tuple:
        return ("mannequin", self.world.seed) if self.kind == "mannequin" else (self.kind, str(self.path))

    def describe(self) -> str:
        """A phrase for reports: what the samples are."""
        if self.kind == "mannequin":
            return f"the mannequin world (seed {self.world.seed}, {self.world.n} images)"
        return f"{self.kind} {self.path}" + (f" (first {self.max_samples})" if self.max_samples else "")


def open_source(src: DataSource, name: str, world_dir: Path, is_main: bool = True,
                barrier: Callable[[], None] = lambda: None) -> Sequence[PoseSample]:
    """The dataset of ``src`` (``name`` labels its errors, e.g. ``train_data``). A mannequin world is rendered into
    ``world_dir`` by the main process (again when its config changed) while the others wait at ``barrier``."""
    try:
        if src.kind == "mannequin":
            meta = world_dir / "world.json"
            if is_main and (not meta.is_file() or json.loads(meta.read_text())["config"] != config_to_dict(src.world)):
                write_world(src.world, world_dir, overwrite=True, progress=is_main)
            barrier()
            data = PoseFolderDataset(world_dir)
        elif src.kind == "pose_folder":
            data = PoseFolderDataset(src.path)
        elif src.kind == "coco":
            data = CocoKeypointsDataset(src.path, src.image_dir, src.captions, people_only=True)
        else:
            data = CaptionedCocoPoseDataset(src.path, src.caption_column)
    except DataError as e:
        raise DataError(f"{name}: {e}") from None
    return Head(data, src.max_samples) if src.max_samples is not None else data
