"""Bad-input corpus: the real ``humantune`` command line over well past 80 user mistakes and faults.

Every case must end with exit status 2 and exactly one stderr line that starts ``humantune: error:`` and names the
offending file, key or value (progress-bar lines before it are allowed; the error starts on a line of its own),
no traceback, and no data lost: every file and folder in the case's folder before the run is still there,
byte-identical, and nothing new is left behind (no half-made output folder).

    python benchmarks/bad_inputs.py                  # in-process (humantune.cli.main, stdout/stderr captured at fd level)
    python benchmarks/bad_inputs.py --subprocess     # each case as `python -m humantune ...` (slower, fully faithful)
    python benchmarks/bad_inputs.py --only sheet_out_is_directory,generate_n_zero

Writes ``benchmarks/results/bad_inputs.json`` and prints a table: clean / total and every unclean case.
``tests/test_cli_bad_inputs.py`` runs :data:`FAST` (about 20 representative cases) in-process.
Permission cases (a folder chmod 0o500) are skipped when running as root, where permissions do not apply.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
ERROR_PREFIX = "humantune: error:"
CASE_TIMEOUT_S = 300


# --- fixtures (made once per corpus run) ---------------------------------------------------------------------------


@dataclass
class Fixtures:
    """Shared, read-only inputs the cases copy from: a tiny pose folder, the shipped models, LoRAs of both families."""

    root: Path
    world: Path = field(init=False)
    tiny_sd: Path = field(init=False)
    tiny_sd3: Path = field(init=False)
    lora_sd: Path = field(init=False)
    lora_sd3: Path = field(init=False)

    def __post_init__(self) -> None:
        from humantune.models.generation import shipped_models

        models = shipped_models()
        self.tiny_sd, self.tiny_sd3 = models["tiny-sd"], models["tiny-sd3"]
        self.world = self.root / "world"
        self.lora_sd = self.root / "lora-sd"
        self.lora_sd3 = self.root / "lora-sd3"

    def make(self, need_loras: bool) -> None:
        if not self.world.is_dir():
            from humantune.cli import main

            with captured():
                code = main(["data", "mannequin", "--out", str(self.world), "--n", "2", "--size", "64", "--seed", "3",
                             "--workers", "1", "--quiet"])
            assert code == 0, "could not render the fixture world"
        if need_loras and not self.lora_sd.is_dir():
            self._make_lora(self.tiny_sd, "unet", self.lora_sd)
            self._make_lora(self.tiny_sd3, "transformer", self.lora_sd3)

    @staticmethod
    def _make_lora(model: Path, component: str, out: Path) -> None:
        from diffusers import DiffusionPipeline

        from humantune.models.generation import absent_components
        from humantune.models.lora import add_lora, save_lora

        pipe = DiffusionPipeline.from_pretrained(str(model), **absent_components(str(model)))
        denoiser = getattr(pipe, component)
        add_lora(denoiser, rank=2, target_modules=["to_q", "to_k", "to_v"])
        save_lora(pipe, out, {component: denoiser})


def copy_world(fx: Fixtures, dst: Path) -> Path:
    shutil.copytree(fx.world, dst)
    return dst


def link_model(src: Path, dst: Path) -> Path:
    """A pipeline folder whose files are symlinks to ``src``'s (cheap); corrupt one with :func:`replace_file`."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return dst


def replace_file(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def truncated(src: Path, fraction: float = 0.5) -> bytes:
    data = Path(src).read_bytes()
    return data[: int(len(data) * fraction)]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def keep_dir(path: Path) -> Path:
    """A user's folder with something precious in it."""
    write(path / "thesis.tex", "years of work\n")
    return path


def png(path: Path, size: int = 32) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (120, 80, 40)).save(path)
    return path


