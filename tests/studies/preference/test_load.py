"""A small version of benchmarks/preference_study_load.py: 5 concurrent participants × 40 votes against a real
server process on 127.0.0.1, SIGKILLed once after 100 accepted votes and restarted."""

import pytest

from humantune.studies.preference.loadtest import make_load_study, run_load


@pytest.mark.slow
def test_no_accepted_vote_lost_across_kill_9(tmp_path):
    study = make_load_study(tmp_path / "study", participants=5, pairs=40)
    r = run_load(study, kill_after=100, direct=True, timeout_s=300, retry_window_s=60)
    assert r["client_errors"] == []
    assert r["killed_after_votes"] >= 100 and r["restart_s"] is not None
    assert r["votes_accepted"] == r["votes_in_db"] == 200
    assert r["accepted_missing_from_db"] == r["accepted_with_other_choice"] == 0
    assert r["duplicate_votes"] == r["db_votes_never_acknowledged"] == r["malformed_rows"] == 0
    assert r["integrity_check"] == "ok" and r["foreign_key_violations"] == 0
