"""A study's statistics: ``results.json``, ``report.html`` and ``votes.csv`` (``humantune study results``).

Raters are grouped: all people pooled (``people``), and each judge on its own. Every statistic is computed for
each group with the same functions (:mod:`humantune.eval.preference`), so judges and people compare like for like.

- Win rate of system A over B per system pair: (wins + ½·ties) / n with the Wilson 95 % interval (ties count as
  half a success); comparison pairs only, first showings only (a repeated pair's second answer measures
  consistency, not preference).
- Bradley–Terry strengths (Hunter's MM) with percentile-bootstrap intervals over votes, for three or more systems.
- Per prompt (all seeds of a prompt pooled): the win rate and which system is preferred (win rate > ½); summed as
  "A preferred in k of n prompts" — the papers' "preferred in ≥ 8 of 10 prompts".
- Agreement: Fleiss' κ between people (categories A / B / tie, over pairs rated by the most common number r ≥ 2
  of people, using the first r answers of pairs with more); repeat consistency (same system chosen both times);
  attention-check pass rate (a tie fails) with Wilson intervals; Cohen's κ of each judge against the people's
  majority per pair (pairs with a unique plurality), and a per-prompt table of where judges and people disagree.

``min_attention`` drops people whose attention-check pass rate is below it from every statistic (they are listed).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from humantune.eval.preference import (
    bradley_terry, bradley_terry_bootstrap, cohen_kappa, fleiss_kappa, majority_label, wilson_interval,
)
from humantune.io import json_safe, write_json_atomic, write_text_atomic
from humantune.report.html import HtmlReport
from humantune.studies.preference.storage import StudyError, StudyStore

PEOPLE = "people"
CSV_COLUMNS = ["vote_id", "participant", "participant_kind", "pair_id", "pair_kind", "is_repeat", "position",
               "prompt", "seed", "left_system", "right_system", "choice", "chosen", "response_ms", "created_at"]


def _chosen(row: dict) -> str:
    """The system (or ``good``/``bad``) a vote chose, or ``tie``."""
    return {"left": row["left_system"], "right": row["right_system"], "tie": "tie"}[row["choice"]]


def _rate(successes: float, n: int) -> dict:
    if n == 0:
        return {"rate": None, "ci95": None, "n": 0}
    lo, hi = wilson_interval(successes, n)
    return {"rate": successes / n, "ci95": [lo, hi], "n": n}


def _pair_key(row: dict, order: dict[str, int]) -> tuple[str, str]:
    return tuple(sorted((row["left_system"], row["right_system"]), key=order.__getitem__))


def _score(row: dict, a: str) -> float:
    """1 if the vote chose system ``a``, 0 if the other system, ½ for a tie."""
    chosen = _chosen(row)
    return 0.5 if chosen == "tie" else float(chosen == a)


def win_rates(votes: list[dict], order: dict[str, int]) -> list[dict]:
    """Per system pair (in study order): wins of A and B, ties, n, A's win rate and its Wilson 95 % interval."""
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for row in votes:
        a, b = _pair_key(row, order)
        counts[(a, b)][_chosen(row)] += 1
    out = []
    for a, b in sorted(counts, key=lambda k: (order[k[0]], order[k[1]])):
        c = counts[(a, b)]
        n = c[a] + c[b] + c["tie"]
        r = _rate(c[a] + 0.5 * c["tie"], n)
        out.append({"a": a, "b": b, "wins_a": c[a], "wins_b": c[b], "ties": c["tie"], "n": n,
                    "win_rate_a": r["rate"], "ci95": r["ci95"]})
    return out


