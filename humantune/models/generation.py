"""Load a pipeline by shipped name, local directory or Hugging Face Hub id, and generate images with it.

Shipped models live in ``humantune/assets/models/NAME`` (``humantune models list``). Anything else is handed to
``diffusers.DiffusionPipeline.from_pretrained``, which reads ``model_index.json`` and picks the pipeline class, so a
real SD1.5 / SDXL / SD3 checkpoint (hub id or local copy) loads through the same call. Offline, a hub id that is
not in the local cache fails with one line saying so.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from humantune.errors import ConfigError, HumantuneError

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "models"


def shipped_models() -> dict[str, Path]:
    """Name → directory of every model shipped with humantune."""
    if not ASSETS.is_dir():
        return {}
    return {p.name: p for p in sorted(ASSETS.iterdir()) if (p / "model_index.json").is_file()}


def model_info(path: Path) -> dict[str, Any]:
    """The ``humantune.json`` of a pipeline directory (generation defaults, provenance), or {}."""
    f = Path(path) / "humantune.json"
    if not f.is_file():
        return {}
    info = _read_json(f, "humantune's generation defaults")
    if not isinstance(info, dict) or not isinstance(info.get("generation", {}), dict):
        raise HumantuneError(f"{f}: expected a JSON object (with a 'generation' object of pipeline settings)")
    return info


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HumantuneError(f"{path}: cannot read {what}: {' '.join(str(e).split())}") from None


def check_weights_file(path: Path, what: str) -> None:
    """HumantuneError naming ``path`` unless it is a complete ``.safetensors`` file (its header parses and covers
    the whole file: a truncated download or copy fails here, in milliseconds, instead of deep inside a loader)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt"):
            pass
    except (SafetensorError, OSError) as e:
        reason = " ".join(str(e).split()).removeprefix("Error while deserializing header: ")
        raise HumantuneError(f"{what} file '{path}' is damaged (truncated, empty or not a safetensors file: "
                             f"{reason}); copy or download it again") from None


def check_pipeline_dir(path: Path) -> None:
    """Check a local pipeline directory before diffusers loads it, so each fault is one line naming the file:
    ``model_index.json`` readable and naming a diffusers pipeline class, every component it lists present with
    a config of the class it says, and every ``.safetensors`` file complete."""
    import diffusers

    index_path = path / "model_index.json"
    index = _read_json(index_path, "the pipeline index")
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise HumantuneError(f"{index_path}: expected a JSON object with '_class_name' (a diffusers pipeline)")
    if not hasattr(diffusers, index["_class_name"]):
        raise HumantuneError(f"{index_path}: '{index['_class_name']}' is not a diffusers pipeline class")
    for name, entry in index.items():
        if name.startswith("_") or not (isinstance(entry, list) and len(entry) == 2 and entry[1]):
            continue
        folder = path / name
        if not folder.is_dir():
            raise HumantuneError(f"model '{path}' has no {name}/ folder, which {index_path.name} lists "
                                 f"({entry[1]})")
        config = folder / "config.json"
        if entry[0] == "diffusers" and config.is_file():
            declared = _read_json(config, f"the {name} config").get("_class_name")
            if declared and declared != entry[1]:
                raise HumantuneError(f"model '{path}': {index_path.name} says {name} is {entry[1]}, but "
                                     f"{config} is {declared}")
    for weights in sorted(path.rglob("*.safetensors")):
        check_weights_file(weights, "model weights")


def size_multiple_of(pipe) -> int:
    """The multiple every image side must be for ``pipe``: the VAE's factor times the transformer's patch size
    (SD3, DiT), or a multiple of 8 for a UNet pipeline (as StableDiffusion(XL)Pipeline checks)."""
    vae = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None:
        return vae * int(getattr(transformer.config, "patch_size", 1) or 1)
    return math.lcm(8, vae)


