"""The human preference study of the anomaly comparison (:mod:`humantune.studies.anomaly`): a side-by-side pair set
with the sides drawn at random, its key in a separate file, and the win rate of a rater's answers."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from humantune.errors import DataError
from humantune.eval.preference import wilson_interval, win_rate
from humantune.io import write_json_atomic
from humantune.report.grid import image_grid
from humantune.report.html import HtmlReport

PREFERENCE_QUESTION = "Which image shows the more natural, anatomically correct person: left or right?"
PAIR_GAP = 8
"""White pixels between the two images of a pair."""


def preference_pairs(base_images: Sequence[Image.Image], tuned_images: Sequence[Image.Image],
                     prompts: Sequence[str], seeds: Sequence[int], out_dir: Path, key_path: Path, seed: int,
                     base_files: Sequence[str] | None = None, tuned_files: Sequence[str] | None = None
                     ) -> dict[str, Any]:
    """A side-by-side pair set for a human preference study: ``out_dir/NNNN.png`` (left | right, two images of one
    size :data:`PAIR_GAP` white pixels apart), ``index.html`` showing every pair with the question and no hint of
    which side is which, ``responses.csv`` (one empty row per pair for a rater's ``left`` / ``right`` / ``tie``),
    and the key in the separate file ``key_path`` (pair → which
    side is the tuned model). Sides are drawn per pair by ``numpy.random.default_rng(seed)`` (fair coin)."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries, items = [], []
    for k, (b, t, prompt, s) in enumerate(zip(base_images, tuned_images, prompts, seeds)):
        tuned_left = bool(rng.random() < 0.5)
        name = f"{k:04d}"
        image = image_grid([[t, b] if tuned_left else [b, t]], gap=PAIR_GAP, background=(255, 255, 255))
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
