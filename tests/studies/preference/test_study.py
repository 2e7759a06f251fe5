import json
import os
import sqlite3
import threading
from collections import Counter

import numpy as np
import pytest

from humantune.errors import DataError
from humantune.studies.preference.storage import AlreadyAnswered, NotAssigned, StudyError, StudyStore
from humantune.studies.preference.study import (
    StudyConfig, add_judge, backup_study, create_study, plan_assignments, read_access, study_links,
)

from .conftest import PROMPTS, make_generated


def test_create_matches_by_prompt_and_seed_and_copies_images(study, tmp_path):
    assert (study.items, study.comparison_pairs, study.attention_pairs) == (6, 6, 2)
    assert study.assignments_per_participant == 6 + 1 + 1  # all pairs, one repeat, one attention check
    store = StudyStore(study.path)
    items = store.rows("SELECT prompt, seed FROM items ORDER BY id")
    assert [(r["prompt"], r["seed"]) for r in items[:6]] == [(p, s) for p in PROMPTS for s in (0, 1)]
    # every shown image is a copy inside the study folder (self-contained)
    for row in store.rows("SELECT path FROM images"):
        assert (study.path / row["path"]).is_file() and not row["path"].startswith(("/", ".."))
    manifest = json.loads((study.path / "study.json").read_text())
    assert manifest["systems"][0]["name"] == "base" and manifest["comparison_pairs"] == 6
    store.close()


def test_tokens_only_in_the_private_access_file(study):
    access = read_access(study.path)
    assert oct(os.stat(study.path / "access.json").st_mode & 0o777) == "0o600"
    db = (study.path / "study.db").read_bytes() + (study.path / "study.json").read_bytes()
    for token in [access["admin"], access["join"], *access["participants"].values()]:
        assert token.encode() not in db
    links = study_links(study.path, "http://127.0.0.1:9000/")
    assert links["participants"]["P1"] == f"http://127.0.0.1:9000/s/{access['participants']['P1']}"


def test_sides_randomised_recorded_and_repeats_swapped(systems, tmp_path):
    made = create_study(systems, tmp_path / "s", StudyConfig(participants=40, repeats=2, seed=3))
    store = StudyStore(made.path)
    rows = store.rows("""SELECT a.participant_id, a.pair_id, a.position, a.is_repeat, a.left_image = p.image_a AS a_left
                         FROM assignments a JOIN pairs p ON p.id = a.pair_id""")
    firsts = [r for r in rows if not r["is_repeat"]]
    share = np.mean([r["a_left"] for r in firsts])
    assert 0.4 < share < 0.6  # 240 first showings, fair coin: |share − ½| < 0.1 with probability > 0.99
    by_key = {(r["participant_id"], r["pair_id"]): r for r in firsts}
    repeats = [r for r in rows if r["is_repeat"]]
    assert len(repeats) == 80
    for r in repeats:
        first = by_key[(r["participant_id"], r["pair_id"])]
        assert r["position"] > first["position"] and r["a_left"] != first["a_left"]
    store.close()


def test_pairs_per_participant_rotate_evenly(systems, tmp_path):
    made = create_study(systems, tmp_path / "s", StudyConfig(participants=6, pairs_per_participant=4))
    store = StudyStore(made.path)
    per_pair = Counter(r["pair_id"] for r in store.rows("SELECT pair_id FROM assignments"))
    assert sum(per_pair.values()) == 24 and set(per_pair.values()) == {4}  # 6 × 4 over 6 pairs: 4 people each
    store.close()


def test_attention_checks_never_first():
    rng = np.random.default_rng(0)
    for i in range(50):
        plan = plan_assignments([1, 2, 3], [1, 2, 3], [10, 11], i, StudyConfig(attention_checks=2), rng)
        assert plan[0][0] not in (10, 11) and sum(p in (10, 11) for p, _, _ in plan) == 2


def test_create_refuses_bad_input(tmp_path, systems):
    other = make_generated(tmp_path / "other", (0, 0, 255), prompts=["a girl dancing indoors"])
    with pytest.raises(StudyError, match="no image is in all of base, other"):
        create_study({"base": systems["base"], "other": other}, tmp_path / "s1")
    with pytest.raises(StudyError, match="at least two systems"):
        create_study({"base": systems["base"]}, tmp_path / "s2")
    with pytest.raises(StudyError, match="system name '../x'"):
        create_study({"base": systems["base"], "../x": systems["tuned"]}, tmp_path / "s3")
    evil = make_generated(tmp_path / "evil", (1, 2, 3))
    (evil / "metadata.jsonl").write_text(json.dumps({"file_name": "../base/00000.png", "text": "x", "seed": 0}) + "\n")
    with pytest.raises(DataError, match="leaves the folder"):
        create_study({"base": systems["base"], "evil": evil}, tmp_path / "s4")
    dup = make_generated(tmp_path / "dup", (1, 2, 3), prompts=["p", "p"], seeds=(0,))
    with pytest.raises(DataError, match="a second image of prompt 'p' with seed 0"):
        create_study({"base": systems["base"], "dup": dup}, tmp_path / "s5")
    with pytest.raises(StudyError, match="--attention-checks needs"):
        create_study(systems, tmp_path / "s6", StudyConfig(attention_checks=1))
    assert not any((tmp_path / f"s{i}").exists() for i in range(1, 7))  # nothing half-made


def test_votes_are_idempotent_and_private(study):
    store = StudyStore(study.path)
    access = read_access(study.path)
    p1 = store.participant(access["participants"]["P1"])
    p2 = store.participant(access["participants"]["P2"])
    a = store.next_assignment(p1.id)
    store.record_vote(p1.id, a.id, "left", 1200)
    with pytest.raises(AlreadyAnswered) as e:
        store.record_vote(p1.id, a.id, "right")
    assert e.value.recorded == "left"
    with pytest.raises(NotAssigned):
        store.record_vote(p2.id, a.id, "left")
    assert store.progress(p1.id) == (1, 8) and store.progress(p2.id) == (0, 8)
    assert store.rows("SELECT choice, response_ms FROM votes") == [{"choice": "left", "response_ms": 1200}]
    store.close()


def test_judge_participant_gets_every_pair_once(study):
    store = StudyStore(study.path)
    pid = add_judge(store, "judge:test")
    assert add_judge(store, "judge:test") == pid  # a second run resumes, no new assignments
    assert store.progress(pid) == (0, 8)  # 6 comparison + 2 attention pairs
    with pytest.raises(StudyError, match="is a person's name"):
        add_judge(store, "P1")
    store.close()


def test_backup_is_consistent_while_votes_are_written(study, tmp_path):
    store = StudyStore(study.path)
    access = read_access(study.path)
    people = [store.participant(t) for t in access["participants"].values()]
    stop = threading.Event()

    def vote_all():
        writer = StudyStore(study.path)
        for p in people:
            for a in writer.unanswered(p.id):
                writer.record_vote(p.id, a.id, "tie")
        writer.close()
        stop.set()

    thread = threading.Thread(target=vote_all)
    thread.start()
    copies = []
    for i in range(3):
        copies.append(backup_study(study.path, tmp_path / f"copy{i}"))
    thread.join(timeout=60)
    assert stop.is_set()
    for copy in copies:
        conn = sqlite3.connect(copy / "study.db")
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        n = conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
        assert 0 <= n <= 24 and (copy / "images").is_dir() and (copy / "access.json").is_file()
        conn.close()
    final = backup_study(study.path, tmp_path / "final")
    assert sqlite3.connect(final / "study.db").execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 24
    store.close()
