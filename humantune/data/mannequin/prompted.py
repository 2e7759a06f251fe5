"""Prompted scenes: the mannequin world's caption grammar, and scenes rendered to order for a caption.

The world's captions follow one grammar (:func:`humantune.data.mannequin.appearance.compose_caption`)::

    caption  = person (" and " person)* " " background
    person   = article PERSON " in " article COLOR TOP [" and " ("blue jeans" | COLOR BOTTOM)] " " ACTION
    e.g.       "a woman in a red shirt and blue jeans lying on the grass"

:func:`parse_caption` inverts it exactly (it recomposes the caption from what it parsed and insists on equality);
:func:`compose_request` writes a parsed request back as a caption. :func:`render_prompt_scenes` draws scenes whose
people, action and background are the ones a caption asks for, and :func:`collect` gathers such "correct" images
(rendered, or copied from a folder) into an image folder with a ``metadata.jsonl`` of captions — the instance data
of ``humantune train dreambooth-lora`` and the correct images of ``humantune anomaly compare``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from humantune import __version__
from humantune.data.mannequin.appearance import (
    ACTION_PHRASES, BACKGROUND_PHRASES, BOTTOMS, CLOTH_COLORS, PERSON_TYPES, TOPS,
)
from humantune.errors import DataError, HumantuneError
from humantune.io import new_output_dir, write_json_atomic, write_jsonl_atomic

APPEARANCES = ("prompt", "random")

# ----------------------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------------------

POSTURE_OF_ACTION = {
    "standing": "upright", "walking": "upright", "running": "upright", "waving": "upright",
    "arms_raised": "upright", "sitting": "sitting", "lying_back": "lying", "lying_side": "lying",
    "jumping": "upright", "dancing": "upright", "bending": "upright",
}
"""Posture class of each world action (what :func:`humantune.eval.attributes.read_attributes` can tell from 2-D
keypoints)."""

POSTURES = ("upright", "sitting", "lying")

CAPTION_ACTIONS = {phrase: ("lying" if phrase == "lying" else action) for action, phrase in ACTION_PHRASES.items()}
"""Caption phrase → action label; both lying variants read "lying" in a caption, so they parse to ``lying``."""


@dataclass(frozen=True)
class RequestedPerson:
    """What a caption asks of one person. ``bottom`` and ``bottom_color`` are None for a dress; jeans are "blue"."""

    person: str
    top: str
    top_color: str
    bottom: str | None
    bottom_color: str | None
    action: str

    @property
    def posture(self) -> str:
        return "lying" if self.action == "lying" else POSTURE_OF_ACTION[self.action]


@dataclass(frozen=True)
class CaptionRequest:
    """The parsed caption: each person in order, and the background."""

    people: tuple[RequestedPerson, ...]
    background: str


def _alternatives(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_PERSON_RE = re.compile(
    rf"(?:a|an) (?P<person>{_alternatives(PERSON_TYPES)}) in (?:a|an) (?P<top_color>{_alternatives(CLOTH_COLORS)}) "
    rf"(?P<top>{_alternatives(TOPS)})"
    rf"(?: and (?:blue (?P<jeans>jeans)|(?P<bottom_color>{_alternatives(CLOTH_COLORS)}) "
    rf"(?P<bottom>{_alternatives(b for b in BOTTOMS if b != 'jeans')})))?"
    rf" (?P<action>{_alternatives(CAPTION_ACTIONS)})"
)


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def compose_request(request: CaptionRequest) -> str:
    """The caption of a :class:`CaptionRequest`, in the world's grammar (the inverse of :func:`parse_caption`)."""
    phrases = {label: phrase for phrase, label in CAPTION_ACTIONS.items()}
    parts = []
    for p in request.people:
        clothes = _article(f"{p.top_color} {p.top}")
        if p.bottom == "jeans":
            clothes += " and blue jeans"
        elif p.bottom is not None:
            clothes += f" and {p.bottom_color} {p.bottom}"
        parts.append(f"{_article(p.person)} in {clothes} {phrases[p.action]}")
    return " and ".join(parts) + " " + BACKGROUND_PHRASES[request.background]


def parse_caption(text: str) -> CaptionRequest:
    """Parse a mannequin-world caption into the people and background it asks for.

    Raises ValueError naming the first place where ``text`` leaves the grammar (an unknown colour, garment,
    action or background phrase, or a wrong article).
    """
    if not isinstance(text, str):
        raise ValueError(f"caption must be a string, got {type(text).__name__}")
    background = next((bg for bg, phrase in BACKGROUND_PHRASES.items() if text.endswith(" " + phrase)), None)
    if background is None:
        raise ValueError(f"caption {text!r} does not end with a background phrase "
                         f"({', '.join(repr(p) for p in BACKGROUND_PHRASES.values())})")
    body = text[: -len(BACKGROUND_PHRASES[background]) - 1]
    people, pos = [], 0
    while True:
        match = _PERSON_RE.match(body, pos)
        if match is None:
            raise ValueError(f"caption {text!r} does not describe a person at {body[pos:pos + 40]!r}")
        g = match.groupdict()
        jeans = g["jeans"] is not None
        people.append(RequestedPerson(
            person=g["person"], top=g["top"], top_color=g["top_color"],
            bottom="jeans" if jeans else g["bottom"], bottom_color="blue" if jeans else g["bottom_color"],
            action=CAPTION_ACTIONS[g["action"]],
        ))
        pos = match.end()
        if pos == len(body):
            break
        if not body.startswith(" and ", pos):
            raise ValueError(f"caption {text!r} has unexpected words at {body[pos:pos + 40]!r}")
        pos += len(" and ")
    request = CaptionRequest(tuple(people), background)
    if compose_request(request) != text:
        raise ValueError(f"caption {text!r} is not in the world's grammar (expected {compose_request(request)!r})")
    return request


# ----------------------------------------------------------------------------------------------------------------
# Scenes rendered for a caption, and the folder of correct images
# ----------------------------------------------------------------------------------------------------------------


def _renderable(prompt: str, size: int, appearance: str):
    """The parsed prompt; HumantuneError (one line) when the mannequin world cannot render it."""
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
    in the world's grammar (:func:`parse_caption`): its people doing its action on its
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
