"""The ``humantune`` command line: one entry point, a subcommand per job, ``--help`` on each.

User mistakes (a missing file, a bad config key) print one line ``humantune: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

# Library chatter (transformers' torchvision notice, diffusers' per-component loading bars, hub retries) is not
# for our users; humantune prints its own progress. Set before transformers/diffusers are imported.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's TFLite notices

from humantune.threads import apply_default_threads  # noqa: E402

apply_default_threads()  # the free CPUs unless OMP_NUM_THREADS is set; before torch loads

from humantune import __version__  # noqa: E402
from humantune.cli_checks import (  # noqa: E402
    LineEnd, OneLineParser, check_output_file, check_output_folder, finite_float, image_size, non_negative_int,
    positive_int, report,
)
from humantune.errors import HumantuneError  # noqa: E402
from humantune.studies.entprog_cli import add_entprog_parser  # noqa: E402
from humantune.studies.preference.cli import add_study_parser  # noqa: E402
from humantune.train.processes import exit_process, process_group_up  # noqa: E402

CONFIG_HELP = "YAML config file; every key can also be overridden with --set"
SET_HELP = "override a config value: --set key=value (repeatable; dotted keys for nested values)"


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _check_model_size(model: str, size: int | None) -> None:
    """--size against a local or shipped model's multiple, before anything loads."""
    from humantune.models.generation import check_image_size, resolve_model

    if size is not None:
        source = resolve_model(model)
        if Path(source).is_dir():
            check_image_size(source, size, size)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help=CONFIG_HELP)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", type=Path, required=True, help="run directory (re-run to resume)")
    _add_config_args(p)
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints and start over")
    p.add_argument("--allow-config-change", action="store_true",
                   help="continue a run whose config.yaml differs from this config (recorded in config_changes.jsonl)")


def _overrides(args: argparse.Namespace, **flags: object) -> list[str]:
    """``--set`` values followed by the shortcut flags that were given (shortcuts win)."""
    out = list(args.overrides)
    out += [f"{k}={v}" for k, v in flags.items() if v is not None]
    return out


# --- data ---------------------------------------------------------------------------------------------------------