def image_folder(path: Path, rows: list[dict] | None = None, n: int = 2) -> Path:
    """A folder of n small PNGs with a metadata.jsonl (``rows`` replaces the default rows)."""
    for i in range(n):
        png(path / f"{i:05d}.png")
    rows = rows if rows is not None else [{"file_name": f"{i:05d}.png", "text": "a man standing"} for i in range(n)]
    write(path / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return path


def edit_metadata(folder: Path, line: int, **changes) -> None:
    """Change keys of row ``line`` (0-based) of ``folder/metadata.jsonl``."""
    path = folder / "metadata.jsonl"
    rows = [json.loads(r) for r in path.read_text().splitlines() if r.strip()]
    rows[line].update(changes)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# --- the cases -----------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One mistake: ``setup(case_dir, fixtures)`` makes its files and returns the argv (paths relative to the case
    folder, the working directory); the error line must contain every string in ``names``."""

    name: str
    setup: Callable[[Path, Fixtures], list[str]]
    names: list[str]
    needs_loras: bool = False
    needs_permissions: bool = False


CASES: list[Case] = []


def case(name: str, names: list[str], needs_loras: bool = False, needs_permissions: bool = False):
    def register(setup: Callable[[Path, Fixtures], list[str]]):
        CASES.append(Case(name, setup, names, needs_loras, needs_permissions))
        return setup
    return register


def simple(name: str, argv: list[str], names: list[str]) -> None:
    """A case that needs no files."""
    CASES.append(Case(name, lambda d, fx: list(argv), names))


# data sheet ---------------------------------------------------------------------------------------------------------

@case("sheet_out_is_directory", ["keep"])
def _(d, fx):
    copy_world(fx, d / "w"); keep_dir(d / "keep")
    return ["data", "sheet", "w", "--out", "keep"]


@case("sheet_out_is_empty_directory", ["empty"])
def _(d, fx):
    copy_world(fx, d / "w"); (d / "empty").mkdir()
    return ["data", "sheet", "w", "--out", "empty"]


@case("sheet_out_is_the_dataset", ["w"])
def _(d, fx):
    copy_world(fx, d / "w")
    return ["data", "sheet", "w", "--out", "w"]


@case("sheet_out_parent_is_a_file", ["notes.txt"])
def _(d, fx):
    copy_world(fx, d / "w"); write(d / "notes.txt", "mine\n")
    return ["data", "sheet", "w", "--out", "notes.txt/sheet.html"]


@case("sheet_out_folder_not_writable", ["locked"], needs_permissions=True)
def _(d, fx):
    copy_world(fx, d / "w"); (d / "locked").mkdir(); (d / "locked").chmod(0o500)
    return ["data", "sheet", "w", "--out", "locked/sheet.html"]


@case("sheet_dataset_missing", ["nope"])
def _(d, fx):
    return ["data", "sheet", "nope", "--out", "s.html"]


@case("sheet_dataset_is_a_file", ["data.txt"])
def _(d, fx):
    write(d / "data.txt", "x\n")
    return ["data", "sheet", "data.txt", "--out", "s.html"]


@case("sheet_no_metadata", ["metadata.jsonl"])
def _(d, fx):
    png(d / "w/a.png")
    return ["data", "sheet", "w", "--out", "s.html"]


@case("sheet_metadata_invalid_json", ["metadata.jsonl", "2"])
def _(d, fx):
    copy_world(fx, d / "w")
    with open(d / "w/metadata.jsonl", "a") as f:
        f.write("{not json\n")
    return ["data", "sheet", "w", "--out", "s.html"]


@case("sheet_metadata_empty", ["metadata.jsonl"])
def _(d, fx):
    (d / "w").mkdir(); write(d / "w/metadata.jsonl", "")
    return ["data", "sheet", "w", "--out", "s.html"]


@case("sheet_metadata_is_a_directory", ["metadata.jsonl"])
def _(d, fx):
    (d / "w/metadata.jsonl").mkdir(parents=True)
    return ["data", "sheet", "w", "--out", "s.html"]


@case("sheet_metadata_not_utf8", ["metadata.jsonl"])
def _(d, fx):
    write(d / "w/metadata.jsonl", b"\xff\xfe\x00garbage\x81\n")
    return ["data", "sheet", "w", "--out", "s.html"]


@case("sheet_file_name_parent_dir", ["../outside.png"])
def _(d, fx):
    copy_world(fx, d / "w"); png(d / "outside.png"); edit_metadata(d / "w", 0, file_name="../outside.png")
    return ["data", "sheet", "w", "--out", "s.html"]


@case("sheet_file_name_absolute", ["file_name", "outside"])
def _(d, fx):
    copy_world(fx, d / "w"); png(d / "outside.png"); edit_metadata(d / "w", 0, file_name=str(d / "outside.png"))
    return ["data", "sheet", "w", "--out", "s.html"]


@case("sheet_conditioning_outside", ["../cond.png"])
def _(d, fx):
    copy_world(fx, d / "w"); png(d / "cond.png")
    edit_metadata(d / "w", 0, conditioning_image_file_name="../cond.png", conditioning_image=None)
    return ["data", "sheet", "w", "--out", "s.html"]


@case("sheet_image_corrupt", ["000000.png"])
def _(d, fx):
    copy_world(fx, d / "w"); replace_file(d / "w/images/000000.png", b"not a png at all")
    return ["data", "sheet", "w", "--out", "s.html"]


@case("sheet_image_truncated", ["000001.png"])
def _(d, fx):
    copy_world(fx, d / "w")
    replace_file(d / "w/images/000001.png", truncated(fx.world / "images/000001.png", 0.6))
    return ["data", "sheet", "w", "--out", "s.html"]


@case("sheet_image_missing", ["000001.png"])
def _(d, fx):
    copy_world(fx, d / "w"); (d / "w/images/000001.png").unlink()
    return ["data", "sheet", "w", "--out", "s.html"]


@case("sheet_keypoints_wrong_shape", ["metadata.jsonl", "keypoints"])
def _(d, fx):
    copy_world(fx, d / "w"); edit_metadata(d / "w", 0, keypoints=[[1, 2]])
    return ["data", "sheet", "w", "--out", "s.html"]


@case("sheet_keypoints_nan", ["metadata.jsonl", "keypoints"])
def _(d, fx):
    copy_world(fx, d / "w"); edit_metadata(d / "w", 0, keypoints=[[[float("nan"), 1.0, 2]] * 17])
    return ["data", "sheet", "w", "--out", "s.html"]


@case("sheet_max_samples_zero", ["--max-samples", "0"])
def _(d, fx):
    copy_world(fx, d / "w")
    return ["data", "sheet", "w", "--out", "s.html", "--max-samples", "0"]


@case("sheet_max_samples_negative", ["--max-samples", "-3"])
def _(d, fx):
    copy_world(fx, d / "w")
    return ["data", "sheet", "w", "--out", "s.html", "--max-samples", "-3"]


# data mannequin / mannequin-video --------------------------------------------------------------------------------------

M = ["data", "mannequin", "--workers", "1", "--quiet"]


@case("mannequin_out_is_a_file", ["notes.txt"])
def _(d, fx):
    write(d / "notes.txt", "mine\n")
    return [*M, "--out", "notes.txt", "--n", "1"]


@case("mannequin_out_not_empty", ["keep"])
def _(d, fx):
    keep_dir(d / "keep")
    return [*M, "--out", "keep", "--n", "1"]


@case("mannequin_out_parent_not_writable", ["locked"], needs_permissions=True)
def _(d, fx):
    (d / "locked").mkdir(); (d / "locked").chmod(0o500)
    return [*M, "--out", "locked/w", "--n", "1"]


simple("mannequin_n_zero", [*M, "--out", "w", "--n", "0"], ["--n", "0"])
simple("mannequin_n_negative", [*M, "--out", "w", "--n", "-5"], ["--n", "-5"])
simple("mannequin_n_not_a_number", [*M, "--out", "w", "--n", "many"], ["--n", "many"])
simple("mannequin_size_negative", [*M, "--out", "w", "--size", "-64"], ["--size", "-64"])
simple("mannequin_size_absurd", [*M, "--out", "w", "--size", "100000"], ["--size", "100000"])
simple("mannequin_size_too_small", [*M, "--out", "w", "--size", "8"], ["size", "8"])
simple("mannequin_seed_negative", [*M, "--out", "w", "--seed", "-1"], ["--seed", "-1"])
simple("mannequin_set_seed_negative", [*M, "--out", "w", "--n", "1", "--set", "seed=-1"], ["seed", "-1"])
simple("mannequin_workers_zero", [*M, "--out", "w", "--workers", "0"], ["--workers", "0"])
simple("mannequin_set_unknown_key", [*M, "--out", "w", "--set", "colour=red"], ["colour"])
simple("mannequin_set_wrong_type", [*M, "--out", "w", "--set", "n=many"], ["n", "many"])
simple("mannequin_set_nan", [*M, "--out", "w", "--set", "anomaly_prob=.nan"], ["anomaly_prob"])
simple("mannequin_set_inf", [*M, "--out", "w", "--set", "second_person_prob=.inf"], ["second_person_prob"])
simple("mannequin_set_without_equals", [*M, "--out", "w", "--set", "n"], ["--set", "n"])
simple("mannequin_set_empty_key", [*M, "--out", "w", "--set", "=3"], ["--set"])
simple("mannequin_set_unknown_action", [*M, "--out", "w", "--set", "action_mix={flying: 1}"], ["flying"])
simple("mannequin_set_bad_yaml_value", [*M, "--out", "w", "--set", "action_mix={walking: 1"], ["action_mix"])
simple("mannequin_config_missing", [*M, "--out", "w", "--config", "nope.yaml"], ["nope.yaml"])


@case("mannequin_config_empty", ["empty.yaml"])
def _(d, fx):
    write(d / "empty.yaml", "")
    return [*M, "--out", "w", "--config", "empty.yaml"]


@case("mannequin_config_only_comments", ["comments.yaml"])
def _(d, fx):
    write(d / "comments.yaml", "# n: 3\n\n# seed: 1\n")
    return [*M, "--out", "w", "--config", "comments.yaml"]


@case("mannequin_config_invalid_yaml", ["bad.yaml", "line"])
def _(d, fx):
    write(d / "bad.yaml", "n: [1, 2\nseed: 3\n")
    return [*M, "--out", "w", "--config", "bad.yaml"]


@case("mannequin_config_tabs", ["tabs.yaml"])
def _(d, fx):
    write(d / "tabs.yaml", "n: 2\n\tseed: 3\n")
    return [*M, "--out", "w", "--config", "tabs.yaml"]


@case("mannequin_config_top_level_list", ["list.yaml"])
def _(d, fx):
    write(d / "list.yaml", "- n: 2\n- seed: 3\n")
    return [*M, "--out", "w", "--config", "list.yaml"]


@case("mannequin_config_duplicate_key", ["dup.yaml", "n"])
def _(d, fx):
    write(d / "dup.yaml", "n: 2\nn: 3\n")
    return [*M, "--out", "w", "--config", "dup.yaml"]


@case("mannequin_config_unknown_key", ["typo.yaml", "supersampel"])
def _(d, fx):
    write(d / "typo.yaml", "n: 2\nsupersampel: 2\n")
    return [*M, "--out", "w", "--config", "typo.yaml"]


@case("mannequin_config_wrong_type", ["types.yaml", "size"])
def _(d, fx):
    write(d / "types.yaml", "size: [64, 64]\n")
    return [*M, "--out", "w", "--config", "types.yaml"]


@case("mannequin_config_is_a_directory", ["cfgdir"])
def _(d, fx):
    (d / "cfgdir").mkdir()
    return [*M, "--out", "w", "--config", "cfgdir"]


@case("mannequin_config_not_utf8", ["binary.yaml"])
def _(d, fx):
    write(d / "binary.yaml", b"n: 2\n\xff\xfe\x81\n")
    return [*M, "--out", "w", "--config", "binary.yaml"]


simple("video_frames_zero", ["data", "mannequin-video", "--out", "v", "--n", "1", "--frames", "0", "--quiet"],
       ["--frames", "0"])
simple("video_n_zero", ["data", "mannequin-video", "--out", "v", "--n", "0", "--quiet"], ["--n", "0"])


@case("video_out_is_a_file", ["notes.txt"])
def _(d, fx):
    write(d / "notes.txt", "mine\n")
    return ["data", "mannequin-video", "--out", "notes.txt", "--n", "1", "--frames", "2", "--quiet"]


# demo -----------------------------------------------------------------------------------------------------------------

@case("demo_output_dir_is_a_file", ["notes.txt"])
def _(d, fx):
    write(d / "notes.txt", "mine\n")
    return ["demo", "--output-dir", "notes.txt", "--n", "2", "--quiet"]


@case("demo_foreign_world_folder", ["world"])
def _(d, fx):
    keep_dir(d / "out/world")
    return ["demo", "--output-dir", "out", "--n", "2", "--quiet"]


@case("demo_contact_sheet_is_a_directory", ["contact_sheet.html"])
def _(d, fx):
    keep_dir(d / "out/contact_sheet.html")
    return ["demo", "--output-dir", "out", "--n", "2", "--quiet"]


simple("demo_n_zero", ["demo", "--output-dir", "out", "--n", "0", "--quiet"], ["--n", "0"])


# generate --------------------------------------------------------------------------------------------------------------

G = ["generate", "--model", "tiny-sd", "--prompt", "a man standing", "--quiet"]

simple("generate_n_zero", [*G, "--n", "0", "--out", "o"], ["--n", "0"])
simple("generate_steps_zero", [*G, "--steps", "0", "--out", "o"], ["--steps", "0"])
simple("generate_steps_negative", [*G, "--steps", "-4", "--out", "o"], ["--steps", "-4"])
simple("generate_size_not_multiple", [*G, "--size", "100", "--n", "1", "--steps", "1", "--out", "o"],
       ["--size", "100"])
simple("generate_size_negative", [*G, "--size", "-128", "--out", "o"], ["--size", "-128"])
simple("generate_size_zero", [*G, "--size", "0", "--out", "o"], ["--size", "0"])
simple("generate_size_absurd", [*G, "--size", "1000000", "--out", "o"], ["--size", "1000000"])
simple("generate_guidance_nan", [*G, "--guidance-scale", "nan", "--out", "o"], ["--guidance-scale", "nan"])
simple("generate_no_prompt", ["generate", "--model", "tiny-sd", "--out", "o"], ["--prompt"])
simple("generate_prompts_missing", ["generate", "--model", "tiny-sd", "--prompts", "nope.txt", "--out", "o"],
       ["nope.txt"])
simple("generate_unknown_shipped_model", ["generate", "--model", "./tiny-sdx", "--prompt", "a man", "--out", "o"],
       ["tiny-sdx"])


@case("generate_out_is_a_file", ["notes.txt"])
def _(d, fx):
    write(d / "notes.txt", "mine\n")
    return [*G, "--n", "1", "--steps", "1", "--out", "notes.txt"]


@case("generate_out_not_empty", ["keep"])
def _(d, fx):
    keep_dir(d / "keep")
    return [*G, "--n", "1", "--steps", "1", "--out", "keep"]


@case("generate_prompts_empty", ["prompts.txt"])
def _(d, fx):
    write(d / "prompts.txt", "")
    return ["generate", "--model", "tiny-sd", "--prompts", "prompts.txt", "--out", "o"]


@case("generate_prompts_only_comments", ["prompts.txt"])
def _(d, fx):
    write(d / "prompts.txt", "# a man standing\n\n   \n")
    return ["generate", "--model", "tiny-sd", "--prompts", "prompts.txt", "--out", "o"]


@case("generate_prompts_is_a_directory", ["prompts"])
def _(d, fx):
    (d / "prompts").mkdir()
    return ["generate", "--model", "tiny-sd", "--prompts", "prompts", "--out", "o"]


@case("generate_prompts_not_utf8", ["prompts.txt"])
def _(d, fx):
    write(d / "prompts.txt", b"a man \xff\xfe standing\n")
    return ["generate", "--model", "tiny-sd", "--prompts", "prompts.txt", "--out", "o"]


@case("generate_model_dir_without_index", ["model_index.json"])
def _(d, fx):
    (d / "m").mkdir()
    return ["generate", "--model", "m", "--prompt", "a man", "--n", "1", "--out", "o"]


@case("generate_model_truncated_unet", ["diffusion_pytorch_model.safetensors"])
def _(d, fx):
    link_model(fx.tiny_sd, d / "m")
    weights = d / "m/unet/diffusion_pytorch_model.safetensors"
    replace_file(weights, truncated(fx.tiny_sd / "unet/diffusion_pytorch_model.safetensors"))
    return ["generate", "--model", "m", "--prompt", "a man", "--n", "1", "--steps", "1", "--quiet", "--out", "o"]


@case("generate_model_garbage_vae", ["diffusion_pytorch_model.safetensors"])
def _(d, fx):
    link_model(fx.tiny_sd, d / "m")
    replace_file(d / "m/vae/diffusion_pytorch_model.safetensors", b"\x00" * 64)
    return ["generate", "--model", "m", "--prompt", "a man", "--n", "1", "--steps", "1", "--quiet", "--out", "o"]


@case("generate_model_empty_text_encoder", ["model.safetensors"])
def _(d, fx):
    link_model(fx.tiny_sd, d / "m")
    replace_file(d / "m/text_encoder/model.safetensors", b"")
    return ["generate", "--model", "m", "--prompt", "a man", "--n", "1", "--steps", "1", "--quiet", "--out", "o"]


@case("generate_model_missing_component", ["vae"])
def _(d, fx):
    link_model(fx.tiny_sd, d / "m"); shutil.rmtree(d / "m/vae")
    return ["generate", "--model", "m", "--prompt", "a man", "--n", "1", "--steps", "1", "--quiet", "--out", "o"]


@case("generate_model_index_invalid_json", ["model_index.json"])
def _(d, fx):
    link_model(fx.tiny_sd, d / "m"); replace_file(d / "m/model_index.json", b"{\"_class_name\": ")
    return ["generate", "--model", "m", "--prompt", "a man", "--n", "1", "--steps", "1", "--quiet", "--out", "o"]


@case("generate_model_unknown_pipeline_class", ["NotAPipeline"])
def _(d, fx):
    link_model(fx.tiny_sd, d / "m")
    index = json.loads((fx.tiny_sd / "model_index.json").read_text())
    index["_class_name"] = "NotAPipeline"
    replace_file(d / "m/model_index.json", json.dumps(index).encode())
    return ["generate", "--model", "m", "--prompt", "a man", "--n", "1", "--steps", "1", "--quiet", "--out", "o"]


@case("generate_model_component_wrong_class", ["unet"])
def _(d, fx):
    link_model(fx.tiny_sd, d / "m")
    index = json.loads((fx.tiny_sd / "model_index.json").read_text())
    index["unet"] = ["diffusers", "AutoencoderKL"]
    replace_file(d / "m/model_index.json", json.dumps(index).encode())
    return ["generate", "--model", "m", "--prompt", "a man", "--n", "1", "--steps", "1", "--quiet", "--out", "o"]


@case("generate_model_bad_humantune_json", ["humantune.json"])
def _(d, fx):
    link_model(fx.tiny_sd, d / "m"); replace_file(d / "m/humantune.json", b"{oops")
    return ["generate", "--model", "m", "--prompt", "a man", "--n", "1", "--steps", "1", "--quiet", "--out", "o"]


@case("generate_controlnet_missing", ["nope"])
def _(d, fx):
    write(d / "pose.json", json.dumps([[10, 10, 2]] * 17))
    return [*G, "--n", "1", "--steps", "1", "--controlnet", "./nope", "--pose", "pose.json", "--out", "o"]


@case("generate_controlnet_is_a_unet", ["unet"])
def _(d, fx):
    write(d / "pose.json", json.dumps([[10, 10, 2]] * 17))
    return [*G, "--n", "1", "--steps", "1", "--controlnet", str(fx.tiny_sd / "unet"), "--pose", "pose.json",
            "--out", "o"]


@case("generate_controlnet_with_sd3", ["--controlnet", "StableDiffusion3Pipeline"])
def _(d, fx):
    write(d / "pose.json", json.dumps([[10, 10, 2]] * 17))
    return ["generate", "--model", "tiny-sd3", "--prompt", "a man", "--quiet", "--n", "1", "--steps", "1",
            "--controlnet", str(fx.tiny_sd / "unet"), "--pose", "pose.json", "--out", "o"]


@case("generate_pose_invalid_json", ["pose.json"])
def _(d, fx):
    write(d / "pose.json", "[[1, 2, 2], ")
    link_model(fx.tiny_sd / "unet", d / "cn")
    return [*G, "--n", "1", "--steps", "1", "--controlnet", "cn", "--pose", "pose.json", "--out", "o"]


# eval ------------------------------------------------------------------------------------------------------------------

E = ["eval", "--quiet"]

simple("eval_generated_missing", [*E, "--generated", "nope", "--out", "o"], ["nope"])


@case("eval_generated_empty_folder", ["gen"])
def _(d, fx):
    (d / "gen").mkdir()
    return [*E, "--generated", "gen", "--out", "o", "--metrics", "ssim"]


@case("eval_out_is_a_file", ["notes.txt"])
def _(d, fx):
    image_folder(d / "gen"); write(d / "notes.txt", "mine\n")
    return [*E, "--generated", "gen", "--reference", "gen", "--metrics", "ssim", "--out", "notes.txt"]


@case("eval_out_not_empty", ["keep"])
def _(d, fx):
    image_folder(d / "gen"); keep_dir(d / "keep")
    return [*E, "--generated", "gen", "--reference", "gen", "--metrics", "ssim", "--out", "keep"]


@case("eval_out_is_the_generated_folder", ["gen"])
def _(d, fx):
    image_folder(d / "gen")
    return [*E, "--generated", "gen", "--reference", "gen", "--metrics", "ssim", "--out", "gen", "--overwrite"]


@case("eval_unknown_metric", ["nope"])
def _(d, fx):
    image_folder(d / "gen")
    return [*E, "--generated", "gen", "--metrics", "ssim,nope", "--out", "o"]


@case("eval_reference_missing", ["nope"])
def _(d, fx):
    image_folder(d / "gen")
    return [*E, "--generated", "gen", "--reference", "nope", "--metrics", "ssim", "--out", "o"]


@case("eval_generated_corrupt_image", ["00001.png"])
def _(d, fx):
    image_folder(d / "gen"); replace_file(d / "gen/00001.png", b"\x89PNG\r\n\x1a\n broken")
    return [*E, "--generated", "gen", "--reference", "gen", "--metrics", "ssim", "--out", "o"]


@case("eval_metadata_file_name_outside", ["../outside.png"])
def _(d, fx):
    png(d / "outside.png")
    image_folder(d / "gen", [{"file_name": "../outside.png", "text": "a man"}, {"file_name": "00001.png"}])
    return [*E, "--generated", "gen", "--metrics", "ssim", "--reference", "gen", "--out", "o"]


@case("eval_reference_pose_folder_missing_annotations", ["person_keypoints.json"])
def _(d, fx):
    copy_world(fx, d / "w"); (d / "w/annotations/person_keypoints.json").unlink()
    return [*E, "--generated", "w/images", "--reference", "w", "--metrics", "oks", "--out", "o"]


@case("eval_reference_coco_spec_without_images", ["coco:ann.json"])
def _(d, fx):
    write(d / "ann.json", "{}")
    image_folder(d / "gen")
    return [*E, "--generated", "gen", "--reference", "coco:ann.json", "--metrics", "oks", "--out", "o"]


@case("eval_prompts_empty", ["prompts.txt"])
def _(d, fx):
    image_folder(d / "gen"); write(d / "prompts.txt", "")
    return [*E, "--generated", "gen", "--prompts", "prompts.txt", "--metrics", "ssim", "--reference", "gen",
            "--out", "o"]


@case("eval_inception_weights_corrupt", ["inception.pth"])
def _(d, fx):
    image_folder(d / "gen"); write(d / "inception.pth", b"not a torch file")
    return [*E, "--generated", "gen", "--reference", "gen", "--metrics", "fid", "--inception-weights",
            "inception.pth", "--out", "o"]


# anomaly ---------------------------------------------------------------------------------------------------------------

S = ["anomaly", "scan", "--model", "tiny-sd", "--prompt", "a man lying on the grass", "--quiet"]

simple("scan_n_zero", [*S, "--n", "0", "--out", "o"], ["--n", "0"])
simple("scan_steps_zero", [*S, "--steps", "0", "--out", "o"], ["--steps", "0"])
simple("scan_size_not_multiple", [*S, "--n", "1", "--steps", "1", "--size", "100", "--out", "o"], ["--size", "100"])
simple("scan_worst_negative", [*S, "--worst", "-1", "--out", "o"], ["--worst", "-1"])
simple("scan_lora_missing", [*S, "--n", "1", "--steps", "1", "--lora", "nope", "--out", "o"], ["nope"])


@case("scan_out_is_a_file", ["notes.txt"])
def _(d, fx):
    write(d / "notes.txt", "mine\n")
    return [*S, "--n", "1", "--steps", "1", "--out", "notes.txt"]


@case("scan_prompts_empty", ["prompts.txt"])
def _(d, fx):
    write(d / "prompts.txt", "\n\n")
    return ["anomaly", "scan", "--model", "tiny-sd", "--prompts", "prompts.txt", "--out", "o"]


@case("scan_lora_corrupt", ["pytorch_lora_weights.safetensors"], needs_loras=True)
def _(d, fx):
    write(d / "lora/pytorch_lora_weights.safetensors", truncated(fx.lora_sd / "pytorch_lora_weights.safetensors"))
    return [*S, "--n", "1", "--steps", "1", "--lora", "lora", "--out", "o"]


@case("scan_lora_wrong_family", ["lora-sd3", "StableDiffusionPipeline"], needs_loras=True)
def _(d, fx):
    shutil.copytree(fx.lora_sd3, d / "lora-sd3")
    return [*S, "--n", "1", "--steps", "1", "--lora", "lora-sd3", "--out", "o"]


C = ["anomaly", "collect", "--prompt", "a man lying on the grass", "--quiet"]

simple("collect_n_zero", [*C, "--n", "0", "--out", "o"], ["--n", "0"])
simple("collect_size_negative", [*C, "--size", "-32", "--out", "o"], ["--size", "-32"])
simple("collect_from_missing", [*C, "--from", "nope", "--out", "o"], ["nope"])


@case("collect_out_is_a_file", ["notes.txt"])
def _(d, fx):
    write(d / "notes.txt", "mine\n")
    return [*C, "--n", "1", "--out", "notes.txt"]


@case("collect_from_file_name_outside", ["../outside.png"])
def _(d, fx):
    png(d / "outside.png")
    image_folder(d / "mine", [{"file_name": "../outside.png", "text": "a man lying"}, {"file_name": "00001.png"}])
    return [*C, "--from", "mine", "--out", "o"]


@case("collect_from_corrupt_image", ["00000.png"])
def _(d, fx):
    image_folder(d / "mine"); replace_file(d / "mine/00000.png", b"garbage")
    return [*C, "--from", "mine", "--out", "o"]


CM = ["anomaly", "compare", "--base", "tiny-sd", "--prompt", "a man lying on the grass", "--quiet"]

simple("compare_tuned_missing", [*CM, "--tuned", "nope", "--n", "1", "--steps", "1", "--out", "o"], ["nope"])
simple("compare_n_zero", [*CM, "--tuned", "x", "--n", "0", "--out", "o"], ["--n", "0"])


@case("compare_tuned_corrupt_lora", ["pytorch_lora_weights.safetensors"], needs_loras=True)
def _(d, fx):
    write(d / "lora/pytorch_lora_weights.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}")
    return [*CM, "--tuned", "lora", "--n", "1", "--steps", "1", "--out", "o"]


@case("compare_out_not_empty", ["keep"], needs_loras=True)
def _(d, fx):
    keep_dir(d / "keep")
    return [*CM, "--tuned", str(fx.lora_sd), "--n", "1", "--steps", "1", "--out", "keep"]


@case("compare_control_prompts_empty", ["control.txt"], needs_loras=True)
def _(d, fx):
    write(d / "control.txt", "# nothing\n")
    return [*CM, "--tuned", str(fx.lora_sd), "--control-prompts", "control.txt", "--n", "1", "--out", "o"]


# train / pretrain ------------------------------------------------------------------------------------------------------

QUICK = str(ROOT / "configs/controlnet_pose/quick.yaml")
DB = str(ROOT / "configs/dreambooth_lora/tiny-sd-lying.yaml")

simple("train_unknown_recipe", ["train", "nope", "--output-dir", "run"], ["nope"])
simple("train_config_missing", ["train", "controlnet-pose", "--config", "nope.yaml", "--output-dir", "run"],
       ["nope.yaml"])
simple("train_set_unknown_key", ["pretrain", "--output-dir", "run", "--set", "trian.max_steps=3"], ["trian"])
simple("train_set_index_out_of_range",
       ["train", "controlnet-pose", "--config", QUICK, "--output-dir", "run", "--set", "stages.5.heatmap.w=2"],
       ["stages.5"])
simple("train_world_size_not_multiple", ["pretrain", "--output-dir", "run", "--set", "world.size=36"],
       ["world.size", "36"])
simple("train_max_steps_zero", ["pretrain", "--output-dir", "run", "--set", "train.max_steps=0"],
       ["max_steps", "0"])
simple("train_learning_rate_nan", ["pretrain", "--output-dir", "run", "--set", "train.learning_rate=.nan"],
       ["learning_rate"])
simple("train_learning_rate_negative", ["pretrain", "--output-dir", "run", "--set", "train.learning_rate=-1e-4"],
       ["learning_rate"])
simple("train_batch_size_zero", ["train", "controlnet-pose", "--config", QUICK, "--output-dir", "run",
                                 "--set", "stages.0.train.batch_size=0"], ["batch_size", "0"])
simple("train_stages_empty", ["train", "controlnet-pose", "--config", QUICK, "--output-dir", "run",
                              "--set", "stages=[]"], ["stages"])
simple("train_base_model_missing", ["train", "controlnet-pose", "--config", QUICK, "--output-dir", "run",
                                    "--set", "base_model=./no-such-model"], ["no-such-model"])
simple("train_eval_samples_negative", ["train", "controlnet-pose", "--config", QUICK, "--output-dir", "run",
                                       "--set", "eval.samples=-1"], ["samples"])
simple("dreambooth_images_per_prompt_zero", ["train", "dreambooth-lora", "--config", DB, "--output-dir", "run",
                                             "--set", "instance.images_per_prompt=0"], ["images_per_prompt", "0"])
simple("dreambooth_lora_rank_zero", ["train", "dreambooth-lora", "--config", DB, "--output-dir", "run",
                                     "--set", "lora.denoiser.rank=0"], ["rank", "0"])


@case("train_config_empty", ["empty.yaml"])
def _(d, fx):
    write(d / "empty.yaml", "\n")
    return ["train", "controlnet-pose", "--config", "empty.yaml", "--output-dir", "run"]


@case("pretrain_config_only_comments", ["comments.yaml"])
def _(d, fx):
    write(d / "comments.yaml", "# base_model: tiny-sd\n")
    return ["pretrain", "--config", "comments.yaml", "--output-dir", "run"]


@case("train_output_dir_is_a_file", ["notes.txt"])
def _(d, fx):
    write(d / "notes.txt", "mine\n")
    return ["train", "controlnet-pose", "--config", QUICK, "--output-dir", "notes.txt"]


@case("train_pose_folder_missing_annotations", ["person_keypoints.json"])
def _(d, fx):
    copy_world(fx, d / "w"); (d / "w/annotations/person_keypoints.json").unlink()
    return ["train", "controlnet-pose", "--config", QUICK, "--output-dir", "run",
            "--set", "train_data={kind: pose_folder, path: w}"]


@case("train_pose_folder_file_name_outside", ["../outside.png"])
def _(d, fx):
    copy_world(fx, d / "w"); png(d / "outside.png")
    edit_metadata(d / "w", 0, file_name="../outside.png")
    ann = json.loads((d / "w/annotations/person_keypoints.json").read_text())
    ann["images"][0]["file_name"] = "../outside.png"
    write(d / "w/annotations/person_keypoints.json", json.dumps(ann))
    return ["train", "controlnet-pose", "--config", QUICK, "--output-dir", "run",
            "--set", "train_data={kind: pose_folder, path: w}"]


@case("train_coco_file_name_absolute", ["file_name", "outside.png"])
def _(d, fx):
    copy_world(fx, d / "w"); png(d / "outside.png", 64)
    ann = json.loads((d / "w/annotations/person_keypoints.json").read_text())
    ann["images"][0]["file_name"] = str(d / "outside.png")
    write(d / "ann.json", json.dumps(ann))
    return ["train", "controlnet-pose", "--config", QUICK, "--output-dir", "run",
            "--set", "train_data={kind: coco, path: ann.json, image_dir: w}"]


# models ----------------------------------------------------------------------------------------------------------------

simple("models_path_unknown", ["models", "path", "nope"], ["nope"])
simple("models_ship_missing_dir", ["models", "ship", "nope", "--name", "x"], ["nope"])


@case("models_ship_name_is_a_path", ["--name"])
def _(d, fx):
    link_model(fx.tiny_sd, d / "m"); keep_dir(d / "victim")
    return ["models", "ship", "m", "--name", str(d / "victim")]


@case("models_ship_name_climbs_out", ["--name", ".."])
def _(d, fx):
    link_model(fx.tiny_sd, d / "m")
    return ["models", "ship", "m", "--name", "../../nowhere"]


@case("models_ship_truncated_weights", ["diffusion_pytorch_model.safetensors"])
def _(d, fx):
    link_model(fx.tiny_sd, d / "m")
    replace_file(d / "m/unet/diffusion_pytorch_model.safetensors",
                 truncated(fx.tiny_sd / "unet/diffusion_pytorch_model.safetensors"))
    return ["models", "ship", "m", "--name", "bad-inputs-corpus-never-shipped"]


# study -----------------------------------------------------------------------------------------------------------------

@case("study_create_out_is_a_file", ["notes.txt"])
def _(d, fx):
    image_folder(d / "a"); image_folder(d / "b"); write(d / "notes.txt", "mine\n")
    return ["study", "create", "--system", "a=a", "--system", "b=b", "--out", "notes.txt"]


@case("study_create_out_not_empty", ["keep"])
def _(d, fx):
    image_folder(d / "a"); image_folder(d / "b"); keep_dir(d / "keep")
    return ["study", "create", "--system", "a=a", "--system", "b=b", "--out", "keep"]


@case("study_create_system_missing", ["nope"])
def _(d, fx):
    image_folder(d / "a")
    return ["study", "create", "--system", "a=a", "--system", "b=nope", "--out", "s"]


@case("study_create_participants_zero", ["--participants", "0"])
def _(d, fx):
    image_folder(d / "a"); image_folder(d / "b")
    return ["study", "create", "--system", "a=a", "--system", "b=b", "--participants", "0", "--out", "s"]


@case("study_create_file_name_outside", ["../outside.png"])
def _(d, fx):
    png(d / "outside.png"); image_folder(d / "a")
    image_folder(d / "b", [{"file_name": "../outside.png", "text": "a man standing", "seed": 0},
                           {"file_name": "00001.png", "text": "a man standing", "seed": 1}])
    edit_metadata(d / "a", 0, seed=0); edit_metadata(d / "a", 1, seed=1)
    return ["study", "create", "--system", "a=a", "--system", "b=b", "--out", "s"]


# an error while a progress bar is on the screen --------------------------------------------------------------------------

@case("progress_bar_then_error", ["00001.png"])
def _(d, fx):
    image_folder(d / "gen", n=3); replace_file(d / "gen/00001.png", b"garbage")
    return ["eval", "--generated", "gen", "--reference", "gen", "--metrics", "ssim", "--out", "o"]


@case("progress_bar_then_error_collect", ["00001.png"])
def _(d, fx):
    image_folder(d / "mine", n=3); replace_file(d / "mine/00001.png", b"garbage")
    return ["anomaly", "collect", "--prompt", "a man lying on the grass", "--from", "mine", "--out", "o"]


FAST = [
    "sheet_out_is_directory", "sheet_out_is_the_dataset", "sheet_file_name_parent_dir", "sheet_file_name_absolute",
    "sheet_image_truncated", "sheet_max_samples_zero", "sheet_metadata_not_utf8",
    "mannequin_out_is_a_file", "mannequin_size_absurd", "mannequin_config_empty", "mannequin_config_invalid_yaml",
    "mannequin_set_nan", "demo_contact_sheet_is_a_directory", "generate_n_zero", "generate_size_negative",
    "generate_prompts_not_utf8", "generate_model_truncated_unet", "eval_reference_pose_folder_missing_annotations",
    "eval_out_is_a_file", "train_config_empty", "models_ship_name_is_a_path", "progress_bar_then_error",
]
"""The cases ``tests/test_cli_bad_inputs.py`` runs: one or two of each kind, about a minute in all."""


# --- running a case -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def captured():
    """Capture file descriptors 1 and 2 (and so sys.stdout/sys.stderr, loggers, warnings, C libraries) in files;
    yields a dict filled with 'stdout' and 'stderr' on exit."""
    out: dict[str, str] = {}
    sys.stdout.flush(); sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    files = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    streams = sys.stdout, sys.stderr  # under pytest these are its own objects, not fds 1 and 2
    try:
        for fd, f in files.items():
            os.dup2(f.fileno(), fd)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)
        yield out
    finally:
        sys.stdout.flush(); sys.stderr.flush()
        sys.stdout, sys.stderr = streams
        for fd in (1, 2):
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
        for fd, key in ((1, "stdout"), (2, "stderr")):
            files[fd].seek(0)
            out[key] = files[fd].read().decode("utf-8", "replace")
            files[fd].close()


def run_in_process(argv: list[str], cwd: Path) -> tuple[int | None, str, str]:
    from humantune.cli import main

    before = Path.cwd()
    os.chdir(cwd)
    try:
        with captured() as out:
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
            except BaseException:  # noqa: BLE001 - an escaped exception is what the corpus looks for
                traceback.print_exc()
                code = None
    finally:
        os.chdir(before)
    return code, out["stdout"], out["stderr"]


def run_subprocess(argv: list[str], cwd: Path) -> tuple[int | None, str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    try:
        proc = subprocess.run([sys.executable, "-m", "humantune", *argv], cwd=cwd, capture_output=True, text=True,
                              timeout=CASE_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {CASE_TIMEOUT_S} s"
    return proc.returncode, proc.stdout, proc.stderr


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path → sha256 of every file ('dir' for folders) under ``folder`` (symlinks followed)."""
    state = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_dir():
            state[rel] = "dir"
        elif path.is_file():
            state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[rel] = "other"
    return state


