"""The caption grammar (parsed exactly, round-tripped on the rendered world) and scenes rendered to order for a
caption, gathered into a folder of correct images."""

import json

import numpy as np
import pytest
from PIL import Image

from humantune.data.mannequin.prompted import (
    CaptionRequest,
    RequestedPerson,
    collect,
    compose_request,
    parse_caption,
    render_prompt_scenes,
)
from humantune.data.mannequin.world import MannequinConfig, render_sample
from humantune.errors import DataError, HumantuneError

TARGETS = ["a man in a red shirt and blue jeans lying on the grass", "a woman in a blue dress lying on the street"]


def test_parse_caption_example():
    request = parse_caption("a woman in a red shirt and blue jeans lying on the grass")
    assert request == CaptionRequest(
        (RequestedPerson("woman", "shirt", "red", "jeans", "blue", "lying"),), "grass")
    assert request.people[0].posture == "lying"


def test_parse_caption_dress_two_people_and_multiword_actions():
    text = ("a girl in an orange dress with arms raised and a man in a gray t-shirt and black shorts bending over "
            "in a room")
    request = parse_caption(text)
    assert [p.action for p in request.people] == ["arms_raised", "bending"]
    assert request.people[0].bottom is None and request.people[0].bottom_color is None
    assert request.people[1] == RequestedPerson("man", "t-shirt", "gray", "shorts", "black", "bending")
    assert request.background == "indoor"


def test_parse_caption_round_trip_on_rendered_world():
    cfg = MannequinConfig(n=400, seed=3, second_person_prob=0.3)
    for i in range(400):
        scene = render_sample(cfg, i)
        request = parse_caption(scene.caption)
        assert compose_request(request) == scene.caption
        assert request.background == scene.background
        assert len(request.people) == len(scene.people)
        for want, spec in zip(request.people, scene.people):
            look = spec.look
            assert (want.person, want.top, want.top_color, want.bottom) == (look.person, look.top, look.top_color,
                                                                            look.bottom)
            assert want.bottom_color == ("blue" if look.bottom == "jeans" else look.bottom_color)
            assert want.action == ("lying" if spec.action.startswith("lying") else spec.action)


@pytest.mark.parametrize("text, problem", [
    ("a woman in a red shirt standing on the moon", "background phrase"),
    ("a woman in a teal shirt standing on the grass", "does not describe a person"),
    ("a woman in a red shirt standing and on the grass", "unexpected words at ' and'"),
    ("a woman in a red shirt standing quietly on the grass", "unexpected words"),
    ("a woman in a orange shirt standing on the grass", "not in the world's grammar"),
])
def test_parse_caption_rejects_text_outside_the_grammar(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_caption(text)


@pytest.mark.parametrize("prompt", [
    "a man in a red shirt and blue jeans lying on the grass",
    "a girl in a pink dress with arms raised against the sky",
    "a woman in an orange t-shirt and white skirt bending over in a room",
    "a boy in a gray shirt and black shorts sitting on the beach",
])
def test_rendered_people_are_dressed_and_posed_as_the_prompt_says(prompt):
    scenes = render_prompt_scenes(prompt, 3, seed=4, size=64)
    assert [s.caption for s in scenes] == [prompt] * 3
    want = parse_caption(prompt).people[0].action
    assert all((a.startswith("lying") if want == "lying" else a == want) for s in scenes for a in s.actions)
    assert all(s.keypoints.shape == (1, 17, 3) and (s.keypoints[0, :, 2] > 0).sum() >= 12 for s in scenes)
    again = render_prompt_scenes(prompt, 3, seed=4, size=64)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(scenes, again))


def test_random_appearance_keeps_action_and_background_only():
    scenes = render_prompt_scenes(TARGETS[0], 6, seed=1, size=48, appearance="random")
    requests = [parse_caption(s.caption) for s in scenes]
    assert all(r.background == "grass" and r.people[0].action == "lying" for r in requests)
    assert len({s.caption for s in scenes}) > 1
    with pytest.raises(HumantuneError, match="cannot render prompt 'a person lying on the grass'"):
        render_prompt_scenes("a person lying on the grass", 1)


def test_collect_renders_or_copies_correct_images_with_captions(tmp_path):
    out = collect(TARGETS, tmp_path / "rendered", n=2, seed=3, size=48, progress=False)
    rows = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [TARGETS[0]] * 2 + [TARGETS[1]] * 2
    assert Image.open(out / rows[0]["file_name"]).size == (48, 48) and len(rows[0]["keypoints"]) == 1
    assert json.loads((out / "collect.json").read_text())["count"] == 4

    mine = tmp_path / "mine"
    mine.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(mine / f"{i}.jpg")
    (mine / "1.txt").write_text(TARGETS[1])
    copied = collect([TARGETS[0]], tmp_path / "copied", source=mine, progress=False)
    rows = [json.loads(x) for x in (copied / "metadata.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [TARGETS[0], TARGETS[1], TARGETS[0]]
    assert Image.open(copied / rows[2]["file_name"]).size == (30, 20)
    with pytest.raises(DataError, match="has no caption; give exactly one --prompt"):
        collect([], tmp_path / "nocaption", source=mine, progress=False)
