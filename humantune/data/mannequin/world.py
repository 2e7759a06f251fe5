"""The mannequin world: a dataset of procedurally rendered people with exact ground truth.

``write_world(cfg, out_dir)`` renders ``cfg.n`` samples in parallel and writes the on-disk layout documented in
:mod:`humantune.data.sample` (COCO keypoints JSON, ``metadata.jsonl`` for ``datasets``' imagefolder, images,
OpenPose condition images, masks). Sample ``i`` is rendered from the random stream ``(seed, i)`` alone, so the output
is byte-identical for the same seed whatever the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from humantune import __version__
from humantune.config import config_to_dict, option
from humantune.data.keypoints import COCO17_NAMES, COCO17_SKELETON
from humantune.data.mannequin.anomalies import ANOMALY_TYPES, sample_anomaly
from humantune.data.mannequin.appearance import BACKGROUNDS
from humantune.data.mannequin.body import ACTIONS
from humantune.data.mannequin.scene import Scene, render_scene, sample_background, sample_person
from humantune.data.openpose import draw_openpose
from humantune.io import new_output_dir, write_json_atomic

T = TypeVar("T")

# Lying is deliberately rare (4 %), as in real photo collections: the anomaly-correction recipe relies on it.
DEFAULT_ACTION_MIX = {
    "standing": 0.16, "walking": 0.14, "running": 0.08, "waving": 0.10, "arms_raised": 0.08, "sitting": 0.10,
    "lying_back": 0.02, "lying_side": 0.02, "jumping": 0.08, "dancing": 0.12, "bending": 0.10,
}


@dataclass
class MannequinConfig:
    """How to render a mannequin world."""

    n: int = option(1000, "number of images")
    seed: int = option(0, "random seed; the same seed gives byte-identical output")
    size: int = option(128, "image width and height in pixels")
    supersample: int = option(2, "draw at this multiple of the size, then area-downsample (anti-aliasing)")
    action_mix: dict[str, float] = option(DEFAULT_ACTION_MIX, "relative frequency of each action")
    backgrounds: list[str] = option(list(BACKGROUNDS), "backgrounds to draw from (grass, street, indoor, beach, sky)")
    second_person_prob: float = option(0.1, "probability that an image shows a second person")
    truncate_prob: float = option(0.05, "probability that a person is partly outside the frame")
    anomaly_prob: float = option(0.0, "probability that a person is drawn with broken anatomy (labelled)")
    anomaly_types: list[str] = option(list(ANOMALY_TYPES), "which anomalies to draw when anomaly_prob > 0")
    condition_stickwidth: int | None = option(None, "OpenPose limb half-width in pixels; default scales 4 px at 512")

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.seed < 0:
            raise ValueError(f"seed must be at least 0 (numpy seeds are non-negative), got {self.seed}")
        if not 16 <= self.size <= 2048:
            raise ValueError(f"size must be between 16 and 2048, got {self.size}")
        if self.supersample not in (1, 2, 3, 4):
            raise ValueError(f"supersample must be 1, 2, 3 or 4, got {self.supersample}")
        unknown = sorted(set(self.action_mix) - set(ACTIONS))
        if unknown:
            raise ValueError(f"action_mix has unknown action(s) {unknown}; known: {', '.join(ACTIONS)}")
        if any(v < 0 for v in self.action_mix.values()) or sum(self.action_mix.values()) <= 0:
            raise ValueError("action_mix weights must be non-negative with a positive sum")
        bad_bg = sorted(set(self.backgrounds) - set(BACKGROUNDS))
        if bad_bg or not self.backgrounds:
            raise ValueError(f"backgrounds must be a non-empty subset of {', '.join(BACKGROUNDS)}; got {self.backgrounds}")
        bad_an = sorted(set(self.anomaly_types) - set(ANOMALY_TYPES))
        if bad_an:
            raise ValueError(f"anomaly_types has unknown type(s) {bad_an}; known: {', '.join(ANOMALY_TYPES)}")
        for name in ("second_person_prob", "truncate_prob", "anomaly_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of sample ``index``: independent of every other sample and of the worker count."""
    return np.random.default_rng([seed, index])


def _choose(rng: np.random.Generator, mix: dict[str, float]) -> str:
    keys = list(mix)
    p = np.array([mix[k] for k in keys], np.float64)
    return str(keys[int(rng.choice(len(keys), p=p / p.sum()))])


def render_sample(cfg: MannequinConfig, index: int) -> Scene:
    """Render sample ``index`` of the world described by ``cfg``."""
    rng = sample_rng(cfg.seed, index)
    action = _choose(rng, cfg.action_mix)
    people = [sample_person(action, rng)]
    if rng.uniform() < cfg.second_person_prob:
        people.append(sample_person(_choose(rng, cfg.action_mix), rng))
    for person in people:
        if cfg.anomaly_types and rng.uniform() < cfg.anomaly_prob:
            person.anomaly = sample_anomaly(str(rng.choice(cfg.anomaly_types)), rng)
    background = sample_background(action, rng)
    if background not in cfg.backgrounds:
        background = str(rng.choice(cfg.backgrounds))
    return render_scene(people, background, rng, (cfg.size, cfg.size), cfg.supersample, cfg.truncate_prob)


def _png(array: np.ndarray) -> bytes:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    return buf.tobytes()