def is_progress_line(line: str) -> bool:
    """A tqdm bar line (carriage-return updates, ``|###|`` bars, it/s rates)."""
    return "\r" in line or ("|" in line and ("it/s" in line or "s/it" in line or "%" in line))


def judge(code: int | None, stderr: str, names: list[str], before: dict[str, str], after: dict[str, str],
          ) -> list[str]:
    """Why the outcome is not clean (empty when it is)."""
    problems = []
    if code != 2:
        problems.append(f"exit status {code}, not 2")
    if "Traceback (most recent call last)" in stderr:
        problems.append("traceback")
    lines = [line for line in stderr.split("\n") if line.strip()]
    errors = [line for line in lines if ERROR_PREFIX in line]
    others = [line for line in lines if ERROR_PREFIX not in line and not is_progress_line(line)]
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    else:
        line = errors[0]
        if not line.startswith(ERROR_PREFIX):
            problems.append("error line glued to other output")
        missing = [n for n in names if n not in line]
        if missing:
            problems.append(f"does not name {missing}")
    if others:
        problems.append(f"{len(others)} other stderr line(s): {others[0][:120]!r}")
    lost = sorted(k for k, v in before.items() if after.get(k) != v)
    if lost:
        problems.append(f"data lost or changed: {lost[:4]}")
    left = sorted(k for k in after if k not in before and "/" not in k)
    if left:
        problems.append(f"left behind: {left[:4]}")
    return problems


