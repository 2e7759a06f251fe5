"""Step 4 of the anomaly study (:mod:`humantune.studies.anomaly`): the base model and the tuned one on the same seeds
— anomaly rates, attribute accuracy, distances to the correct images and a preference pair set (the conventions are
in the package docstring)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from humantune import __version__
from humantune.data.loaders import open_pose_dataset
from humantune.data.mannequin.prompted import parse_caption
from humantune.errors import HumantuneError
from humantune.eval.anatomy import score_anatomy
from humantune.eval.attributes import attribute_accuracy
from humantune.eval.context import describe_estimator
from humantune.eval.distribution import feature_statistics, frechet_distance
from humantune.eval.fid_inception import InceptionFeatures
from humantune.eval.image_metrics import psnr_per_image, ssim_per_image
from humantune.eval.metrics import PSNR_MAX_DB
from humantune.eval.pose_estimators import DETECTION_CONFIDENCE
from humantune.eval.statistics import N_BOOT, mean_interval, paired_ratio_difference_interval, rate_change, \
    ratio_interval
from humantune.io import json_safe, new_output_dir, write_json_atomic, write_jsonl_atomic
from humantune.models.generation import generation_settings, load_pipeline, resolve_model, shipped_models
from humantune.models.lora import load_lora, resolve_lora_dir
from humantune.report.html import HtmlReport
from humantune.studies.anomaly.pairs import PREFERENCE_QUESTION, preference_pairs
from humantune.eval.anatomy_judge import BODY_STATES, body_rates
from humantune.studies.anomaly.scan import anatomy_conventions, body_rate_rows, check_prompts, generate_for_prompts, \
    judge_bodies, open_estimator, open_judge, overlay


def compare(base: str | os.PathLike, tuned: str | os.PathLike, target_prompts: Sequence[str],
            control_prompts: Sequence[str], n: int, seed: int, out: str | os.PathLike, *,
            reference_dir: str | os.PathLike | None = None, inception_weights: str | os.PathLike | None = None,
            world_features: str | os.PathLike | None = None, estimator="mediapipe", anatomy_judge=None,
            steps: int | None = None, guidance_scale: float | None = None, size: int | None = None,
            pair_seed: int | None = None, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Compare ``base`` (shipped name, directory or hub id) with ``tuned`` — a LoRA directory (or a
    ``humantune train dreambooth-lora`` output directory) loaded onto ``base``, or a whole pipeline — on the same
    seeds, and write into ``out`` (replaced whole):

    - ``base/`` and ``tuned/``: the images with ``metadata.jsonl`` (prompt, set, seed, anatomy);
    - ``compare.json``: anomaly rate per set (``target``, ``control``) before/after with Wilson intervals, the
      difference with Newcombe's interval and the relative reduction; ``body_rates`` per set: the rates of no person
      found, person found but judged broken by the anatomy judge, and found and whole, each the same way (base,
      tuned, difference); per-prompt rates; attribute accuracy per set
      with the paired difference; with ``reference_dir`` (correct images, e.g. from :func:`collect`): SSIM/PSNR over
      the pairs described in the module docstring, ``world_fd`` and, with ``inception_weights``, FID — each for base
      and tuned target images;
    - ``pairs/`` (the preference study: ``NNNN.png``, ``index.html``, ``responses.csv``) and ``key.json`` beside it;
    - ``report.html``.

    A missing Inception weights file or anatomy judge (``anatomy_judge``: see
    :func:`~humantune.studies.anomaly.scan.open_judge`) fails before any image is generated. Returns compare.json's
    content.
    """
    target_prompts = check_prompts(target_prompts, n, "target prompts")
    control_prompts = [str(p).strip() for p in control_prompts if str(p).strip()]
    source = resolve_model(base)
    tuned_path = Path(tuned).expanduser()
    tuned_is_pipeline = (tuned_path / "model_index.json").is_file() or str(tuned) in shipped_models()
    lora_dir = None if tuned_is_pipeline else resolve_lora_dir(tuned_path)
    judge = open_judge(anatomy_judge)
    inception = None
    if inception_weights is not None:
        inception = InceptionFeatures(inception_weights)
    references = None
    if reference_dir is not None:
        references = _reference_sets(reference_dir, target_prompts)
    world_net = None
    if references is not None:
        from humantune.eval.world_features import WorldFeatureNet

        world_net = WorldFeatureNet.load(world_features)
    est, own = open_estimator(estimator)
    t0 = time.perf_counter()
    prompts = target_prompts + control_prompts
    sets = ["target"] * len(target_prompts) + ["control"] * len(control_prompts)
    try:
        with new_output_dir(out, overwrite) as tmp:
            kwargs = generation_settings(source, steps, guidance_scale, size)
            pipe = load_pipeline(source)
            flat, seeds, base_images = generate_for_prompts(pipe, prompts, n, seed, kwargs, progress, "base model")
            if lora_dir is not None:
                load_lora(pipe, lora_dir)
            else:
                pipe = load_pipeline(resolve_model(tuned))
            _, _, tuned_images = generate_for_prompts(pipe, prompts, n, seed, kwargs, progress, "tuned model")
            del pipe
            base_scores = score_anatomy(base_images, est, progress, "anatomy (base)")
            tuned_scores = score_anatomy(tuned_images, est, progress, "anatomy (tuned)")
            base_p, base_states = judge_bodies(judge, base_images, base_scores)
            tuned_p, tuned_states = judge_bodies(judge, tuned_images, tuned_scores)
            flat_sets = [s for s in sets for _ in range(n)]
            result: dict[str, Any] = {
                "humantune_version": __version__, "base": str(base), "tuned": str(tuned),
                "tuned_kind": "pipeline" if lora_dir is None else "lora", "lora_dir": None if lora_dir is None
                else str(lora_dir.resolve()), "n_per_prompt": n, "seed": seed, "generation": kwargs,
                "estimator": describe_estimator(est),
                "conventions": anatomy_conventions(judge.config.threshold),
                "target_prompts": target_prompts, "control_prompts": control_prompts,
                "anomaly_rate": {}, "body_rates": {}, "attribute_accuracy": {},
            }
            judged = {"base": [(0, 0)] * len(flat), "tuned": [(0, 0)] * len(flat)}
            for set_name in ("target", "control"):
                idx = [i for i, s in enumerate(flat_sets) if s == set_name]
                if not idx:
                    continue
                result["anomaly_rate"][set_name] = rate_change([base_scores[i].anomalous for i in idx],
                                                               [tuned_scores[i].anomalous for i in idx])
                result["body_rates"][set_name] = body_state_change([base_states[i] for i in idx],
                                                                   [tuned_states[i] for i in idx])
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
                    p_broken, state = (base_p, base_states) if arm == "base" else (tuned_p, tuned_states)
                    rows.append({"file_name": name, "text": prompt, "set": st, "seed": s, **sc.to_json(),
                                 "judge_p_broken": p_broken[i], "body_state": state[i],
                                 "attributes_correct": judged[arm][i][0], "attributes_counted": judged[arm][i][1]})
                write_jsonl_atomic(tmp / arm / "metadata.jsonl", rows)
                files[arm] = [f"{arm}/{r['file_name']}" for r in rows]
            result["per_prompt"] = []
            for p, (prompt, st) in enumerate(zip(prompts, sets)):
                sl = range(p * n, (p + 1) * n)
                change = rate_change([base_scores[i].anomalous for i in sl], [tuned_scores[i].anomalous for i in sl])
                result["per_prompt"].append({"prompt": prompt, "set": st, "base": change["base"],
                                             "tuned": change["tuned"], "difference": change["difference"],
                                             "body_rates": {"base": body_rates([base_states[i] for i in sl]),
                                                            "tuned": body_rates([tuned_states[i] for i in sl])}})

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
            result = json_safe(result)
            write_json_atomic(tmp / "compare.json", result)
            _compare_report(tmp / "report.html", result, base_images, tuned_images, base_scores, tuned_scores,
                            flat, seeds, n, len(target_prompts))
    finally:
        if own:
            est.close()
    return result