def _render_and_write(args: tuple[MannequinConfig, int, str]) -> dict[str, Any]:
    """Worker: render sample ``index``, write its three PNGs under ``root``, return its annotation record."""
    cfg, index, root = args
    scene = render_sample(cfg, index)
    stem = f"{index:06d}"
    condition = draw_openpose(scene.keypoints, (cfg.size, cfg.size), stickwidth=cfg.condition_stickwidth)
    for sub, data in (("images", scene.image), ("conditions", np.asarray(condition)), ("masks", scene.mask)):
        with open(os.path.join(root, sub, f"{stem}.png"), "wb") as f:
            f.write(_png(data))
    segmentations = []
    for pi in range(len(scene.people)):
        rle = mask_utils.encode(np.asfortranarray((scene.mask == pi + 1).astype(np.uint8)))
        segmentations.append({"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")})
    return {
        "index": index,
        "stem": stem,
        "caption": scene.caption,
        "actions": scene.actions,
        "attributes": scene.attributes(),
        "keypoints": scene.keypoints.round(3).tolist(),
        "bboxes": scene.bboxes.tolist(),
        "areas": scene.areas.tolist(),
        "segmentations": segmentations,
    }


def coco_categories() -> list[dict]:
    return [{
        "id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO17_NAMES),
        "skeleton": [[a + 1, b + 1] for a, b in COCO17_SKELETON],
    }]


def _coco_and_metadata(cfg: MannequinConfig, records: list[dict]) -> tuple[dict, list[dict]]:
    images, annotations, metadata = [], [], []
    ann_id = 1
    for rec in records:
        image_id = rec["index"] + 1
        file_name = f"images/{rec['stem']}.png"
        images.append({
            "id": image_id, "file_name": file_name, "width": cfg.size, "height": cfg.size,
            "caption": rec["caption"], "conditioning_image": f"conditions/{rec['stem']}.png",
        })
        for pi, kp in enumerate(rec["keypoints"]):
            flat = [float(v) for point in kp for v in point]
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "keypoints": flat, "num_keypoints": int(sum(1 for point in kp if point[2] > 0)),
                "bbox": rec["bboxes"][pi], "area": rec["areas"][pi], "segmentation": rec["segmentations"][pi],
                "action": rec["actions"][pi],
            })
            ann_id += 1
        metadata.append({
            "file_name": file_name, "text": rec["caption"],
            "conditioning_image_file_name": f"conditions/{rec['stem']}.png", "mask_file_name": f"masks/{rec['stem']}.png", "image_id": image_id, "action": rec["actions"][0],
            "attributes": rec["attributes"], "keypoints": rec["keypoints"],
        })
    coco = {
        "info": {
            "description": "humantune mannequin world", "version": __version__, "seed": cfg.seed,
            "area_convention": "segment: visible person-mask pixel count (COCO's convention)",
        },
        "images": images, "annotations": annotations, "categories": coco_categories(),
    }
    return coco, metadata


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def fork_is_safe() -> bool:
    """False once this process runs torch or MediaPipe: their native thread pools can be forked mid-lock and hang
    the child (seen twice: a world rendered inside a benchmark's training process). ``spawn`` would re-run the
    caller's main module, which scripts and notebooks do not guard, so such a process renders in-process."""
    return not ({"torch", "mediapipe"} & set(sys.modules))


def run_parallel(fn: Callable[[Any], T], jobs: list, workers: int | None, desc: str, unit: str,
                 progress: bool = True) -> list[T]:
    """``[fn(job) for job in jobs]`` over ``workers`` forked processes (default: all CPUs; one, in this
    process, when :func:`fork_is_safe` says no), in order, with a progress bar. Results do not depend on the
    worker count as long as ``fn`` seeds itself from its job."""
    workers = (workers or default_workers()) if fork_is_safe() else 1
    results: list[T] = []
    with tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                results.append(fn(job))
                bar.update()
        else:
            chunksize = max(1, min(16, len(jobs) // (4 * workers)))
            with mp.get_context("fork").Pool(workers) as pool:
                for result in pool.imap(fn, jobs, chunksize=chunksize):
                    results.append(result)
                    bar.update()
    return results


def write_world(cfg: MannequinConfig, out_dir: str | os.PathLike, workers: int | None = None,
                overwrite: bool = False, progress: bool = True) -> Path:
    """Render the world into ``out_dir`` atomically: everything goes to a temporary folder that replaces
    ``out_dir`` at the end.

    Raises HumantuneError if ``out_dir`` exists and is not empty, unless ``overwrite``.
    """
    with new_output_dir(out_dir, overwrite) as tmp:
        for sub in ("images", "conditions", "masks", "annotations"):
            (tmp / sub).mkdir()
        jobs = [(cfg, i, str(tmp)) for i in range(cfg.n)]
        records = run_parallel(_render_and_write, jobs, workers, "rendering mannequins", "img", progress)
        coco, metadata = _coco_and_metadata(cfg, records)
        with open(tmp / "annotations" / "person_keypoints.json", "w") as f:
            json.dump(coco, f)
        with open(tmp / "metadata.jsonl", "w") as f:
            for row in metadata:
                f.write(json.dumps(row) + "\n")
        write_json_atomic(tmp / "world.json", {
            "generator": "humantune.data.mannequin", "version": __version__, "config": config_to_dict(cfg),
        })
    return Path(out_dir)