def run_case(c: Case, fx: Fixtures, root: Path, subprocess_mode: bool = False) -> dict:
    d = root / c.name
    d.mkdir(parents=True)
    argv = c.setup(d, fx)
    before = snapshot(d)
    start = time.perf_counter()
    code, stdout, stderr = (run_subprocess if subprocess_mode else run_in_process)(argv, d)
    seconds = time.perf_counter() - start
    after = snapshot(d)
    problems = judge(code, stderr, c.names, before, after)
    error = next((line for line in stderr.split("\n") if ERROR_PREFIX in line), "")
    for path in d.rglob("*"):  # let the cleanup delete what a permission case locked
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    return {"case": c.name, "argv": argv, "clean": not problems, "problems": problems, "exit_status": code,
            "error": error.strip(), "stderr_tail": stderr[-600:] if problems else "", "seconds": round(seconds, 2)}


def selected(only: list[str] | None) -> list[Case]:
    if not only:
        return list(CASES)
    by_name = {c.name: c for c in CASES}
    unknown = [n for n in only if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(unknown)}")
    return [by_name[n] for n in only]


def run_corpus(cases: list[Case], root: Path, subprocess_mode: bool = False, progress: bool = False) -> list[dict]:
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    fx = Fixtures(root / "_fixtures")
    fx.root.mkdir(parents=True, exist_ok=True)
    fx.make(need_loras=any(c.needs_loras for c in cases))
    rows = []
    for c in cases:
        if c.needs_permissions and is_root:
            rows.append({"case": c.name, "skipped": "runs as root: permissions do not apply"})
            continue
        row = run_case(c, fx, root / "cases", subprocess_mode)
        rows.append(row)
        if progress:
            mark = "clean" if row["clean"] else "UNCLEAN: " + "; ".join(row["problems"])
            print(f"{c.name:48s} {row['seconds']:6.1f}s  {mark}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subprocess", action="store_true", help="run each case as `python -m humantune ...`")
    ap.add_argument("--only", help="comma-separated case names")
    ap.add_argument("--fast", action="store_true", help="only the fast subset the tests run")
    ap.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/bad_inputs.json)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cases = selected(FAST if args.fast else (args.only.split(",") if args.only else None))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bad_inputs.") as tmp:
        rows = run_corpus(cases, Path(tmp), args.subprocess, progress=True)
    ran = [r for r in rows if "skipped" not in r]
    clean = sum(r["clean"] for r in ran)
    print(f"\n{clean} clean of {len(ran)} ({len(rows) - len(ran)} skipped) in {time.perf_counter() - start:.0f} s "
          f"({'subprocess' if args.subprocess else 'in-process'})")
    for r in ran:
        if not r["clean"]:
            print(f"  {r['case']}: {'; '.join(r['problems'])}\n      {r['error'] or r['stderr_tail'][-200:]!r}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchmark_io import write_result

    path = write_result("bad_inputs", {
        "mode": "subprocess" if args.subprocess else "in-process", "clean": clean, "total": len(ran),
        "skipped": [r for r in rows if "skipped" in r], "cases": ran,
    }, args.out)
    print(f"wrote {path}")
    return 0 if clean == len(ran) else 1


if __name__ == "__main__":
    sys.exit(main())
