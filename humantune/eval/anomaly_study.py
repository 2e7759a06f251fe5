"""The anomaly-correction workflow of ``shared/papers.md`` §4 as functions (``humantune anomaly scan | collect |
compare`` call them; so does ``benchmarks/anomaly_correction.py``):

1. :func:`scan` — generate N images per prompt, score each image's anatomy, rank the prompts by anomaly rate and
   write ``scan.json`` plus an HTML report of the worst cases (detected skeleton drawn over each).
2. :func:`collect` — correct images for a failing prompt: from a folder the user supplies, or rendered by the
   mannequin world for that prompt (:func:`render_prompt_scenes`), with a ``metadata.jsonl`` of captions.
3. Fine-tune with ``humantune train dreambooth-lora`` (:mod:`humantune.recipes.dreambooth_lora`).
4. :func:`compare` — the base model and the tuned one (base + LoRA) on the same seeds: anomaly rate before/after on
   target and control prompts, attribute accuracy, distances to the correct images (SSIM/PSNR as the paper
   reports, ``world_fd``, FID when Inception weights are given) and a side-by-side pair set for a human
   preference study with its key in a separate file.

Conventions (written into every ``scan.json`` / ``compare.json``):

- Seeds: prompt p (0-based, in the order given) gets images j = 0 … n−1 with seed ``seed + p·n + j`` — the
  convention of ``humantune generate``; :func:`compare` uses the same seeds for the base and the tuned model.
- Anatomy: MediaPipe Pose on each image, the highest-scoring detection scored by
  :func:`humantune.eval.anatomy.anatomy_checks` (keypoints used at confidence ≥ 0.5); an image is anomalous when a
  check fires (severity > 1) **or nobody is detected**. Rates carry Wilson 95 % intervals; the change of a rate
  (tuned − base) carries Newcombe's hybrid-score interval for two independent proportions
  (:func:`proportion_difference_interval`; conservative here, since the same seeds pair the images).
- Attribute accuracy: :func:`humantune.eval.attributes.attribute_accuracy` (shirt and trouser colour, background,
  posture) on the same detection, pooled over attributes; its interval is a bootstrap over images and the
  difference's a paired bootstrap over seeds (:func:`paired_ratio_difference_interval`).
- Distances to the correct images (target prompts only; ``shared/papers.md`` §4 reports FID/SSIM/PSNR of generated
  vs correct images): SSIM/PSNR are averaged over **every pair (generated image of prompt p, correct image of
  prompt p)** — a correct image belongs to p when its caption is p; if no caption equals p, all correct images pair
  with p's images — with the correct image resized to the generated size (PIL bicubic), uint8, R = 255; first the
  mean over a generated image's pairs, then over images. ``world_fd`` and FID compare the set of generated target
  images with the set of correct images (sizes as they are).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from humantune import __version__
from humantune.errors import DataError, HumantuneError
from humantune.eval.anatomy import anatomy_checks, anomaly_rate, anomaly_score, violations
from humantune.eval.preference import bootstrap_interval, wilson_interval
from humantune.io import new_output_dir, write_json_atomic, write_jsonl_atomic

DETECTION_CONFIDENCE = 0.5
"""A detected keypoint counts (anatomy checks, overlays, attributes) at this confidence."""
APPEARANCES = ("prompt", "random")
PREFERENCE_QUESTION = "Which image shows the more natural, anatomically correct person: left or right?"
N_BOOT = 10_000


# ----------------------------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------------------------


def proportion_difference_interval(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> tuple[float, float]:
    """Interval for p₁ − p₂ of two independent proportions p_i = k_i / n_i: Newcombe's hybrid score interval
    (Newcombe 1998, Stat. Med. 17, method 10). With (l_i, u_i) the Wilson interval of p_i and δ = p₁ − p₂:

        lower = δ − √((p₁ − l₁)² + (u₂ − p₂)²),   upper = δ + √((u₁ − p₁)² + (p₂ − l₂)²).

    Raises ValueError for an empty sample or k > n."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError(f"both samples need at least one observation, got n1={n1}, n2={n2}")
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, level)
    l2, u2 = wilson_interval(k2, n2, level)
    d = p1 - p2
    return (float(d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)), float(d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)))