def size_multiple_of_dir(source: str | os.PathLike) -> int | None:
    """:func:`size_multiple_of` read from a local pipeline directory's configs, before loading it (None: not a
    local directory, or its configs do not say)."""
    path = Path(source)
    try:
        vae = json.loads((path / "vae" / "config.json").read_text())
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
        if (path / "transformer" / "config.json").is_file():
            return factor * int(json.loads((path / "transformer" / "config.json").read_text()).get("patch_size") or 1)
        return math.lcm(8, factor)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_image_size(pipe, height: int | None, width: int | None, option: str = "--size") -> None:
    """HumantuneError naming ``option`` when a side is not a positive multiple of :func:`size_multiple_of`
    (``pipe``: a pipeline, or a local pipeline directory)."""
    multiple = size_multiple_of(pipe) if not isinstance(pipe, (str, os.PathLike)) else size_multiple_of_dir(pipe)
    if multiple is None:
        return
    for side in {height, width} - {None}:
        if side < multiple or side % multiple:
            lower = max(multiple, side // multiple * multiple)
            raise HumantuneError(f"{option} {side}: the model needs image sides that are a multiple of {multiple} "
                                 f"(e.g. {lower} or {lower + multiple})")


def resolve_model(model: str | os.PathLike) -> str:
    """A shipped name → its directory; an existing directory → itself; anything else is taken as a hub id."""
    text = str(model)
    shipped = shipped_models()
    if text in shipped:
        return str(shipped[text])
    if Path(text).expanduser().is_dir():
        path = Path(text).expanduser()
        if not (path / "model_index.json").is_file():
            raise HumantuneError(f"model directory '{path}' has no model_index.json (expected a diffusers "
                                 "save_pretrained pipeline directory)")
        check_pipeline_dir(path)
        return str(path)
    if Path(text).suffix in (".safetensors", ".ckpt") or text.startswith((".", "/", "~")):
        raise HumantuneError(f"model '{text}' not found: no such directory (shipped models: "
                             f"{', '.join(shipped) or 'none'})")
    return text


def load_vae(source: str | os.PathLike, dtype: torch.dtype = torch.float32, what: str = "vae"):
    """A frozen ``AutoencoderKL`` in ``dtype`` from a shipped base name, a pipeline directory (its ``vae/``), a VAE
    directory with its config.json, or a hub id in the cache (its ``vae`` subfolder, else its root); ConfigError
    naming ``what`` and ``source`` otherwise."""
    from diffusers import AutoencoderKL

    text = str(source)
    shipped = shipped_models()
    path = Path(shipped[text]) if text in shipped else Path(text).expanduser()
    if path.is_dir():
        location, attempts = str(path), [{"subfolder": "vae"} if (path / "vae" / "config.json").is_file() else {}]
    else:
        location, attempts = text, [{"subfolder": "vae"}, {}]
    for kw in attempts:
        try:
            return AutoencoderKL.from_pretrained(location, torch_dtype=dtype, **kw).requires_grad_(False).eval()
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(f"{what} '{source}': cannot load an AutoencoderKL from it (a directory with config.json, a "
                      f"pipeline directory with vae/, or a hub id in the cache): {first}")


def absent_components(source: str) -> dict[str, None]:
    """``{name: None}`` for components a local pipeline directory declares absent (``[null, null]`` in
    ``model_index.json``), e.g. SD3 without T5; diffusers needs them passed explicitly."""
    index = Path(source) / "model_index.json"
    if not index.is_file():
        return {}
    return {k: None for k, v in json.loads(index.read_text()).items()
            if isinstance(v, list) and len(v) == 2 and v[0] is None and v[1] is None}


def load_pipeline(model: str | os.PathLike, device: str | torch.device = "cpu",
                  dtype: torch.dtype | None = torch.float32):
    """Load any diffusers pipeline: shipped name, local directory or hub id (``dtype=None``: as stored)."""
    from diffusers import DiffusionPipeline

    from diffusers.utils import logging as diffusers_logging

    source = resolve_model(model)
    diffusers_logging.disable_progress_bar()  # one bar per component is noise; callers show their own progress
    try:
        kw = {"dtype": dtype} if dtype is not None else {}
        pipe = DiffusionPipeline.from_pretrained(source, **kw, **absent_components(source))
    except (OSError, ValueError, ConnectionError, AttributeError, KeyError, TypeError, RuntimeError,
            NotImplementedError) as e:  # what diffusers and transformers raise for files they cannot use
        if Path(source).is_dir():
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise HumantuneError(f"cannot load pipeline from '{source}': {first}") from None
        raise HumantuneError(
            f"cannot load model '{source}': not a shipped model ({', '.join(shipped_models()) or 'none'}), not a "
            "local directory, and not in the Hugging Face cache (the hub is unreachable offline; download it on a "
            "machine with internet or pass a local path)") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def generate_images(pipe, prompts: Sequence[str], seed: int = 0, batch_size: int = 8, progress: bool = True,
                    per_image_seeds: Sequence[int] | None = None, **kwargs: Any) -> list[Image.Image]:
    """One image per prompt; image ``i`` uses a generator seeded with ``seed + i`` (or ``per_image_seeds[i]``), so
    an image does not depend on the batch it was generated in. ``kwargs`` go to the pipeline call."""
    from tqdm import tqdm

    check_image_size(pipe, kwargs.get("height"), kwargs.get("width"))
    steps = kwargs.get("num_inference_steps")
    if steps is not None and steps < 1:
        raise HumantuneError(f"--steps must be at least 1, got {steps}")
    seeds = list(per_image_seeds) if per_image_seeds is not None else [seed + i for i in range(len(prompts))]
    out: list[Image.Image] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generating", unit="batch", disable=not progress):
        chunk = list(prompts[start:start + batch_size])
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds[start:start + len(chunk)]]
        extra = dict(kwargs)
        for key in ("image", "control_image"):  # per-prompt conditions travel with their prompts
            if isinstance(extra.get(key), (list, tuple)):
                extra[key] = list(extra[key][start:start + len(chunk)])
        with torch.no_grad():
            result = pipe(prompt=chunk, generator=generators, output_type="pil", **extra)
        out.extend(result.images)
    return out


