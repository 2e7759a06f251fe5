"""Step 1 of the anomaly study (:mod:`humantune.studies.anomaly`): generate ``n`` images per prompt, score their
anatomy and rank the prompts by anomaly rate; also the seeds, generation and anatomy conventions that
:mod:`~humantune.studies.anomaly.compare` shares."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from humantune import __version__
from humantune.errors import HumantuneError
from humantune.eval.anatomy import AnatomyScore, score_anatomy
from humantune.eval.anatomy_judge import AnatomyJudge, body_rates, body_states
from humantune.eval.context import describe_estimator
from humantune.eval.pose_estimators import DETECTION_CONFIDENCE, PoseEstimator, load_pose_estimator
from humantune.eval.statistics import rate_entry
from humantune.io import json_safe, new_output_dir, write_json_atomic, write_jsonl_atomic
from humantune.models.generation import generate_images, generation_settings, load_pipeline, resolve_model
from humantune.models.lora import load_lora
from humantune.report.eval_report import detection_flags
from humantune.report.html import HtmlReport
from humantune.report.overlay import draw_keypoints


def rank_prompts(prompts: Sequence[str], flags: Sequence[Sequence[bool]]) -> list[dict[str, Any]]:
    """Per-prompt anomaly rate with its Wilson 95 % interval, worst first (ties keep the given order); each entry
    also has its 1-based ``rank`` and the prompt's position ``index`` in the input."""
    rows = [{"index": i, "prompt": p, **rate_entry(f)} for i, (p, f) in enumerate(zip(prompts, flags))]
    rows.sort(key=lambda r: (-r["rate"], r["index"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def open_estimator(estimator) -> tuple[PoseEstimator, bool]:
    """(the estimator, whether the caller must close it): an instance is used as given, a name is loaded."""
    if isinstance(estimator, PoseEstimator):
        return estimator, False
    return load_pose_estimator(estimator), True


def overlay(image: Image.Image, score: AnatomyScore) -> Image.Image:
    """``image`` with the detected skeleton of ``score`` drawn over it (joints at confidence ≥
    :data:`~humantune.eval.pose_estimators.DETECTION_CONFIDENCE`)."""
    if score.keypoints is None:
        return image
    return draw_keypoints(image, detection_flags(score.keypoints))


def prompt_seeds(num_prompts: int, n: int, seed: int) -> list[list[int]]:
    """Seeds of the images of each prompt: prompt p, image j → seed + p·n + j."""
    return [[seed + p * n + j for j in range(n)] for p in range(num_prompts)]


def generate_for_prompts(pipe, prompts: Sequence[str], n: int, seed: int, kwargs: dict, progress: bool, desc: str):
    """``n`` images per prompt with the seeds of :func:`prompt_seeds`: (prompt of each image, its seed, the images)."""
    seeds = [s for row in prompt_seeds(len(prompts), n, seed) for s in row]
    flat = [p for p in prompts for _ in range(n)]
    if progress:
        tqdm.write(f"{desc}: {len(flat)} images")
    images = generate_images(pipe, flat, per_image_seeds=seeds, progress=progress, **kwargs)
    return flat, seeds, images


def open_judge(judge) -> AnatomyJudge:
    """The anatomy judge: an instance (anything with ``judge(images)`` and ``config.threshold``) as given, else
    :meth:`AnatomyJudge.load` of a name or folder (None: the shipped judge)."""
    if judge is None or isinstance(judge, (str, os.PathLike)):
        return AnatomyJudge.load(judge)
    return judge


def judge_bodies(judge: AnatomyJudge, images: Sequence[Image.Image], scores: Sequence[AnatomyScore]
                 ) -> tuple[list[float], list[str]]:
    """P(broken) of each image by ``judge`` and its body state (``no_person`` when the estimator found nobody,
    else ``broken`` / ``whole`` by the judge's threshold)."""
    p = judge.judge([np.asarray(im.convert("RGB")) for im in images])
    return [float(x) for x in p], body_states([sc.keypoints is not None for sc in scores], p, judge.config.threshold)


def check_prompts(prompts: Sequence[str], n: int, what: str = "prompts") -> list[str]:
    """The non-empty prompts, stripped; HumantuneError for none or ``n`` < 1."""
    prompts = [str(p).strip() for p in prompts if str(p).strip()]
    if not prompts:
        raise HumantuneError(f"no {what} given")
    if n < 1:
        raise HumantuneError(f"--n must be at least 1, got {n}")
    return prompts


def scan(model: str | os.PathLike, prompts: Sequence[str], n: int, seed: int, out: str | os.PathLike, *,
         lora: str | os.PathLike | None = None, estimator="mediapipe", anatomy_judge=None, steps: int | None = None,
         guidance_scale: float | None = None, size: int | None = None, worst: int = 24, overwrite: bool = False,
         progress: bool = True) -> dict[str, Any]:
    """Generate ``n`` images per prompt with ``model`` (plus ``lora`` if given), score their anatomy and rank the
    prompts by anomaly rate. Writes into ``out`` (replaced whole; must be empty or absent unless ``overwrite``):
    ``images/NNNNN.png`` with ``images/metadata.jsonl`` (prompt, seed, flag, score, violations, detection, the
    judge's P(broken) and the body state), ``scan.json`` (the ranking with Wilson intervals; ``body_rates``: the
    rates of no person / judged broken / whole, overall and per prompt; conventions, settings) and ``report.html``
    (the ranking and the worst cases with the detected skeleton drawn over each, at most ``worst`` images).
    ``anatomy_judge``: see :func:`open_judge`. Returns scan.json's content.
    """
    prompts = check_prompts(prompts, n)
    source = resolve_model(model)
    judge = open_judge(anatomy_judge)
    est, own = open_estimator(estimator)
    t0 = time.perf_counter()
    try:
        with new_output_dir(out, overwrite) as tmp:
            pipe = load_pipeline(source)
            if lora is not None:
                load_lora(pipe, lora)
            kwargs = generation_settings(source, steps, guidance_scale, size)
            flat, seeds, images = generate_for_prompts(pipe, prompts, n, seed, kwargs, progress, "scan")
            scores = score_anatomy(images, est, progress)
            p_broken, states = judge_bodies(judge, images, scores)
            (tmp / "images").mkdir()
            rows = []
            for i, (prompt, s, image, sc) in enumerate(zip(flat, seeds, images, scores)):
                name = f"{i:05d}.png"
                image.save(tmp / "images" / name)
                rows.append({"file_name": name, "text": prompt, "seed": s, **sc.to_json(),
                             "judge_p_broken": p_broken[i], "body_state": states[i]})
            write_jsonl_atomic(tmp / "images" / "metadata.jsonl", rows)
            flags = [[sc.anomalous for sc in scores[p * n:(p + 1) * n]] for p in range(len(prompts))]
            ranking = rank_prompts(prompts, flags)
            for row in ranking:
                row["body_rates"] = body_rates(states[row["index"] * n:(row["index"] + 1) * n])
            result = {
                "humantune_version": __version__, "model": str(model), "lora": None if lora is None else str(lora),
                "n_per_prompt": n, "seed": seed, "generation": kwargs, "estimator": describe_estimator(est),
                "conventions": anatomy_conventions(judge.config.threshold),
                "overall": rate_entry([sc.anomalous for sc in scores]), "body_rates": body_rates(states),
                "prompts": ranking, "seconds": time.perf_counter() - t0,
            }
            write_json_atomic(tmp / "scan.json", json_safe(result))
            _scan_report(tmp / "report.html", result, images, scores, flat, seeds, n, worst)
    finally:
        if own:
            est.close()
    return json_safe(result)


def anatomy_conventions(judge_threshold: float = 0.5) -> dict[str, str]:
    """The seed, flag, body-state and interval conventions written into scan.json and compare.json."""
    return {
        "seeds": "prompt p (0-based), image j -> seed + p*n + j (as `humantune generate`)",
        "anomalous": "highest-scoring detection fails a humantune.eval.anatomy check (severity > 1, keypoints at "
                     f"confidence >= {DETECTION_CONFIDENCE}, no mask), or nobody is detected",
        "body_states": "no_person: the estimator detects nobody; broken: a person is detected and the anatomy judge "
                       f"(humantune.eval.anatomy_judge) gives P(broken) > {judge_threshold}; whole: detected and "
                       "not broken",
        "rate_interval": "Wilson score interval, 95 %",
    }


def body_rate_rows(groups: dict[str, dict[str, dict]]) -> list[dict[str, Any]]:
    """Report rows of :func:`~humantune.eval.anatomy_judge.body_rates` entries, one row per group."""
    rows = []
    for name, rates in groups.items():
        row: dict[str, Any] = {"images": name, "n": next(iter(rates.values()))["n"]}
        for state, label in (("no_person", "no person found"), ("broken", "found, judged broken"),
                             ("whole", "found and whole")):
            e = rates[state]
            row[label] = e["rate"]
            row[f"{label} 95% CI"] = f"{e['ci95'][0]:.3f}–{e['ci95'][1]:.3f}"
        rows.append(row)
    return rows


def _scan_report(path: Path, result: dict, images, scores, flat, seeds, n: int, worst: int) -> None:
    report = HtmlReport(f"Anomaly scan: {result['model']}")
    o = result["overall"]
    report.paragraph(f"{len(result['prompts'])} prompts × {n} images, seeds from {result['seed']}; estimator: "
                     f"{result['estimator']}. Overall anomaly rate {o['rate']:.3f} "
                     f"(95 % CI {o['ci95'][0]:.3f}–{o['ci95'][1]:.3f}, {o['anomalous']}/{o['n']}).")
    report.paragraph("An image is anomalous when an anatomy check fires on its best detection or when nobody is "
                     "detected (a missed person counts as broken).")
    report.table(body_rate_rows({"all prompts": result["body_rates"]}))
    report.table([{"rank": r["rank"], "prompt": r["prompt"], "anomaly rate": r["rate"],
                   "95% CI": f"{r['ci95'][0]:.3f}–{r['ci95'][1]:.3f}", "anomalous": r["anomalous"], "n": r["n"]}
                  for r in result["prompts"]])
    report.heading("Worst cases")
    report.paragraph("Anomalous images of the worst prompts first, with the detected skeleton drawn over each.")
    shown = 0
    for row in result["prompts"]:
        if shown >= worst or row["anomalous"] == 0:
            break
        p = row["index"]
        items = []
        for i in range(p * n, (p + 1) * n):
            if scores[i].anomalous and shown < worst:
                why = ", ".join(scores[i].violations) or "?"
                items.append((overlay(images[i], scores[i]), f"seed {seeds[i]}: {why}"))
                shown += 1
        report.heading(f"#{row['rank']} {row['prompt']} ({row['rate']:.2f})", level=3)
        report.image_grid(items, columns=6, thumb_size=192)
    report.save(path)