def cmd_data_mannequin(args: argparse.Namespace) -> int:
    from humantune.config import load_config
    from humantune.data.mannequin.world import MannequinConfig, write_world

    check_output_folder(args.out, args.overwrite)
    cfg = load_config(MannequinConfig, args.config, _overrides(args, n=args.n, seed=args.seed, size=args.size))
    out = write_world(cfg, args.out, workers=args.workers, overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {cfg.n} images to {out} (COCO keypoints: {out / 'annotations/person_keypoints.json'})")
    return 0


def cmd_data_video(args: argparse.Namespace) -> int:
    from humantune.config import load_config
    from humantune.data.mannequin.video import MannequinVideoConfig, write_video_world

    check_output_folder(args.out, args.overwrite)
    cfg = load_config(MannequinVideoConfig, args.config,
                      _overrides(args, n=args.n, seed=args.seed, size=args.size, frames=args.frames))
    out = write_video_world(cfg, args.out, workers=args.workers, overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {cfg.n} clips of {cfg.frames} frames to {out} (manifest: {out / 'manifest.json'})")
    return 0


def cmd_data_sheet(args: argparse.Namespace) -> int:
    from humantune.report.contact_sheet import write_contact_sheet

    check_output_file(args.out)
    out = write_contact_sheet(args.dataset, args.out, max_samples=args.max_samples)
    print(f"wrote {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded-default main job: render a small mannequin world and its contact sheet."""
    from humantune.config import load_config
    from humantune.data.mannequin.world import MannequinConfig, write_world
    from humantune.report.contact_sheet import write_contact_sheet

    out = Path(args.output_dir)
    check_output_folder(out, overwrite=True, option="--output-dir")
    check_output_file(out / "contact_sheet.html", option="--output-dir")
    cfg = load_config(MannequinConfig, None, [f"n={args.n}", f"seed={args.seed}"])
    # Re-running the demo replaces its own earlier world, never a folder it did not write.
    own_world = (out / "world" / "world.json").is_file()
    world = write_world(cfg, out / "world", overwrite=own_world, progress=not args.quiet)
    sheet = write_contact_sheet(world, out / "contact_sheet.html", max_samples=args.n)
    print(f"mannequin world: {world}\ncontact sheet:   {sheet}")
    return 0


# --- training -----------------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from humantune.config import load_config
    from humantune.recipes import RECIPES, load_recipe

    if args.recipe not in RECIPES:
        raise HumantuneError(f"unknown recipe '{args.recipe}'; known: {', '.join(RECIPES)}")
    config_cls, run, _ = load_recipe(args.recipe)
    check_output_folder(args.output_dir, overwrite=True, option="--output-dir")  # a run folder is re-entered
    cfg = load_config(config_cls, args.config, args.overrides)
    out = run(cfg, args.output_dir, resume=not args.no_resume, allow_config_change=args.allow_config_change)
    print(f"{args.recipe}: wrote {out}")
    return 0


# --- models -------------------------------------------------------------------------------------------------------


def cmd_models_list(args: argparse.Namespace) -> int:
    from humantune.models.generation import model_info, shipped_models

    models = shipped_models()
    if not models:
        print("no shipped models")
        return 0
    for name, path in models.items():
        info = model_info(path)
        index = json.loads((path / "model_index.json").read_text())
        print(f"{name:12s} {index.get('_class_name', '?'):28s} {info.get('family', '?'):4s} {path}")
    return 0


def cmd_models_path(args: argparse.Namespace) -> int:
    from humantune.models.generation import shipped_models

    models = shipped_models()
    if args.name not in models:
        raise HumantuneError(f"no shipped model '{args.name}'; shipped: {', '.join(models) or 'none'}")
    print(models[args.name])
    return 0


def cmd_models_ship(args: argparse.Namespace) -> int:
    from humantune.models.shipping import check_float32_on_load, model_size_mb, ship_model

    name = args.name
    if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\:"):
        raise HumantuneError(f"--name '{name}' must be a plain folder name (no path): the model goes into "
                             "humantune/assets/models/NAME")
    if (Path(args.model_dir) / "model_index.json").is_file():
        from humantune.models.generation import check_pipeline_dir

        check_pipeline_dir(Path(args.model_dir))
    out = ship_model(args.model_dir, name)
    check_float32_on_load(out)
    print(f"shipped {args.name}: {out} ({model_size_mb(out):.1f} MB)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from humantune.io import new_output_dir
    from humantune.models.generation import generate, read_prompts

    prompts = list(args.prompt) + (read_prompts(args.prompts) if args.prompts else [])
    if not prompts:
        raise HumantuneError("give at least one --prompt TEXT or --prompts FILE")
    check_output_folder(args.out, args.overwrite, inputs={"--prompts": args.prompts, "--pose": args.pose,
                                                          "--model": args.model, "--controlnet": args.controlnet})
    _check_model_size(args.model, args.size)
    with new_output_dir(args.out, args.overwrite) as tmp:
        n = generate(args.model, prompts, tmp, n=args.n, seed=args.seed, pose=args.pose, controlnet=args.controlnet,
                     steps=args.steps, guidance_scale=args.guidance_scale, size=args.size, progress=not args.quiet)
    print(f"wrote {n} images to {args.out} (metadata.jsonl lists prompt and seed of each)")
    return 0


# --- evaluation ---------------------------------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from humantune.studies.evaluation import evaluate

    check_output_folder(args.out, args.overwrite, inputs={"--generated": args.generated,
                                                          "--reference": args.reference, "--prompts": args.prompts})
    result = evaluate(
        args.generated, args.reference, out_dir=args.out, prompts=args.prompts, metrics=args.metrics,
        area_convention=args.area_convention, pairing=args.pairing, inception_weights=args.inception_weights,
        lpips_net=args.lpips_net, lpips_weights=args.lpips_weights, lpips_backbone_weights=args.lpips_backbone_weights,
        clip_model=args.clip_model, overwrite=args.overwrite, progress=not args.quiet,
    )
    for name, entry in result.summary.get("metrics", {}).items():
        value = entry.get("value") if isinstance(entry, dict) else entry
        print(f"{name:20s} {value if not isinstance(value, float) else f'{value:.4f}'}")
    print(f"metrics: {result.metrics_path}\nreport:  {result.report_path}")
    return 0


# --- anomaly workflow ---------------------------------------------------------------------------------------------


def _prompt_list(args: argparse.Namespace, flag: str = "prompts") -> list[str]:
    from humantune.models.generation import read_prompts

    prompts = list(getattr(args, "prompt", None) or [])
    path = getattr(args, flag, None)
    return prompts + (read_prompts(path) if path else [])


def cmd_anomaly_scan(args: argparse.Namespace) -> int:
    from humantune.studies.anomaly.scan import scan

    prompts = _prompt_list(args)
    if not prompts:
        raise HumantuneError("give --prompts FILE or at least one --prompt TEXT")
    check_output_folder(args.out, args.overwrite, inputs={"--prompts": args.prompts, "--lora": args.lora,
                                                          "--model": args.model})
    _check_model_size(args.model, args.size)
    if args.lora is not None:
        from humantune.models.generation import resolve_model
        from humantune.models.lora import check_lora

        check_lora(args.lora, resolve_model(args.model))
    result = scan(args.model, prompts, args.n, args.seed, args.out, lora=args.lora, steps=args.steps,
                  guidance_scale=args.guidance_scale, size=args.size, worst=args.worst, overwrite=args.overwrite,
                  progress=not args.quiet)
    for row in result["prompts"]:
        print(f"{row['rank']:3d}  {row['rate']:.3f}  [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}]  {row['prompt']}")
    print(f"scan:   {Path(args.out) / 'scan.json'}\nreport: {Path(args.out) / 'report.html'}")
    return 0


def cmd_anomaly_collect(args: argparse.Namespace) -> int:
    from humantune.data.mannequin.prompted import collect

    prompts = _prompt_list(args)
    if not prompts and args.source is None:
        raise HumantuneError("give --prompt TEXT or --prompts FILE (the prompt the correct images show)")
    check_output_folder(args.out, args.overwrite, inputs={"--from": args.source, "--prompts": args.prompts})
    out = collect(prompts, args.out, n=args.n, seed=args.seed, size=args.size, source=args.source,
                  appearance=args.appearance, overwrite=args.overwrite, progress=not args.quiet)
    count = sum(1 for line in (out / "metadata.jsonl").read_text().splitlines() if line.strip())
    print(f"wrote {count} correct images to {out} (metadata.jsonl: file_name, text)")
    return 0


def _check_tuned(base: str, tuned: Path) -> None:
    """--tuned before any work: a whole pipeline folder is checked as a model, a LoRA against the base model."""
    from humantune.models.generation import check_pipeline_dir, resolve_model
    from humantune.models.lora import check_lora

    if (Path(tuned) / "model_index.json").is_file():
        check_pipeline_dir(Path(tuned))
    else:
        check_lora(tuned, resolve_model(base))


def cmd_anomaly_compare(args: argparse.Namespace) -> int:
    from humantune.models.generation import read_prompts
    from humantune.studies.anomaly.compare import compare

    targets = _prompt_list(args)
    if not targets:
        raise HumantuneError("give --prompts FILE or at least one --prompt TEXT (the target prompts)")
    controls = read_prompts(args.control_prompts) if args.control_prompts else []
    check_output_folder(args.out, args.overwrite, inputs={
        "--tuned": args.tuned, "--reference": args.reference, "--prompts": args.prompts,
        "--control-prompts": args.control_prompts, "--base": args.base})
    _check_model_size(args.base, args.size)
    _check_tuned(args.base, args.tuned)
    result = compare(args.base, args.tuned, targets, controls, n=args.n, seed=args.seed, out=args.out,
                     reference_dir=args.reference, inception_weights=args.inception_weights, steps=args.steps,
                     guidance_scale=args.guidance_scale, size=args.size, overwrite=args.overwrite,
                     progress=not args.quiet)
    for name, c in result["anomaly_rate"].items():
        d = c["difference"]
        print(f"anomaly rate ({name:7s}) base {c['base']['rate']:.3f} -> tuned {c['tuned']['rate']:.3f}  "
              f"(difference {d['value']:+.3f}, 95% CI [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}])")
    for name, c in result["attribute_accuracy"].items():
        if "skipped" not in c:
            print(f"attribute accuracy ({name:7s}) base {c['base']['value']:.3f} -> tuned {c['tuned']['value']:.3f}")
    out = Path(args.out)
    print(f"compare: {out / 'compare.json'}\nreport:  {out / 'report.html'}\n"
          f"pairs:   {out / 'pairs' / 'index.html'} (key: {out / 'key.json'})")
    return 0


# --- parser -------------------------------------------------------------------------------------------------------


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    """--steps / --guidance-scale / --size, each defaulting to the model's own (its humantune.json)."""
    p.add_argument("--steps", type=positive_int, help="sampling steps (default: the model's own)")
    p.add_argument("--guidance-scale", type=finite_float, help="classifier-free guidance (default: the model's own)")
    p.add_argument("--size", type=image_size, help="image size (default: the model's own)")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """--out (a new or empty folder) / --overwrite / --quiet."""
    p.add_argument("--out", type=Path, required=True, help="output folder (must be empty or absent)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    from humantune.config import describe_config

    parser = OneLineParser(
        prog="humantune", formatter_class=_formatter,
        description="Fine-tune diffusion models so they draw humans better, and measure it.",
    )
    parser.add_argument("--version", action="version", version=f"humantune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", formatter_class=_formatter, help="render a small mannequin world + HTML contact sheet",
                          description="The embedded default: render a small mannequin world and an HTML contact "
                                      "sheet with keypoints and captions overlaid.")
    demo.add_argument("--output-dir", type=Path, default=Path("out/demo"), help="where to write (default: out/demo)")
    demo.add_argument("--n", type=positive_int, default=48, help="number of images (default: 48)")
    demo.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", formatter_class=_formatter, help="make and inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    from humantune.data.mannequin.video import MannequinVideoConfig
    from humantune.data.mannequin.world import MannequinConfig

    m = data_sub.add_parser(
        "mannequin", formatter_class=_formatter, help="render a mannequin world (images + exact pose ground truth)",
        description="Render procedurally drawn people with exact COCO-17 keypoints, masks, OpenPose conditions and "
                    "captions. Same seed -> byte-identical output.",
        epilog=describe_config(MannequinConfig, "config keys (--config FILE / --set key=value):"),
    )
    m.add_argument("--out", type=Path, required=True, help="output folder (must be empty or absent)")
    m.add_argument("--n", type=positive_int, help="number of images (config key n)")
    m.add_argument("--seed", type=non_negative_int, help="random seed (config key seed)")
    m.add_argument("--size", type=image_size, help="image size in pixels (config key size)")
    _add_config_args(m)
    m.add_argument("--workers", type=positive_int, help="parallel worker processes (default: all cores)")
    m.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=cmd_data_mannequin)

    v = data_sub.add_parser(
        "mannequin-video", formatter_class=_formatter, help="render mannequin video clips with per-frame ground truth",
        description="Render clips of one person moving smoothly (walk/run cycles, dances, waves) with the same "
                    "appearance in every frame; per-frame keypoints, condition images, masks and a JSON manifest.",
        epilog=describe_config(MannequinVideoConfig, "config keys (--config FILE / --set key=value):"),
    )
    v.add_argument("--out", type=Path, required=True, help="output folder (must be empty or absent)")
    v.add_argument("--n", type=positive_int, help="number of clips (config key n)")
    v.add_argument("--frames", type=positive_int, help="frames per clip (config key frames)")
    v.add_argument("--seed", type=non_negative_int, help="random seed (config key seed)")
    v.add_argument("--size", type=image_size, help="frame size in pixels (config key size)")
    _add_config_args(v)
    v.add_argument("--workers", type=positive_int, help="parallel worker processes (default: all cores)")
    v.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=cmd_data_video)

    s = data_sub.add_parser("sheet", formatter_class=_formatter, help="HTML contact sheet of a pose dataset folder",
                            description="Write a self-contained HTML page showing images with keypoints, conditions "
                                        "and captions of a humantune pose folder.")
    s.add_argument("dataset", type=Path, help="dataset folder (with metadata.jsonl)")
    s.add_argument("--out", type=Path, required=True, help="output HTML file")
    s.add_argument("--max-samples", type=positive_int, default=64, help="samples to show (default: 64)")
    s.set_defaults(func=cmd_data_sheet)

    from humantune.recipes import RECIPES

    recipe_list = "\n".join(f"  {name:16s} {entry.description}" for name, entry in RECIPES.items())
    t = sub.add_parser("train", formatter_class=_formatter, help="run a training recipe",
                       description="Run a recipe. Running the same command again resumes from the last checkpoint.",
                       epilog="recipes:\n" + recipe_list)
    t.add_argument("recipe", help="recipe name: " + ", ".join(RECIPES))
    _add_train_args(t)
    t.set_defaults(func=cmd_train)

    from humantune.recipes.pretrain import PretrainConfig

    pt = sub.add_parser("pretrain", formatter_class=_formatter, help="train a tiny base model (= train pretrain)",
                        description="Pretrain a tiny StableDiffusionPipeline (family sd) or StableDiffusion3Pipeline "
                                    "(family sd3) from scratch on the mannequin world. Same as `train pretrain`.",
                        epilog=describe_config(PretrainConfig, "config keys (--config FILE / --set key=value):"))
    _add_train_args(pt)
    pt.set_defaults(func=cmd_train, recipe="pretrain")

    md = sub.add_parser("models", formatter_class=_formatter, help="the base models shipped with humantune")
    md_sub = md.add_subparsers(dest="models_command", metavar="MODELS_COMMAND", required=True)
    md_sub.add_parser("list", help="list shipped models").set_defaults(func=cmd_models_list)
    mp = md_sub.add_parser("path", help="print a shipped model's directory")
    mp.add_argument("name")
    mp.set_defaults(func=cmd_models_path)
    ms = md_sub.add_parser("ship", help="copy a trained pipeline into humantune/assets/models (fp16 denoiser)")
    ms.add_argument("model_dir", type=Path, help="pipeline directory, e.g. runs/tiny-sd/model")
    ms.add_argument("--name", required=True, help="shipped name, e.g. tiny-sd")
    ms.set_defaults(func=cmd_models_ship)

    g = sub.add_parser("generate", formatter_class=_formatter, help="generate images with any diffusers pipeline",
                       description="Generate images from a shipped model name, a local pipeline directory or a hub "
                                   "id. Writes PNGs and a metadata.jsonl (file_name, text, seed) into --out.")
    g.add_argument("--model", required=True, help="shipped name (humantune models list), directory or hub id")
    g.add_argument("--prompt", action="append", default=[], help="prompt (repeatable)")
    g.add_argument("--prompts", type=Path, help="text file with one prompt per line")
    g.add_argument("--pose", help="keypoints JSON (17x3 COCO per person) or OpenPose image; needs --controlnet")
    g.add_argument("--controlnet", help="ControlNetModel directory or hub id (pose-conditioned generation)")
    g.add_argument("--n", type=positive_int, default=4, help="images per prompt (default: 4)")
    g.add_argument("--seed", type=non_negative_int, default=0, help="seed of the first image; image i uses seed + i")
    g.add_argument("--steps", type=positive_int, help="sampling steps (default: the model's own, else 30)")
    g.add_argument("--guidance-scale", type=finite_float, help="classifier-free guidance (default: the model's own)")
    g.add_argument("--size", type=image_size, help="image size in pixels (default: the model's own)")
    g.add_argument("--out", type=Path, required=True, help="output folder (must be empty or absent)")
    g.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    from humantune.eval.metrics import DEFAULT_METRICS, METRICS

    e = sub.add_parser("eval", formatter_class=_formatter, help="evaluate generated images (metrics.json + HTML report)",
                       description="Score a folder of generated images against target poses / reference images. "
                                   "Writes metrics.json (values, conventions, counts, 95%% intervals), "
                                   "per_image.jsonl and a self-contained report.html.",
                       epilog=f"metrics: {', '.join(METRICS)}\ndefault: {', '.join(DEFAULT_METRICS)} "
                              "(those whose inputs are present)")
    e.add_argument("--generated", type=Path, required=True, help="folder of images (+ optional metadata.jsonl)")
    e.add_argument("--reference", type=Path, help="pose folder or dataset with target keypoints / real images")
    e.add_argument("--prompts", type=Path, help="prompt file, one per generated image (else metadata.jsonl text)")
    e.add_argument("--metrics", help="comma-separated metric names (default: all that need no weights file)")
    e.add_argument("--out", type=Path, required=True, help="output folder (must be empty or absent)")
    e.add_argument("--area-convention", default="segment", choices=["segment", "bbox", "bbox053"],
                   help="OKS object area: segment area, bbox area or 0.53 x bbox area (default: segment)")
    e.add_argument("--pairing", default="auto", choices=["auto", "stem", "order"],
                   help="pair generated and reference images by file stem or by order (default: auto)")
    e.add_argument("--inception-weights", type=Path, help="pt_inception-2015-12-05-6726825d.pth for fid/kid")
    e.add_argument("--lpips-net", default="alex", choices=["alex", "vgg"], help="LPIPS backbone (default: alex)")
    e.add_argument("--lpips-weights", type=Path, help="LPIPS v0.1 linear-layer weights (.pth)")
    e.add_argument("--lpips-backbone-weights", type=Path, help="torchvision AlexNet/VGG16 weights (.pth)")
    e.add_argument("--clip-model", default="openai/clip-vit-large-patch14", help="CLIP for clip_score (path or hub id)")
    e.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_eval)

    an = sub.add_parser("anomaly", formatter_class=_formatter, help="find, fix and measure anomalous people",
                        description="The anomaly-correction workflow (shared/papers.md §4): 1. scan prompts for "
                                    "broken bodies, 2. collect correct images for a failing prompt, 3. fine-tune "
                                    "(humantune train dreambooth-lora), 4. compare base and tuned.")
    an_sub = an.add_subparsers(dest="anomaly_command", metavar="ANOMALY_COMMAND", required=True)
    asc = an_sub.add_parser("scan", formatter_class=_formatter, help="rank prompts by anomaly rate",
                            description="Generate N images per prompt, score anatomy with MediaPipe (no detection "
                                        "counts as anomalous), rank prompts by anomaly rate with Wilson intervals. "
                                        "Writes images/, scan.json and report.html (worst cases, skeleton drawn).")
    asc.add_argument("--model", required=True, help="shipped name (humantune models list), directory or hub id")
    asc.add_argument("--prompts", type=Path, help="text file, one prompt per line (# starts a comment)")
    asc.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    asc.add_argument("--lora", type=Path, help="LoRA directory to load onto the model first")
    asc.add_argument("--n", type=positive_int, default=16, help="images per prompt (default: 16)")
    asc.add_argument("--seed", type=non_negative_int, default=0, help="seed of the first image; prompt p image j: seed + p*n + j")
    _add_sampling_options(asc)
    asc.add_argument("--worst", type=non_negative_int, default=24, help="worst-case images shown in the report (default: 24)")
    _add_output_options(asc)
    asc.set_defaults(func=cmd_anomaly_scan)

    aco = an_sub.add_parser("collect", formatter_class=_formatter, help="gather correct images for a prompt",
                            description="Correct images for a failing prompt: rendered by the mannequin world for "
                                        "the prompt (default), or copied from --from FOLDER (captions from its "
                                        "metadata.jsonl or .txt files, else the prompt). Writes images/ and "
                                        "metadata.jsonl: the instance data of `humantune train dreambooth-lora`.")
    aco.add_argument("--prompt", action="append", default=[], help="the failing prompt (repeatable)")
    aco.add_argument("--prompts", type=Path, help="text file, one prompt per line")
    aco.add_argument("--from", dest="source", type=Path, help="folder of your own correct images")
    aco.add_argument("--n", type=positive_int,
                     help="images per prompt to render (default: 5), or the first N of --from")
    aco.add_argument("--seed", type=non_negative_int, default=0, help="mannequin-world seed (prompt p uses seed + p)")
    aco.add_argument("--size", type=image_size, default=128, help="rendered image size (default: 128)")
    aco.add_argument("--appearance", choices=["prompt", "random"], default="prompt",
                     help="dress people as the prompt says (default), or randomly (action and background only)")
    _add_output_options(aco)
    aco.set_defaults(func=cmd_anomaly_collect)

    acm = an_sub.add_parser("compare", formatter_class=_formatter, help="base vs tuned, same seeds",
                            description="Generate the target (and control) prompts with the base model and the "
                                        "tuned one (base + LoRA) on the same seeds. Writes compare.json (anomaly rate "
                                        "before/after with Wilson and difference intervals, attribute accuracy, "
                                        "SSIM/PSNR/world_fd/FID against --reference), report.html, and a "
                                        "side-by-side pair set for a preference study (pairs/) with its key in "
                                        "key.json.")
    acm.add_argument("--base", required=True, help="base model: shipped name, directory or hub id")
    acm.add_argument("--tuned", required=True, type=Path,
                     help="LoRA directory (or a dreambooth-lora output directory), or a whole pipeline directory")
    acm.add_argument("--prompts", type=Path, help="target prompts file (the failing prompts)")
    acm.add_argument("--prompt", action="append", default=[], help="a target prompt (repeatable)")
    acm.add_argument("--control-prompts", type=Path, help="control prompts file (must not get worse)")
    acm.add_argument("--reference", type=Path, help="correct images (e.g. `anomaly collect` output) for SSIM/PSNR/FID")
    acm.add_argument("--inception-weights", type=Path,
                     help="pt_inception-2015-12-05-6726825d.pth: adds FID against --reference")
    acm.add_argument("--n", type=positive_int, default=16, help="images per prompt and model (default: 16)")
    acm.add_argument("--seed", type=non_negative_int, default=0, help="seed of the first image (the same for both models)")
    _add_sampling_options(acm)
    _add_output_options(acm)
    acm.set_defaults(func=cmd_anomaly_compare)
    add_study_parser(sub, _formatter)
    add_entprog_parser(sub, _formatter)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    stderr, sys.stderr = sys.stderr, LineEnd(sys.stderr)
    try:
        code = func(args)
    except HumantuneError as e:
        report(f"error: {e}")
        code = 2
    except KeyboardInterrupt:
        report("interrupted")
        code = 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    finally:
        sys.stderr = stderr
    if process_group_up():  # one of several processes under accelerate launch: leave without finalization
        exit_process(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
