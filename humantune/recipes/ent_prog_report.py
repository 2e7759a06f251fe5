"""``OUT/report.html`` of an Ent-Prog run: the result table, the CEI bar plot, CE(m) of every stage's supernet, the
held-out loss against wall-clock time for this run and its ``compare_with`` arms, and samples (images side by side,
clips as looping GIFs) of the base and the tuned denoiser."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from humantune.recipes.pose_video_eval import VideoReport, save_gif
from humantune.train.engine import read_metrics


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def ce_figure(out: Path, stages) -> object | None:
    """Per adaptive stage: the supernet's held-out loss per step, coloured by the m it trained, and CE(m) bars."""
    chosen = [(s, json.loads((out / s.name / "choice.json").read_text())) for s in stages
              if (out / s.name / "choice.json").is_file()]
    if not chosen:
        return None
    plt = _plt()
    fig, axes = plt.subplots(2, len(chosen), figsize=(4 * len(chosen), 5.5), dpi=80, squeeze=False)
    for k, (stage, choice) in enumerate(chosen):
        rows = [r for r in read_metrics(out / stage.name / "search") if "m" in r]
        ax = axes[0][k]
        for m in sorted({r["m"] for r in rows}):
            own = [r for r in rows if r["m"] == m]
            ax.plot([r["step"] for r in own], [r["search_loss"] for r in own], "o-", ms=3, label=f"m={m}")
        ax.set_title(f"{stage.name}: supernet held-out loss", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=7)
        ce = {int(m): v for m, v in choice["ce"].items() if v is not None}
        ax = axes[1][k]
        ax.bar([str(m) for m in ce], list(ce.values()),
               color=["#c0504d" if m == choice["m"] else "#4a7ab5" for m in ce])
        ax.set_title(f"CE(m) ({choice['trace']}); chosen m = {choice['m']}", fontsize=9)
        ax.set_xlabel("m (top blocks trained)", fontsize=8)
    fig.tight_layout()
    return fig


def curve_figure(curves: dict[str, list]) -> object:
    """Held-out loss against wall-clock seconds, one line per arm."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=80)
    for label, curve in curves.items():
        if curve:
            t, loss = zip(*curve)
            ax.plot(t, loss, ".-", label=label)
    ax.set_xlabel("wall-clock seconds (CEI + training steps + supernet evaluation)", fontsize=8)
    ax.set_ylabel("held-out loss (fixed t, ε)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _frames(sample) -> np.ndarray:
    return np.stack([np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else np.asarray(f) for f in sample])


def sample_items(base: list, tuned: list, out: Path) -> tuple[list, list]:
    """(image grid items, GIF items) of base vs tuned samples, captioned; clips (lists of frames) become GIFs."""
    images, gifs = [], []
    for (caption, b), (_, t) in zip(base, tuned):
        for label, sample in (("base", b), ("tuned", t)):
            if isinstance(sample, Image.Image):
                images.append((sample, f"{label}: {caption}"))
            else:
                name = f"{label}_{len(gifs):03d}.gif"
                gifs.append((save_gif(_frames(sample), out / "eval" / "clips" / name), f"{label}: {caption}"))
    return images, gifs


def write_results(recipe, results: dict, arms: dict[str, Path]) -> Path:
    """Write OUT/report.html for a finished run (``recipe``: the EntProgRecipe; ``results``: its results.json)."""
    cfg, out = recipe.cfg, recipe.out
    name = f"{cfg.schedule}/{cfg.ordering}" if cfg.schedule != "full" else "full"
    report = VideoReport(f"Ent-Prog: {cfg.task} on {cfg.base_model}")
    report.paragraph(f"Schedule {cfg.schedule}, ordering {cfg.ordering}, trace {cfg.trace}, frozen prefix "
                     f"{cfg.frozen_prefix}. Held-out loss: the training loss on fixed held-out samples, timesteps "
                     "and noises (interval: 95 % over held-out batches).")
    rows = []
    for label, res in [(name, results)] + [(arm, json.loads((p / "results.json").read_text()))
                                           for arm, p in arms.items()]:
        curve = res["curve"]
        rows.append({"run": label, "base held-out": res["base_heldout_loss"],
                     "final held-out": res["heldout_loss"]["mean"],
                     "95% interval": f"[{res['heldout_loss']['low']:.4f}, {res['heldout_loss']['high']:.4f}]",
                     "wall-clock s": curve[-1][0] if curve else None,
                     "peak training state MB": res["peak_state_bytes"].get("total", 0) / 2**20,
                     "peak activations MB": res["peak_state_bytes"].get("max_activations", 0) / 2**20})
    report.table(rows)
    stage_rows = []
    for stage in cfg.stages:
        s = results["stages"].get(stage.name, {})
        choice = s.get("choice", {})
        ce = ", ".join(f"{m}: {v:.3g}" if v is not None else f"{m}: –" for m, v in choice.get("ce", {}).items())
        phases = []
        for p, v in s.get("phases", {}).items():
            trained = v.get("trained")
            phases.append(f"{p} ({v.get('max_steps')} steps, "
                          f"{trained if isinstance(trained, str) else f'{len(trained or [])} blocks'})")
        stage_rows.append({"stage": stage.name, "candidates": ", ".join(map(str, stage.candidates)),
                           "chosen m": choice.get("m"), "CE(m)": ce, "phases": ", ".join(phases)})
    report.heading("Stages")
    report.table(stage_rows)
    report.paragraph("Ranking (highest priority first): " + ", ".join(results["ranking"]))
    cei_png = (cfg.cei_dir or out / "cei") / "cei.png"
    if recipe.cei is not None and cei_png.is_file():
        report.heading("CEI priorities π(b) = log σ_skip(b)(ε̂) / σ(ε̂)")
        report.image_grid([(Image.open(cei_png), "per block, forward order")], columns=1)
    fig = ce_figure(out, cfg.stages)
    if fig is not None:
        report.heading("Supernet epochs and CE(m)")
        report.figure(fig)
        _plt().close(fig)
    report.heading("Held-out loss vs wall-clock")
    curves = {name: results["curve"]}
    curves.update({arm: json.loads((p / "results.json").read_text())["curve"] for arm, p in arms.items()})
    fig = curve_figure(curves)
    report.figure(fig)
    _plt().close(fig)
    base, tuned = getattr(recipe, "base_samples", []), getattr(recipe, "tuned_samples", [])
    if base and tuned:
        images, gifs = sample_items(base, tuned, out)
        report.heading("Samples: base, then tuned (same seeds)")
        if images:
            report.image_grid(images, columns=2, thumb_size=192)
        if gifs:
            report.animations(gifs, columns=2, size=192)
    report.heading("Config")
    buf = io.StringIO()
    buf.write((out / "config.yaml").read_text() if (out / "config.yaml").is_file() else "")
    report.code(buf.getvalue())
    return report.save(out / "report.html")