def body_state_change(base_states: Sequence[str], tuned_states: Sequence[str]) -> dict[str, Any]:
    """For each body state (:data:`~humantune.eval.anatomy_judge.BODY_STATES`): its rate for each model with the
    Wilson interval (``rate``, ``ci95``, ``count``, ``n``), the difference tuned − base with Newcombe's interval and
    the relative reduction (:func:`~humantune.eval.statistics.rate_change` of the indicator of that state)."""
    out = {}
    for state in BODY_STATES:
        change = rate_change([s == state for s in base_states], [s == state for s in tuned_states])
        for arm in ("base", "tuned"):
            change[arm]["count"] = change[arm].pop("anomalous")
        out[state] = change
    return out


def _fmt_ci(ci) -> str:
    return "—" if not ci else f"{ci[0]:.3f} – {ci[1]:.3f}"


def _compare_report(path: Path, result: dict, base_images, tuned_images, base_scores, tuned_scores, flat, seeds,
                    n: int, n_target: int) -> None:
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
    report.heading("Body states (no person found / found, judged broken by the anatomy judge / found and whole)")
    report.table(body_rate_rows({f"{name}, {arm}": {state: c[state][arm] for state in BODY_STATES}
                                 for name, c in result["body_rates"].items() for arm in ("base", "tuned")}))
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
                items.append((overlay(images[i], scores[i]), f"{arm}, seed {seeds[i]}: {flag} — {flat[i]}"))
    report.image_grid(items, columns=6, thumb_size=160)
    report.paragraph(f"Preference study: {result['preference_study']['pairs']} pairs in pairs/index.html "
                     "(sides randomised); the key is in key.json — keep it from the raters.")
    report.save(path)




def _outside_grammar(prompts: Sequence[str]) -> str | None:
    """The first prompt that is not a mannequin-world caption (attribute accuracy cannot read it), or None."""
    for p in dict.fromkeys(prompts):
        try:
            parse_caption(p)
        except ValueError:
            return p
    return None


def _attribute_counts(images, prompts, scores) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Per image: attributes read correctly, attributes requested; plus the pooled per-attribute summary."""
    try:
        result = attribute_accuracy([np.asarray(im) for im in images], list(prompts), [s.keypoints for s in scores],
                                    DETECTION_CONFIDENCE)
    except ValueError as e:
        raise HumantuneError(f"attribute accuracy needs prompts in the mannequin caption grammar: "
                             f"{' '.join(str(e).split())}") from None
    correct, counted = result.per_image_counts()
    return correct, counted, {f"accuracy_{a}": v for a, v in result.accuracy.items()}


def _attribute_entry(correct: np.ndarray, counted: np.ndarray, extra: dict) -> dict[str, Any]:
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
