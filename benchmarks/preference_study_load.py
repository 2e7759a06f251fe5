"""Load and crash test of the preference study server (issue 18).

Starts `humantune study serve` on 127.0.0.1 for a two-system study and lets P concurrent participants (threads,
one keep-alive HTTP client each) vote through all their pairs: P × pairs votes in total, each a GET /next and a
POST /vote with a random answer. Run 1 lets it finish; run 2 sends SIGKILL (kill -9) to the server once half the
votes are accepted and starts it again at once, the clients retrying until it answers. After each run the database
is checked against what the clients were told (humantune.studies.preference.loadtest.verify): every accepted vote
stored exactly once with its choice, no unacknowledged or malformed row, SQLite's integrity check.

    python benchmarks/preference_study_load.py [--participants 50] [--votes 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_io import print_table, write_result  # noqa: E402

from humantune.studies.preference.loadtest import make_load_study, run_load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--participants", type=int, default=50)
    ap.add_argument("--votes", type=int, default=10_000, help="total votes (a multiple of --participants)")
    ap.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/preference_study_load.json)")
    args = ap.parse_args()
    pairs = args.votes // args.participants
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kill in (("steady", None), ("kill -9 mid-run", pairs * args.participants // 2)):
            study = make_load_study(Path(tmp) / name.replace(" ", "_"), args.participants, pairs)
            runs[name] = run_load(study, kill_after=kill)
    rows = [{"run": name, "votes": r["votes_accepted"], "in db": r["votes_in_db"],
             "lost": r["accepted_missing_from_db"], "dup": r["duplicate_votes"], "bad rows": r["malformed_rows"],
             "integrity": r["integrity_check"], "votes/s": r["votes_per_s"],
             "p50 ms": r["vote_latency_ms"]["p50"], "p99 ms": r["vote_latency_ms"]["p99"],
             "restart s": r["restart_s"] or 0.0, "409 after restart": r["acknowledged_by_409_after_restart"]}
            for name, r in runs.items()]
    path = write_result("preference_study_load", {"participants": args.participants, "pairs_per_participant": pairs,
                                                  "runs": runs}, args.out)
    print_table(rows, list(rows[0]))
    print(f"\nwrote {path}")
    if any(r["accepted_missing_from_db"] or r["duplicate_votes"] or r["malformed_rows"] or r["client_errors"]
           or r["integrity_check"] != "ok" for r in runs.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