def pose_condition(source: str | os.PathLike, size: tuple[int, int]) -> Image.Image:
    """An OpenPose condition image from a keypoints JSON (17×3 COCO ``[x, y, v]`` or a list of such people, in
    pixels of ``size``) or from an existing condition image."""
    from humantune.data.openpose import draw_openpose

    path = Path(source)
    if not path.is_file():
        raise HumantuneError(f"pose '{path}' not found (expected a keypoints .json or a condition image)")
    if path.suffix.lower() == ".json":
        return draw_openpose(pose_keypoints(path), size)
    try:
        return Image.open(path).convert("RGB").resize(size)
    except OSError as e:
        raise HumantuneError(f"{path}: cannot read pose image ({' '.join(str(e).split())})") from None


def pose_keypoints(path: Path) -> np.ndarray:
    """(P, 17, 3) COCO keypoints from a JSON file of one person's 17 × [x, y, v] or a list of people."""
    try:
        kp = np.asarray(json.loads(path.read_text(encoding="utf-8")), np.float32)
    except (OSError, UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError, ragged lists too
        raise HumantuneError(f"{path}: not a JSON keypoint list ({' '.join(str(e).split())})") from None
    if kp.ndim == 2:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[1:] != (17, 3):
        raise HumantuneError(f"{path}: keypoints must be 17×3 [x, y, v] per person, got shape {kp.shape}")
    if not np.isfinite(kp).all():
        raise HumantuneError(f"{path}: keypoints must be finite numbers (found NaN or infinity)")
    return kp


def read_prompts(path: str | os.PathLike) -> list[str]:
    """Non-empty lines of a prompt file (``#`` starts a comment line)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise HumantuneError(f"cannot read prompts file '{p}': {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise HumantuneError(f"prompts file '{p}' is not UTF-8 text (byte {e.start}: {e.reason})") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise HumantuneError(f"prompts file '{p}' has no prompts (one per line expected)")
    return prompts


def with_controlnet(pipe, controlnet: str | os.PathLike):
    """The ControlNet pipeline sharing ``pipe``'s components (SD1.5-family pipelines)."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline

    if not isinstance(pipe, StableDiffusionPipeline):
        raise HumantuneError(f"--controlnet works with StableDiffusionPipeline models, not {type(pipe).__name__}")
    source = str(controlnet)
    if source.startswith((".", "/", "~")) and not Path(source).expanduser().is_dir():
        raise HumantuneError(f"--controlnet '{source}' not found (a ControlNetModel folder or a hub id)")
    config = Path(source).expanduser() / "config.json"
    if config.is_file():  # a local folder: say what it is before diffusers half-loads the wrong class
        declared = _read_json(config, "the ControlNet config").get("_class_name")
        if declared != "ControlNetModel":
            raise HumantuneError(f"--controlnet '{source}' is a {declared or 'folder without _class_name'} "
                                 f"({config}), not a ControlNetModel")
        for weights in sorted(config.parent.glob("*.safetensors")):
            check_weights_file(weights, "ControlNet weights")
    try:
        net = ControlNetModel.from_pretrained(source)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, NotImplementedError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HumantuneError(f"cannot load ControlNet '{source}': {first}") from None
    return StableDiffusionControlNetPipeline(**pipe.components, controlnet=net.to(pipe.device, pipe.dtype))


def generation_settings(source: str | os.PathLike, steps: int | None = None, guidance_scale: float | None = None,
                        size: int | None = None) -> dict[str, Any]:
    """Pipeline call settings for a resolved model: its ``humantune.json`` defaults (else 30 steps, guidance 7.5),
    overridden by the arguments that are given (``size`` sets height and width)."""
    kwargs: dict[str, Any] = {"num_inference_steps": 30, "guidance_scale": 7.5}
    if Path(source).is_dir():
        kwargs.update(model_info(Path(source)).get("generation", {}))
    if steps is not None:
        kwargs["num_inference_steps"] = steps
    if guidance_scale is not None:
        kwargs["guidance_scale"] = guidance_scale
    if size is not None:
        kwargs["height"] = kwargs["width"] = size
    return kwargs


def generate(model: str | os.PathLike, prompts: Sequence[str], out_dir: str | os.PathLike, n: int = 1, seed: int = 0,
             pose: str | None = None, controlnet: str | None = None, steps: int | None = None,
             guidance_scale: float | None = None, size: int | None = None, progress: bool = True) -> int:
    """Generate ``n`` images per prompt into ``out_dir`` (``00000.png`` …) with a ``metadata.jsonl`` row per image
    (``file_name``, ``text``, ``seed``; ``keypoints`` when the pose came from a keypoints file). Image ``i`` uses
    seed ``seed + i``. Settings default to the model's ``humantune.json``, else 30 steps and guidance 7.5."""
    if n < 1:
        raise HumantuneError(f"--n must be at least 1, got {n}")
    if pose and not controlnet:
        raise HumantuneError("--pose needs --controlnet (a pose ControlNet, e.g. from `humantune train controlnet-pose`)")
    if controlnet and not pose:
        raise HumantuneError("--controlnet needs --pose (keypoints JSON or OpenPose image)")
    if pose and Path(pose).suffix.lower() == ".json" and Path(pose).is_file():
        pose_keypoints(Path(pose))  # a bad pose file is reported before any model loads
    source = resolve_model(model)
    pipe = load_pipeline(source)
    kwargs = generation_settings(source, steps, guidance_scale, size)
    all_prompts = [p for p in prompts for _ in range(n)]
    keypoints = None
    if controlnet:
        pipe = with_controlnet(pipe, controlnet)
        side = kwargs.get("height") or pipe.unet.config.sample_size * pipe.vae_scale_factor
        kwargs["image"] = pose_condition(pose, (side, side)) if pose else None
        if kwargs["image"] is None:
            raise HumantuneError("--controlnet needs --pose (keypoints JSON or OpenPose image)")
        if pose and Path(pose).suffix.lower() == ".json":
            keypoints = json.loads(Path(pose).read_text())
    images = generate_images(pipe, all_prompts, seed=seed, progress=progress, **kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, prompt) in enumerate(zip(images, all_prompts)):
        name = f"{i:05d}.png"
        image.save(out / name)
        row = {"file_name": name, "text": prompt, "seed": seed + i}
        if keypoints is not None:
            row["keypoints"] = keypoints if np.asarray(keypoints).ndim == 3 else [keypoints]
        rows.append(row)
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(images)
