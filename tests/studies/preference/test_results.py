import csv
import json

import numpy as np
import pytest

from humantune.eval.preference import bradley_terry, cohen_kappa, fleiss_kappa, wilson_interval
from humantune.studies.preference.results import bradley_terry_summary, compute_results, write_results
from humantune.studies.preference.storage import StudyError, StudyStore
from humantune.studies.preference.study import add_judge, read_access

from .conftest import PROMPTS


def answer(store: StudyStore, participant_id: int, decide) -> None:
    """Vote every assignment of a participant with decide(prompt, left, right) -> the system/role to pick or 'tie'."""
    rows = store.rows("""
        SELECT a.id, it.prompt, COALESCE(ls.name, li.role) AS l, COALESCE(rs.name, ri.role) AS r
        FROM assignments a JOIN pairs p ON p.id = a.pair_id JOIN items it ON it.id = p.item_id
        JOIN images li ON li.id = a.left_image JOIN images ri ON ri.id = a.right_image
        LEFT JOIN systems ls ON ls.id = li.system_id LEFT JOIN systems rs ON rs.id = ri.system_id
        WHERE a.participant_id = ? ORDER BY a.position""", (participant_id,))
    for row in rows:
        pick = decide(row["prompt"], row["l"], row["r"])
        store.record_vote(participant_id, row["id"], "tie" if pick == "tie" else "left" if pick == row["l"] else "right")


@pytest.fixture
def voted(study):
    """P1 always prefers tuned, P2 too except on the first prompt (base), P3 answers tie to everything (and so
    fails the attention check); judge:fake picks tie / tuned / base on prompts 0 / 1 / 2."""
    store = StudyStore(study.path)
    ids = {name: store.participant(t).id for name, t in read_access(study.path)["participants"].items()}
    answer(store, ids["P1"], lambda p, l, r: "good" if "good" in (l, r) else "tuned")
    answer(store, ids["P2"], lambda p, l, r: "good" if "good" in (l, r) else "base" if p == PROMPTS[0] else "tuned")
    answer(store, ids["P3"], lambda p, l, r: "tie")
    judge = add_judge(store, "judge:fake")
    answer(store, judge, lambda p, l, r: "good" if "good" in (l, r) else ["tie", "tuned", "base"][PROMPTS.index(p)])
    yield study, store
    store.close()


def test_win_rate_counts_ties_as_half_with_wilson_interval(voted):
    study, store = voted
    result, rows = compute_results(store, n_boot=200)
    (w,) = result["win_rates"]["people"]
    # 18 first showings: base wins 2 (P2, prompt 0), tuned 10, ties 6 (P3) -> base's rate (2 + 3) / 18
    assert (w["a"], w["b"], w["wins_a"], w["wins_b"], w["ties"], w["n"]) == ("base", "tuned", 2, 10, 6, 18)
    assert w["win_rate_a"] == pytest.approx(5 / 18)
    assert w["ci95"] == pytest.approx(list(wilson_interval(5, 18)))
    assert result["study"]["votes"] == {"people": 24, "judges": 8}
    assert result["bradley_terry"] == {}  # two systems: the win rate says it all


def test_per_prompt_sentence_and_fleiss_kappa(voted):
    result, _ = compute_results(voted[1], n_boot=100)
    by_prompt = {r["prompt"]: r["preferred"] for r in result["per_prompt"]["people"]}
    assert by_prompt == {PROMPTS[0]: "even", PROMPTS[1]: "tuned", PROMPTS[2]: "tuned"}
    (summary,) = result["per_prompt_summary"]["people"]
    assert summary["sentence"] == "tuned preferred in 2 of 3 prompts" and summary["even"] == 1
    fk = result["agreement"]["fleiss_kappa_people"]
    # columns base / tuned / tie; prompt 0's two pairs: one each; the other four: tuned 2, tie 1
    expected = fleiss_kappa([[1, 1, 1]] * 2 + [[0, 2, 1]] * 4)
    assert fk["value"] == pytest.approx(expected) and (fk["items"], fk["raters_per_item"]) == (6, 3)


def test_attention_repeats_and_exclusion(voted):
    result, _ = compute_results(voted[1], n_boot=100)
    att = result["attention_checks"]["people"]
    assert (att["passed"], att["n"]) == (2, 3) and att["ci95"] == pytest.approx(list(wilson_interval(2, 3)))
    assert result["attention_checks"]["judge:fake"]["rate"] == 1.0
    rep = result["repeat_consistency"]["people"]
    assert (rep["consistent"], rep["n"]) == (3, 3)
    strict, _ = compute_results(voted[1], n_boot=100, min_attention=0.5)
    assert strict["excluded_participants"] == ["P3"]
    (w,) = strict["win_rates"]["people"]
    assert (w["wins_a"], w["wins_b"], w["ties"]) == (2, 10, 0)
    with pytest.raises(StudyError, match="--min-attention"):
        compute_results(voted[1], min_attention=2)


def test_judge_against_people_majority(voted):
    result, _ = compute_results(voted[1], n_boot=100)
    j = result["judges"]["judge:fake"]
    # prompt 0 has no majority (tuned, base, tie); prompts 1 and 2: majority tuned; the judge: tuned, then base
    assert j["items"] == 4 and j["agreement"] == pytest.approx(0.5)
    assert j["cohen_kappa"] == pytest.approx(cohen_kappa(["tuned"] * 4, ["tuned", "tuned", "base", "base"]))
    table = {r["prompt"]: r for r in result["disagreement_by_prompt"]}
    assert table[PROMPTS[2]]["judges_disagree"] and table[PROMPTS[2]]["judge:fake"] == "base"
    assert not table[PROMPTS[1]]["judges_disagree"] and not table[PROMPTS[0]]["judges_disagree"]


def test_files_written(voted, tmp_path):
    study, _ = voted
    write_results(study.path, tmp_path / "out", n_boot=100)
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["win_rates"]["people"][0]["n"] == 18
    with open(tmp_path / "out" / "votes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 32 and {r["participant"] for r in rows} == {"P1", "P2", "P3", "judge:fake"}
    assert {r["chosen"] for r in rows if r["participant"] == "P3"} == {"tie"}
    report = (tmp_path / "out" / "report.html").read_text()
    assert "tuned preferred in 2 of 3 prompts" in report and "Fleiss" in report and "judge:fake" in report


def test_bradley_terry_for_three_systems_with_bootstrap():
    rng = np.random.default_rng(0)
    strength = {"a": 4.0, "b": 2.0, "c": 1.0}
    rows = []
    for _ in range(300):
        x, y = rng.choice(list(strength), size=2, replace=False)
        px = strength[x] / (strength[x] + strength[y])
        chosen = x if rng.random() < px else y
        rows.append({"left_system": x, "right_system": y, "choice": "left" if chosen == x else "right"})
    bt = bradley_terry_summary(rows, ["a", "b", "c"], n_boot=200)
    got = np.array([s["strength"] for s in bt["systems"]])
    index = {"a": 0, "b": 1, "c": 2}
    direct = bradley_terry([(index[r["left_system"]], index[r["right_system"]], float(r["choice"] == "left"))
                            for r in rows], 3)
    assert got == pytest.approx(direct, rel=1e-6)
    assert got[0] > got[1] > got[2] and bt["bootstrap_resamples"] == 200
    for s in bt["systems"]:
        assert s["ci95"][0] <= s["strength"] <= s["ci95"][1]
    never = [{"left_system": "a", "right_system": "b", "choice": "left"}] * 3
    assert "never" in bradley_terry_summary(never, ["a", "b", "c"], n_boot=10)["skipped"]
