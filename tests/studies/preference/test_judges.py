import json

import numpy as np
import pytest
from PIL import Image

from humantune.errors import HumantuneError
from humantune.studies.preference.judges import (
    JUDGES, Judge, JudgeNoAnswer, ScoreJudge, detectability, load_judge, register_judge, run_judge,
)
from humantune.studies.preference.storage import StudyStore
from humantune.studies.preference.study import StudyConfig, create_study


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Four standing/walking mannequin renders (people MediaPipe finds) and a blank image of the same size."""
    from humantune.config import load_config
    from humantune.data.mannequin.world import MannequinConfig, write_world

    cfg = load_config(MannequinConfig, None, ["n=4", "seed=0", "second_person_prob=0", "truncate_prob=0",
                                              "action_mix={standing: 1, walking: 1}"])
    out = write_world(cfg, tmp_path_factory.mktemp("w") / "world", progress=False)
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    return out, rows


class Constant(ScoreJudge):
    name = "constant"

    def __init__(self, scores, margin=0.0):
        super().__init__(margin)
        self.scores = scores

    def score(self, prompt, image):
        return self.scores[image.getpixel((0, 0))[0]]


def test_score_judge_margin_and_sides():
    red, blue = Image.new("RGB", (4, 4), (1, 0, 0)), Image.new("RGB", (4, 4), (2, 0, 0))
    judge = Constant({1: 0.30, 2: 0.25})
    assert judge("p", red, blue) == "left" and judge("p", blue, red) == "right" and judge("p", red, red) == "tie"
    assert Constant({1: 0.30, 2: 0.25}, margin=0.1)("p", red, blue) == "tie"
    with pytest.raises(HumantuneError, match="margin"):
        Constant({}, margin=-1)


def test_detectability_counts_confident_keypoints_then_mean():
    kp = np.zeros((1, 17, 3))
    kp[0, :10, 2] = 0.9  # 10 keypoints at 0.9, 7 at 0: 10 + 9/17
    assert detectability(kp) == pytest.approx(10 + 0.9 * 10 / 17)
    assert detectability(np.zeros((0, 17, 3))) == 0.0
    two = np.concatenate([kp, np.full((1, 17, 3), 0.6)])  # the best person counts: 17 + 0.6
    assert detectability(two) == pytest.approx(17.6)


def test_registry_and_errors():
    assert {"pose", "anatomy", "reward", "vlm"} <= set(JUDGES)
    with pytest.raises(HumantuneError, match="unknown judge 'nope'; known: "):
        load_judge("nope")
    with pytest.raises(HumantuneError, match="judge 'pose': bad arguments"):
        load_judge("pose", colour="red")
    register_judge("always-left", lambda: type("L", (Judge,), {"name": "left", "__call__": lambda s, p, a, b: "left"})())
    assert load_judge("always-left")("p", None, None) == "left"
    del JUDGES["always-left"]


def test_pose_and_anatomy_judges_prefer_the_detected_person(world):
    out, rows = world
    person = Image.open(out / rows[0]["file_name"]).convert("RGB")
    blank = Image.new("RGB", person.size, (128, 128, 128))
    for name in ("pose", "anatomy"):
        judge = load_judge(name)
        try:
            assert judge(rows[0]["text"], person, blank) == "left", name
            assert judge(rows[0]["text"], blank, person) == "right", name
            assert judge(rows[0]["text"], blank, blank) == "tie", name
        finally:
            judge.close()


def test_judge_votes_through_the_study_and_resumes(world, tmp_path):
    out, rows = world
    blank = tmp_path / "blank"
    blank.mkdir()
    for row in rows:
        Image.new("RGB", (128, 128), (128, 128, 128)).save(blank / row["file_name"].split("/")[-1])
    (blank / "metadata.jsonl").write_text("".join(
        json.dumps({"file_name": r["file_name"].split("/")[-1], "text": r["text"]}) + "\n" for r in rows))
    world_rows = [{"file_name": r["file_name"], "text": r["text"]} for r in rows]
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in world_rows))
    made = create_study({"world": out, "blank": blank}, tmp_path / "study", StudyConfig(participants=1))
    judge = load_judge("pose")
    try:
        first = run_judge(made.path, judge, progress=False, limit=2)
        rest = run_judge(made.path, judge, progress=False)
    finally:
        judge.close()
    assert (first["voted"], first["remaining"]) == (2, 2) and (rest["voted"], rest["remaining"]) == (2, 0)
    store = StudyStore(made.path)
    votes = store.vote_rows()
    store.close()
    assert {v["participant"] for v in votes} == {"judge:pose"} and len(votes) == 4
    chosen = [{"left": v["left_system"], "right": v["right_system"], "tie": "tie"}[v["choice"]] for v in votes]
    assert "blank" not in chosen and chosen.count("world") >= 3


def test_unanswerable_pairs_are_skipped(study):
    class Mute(Judge):
        name = "mute"

        def __call__(self, prompt, left, right):
            raise JudgeNoAnswer("no answer")

    done = run_judge(study.path, Mute(), progress=False)
    assert done == {"participant": "judge:mute", "voted": 0, "skipped": 8, "remaining": 8}