def bradley_terry_summary(votes: list[dict], systems: list[str], n_boot: int, seed: int = 0) -> dict:
    """Bradley–Terry strengths (sum 1) with bootstrap 95 % intervals; ``skipped`` with the reason when they do
    not exist (e.g. a system that never wins)."""
    index = {s: i for i, s in enumerate(systems)}
    rows = []
    for row in votes:
        a, b = _pair_key(row, index)
        rows.append((index[a], index[b], _score(row, a)))
    if not rows:
        return {"skipped": "no votes"}
    try:
        strength = bradley_terry(rows, len(systems))
        low, high, used = bradley_terry_bootstrap(rows, len(systems), n_boot=n_boot, seed=seed)
    except ValueError as e:
        return {"skipped": str(e)}
    return {"systems": [{"system": s, "strength": float(strength[i]), "ci95": [float(low[i]), float(high[i])]}
                        for i, s in enumerate(systems)], "bootstrap_resamples": used, "n": len(rows)}


def per_prompt(votes: list[dict], order: dict[str, int]) -> tuple[list[dict], list[dict]]:
    """(rows per prompt and system pair, summary per system pair: in how many prompts each side is preferred)."""
    by_prompt: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in votes:
        by_prompt[(row["prompt"], *_pair_key(row, order))].append(row)
    rows = []
    for (prompt, a, b), group in by_prompt.items():
        w = win_rates(group, order)[0]
        preferred = a if w["win_rate_a"] > 0.5 else b if w["win_rate_a"] < 0.5 else "even"
        rows.append({"prompt": prompt, "a": a, "b": b, "wins_a": w["wins_a"], "wins_b": w["wins_b"],
                     "ties": w["ties"], "win_rate_a": w["win_rate_a"], "preferred": preferred})
    summary = []
    for a, b in sorted({(r["a"], r["b"]) for r in rows}, key=lambda k: (order[k[0]], order[k[1]])):
        group = [r for r in rows if (r["a"], r["b"]) == (a, b)]
        n, na, nb = len(group), sum(r["preferred"] == a for r in group), sum(r["preferred"] == b for r in group)
        lead, k = (a, na) if na >= nb else (b, nb)
        summary.append({"a": a, "b": b, "prompts": n, "a_preferred": na, "b_preferred": nb, "even": n - na - nb,
                        "sentence": f"{lead} preferred in {k} of {n} prompts"})
    return rows, summary


def fleiss_between_people(votes: list[dict], order: dict[str, int]) -> dict:
    """Fleiss' κ over comparison pairs rated by r people, r the most common count ≥ 2 (pairs with more ratings
    contribute their first r); categories: the pair's first system, its second system, tie."""
    by_pair: dict[int, list[dict]] = defaultdict(list)
    for row in votes:
        by_pair[row["pair_id"]].append(row)
    counts = Counter(len(v) for v in by_pair.values() if len(v) >= 2)
    if not counts:
        return {"value": None, "reason": "no pair was rated by two or more people"}
    r = max(counts, key=lambda k: (counts[k], k))
    table = []
    for group in by_pair.values():
        if len(group) >= r:
            a, b = _pair_key(group[0], order)
            labels = [_chosen(row) for row in group[:r]]
            table.append([labels.count(a), labels.count(b), labels.count("tie")])
    value = fleiss_kappa(table)
    return {"value": None if math.isnan(value) else value, "items": len(table), "raters_per_item": r}


def repeat_consistency(rows: list[dict]) -> dict:
    """Share of repeated pairs (first and second showing by the same rater) where the same system (or tie) was
    chosen, with its Wilson interval."""
    first: dict[tuple[str, int], str] = {}
    for row in rows:
        if not row["is_repeat"] and row["pair_kind"] == "comparison":
            first[(row["participant"], row["pair_id"])] = _chosen(row)
    same = [first[(r["participant"], r["pair_id"])] == _chosen(r) for r in rows
            if r["is_repeat"] and (r["participant"], r["pair_id"]) in first]
    return {"consistent": int(sum(same)), **_rate(sum(same), len(same))}


def attention(rows: list[dict]) -> dict:
    passed = [_chosen(r) == "good" for r in rows if r["pair_kind"] == "attention"]
    return {"passed": int(sum(passed)), **_rate(sum(passed), len(passed))}


def judge_agreement(people: list[dict], judge: list[dict]) -> dict:
    """Cohen's κ and raw agreement of a judge with the people's plurality answer per comparison pair."""
    majority = {}
    by_pair: dict[int, list[str]] = defaultdict(list)
    for row in people:
        by_pair[row["pair_id"]].append(_chosen(row))
    for pair, labels in by_pair.items():
        label = majority_label(labels)
        if label is not None:
            majority[pair] = label
    both = [(majority[r["pair_id"]], _chosen(r)) for r in judge if r["pair_id"] in majority]
    if not both:
        return {"cohen_kappa": None, "agreement": None, "items": 0}
    a, b = zip(*both)
    kappa = cohen_kappa(list(a), list(b))
    return {"cohen_kappa": None if math.isnan(kappa) else kappa,
            "agreement": float(np.mean([x == y for x, y in both])), "items": len(both)}


def compute_results(store: StudyStore, n_boot: int = 1000, min_attention: float = 0.0) -> tuple[dict, list[dict]]:
    """(results dict, every vote row) of the study in ``store`` (one consistent read)."""
    if not 0.0 <= min_attention <= 1.0:
        raise StudyError(f"--min-attention must be in [0, 1], got {min_attention}")
    with store.snapshot():
        rows = store.vote_rows()
        progress = store.participant_progress()
        systems = store.systems()
        question, title = store.meta("question"), store.meta("title")
        config = json.loads(store.meta("config", "{}"))
    order = {s: i for i, s in enumerate(systems)}

    excluded = sorted(p["name"] for p in progress if p["kind"] == "person" and p["attention_answered"]
                      and p["attention_passed"] / p["attention_answered"] < min_attention)
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["participant_kind"] == "person":
            if row["participant"] not in excluded:
                groups[PEOPLE].append(row)
        else:
            groups[row["participant"]].append(row)
    groups.setdefault(PEOPLE, [])
    judges = sorted(g for g in groups if g != PEOPLE)

    def comparisons(group: list[dict]) -> list[dict]:
        return [r for r in group if r["pair_kind"] == "comparison" and not r["is_repeat"]]

    result: dict[str, Any] = {
        "study": {"title": title, "question": question, "systems": systems, "seed": config.get("seed"),
                  "participants": {"slots": sum(p["kind"] == "person" for p in progress),
                                   "started": sum(p["kind"] == "person" and p["answered"] > 0 for p in progress),
                                   "finished": sum(p["kind"] == "person" and p["total"] and p["answered"] == p["total"]
                                                   for p in progress)},
                  "votes": {"people": sum(r["participant_kind"] == "person" for r in rows),
                            "judges": sum(r["participant_kind"] == "judge" for r in rows)}},
        "settings": {"bootstrap_resamples": n_boot, "min_attention": min_attention, "level": 0.95,
                     "ties": "half a win for each side"},
        "excluded_participants": excluded,
        "win_rates": {}, "bradley_terry": {}, "per_prompt": {}, "per_prompt_summary": {},
        "attention_checks": {}, "repeat_consistency": {}, "judges": {},
    }
    for name in [PEOPLE, *judges]:
        comp = comparisons(groups[name])
        result["win_rates"][name] = win_rates(comp, order)
        if len(systems) > 2:
            result["bradley_terry"][name] = bradley_terry_summary(comp, systems, n_boot)
        result["per_prompt"][name], result["per_prompt_summary"][name] = per_prompt(comp, order)
        result["attention_checks"][name] = attention(groups[name])
        result["repeat_consistency"][name] = repeat_consistency(groups[name])
    result["attention_checks"]["per_participant"] = [
        {"participant": p["name"], "passed": p["attention_passed"], "answered": p["attention_answered"],
         "excluded": p["name"] in excluded} for p in progress if p["kind"] == "person" and p["attention_answered"]]
    result["agreement"] = {"fleiss_kappa_people": fleiss_between_people(comparisons(groups[PEOPLE]), order)}
    for judge in judges:
        result["judges"][judge] = judge_agreement(comparisons(groups[PEOPLE]), comparisons(groups[judge]))
    result["disagreement_by_prompt"] = _disagreement(result["per_prompt"], judges)
    result["participants"] = [
        {"participant": p["name"], "kind": p["kind"], "answered": p["answered"], "total": p["total"],
         "median_response_ms": _median([r["response_ms"] for r in rows if r["participant"] == p["name"]])}
        for p in progress]
    return result, rows


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _disagreement(per_prompt_rows: dict[str, list[dict]], judges: list[str]) -> list[dict]:
    """Per prompt and system pair: the people's preferred system next to each judge's, and whether any differs."""
    table: dict[tuple, dict] = {}
    for group in [PEOPLE, *judges]:
        for r in per_prompt_rows[group]:
            key = (r["prompt"], r["a"], r["b"])
            table.setdefault(key, {"prompt": r["prompt"], "a": r["a"], "b": r["b"]})[group] = r["preferred"]
    out = []
    for row in table.values():
        verdicts = [row.get(j) for j in judges if row.get(j) is not None]
        row["judges_disagree"] = bool(row.get(PEOPLE) is not None and any(v != row[PEOPLE] for v in verdicts))
        out.append(row)
    return out


def votes_csv(rows: list[dict]) -> str:
    """Every vote as CSV (one row per vote, :data:`CSV_COLUMNS`; times in UTC ISO 8601)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "chosen": _chosen(row), "is_repeat": int(row["is_repeat"]),
                         "created_at": datetime.fromtimestamp(row["created_at"], timezone.utc).isoformat()})
    return buf.getvalue()


def _ci(ci: list | None) -> str:
    return "" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def build_report(result: dict, study_dir: Path, examples: int = 6) -> HtmlReport:
    """The HTML report of :func:`compute_results` (all text escaped by :class:`HtmlReport`)."""
    s = result["study"]
    report = HtmlReport(f"{s['title']}: results")
    report.paragraph(f"Question: {s['question']}")
    report.paragraph(f"Systems: {', '.join(s['systems'])}. People: {s['participants']['started']} of "
                     f"{s['participants']['slots']} started, {s['participants']['finished']} finished; "
                     f"{s['votes']['people']} votes by people, {s['votes']['judges']} by judges. Ties count as half a "
                     "win for each side; intervals are 95 %.")
    if result["excluded_participants"]:
        report.paragraph(f"Excluded for failing attention checks (pass rate below "
                         f"{result['settings']['min_attention']}): {', '.join(result['excluded_participants'])}.")
    report.heading("Win rates (Wilson 95 % intervals)")
    report.table([{"raters": g, "A": w["a"], "B": w["b"], "A wins": w["wins_a"], "B wins": w["wins_b"],
                   "ties": w["ties"], "n": w["n"], "A win rate": w["win_rate_a"], "95 % CI": _ci(w["ci95"])}
                  for g, rows in result["win_rates"].items() for w in rows], float_format="{:.3f}")
    if result["bradley_terry"]:
        report.heading("Bradley–Terry strengths (bootstrap 95 % intervals)")
        bt_rows = []
        for g, bt in result["bradley_terry"].items():
            if "skipped" in bt:
                bt_rows.append({"raters": g, "system": "", "strength": None, "95 % CI": f"skipped: {bt['skipped']}"})
            else:
                bt_rows += [{"raters": g, "system": x["system"], "strength": x["strength"], "95 % CI": _ci(x["ci95"])}
                            for x in bt["systems"]]
        report.table(bt_rows, float_format="{:.3f}")
    report.heading("Per prompt")
    for g, summary in result["per_prompt_summary"].items():
        for x in summary:
            report.paragraph(f"{g}: {x['sentence']} ({x['a']} vs {x['b']}: {x['a']} {x['a_preferred']}, {x['b']} "
                             f"{x['b_preferred']}, even {x['even']}).")
    report.table([{"prompt": r["prompt"], "A": r["a"], "B": r["b"], "A wins": r["wins_a"], "B wins": r["wins_b"],
                   "ties": r["ties"], "A win rate": r["win_rate_a"], "preferred": r["preferred"]}
                  for r in result["per_prompt"][PEOPLE]], float_format="{:.3f}")
    report.heading("Agreement")
    fk = result["agreement"]["fleiss_kappa_people"]
    rows = [{"measure": "Fleiss' κ between people", "value": fk.get("value"),
             "detail": fk.get("reason") or f"{fk['items']} pairs × {fk['raters_per_item']} people"}]
    for g in result["attention_checks"]:
        if g == "per_participant":
            continue
        a, rc = result["attention_checks"][g], result["repeat_consistency"][g]
        if a["n"]:
            rows.append({"measure": f"attention checks passed ({g})", "value": a["rate"],
                         "detail": f"{a['passed']} of {a['n']} {_ci(a['ci95'])}"})
        if rc["n"]:
            rows.append({"measure": f"same answer on a repeated pair ({g})", "value": rc["rate"],
                         "detail": f"{rc['consistent']} of {rc['n']} {_ci(rc['ci95'])}"})
    report.table(rows, float_format="{:.3f}")
    if result["judges"]:
        report.heading("Judges against the people's majority")
        report.table([{"judge": j, "Cohen's κ": v["cohen_kappa"], "agreement": v["agreement"], "pairs": v["items"]}
                      for j, v in result["judges"].items()], float_format="{:.3f}")
        report.heading("Per-prompt verdicts: people and judges", level=3)
        report.table(result["disagreement_by_prompt"])
    report.heading("Participants")
    report.table(result["participants"], float_format="{:.0f}")
    _example_grid(report, study_dir, result, examples)
    return report


def _example_grid(report: HtmlReport, study_dir: Path, result: dict, examples: int) -> None:
    """Each system's image of the first ``examples`` prompts, captioned with the people's verdict there."""
    store = StudyStore(study_dir)
    try:
        rows = store.rows("""SELECT it.id AS item, it.prompt, s.name AS system, im.path FROM images im
                             JOIN items it ON it.id = im.item_id JOIN systems s ON s.id = im.system_id
                             ORDER BY it.id, s.id""")
    finally:
        store.close()
    verdict: dict[str, list[str]] = defaultdict(list)
    for r in result["per_prompt"][PEOPLE]:
        verdict[r["prompt"]].append(r["preferred"] if len(result["study"]["systems"]) == 2
                                    else f"{r['a']} vs {r['b']}: {r['preferred']}")
    items: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        items[r["item"]].append(r)
    shown = list(items.values())[:examples]
    if not shown:
        return
    report.heading("Examples")
    grid = []
    for group in shown:
        for r in group:
            with Image.open(study_dir / r["path"]) as im:
                grid.append((im.convert("RGB"), f"{r['system']}: {r['prompt']} (people: "
                                                f"{'; '.join(verdict[r['prompt']]) or 'no votes'})"))
    report.image_grid(grid, columns=len(shown[0]) * 2, thumb_size=160)


def write_results(study_dir: str | Path, out_dir: str | Path | None = None, n_boot: int = 1000,
                  min_attention: float = 0.0) -> dict:
    """Write ``results.json``, ``report.html`` and ``votes.csv`` (each atomically) to ``out_dir`` (default
    ``STUDY/results``); returns the results."""
    study_dir = Path(study_dir)
    out = Path(out_dir) if out_dir is not None else study_dir / "results"
    store = StudyStore(study_dir)
    try:
        result, rows = compute_results(store, n_boot=n_boot, min_attention=min_attention)
    finally:
        store.close()
    write_json_atomic(out / "results.json", json_safe(result))
    write_text_atomic(out / "votes.csv", votes_csv(rows))
    build_report(result, study_dir).save(out / "report.html")
    return result