def paired_ratio_difference_interval(num_a: Sequence[float], den_a: Sequence[float], num_b: Sequence[float],
                                     den_b: Sequence[float], n_boot: int = N_BOOT, seed: int = 0,
                                     level: float = 0.95) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of Σnum_b/Σden_b − Σnum_a/Σden_a over paired units: unit i (the same seed
    for both models) is drawn with replacement on both sides together. None for fewer than 2 units."""
    na, da, nb, db = (np.asarray(x, np.float64) for x in (num_a, den_a, num_b, den_b))
    if not (len(na) == len(da) == len(nb) == len(db)):
        raise ValueError("paired samples must have equal lengths")
    if len(na) < 2:
        return None

    def statistic(sample: np.ndarray) -> np.ndarray:
        idx = sample.astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return nb[idx].sum(1) / db[idx].sum(1) - na[idx].sum(1) / da[idx].sum(1)

    return bootstrap_interval(np.arange(len(na), dtype=np.float64), level, n_boot, seed, statistic)


def _rate_entry(flags: Sequence[bool]) -> dict[str, Any]:
    r = anomaly_rate(list(map(bool, flags)))
    return {"rate": r.rate, "ci95": [r.ci95_lo, r.ci95_hi], "anomalous": r.flagged, "n": r.n}


def rate_change(base_flags: Sequence[bool], tuned_flags: Sequence[bool]) -> dict[str, Any]:
    """Anomaly rate of each model with its Wilson interval, the difference tuned − base with Newcombe's interval,
    and the relative reduction 1 − rate_tuned / rate_base (null when the base rate is 0)."""
    base, tuned = _rate_entry(base_flags), _rate_entry(tuned_flags)
    lo, hi = proportion_difference_interval(tuned["anomalous"], tuned["n"], base["anomalous"], base["n"])
    return {
        "base": base, "tuned": tuned,
        "difference": {"value": tuned["rate"] - base["rate"], "ci95": [lo, hi],
                       "ci_method": "Newcombe hybrid score interval (method 10), independent proportions"},
        "relative_reduction": (1.0 - tuned["rate"] / base["rate"]) if base["rate"] > 0 else None,
    }


# ----------------------------------------------------------------------------------------------------------------
# anatomy scoring
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class AnatomyScore:
    """One image's anatomy: the best detection (17×3 ``[x, y, confidence]``, None if nobody was found), the check
    severities, the anomaly score (largest severity, ∞ when missed) and the flag."""

    keypoints: np.ndarray | None
    checks: dict[str, float]
    score: float
    anomalous: bool
    violations: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"anomalous": self.anomalous, "anomaly_score": self.score if np.isfinite(self.score) else None,
                "violations": self.violations, "detected": self.keypoints is not None,
                "keypoints": None if self.keypoints is None else np.round(self.keypoints, 2).tolist()}


def score_anatomy(images: Sequence[np.ndarray | Image.Image], estimator, progress: bool = False,
                  desc: str = "anatomy") -> list[AnatomyScore]:
    """:class:`AnatomyScore` of each image, with ``estimator`` a
    :class:`~humantune.eval.pose_estimators.PoseEstimator`."""
    out = []
    for image in tqdm(images, desc=desc, unit="img", disable=not progress, leave=False):
        arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        det = estimator.estimate(arr)
        kp = np.asarray(det.keypoints[int(np.argmax(det.scores))], np.float64) if det.num_people else None
        checks = anatomy_checks(kp, None, DETECTION_CONFIDENCE, (arr.shape[1], arr.shape[0]))
        score = anomaly_score(checks)
        out.append(AnatomyScore(kp, checks, score, score > 1.0, violations(checks)))
    return out


def rank_prompts(prompts: Sequence[str], flags: Sequence[Sequence[bool]]) -> list[dict[str, Any]]:
    """Per-prompt anomaly rate with its Wilson 95 % interval, worst first (ties keep the given order); each entry
    also has its 1-based ``rank`` and the prompt's position ``index`` in the input."""
    rows = [{"index": i, "prompt": p, **_rate_entry(f)} for i, (p, f) in enumerate(zip(prompts, flags))]
    rows.sort(key=lambda r: (-r["rate"], r["index"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def _estimator(estimator):
    from humantune.eval.pose_estimators import PoseEstimator, load_pose_estimator

    if isinstance(estimator, PoseEstimator):
        return estimator, False
    return load_pose_estimator(estimator), True


def _describe(estimator) -> str:
    from humantune.eval.runner import describe_estimator

    return describe_estimator(estimator)


def _overlay(image: Image.Image, score: AnatomyScore) -> Image.Image:
    from humantune.report.overlay import draw_keypoints

    if score.keypoints is None:
        return image
    kp = score.keypoints.copy()
    kp[:, 2] = np.where(kp[:, 2] >= DETECTION_CONFIDENCE, 2.0, 0.0)
    return draw_keypoints(image, kp[None])


# ----------------------------------------------------------------------------------------------------------------
# generation
# ----------------------------------------------------------------------------------------------------------------


def prompt_seeds(num_prompts: int, n: int, seed: int) -> list[list[int]]:
    """Seeds of the images of each prompt: prompt p, image j → seed + p·n + j."""
    return [[seed + p * n + j for j in range(n)] for p in range(num_prompts)]


def _generate(pipe, prompts: Sequence[str], n: int, seed: int, kwargs: dict, progress: bool, desc: str):
    from humantune.models.generation import generate_images

    seeds = [s for row in prompt_seeds(len(prompts), n, seed) for s in row]
    flat = [p for p in prompts for _ in range(n)]
    if progress:
        tqdm.write(f"{desc}: {len(flat)} images")
    images = generate_images(pipe, flat, per_image_seeds=seeds, progress=progress, **kwargs)
    return flat, seeds, images


def _check_inputs(prompts: Sequence[str], n: int, what: str = "prompts") -> list[str]:
    prompts = [str(p).strip() for p in prompts if str(p).strip()]
    if not prompts:
        raise HumantuneError(f"no {what} given")
    if n < 1:
        raise HumantuneError(f"--n must be at least 1, got {n}")
    return prompts


# ----------------------------------------------------------------------------------------------------------------
# 1. scan
# ----------------------------------------------------------------------------------------------------------------


def scan(model: str | os.PathLike, prompts: Sequence[str], n: int, seed: int, out: str | os.PathLike, *,
         lora: str | os.PathLike | None = None, estimator="mediapipe", steps: int | None = None,
         guidance_scale: float | None = None, size: int | None = None, worst: int = 24, overwrite: bool = False,
         progress: bool = True) -> dict[str, Any]:
    """Generate ``n`` images per prompt with ``model`` (plus ``lora`` if given), score their anatomy and rank the
    prompts by anomaly rate. Writes into ``out`` (replaced whole; must be empty or absent unless ``overwrite``):
    ``images/NNNNN.png`` with ``images/metadata.jsonl`` (prompt, seed, flag, score, violations, detection),
    ``scan.json`` (the ranking with Wilson intervals, conventions, settings) and ``report.html`` (the ranking and the
    worst cases with the detected skeleton drawn over each, at most ``worst`` images). Returns scan.json's content.
    """
    from humantune.models.generation import generation_settings, load_pipeline, resolve_model

    prompts = _check_inputs(prompts, n)
    source = resolve_model(model)
    est, own = _estimator(estimator)
    t0 = time.perf_counter()
    try:
        with new_output_dir(out, overwrite) as tmp:
            pipe = load_pipeline(source)
            if lora is not None:
                from humantune.models.lora import load_lora

                load_lora(pipe, lora)
            kwargs = generation_settings(source, steps, guidance_scale, size)
            flat, seeds, images = _generate(pipe, prompts, n, seed, kwargs, progress, "scan")
            scores = score_anatomy(images, est, progress)
            (tmp / "images").mkdir()
            rows = []
            for i, (prompt, s, image, sc) in enumerate(zip(flat, seeds, images, scores)):
                name = f"{i:05d}.png"
                image.save(tmp / "images" / name)
                rows.append({"file_name": name, "text": prompt, "seed": s, **sc.to_json()})
            write_jsonl_atomic(tmp / "images" / "metadata.jsonl", rows)
            flags = [[sc.anomalous for sc in scores[p * n:(p + 1) * n]] for p in range(len(prompts))]
            ranking = rank_prompts(prompts, flags)
            result = {
                "humantune_version": __version__, "model": str(model), "lora": None if lora is None else str(lora),
                "n_per_prompt": n, "seed": seed, "generation": kwargs, "estimator": _describe(est),
                "conventions": _conventions(), "overall": _rate_entry([sc.anomalous for sc in scores]),
                "prompts": ranking, "seconds": time.perf_counter() - t0,
            }
            write_json_atomic(tmp / "scan.json", _json_safe(result))
            _scan_report(tmp / "report.html", result, images, scores, flat, seeds, n, worst)
    finally:
        if own:
            est.close()
    return _json_safe(result)


def _conventions() -> dict[str, str]:
    return {
        "seeds": "prompt p (0-based), image j -> seed + p*n + j (as `humantune generate`)",
        "anomalous": "highest-scoring detection fails a humantune.eval.anatomy check (severity > 1, keypoints at "
                     f"confidence >= {DETECTION_CONFIDENCE}, no mask), or nobody is detected",
        "rate_interval": "Wilson score interval, 95 %",
    }


def _scan_report(path: Path, result: dict, images, scores, flat, seeds, n: int, worst: int) -> None:
    from humantune.report.html import HtmlReport

    report = HtmlReport(f"Anomaly scan: {result['model']}")
    o = result["overall"]
    report.paragraph(f"{len(result['prompts'])} prompts × {n} images, seeds from {result['seed']}; estimator: "
                     f"{result['estimator']}. Overall anomaly rate {o['rate']:.3f} "
                     f"(95 % CI {o['ci95'][0]:.3f}–{o['ci95'][1]:.3f}, {o['anomalous']}/{o['n']}).")
    report.paragraph("An image is anomalous when an anatomy check fires on its best detection or when nobody is "
                     "detected (a missed person counts as broken).")
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
                items.append((_overlay(images[i], scores[i]), f"seed {seeds[i]}: {why}"))
                shown += 1
        report.heading(f"#{row['rank']} {row['prompt']} ({row['rate']:.2f})", level=3)
        report.image_grid(items, columns=6, thumb_size=192)
    report.save(path)


# ----------------------------------------------------------------------------------------------------------------
# 2. collect
# ----------------------------------------------------------------------------------------------------------------


def _renderable(prompt: str, size: int, appearance: str):
    """The parsed prompt; HumantuneError (one line) when the mannequin world cannot render it."""
    from humantune.eval.attributes import parse_caption

    if appearance not in APPEARANCES:
        raise HumantuneError(f"appearance must be one of {', '.join(APPEARANCES)}, got {appearance!r}")
    if not 16 <= size <= 2048:
        raise HumantuneError(f"size must be between 16 and 2048 pixels, got {size}")
    try:
        return parse_caption(prompt)
    except ValueError as e:
        raise HumantuneError(f"cannot render prompt {prompt!r} from the mannequin world: {e}") from None


def render_prompt_scenes(prompt: str, n: int, seed: int = 0, size: int = 128, appearance: str = "prompt",
                         supersample: int = 2) -> list:
    """``n`` mannequin-world scenes (:class:`~humantune.data.mannequin.scene.Scene`) drawn for ``prompt``, a caption
    in the world's grammar (:func:`humantune.eval.attributes.parse_caption`): its people doing its action on its
    background, whole and inside the frame. ``appearance="prompt"`` also dresses them as the prompt says (person
    type, garments, colours), so every scene's caption equals the prompt; ``"random"`` samples clothes, so only
    action and background follow it (each scene keeps its own caption). "lying" draws lying on the back or on the
    side with equal probability. Scene i depends only on (seed, i)."""
    from humantune.data.mannequin.appearance import sample_appearance
    from humantune.data.mannequin.body import sample_body_shape, sample_pose
    from humantune.data.mannequin.scene import PersonSpec, render_scene, sample_person
    from humantune.data.mannequin.world import sample_rng

    request = _renderable(prompt, size, appearance)
    scenes = []
    for i in range(n):
        rng = sample_rng(seed, i)
        people = []
        for person in request.people:
            action = str(rng.choice(["lying_back", "lying_side"])) if person.action == "lying" else person.action
            if appearance == "random":
                people.append(sample_person(action, rng))
                continue
            look = sample_appearance(rng)
            child = person.person in ("boy", "girl")
            look = dataclasses.replace(
                look, person=person.person, top=person.top, top_color=person.top_color, bottom=person.bottom,
                bottom_color=None if person.bottom in (None, "jeans") else person.bottom_color,
                hair_color="brown" if child and look.hair_color == "gray" else look.hair_color)
            shape = sample_body_shape(rng, child, look.build)
            people.append(PersonSpec(action, shape, sample_pose(action, rng), look))
        scene = render_scene(people, request.background, rng, (size, size), supersample, truncate_prob=0.0)
        if appearance == "prompt" and scene.caption != prompt:
            raise HumantuneError(f"rendered caption {scene.caption!r} differs from the prompt {prompt!r}")
        scenes.append(scene)
    return scenes


def collect(prompts: Sequence[str], out: str | os.PathLike, n: int | None = None, seed: int = 0, size: int = 128,
            source: str | os.PathLike | None = None, appearance: str = "prompt", overwrite: bool = False,
            progress: bool = True) -> Path:
    """Gather correct images for failing prompts into ``out`` (replaced whole): ``images/NNNNNN.png`` and a
    ``metadata.jsonl`` row per image (``file_name``, ``text`` = its caption, ``prompt``; rendered images also
    ``keypoints`` and ``action``), plus ``collect.json`` (how they were made). The folder is an image folder every
    humantune loader reads (and the instance data of ``humantune train dreambooth-lora``).

    Without ``source``: render ``n`` (default 5) mannequin-world images per prompt (:func:`render_prompt_scenes`,
    prompt p uses world seed ``seed + p``). With ``source`` (a folder of images with ``metadata.jsonl`` or sidecar
    ``.txt`` captions, or any pose folder): copy its images (the first ``n`` if given) as PNG; an image without a
    caption gets the prompt, which then must be exactly one.
    """
    prompts = [str(p).strip() for p in prompts if str(p).strip()]
    rows: list[dict[str, Any]] = []
    with new_output_dir(out, overwrite) as tmp:
        (tmp / "images").mkdir()
        if source is None:
            if not prompts:
                raise HumantuneError("give at least one prompt to render correct images for")
            n = 5 if n is None else n
            if n < 1:
                raise HumantuneError(f"--n must be at least 1, got {n}")
            for prompt in prompts:
                _renderable(prompt, size, appearance)
            for p, prompt in enumerate(tqdm(prompts, desc="rendering", unit="prompt", disable=not progress)):
                for j, scene in enumerate(render_prompt_scenes(prompt, n, seed + p, size, appearance)):
                    name = f"images/{len(rows):06d}.png"
                    Image.fromarray(scene.image).save(tmp / name)
                    rows.append({"file_name": name, "text": scene.caption, "prompt": prompt, "seed": seed + p,
                                 "index": j, "action": scene.actions[0],
                                 "keypoints": scene.keypoints.round(3).tolist()})
            manifest = {"source": "mannequin world", "prompts": prompts, "n_per_prompt": n, "seed": seed,
                        "size": size, "appearance": appearance}
        else:
            from humantune.data.loaders import open_pose_dataset

            dataset = open_pose_dataset(source)
            count = len(dataset) if n is None else min(n, len(dataset))
            if count < 1:
                raise HumantuneError(f"--n must be at least 1, got {n}")
            for i in tqdm(range(count), desc="collecting", unit="img", disable=not progress):
                sample = dataset[i]
                caption = sample.caption.strip()
                if not caption:
                    if len(prompts) != 1:
                        raise DataError(f"{source}: image {sample.sample_id or i} has no caption; give exactly one "
                                        f"--prompt to caption it (got {len(prompts)})")
                    caption = prompts[0]
                name = f"images/{len(rows):06d}.png"
                sample.image.convert("RGB").save(tmp / name)
                row = {"file_name": name, "text": caption, "prompt": caption, "source": sample.sample_id or str(i)}
                if sample.num_people:
                    row["keypoints"] = np.asarray(sample.keypoints).round(3).tolist()
                rows.append(row)
            manifest = {"source": str(Path(source).resolve()), "prompts": prompts, "n": count}
        write_jsonl_atomic(tmp / "metadata.jsonl", rows)
        write_json_atomic(tmp / "collect.json", {"humantune_version": __version__, **manifest, "count": len(rows)})
    return Path(out)


# ----------------------------------------------------------------------------------------------------------------
# 4. compare
# ----------------------------------------------------------------------------------------------------------------


def _outside_grammar(prompts: Sequence[str]) -> str | None:
    """The first prompt that is not a mannequin-world caption (attribute accuracy cannot read it), or None."""
    from humantune.eval.attributes import parse_caption

    for p in dict.fromkeys(prompts):
        try:
            parse_caption(p)
        except ValueError:
            return p
    return None


def _attribute_counts(images, prompts, scores) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Per image: attributes read correctly, attributes requested; plus the pooled per-attribute summary."""
    from humantune.eval.attributes import attribute_accuracy

    try:
        result = attribute_accuracy([np.asarray(im) for im in images], list(prompts), [s.keypoints for s in scores],
                                    DETECTION_CONFIDENCE)
    except ValueError as e:
        raise HumantuneError(f"attribute accuracy needs prompts in the mannequin caption grammar: "
                             f"{' '.join(str(e).split())}") from None
    correct = np.array([sum(bool(v) for k, v in row.items() if k.endswith("_correct")) for row in result.rows], float)
    counted = np.array([sum(1 for k in row if k.endswith("_correct")) for row in result.rows], float)
    return correct, counted, {f"accuracy_{a}": v for a, v in result.accuracy.items()}


def _attribute_entry(correct: np.ndarray, counted: np.ndarray, extra: dict) -> dict[str, Any]:
    from humantune.eval.runner import ratio_interval

    total = counted.sum()
    ci, _ = ratio_interval(correct, counted)
    return {"value": float(correct.sum() / total) if total else None, "ci95": None if ci is None else list(ci),
            "correct": int(correct.sum()), "counted": int(total), **extra}


def attribute_change(base_images, tuned_images, prompts, base_scores, tuned_scores, seed: int = 0
                     ) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Attribute accuracy of each model (bootstrap interval over images) and the difference tuned − base (paired
    bootstrap over seeds); also each model's per-image (correct, counted) attribute judgements."""
    cb, nb, eb = _attribute_counts(base_images, prompts, base_scores)
    ct, nt, et = _attribute_counts(tuned_images, prompts, tuned_scores)
    diff_ci = paired_ratio_difference_interval(cb, nb, ct, nt, seed=seed)
    base, tuned = _attribute_entry(cb, nb, eb), _attribute_entry(ct, nt, et)
    value = None if base["value"] is None or tuned["value"] is None else tuned["value"] - base["value"]
    return ({"base": base, "tuned": tuned,
             "difference": {"value": value, "ci95": None if diff_ci is None else list(diff_ci),
                            "ci_method": f"paired percentile bootstrap over seeds, {N_BOOT} resamples"}},
            {"base": (cb, nb), "tuned": (ct, nt)})


def _reference_sets(reference_dir, target_prompts: Sequence[str]) -> tuple[list[np.ndarray], dict[str, list[int]], str]:
    """Correct images (uint8 RGB) and, per target prompt, the indices of those paired with it."""
    from humantune.data.loaders import open_pose_dataset

    dataset = open_pose_dataset(reference_dir)
    images, captions = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        images.append(np.asarray(sample.image.convert("RGB")))
        captions.append(sample.caption.strip())
    pairing, how = {}, []
    for p in target_prompts:
        own = [i for i, c in enumerate(captions) if c == p]
        pairing[p] = own or list(range(len(images)))
        how.append("caption" if own else "all")
    rule = ("every (generated image of prompt p, correct image captioned p) pair; prompts with no such caption pair "
            "with every correct image" + (f" (used for {how.count('all')} of {len(how)} prompts)" if "all" in how
                                          else ""))
    return images, pairing, rule


def _pair_metrics(generated: list[np.ndarray], prompts: list[str], references: list[np.ndarray],
                  pairing: dict[str, list[int]]) -> dict[str, Any]:
    from humantune.eval.image_metrics import psnr_per_image, ssim_per_image
    from humantune.eval.runner import PSNR_MAX_DB, mean_interval

    ssim_img, psnr_img, pairs = [], [], 0
    for image, prompt in zip(generated, prompts):
        refs = []
        for j in pairing[prompt]:
            ref = references[j]
            if ref.shape != image.shape:
                size = (image.shape[1], image.shape[0])
                ref = np.asarray(Image.fromarray(ref).resize(size, Image.Resampling.BICUBIC))
            refs.append(ref)
        a = np.repeat(image[None], len(refs), 0)
        b = np.stack(refs)
        ssim_img.append(float(ssim_per_image(a, b, 255.0).mean()))
        psnr_img.append(float(psnr_per_image(a, b, 255.0, max_db=PSNR_MAX_DB).mean()))
        pairs += len(refs)
    out = {"pairs": pairs}
    for name, values in (("ssim", ssim_img), ("psnr", psnr_img)):
        ci, _ = mean_interval(np.asarray(values))
        out[name] = {"value": float(np.mean(values)), "ci95": None if ci is None else list(ci)}
    return out


def _set_distances(generated: list[np.ndarray], references: list[np.ndarray], world_net, inception) -> dict[str, Any]:
    from humantune.eval.distribution import feature_statistics, frechet_distance

    out: dict[str, Any] = {}
    if len(generated) < 2 or len(references) < 2:
        out["world_fd"] = None
    else:
        out["world_fd"] = frechet_distance(*feature_statistics(world_net.extract(generated)),
                                           *feature_statistics(world_net.extract(references)))
    if inception is not None and len(generated) >= 2 and len(references) >= 2:
        def feats(images):
            return np.concatenate([inception(np.asarray(im, np.float32).transpose(2, 0, 1)[None] / 255.0)
                                   for im in images])
        out["fid"] = frechet_distance(*feature_statistics(feats(generated)), *feature_statistics(feats(references)))
    return out


def _side_by_side(left: Image.Image, right: Image.Image, gap: int = 8) -> Image.Image:
    h = max(left.height, right.height)
    canvas = Image.new("RGB", (left.width + gap + right.width, h), (255, 255, 255))
    canvas.paste(left.convert("RGB"), (0, 0))
    canvas.paste(right.convert("RGB"), (left.width + gap, 0))
    return canvas


def preference_pairs(base_images: Sequence[Image.Image], tuned_images: Sequence[Image.Image],
                     prompts: Sequence[str], seeds: Sequence[int], out_dir: Path, key_path: Path, seed: int,
                     base_files: Sequence[str] | None = None, tuned_files: Sequence[str] | None = None
                     ) -> dict[str, Any]:
    """A side-by-side pair set for a human preference study: ``out_dir/NNNN.png`` (left | right), ``index.html``
    showing every pair with the question and no hint of which side is which, ``responses.csv`` (one empty row per
    pair for a rater's ``left`` / ``right`` / ``tie``), and the key in the separate file ``key_path`` (pair → which
    side is the tuned model). Sides are drawn per pair by ``numpy.random.default_rng(seed)`` (fair coin)."""
    from humantune.report.html import HtmlReport

    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries, items = [], []
    for k, (b, t, prompt, s) in enumerate(zip(base_images, tuned_images, prompts, seeds)):
        tuned_left = bool(rng.random() < 0.5)
        name = f"{k:04d}"
        image = _side_by_side(t, b) if tuned_left else _side_by_side(b, t)
        image.save(out_dir / f"{name}.png")
        entries.append({"pair": name, "file": f"{out_dir.name}/{name}.png", "prompt": prompt, "seed": s,
                        "left": "tuned" if tuned_left else "base", "right": "base" if tuned_left else "tuned",
                        **({"base_image": base_files[k]} if base_files else {}),
                        **({"tuned_image": tuned_files[k]} if tuned_files else {})})
        items.append((image, f"pair {name}: {prompt}"))
    report = HtmlReport("Which person looks more natural?")
    report.paragraph(PREFERENCE_QUESTION + " Answer for each pair in responses.csv with left, right or tie. The two "
                     "images of a pair come from two models given the same prompt and seed; the side of each model "
                     "is random.")
    report.image_grid(items, columns=3, thumb_size=384)
    report.save(out_dir / "index.html")
    with open(out_dir / "responses.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["pair", "choice"])
        writer.writerows([[e["pair"], ""] for e in entries])
    key = {"question": PREFERENCE_QUESTION, "seed": seed, "rng": "numpy.random.default_rng(seed).random() < 0.5 "
           "per pair in order: tuned on the left", "pairs": entries}
    write_json_atomic(key_path, key)
    return key


def score_preferences(key_path: str | os.PathLike, responses_path: str | os.PathLike) -> dict[str, Any]:
    """Win rate of the tuned model from a filled-in ``responses.csv`` (``left`` / ``right`` / ``tie`` per pair) and
    the key: (wins + ½·ties) / answered pairs with its Wilson 95 % interval (ties as half a success)."""
    from humantune.eval.preference import win_rate

    key = json.loads(Path(key_path).read_text())
    sides = {e["pair"]: e for e in key["pairs"]}
    wins = losses = ties = 0
    with open(responses_path, newline="") as f:
        for number, row in enumerate(csv.DictReader(f), 2):
            choice = (row.get("choice") or "").strip().lower()
            if not choice:
                continue
            pair = (row.get("pair") or "").strip()
            if pair not in sides:
                raise DataError(f"{responses_path}: line {number}: unknown pair {pair!r}")
            if choice == "tie":
                ties += 1
            elif choice in ("left", "right"):
                won = sides[pair][choice] == "tuned"
                wins, losses = wins + won, losses + (not won)
            else:
                raise DataError(f"{responses_path}: line {number}: choice must be left, right or tie, got {choice!r}")
    n = wins + losses + ties
    if n == 0:
        raise DataError(f"{responses_path}: no answered pairs")
    lo, hi = wilson_interval(wins + ties / 2, n)
    return {"tuned_wins": wins, "base_wins": losses, "ties": ties, "n": n, "win_rate": win_rate(wins, losses, ties),
            "ci95": [lo, hi]}


def compare(base: str | os.PathLike, tuned: str | os.PathLike, target_prompts: Sequence[str],
            control_prompts: Sequence[str], n: int, seed: int, out: str | os.PathLike, *,
            reference_dir: str | os.PathLike | None = None, inception_weights: str | os.PathLike | None = None,
            world_features: str | os.PathLike | None = None, estimator="mediapipe", steps: int | None = None,
            guidance_scale: float | None = None, size: int | None = None, pair_seed: int | None = None,
            overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Compare ``base`` (shipped name, directory or hub id) with ``tuned`` — a LoRA directory (or a
    ``humantune train dreambooth-lora`` output directory) loaded onto ``base``, or a whole pipeline — on the same
    seeds, and write into ``out`` (replaced whole):

    - ``base/`` and ``tuned/``: the images with ``metadata.jsonl`` (prompt, set, seed, anatomy);
    - ``compare.json``: anomaly rate per set (``target``, ``control``) before/after with Wilson intervals, the
      difference with Newcombe's interval and the relative reduction; per-prompt rates; attribute accuracy per set
      with the paired difference; with ``reference_dir`` (correct images, e.g. from :func:`collect`): SSIM/PSNR over
      the pairs described in the module docstring, ``world_fd`` and, with ``inception_weights``, FID — each for base
      and tuned target images;
    - ``pairs/`` (the preference study: ``NNNN.png``, ``index.html``, ``responses.csv``) and ``key.json`` beside it;
    - ``report.html``.

    A missing Inception weights file fails before any image is generated. Returns compare.json's content.
    """
    from humantune.models.generation import generation_settings, load_pipeline, resolve_model, shipped_models
    from humantune.models.lora import load_lora, resolve_lora_dir

    target_prompts = _check_inputs(target_prompts, n, "target prompts")
    control_prompts = [str(p).strip() for p in control_prompts if str(p).strip()]
    source = resolve_model(base)
    tuned_path = Path(tuned).expanduser()
    tuned_is_pipeline = (tuned_path / "model_index.json").is_file() or str(tuned) in shipped_models()
    lora_dir = None if tuned_is_pipeline else resolve_lora_dir(tuned_path)
    inception = None
    if inception_weights is not None:
        from humantune.eval.distribution import InceptionFeatures

        inception = InceptionFeatures(inception_weights)
    references = None
    if reference_dir is not None:
        references = _reference_sets(reference_dir, target_prompts)
    world_net = None
    if references is not None:
        from humantune.eval.world_features import WorldFeatureNet

        world_net = WorldFeatureNet.load(world_features)
    est, own = _estimator(estimator)
    t0 = time.perf_counter()
    prompts = target_prompts + control_prompts
    sets = ["target"] * len(target_prompts) + ["control"] * len(control_prompts)
    try:
        with new_output_dir(out, overwrite) as tmp:
            kwargs = generation_settings(source, steps, guidance_scale, size)
            pipe = load_pipeline(source)
            flat, seeds, base_images = _generate(pipe, prompts, n, seed, kwargs, progress, "base model")
            if lora_dir is not None:
                load_lora(pipe, lora_dir)
            else:
                pipe = load_pipeline(resolve_model(tuned))
            _, _, tuned_images = _generate(pipe, prompts, n, seed, kwargs, progress, "tuned model")
            del pipe
            base_scores = score_anatomy(base_images, est, progress, "anatomy (base)")
            tuned_scores = score_anatomy(tuned_images, est, progress, "anatomy (tuned)")
            flat_sets = [s for s in sets for _ in range(n)]
            result: dict[str, Any] = {
                "humantune_version": __version__, "base": str(base), "tuned": str(tuned),
                "tuned_kind": "pipeline" if lora_dir is None else "lora", "lora_dir": None if lora_dir is None
                else str(lora_dir.resolve()), "n_per_prompt": n, "seed": seed, "generation": kwargs,
                "estimator": _describe(est), "conventions": _conventions(),
                "target_prompts": target_prompts, "control_prompts": control_prompts,
                "anomaly_rate": {}, "attribute_accuracy": {},
            }
            judged = {"base": [(0, 0)] * len(flat), "tuned": [(0, 0)] * len(flat)}
            for set_name in ("target", "control"):
                idx = [i for i, s in enumerate(flat_sets) if s == set_name]
                if not idx:
                    continue
                result["anomaly_rate"][set_name] = rate_change([base_scores[i].anomalous for i in idx],
                                                               [tuned_scores[i].anomalous for i in idx])
                unparsed = _outside_grammar([flat[i] for i in idx])
                if unparsed:
                    result["attribute_accuracy"][set_name] = {
                        "skipped": f"prompt {unparsed!r} is not in the mannequin caption grammar"}
                    continue
                result["attribute_accuracy"][set_name], per_image = attribute_change(
                    [base_images[i] for i in idx], [tuned_images[i] for i in idx], [flat[i] for i in idx],
                    [base_scores[i] for i in idx], [tuned_scores[i] for i in idx], seed)
                for arm, (correct, counted) in per_image.items():
                    for k, i in enumerate(idx):
                        judged[arm][i] = (int(correct[k]), int(counted[k]))
            files = {}
            for arm, images, scores in (("base", base_images, base_scores), ("tuned", tuned_images, tuned_scores)):
                (tmp / arm).mkdir()
                rows = []
                for i, (image, prompt, s, sc, st) in enumerate(zip(images, flat, seeds, scores, flat_sets)):
                    name = f"{i:05d}.png"
                    image.save(tmp / arm / name)
                    rows.append({"file_name": name, "text": prompt, "set": st, "seed": s, **sc.to_json(),
                                 "attributes_correct": judged[arm][i][0], "attributes_counted": judged[arm][i][1]})
                write_jsonl_atomic(tmp / arm / "metadata.jsonl", rows)
                files[arm] = [f"{arm}/{r['file_name']}" for r in rows]
            result["per_prompt"] = []
            for p, (prompt, st) in enumerate(zip(prompts, sets)):
                sl = range(p * n, (p + 1) * n)
                change = rate_change([base_scores[i].anomalous for i in sl], [tuned_scores[i].anomalous for i in sl])
                result["per_prompt"].append({"prompt": prompt, "set": st, "base": change["base"],
                                             "tuned": change["tuned"], "difference": change["difference"]})

            target_idx = [i for i, s in enumerate(flat_sets) if s == "target"]
            if references is not None:
                ref_images, pairing, rule = references
                ref_entry: dict[str, Any] = {"dir": str(Path(reference_dir).resolve()), "n_images": len(ref_images),
                                             "pairing": rule, "resize": "correct image → generated size, PIL bicubic",
                                             "data_range": 255}
                for arm, images in (("base", base_images), ("tuned", tuned_images)):
                    gen = [np.asarray(images[i].convert("RGB")) for i in target_idx]
                    ref_entry[arm] = {**_pair_metrics(gen, [flat[i] for i in target_idx], ref_images, pairing),
                                      **_set_distances(gen, ref_images, world_net, inception)}
                ref_entry["fid"] = "computed" if inception is not None else \
                    "skipped: needs --inception-weights (pt_inception-2015-12-05-6726825d.pth; no download offline)"
                result["reference"] = ref_entry
            pair_seed = seed if pair_seed is None else pair_seed
            preference_pairs([base_images[i] for i in target_idx], [tuned_images[i] for i in target_idx],
                             [flat[i] for i in target_idx], [seeds[i] for i in target_idx], tmp / "pairs",
                             tmp / "key.json", pair_seed, [files["base"][i] for i in target_idx],
                             [files["tuned"][i] for i in target_idx])
            result["preference_study"] = {"pairs": len(target_idx), "page": "pairs/index.html",
                                          "responses": "pairs/responses.csv", "key": "key.json",
                                          "pair_seed": pair_seed, "question": PREFERENCE_QUESTION}
            result["seconds"] = time.perf_counter() - t0
            result = _json_safe(result)
            write_json_atomic(tmp / "compare.json", result)
            _compare_report(tmp / "report.html", result, base_images, tuned_images, base_scores, tuned_scores,
                            flat, seeds, n, len(target_prompts))
    finally:
        if own:
            est.close()
    return result


def _fmt_ci(ci) -> str:
    return "—" if not ci else f"{ci[0]:.3f} – {ci[1]:.3f}"


def _compare_report(path: Path, result: dict, base_images, tuned_images, base_scores, tuned_scores, flat, seeds,
                    n: int, n_target: int) -> None:
    from humantune.report.html import HtmlReport

    report = HtmlReport("Anomaly correction: base vs tuned")
    report.paragraph(f"base: {result['base']}; tuned: {result['tuned']} ({result['tuned_kind']}). {n} images per "
                     f"prompt, the same seeds for both (from {result['seed']}). Estimator: {result['estimator']}. "
                     "An image is anomalous when an anatomy check fires on its best detection or nobody is detected.")
    report.heading("Anomaly rate")
    rows = []
    for name, c in result["anomaly_rate"].items():
        rows.append({"prompts": name, "base": c["base"]["rate"], "base 95% CI": _fmt_ci(c["base"]["ci95"]),
                     "tuned": c["tuned"]["rate"], "tuned 95% CI": _fmt_ci(c["tuned"]["ci95"]),
                     "tuned − base": c["difference"]["value"], "difference 95% CI": _fmt_ci(c["difference"]["ci95"]),
                     "relative reduction": c["relative_reduction"], "n per model": c["base"]["n"]})
    report.table(rows)
    report.heading("Attribute accuracy (shirt/trouser colour, background, posture)")
    report.table([{"prompts": name, "base": c["base"]["value"], "base 95% CI": _fmt_ci(c["base"]["ci95"]),
                   "tuned": c["tuned"]["value"], "tuned 95% CI": _fmt_ci(c["tuned"]["ci95"]),
                   "tuned − base": c["difference"]["value"], "difference 95% CI (paired)":
                   _fmt_ci(c["difference"]["ci95"])} if "skipped" not in c else {"prompts": name, "base": c["skipped"]}
                  for name, c in result["attribute_accuracy"].items()])
    report.heading("Per prompt")
    report.table([{"set": r["set"], "prompt": r["prompt"], "base": r["base"]["rate"], "tuned": r["tuned"]["rate"],
                   "tuned − base 95% CI": _fmt_ci(r["difference"]["ci95"])} for r in result["per_prompt"]])
    if "reference" in result:
        ref = result["reference"]
        report.heading("Distance to the correct images (target prompts)")
        report.paragraph(f"{ref['n_images']} correct images from {ref['dir']}. SSIM/PSNR: {ref['pairing']}; "
                         f"{ref['resize']}; uint8, R = 255. world_fd / FID: generated target set vs the correct set. "
                         f"FID: {ref['fid']}.")
        report.table([{"model": arm, "SSIM": ref[arm]["ssim"]["value"],
                       "SSIM 95% CI": _fmt_ci(ref[arm]["ssim"]["ci95"]),
                       "PSNR (dB)": ref[arm]["psnr"]["value"], "world_fd": ref[arm].get("world_fd"),
                       "FID": ref[arm].get("fid"), "pairs": ref[arm]["pairs"]} for arm in ("base", "tuned")])
    report.heading("Examples: base (left) and tuned (right), same seed, detected skeleton drawn")
    items = []
    for p in range(n_target):
        for i in range(p * n, p * n + min(n, 3)):
            for arm, images, scores in (("base", base_images, base_scores), ("tuned", tuned_images, tuned_scores)):
                flag = "anomalous" if scores[i].anomalous else "ok"
                items.append((_overlay(images[i], scores[i]), f"{arm}, seed {seeds[i]}: {flag} — {flat[i]}"))
    report.image_grid(items, columns=6, thumb_size=160)
    report.paragraph(f"Preference study: {result['preference_study']['pairs']} pairs in pairs/index.html "
                     "(sides randomised); the key is in key.json — keep it from the raters.")
    report.save(path)


def _json_safe(obj: Any) -> Any:
    """NaN/∞ → None, numpy scalars → Python numbers, tuples → lists (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj
