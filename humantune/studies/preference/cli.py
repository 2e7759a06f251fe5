"""``humantune study create | serve | links | judge | results | backup``: the preference study's command line.

:func:`add_study_parser` adds the ``study`` subcommand to the main parser (``humantune/cli.py``); heavy modules are
imported inside the handlers so ``humantune --help`` stays fast.
"""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import Any, Callable

from humantune.errors import HumantuneError

DESCRIPTION = """\
Run a side-by-side human preference study between folders of generated images (matched by prompt and seed from
their metadata.jsonl), let automatic judges answer the same pairs, and report win rates, Bradley–Terry strengths,
per-prompt verdicts and agreement.

  humantune study create --system base=out/base --system tuned=out/tuned --participants 10 --out study
  humantune study serve study              # prints the admin page and the join link
  humantune study judge study --judge pose
  humantune study results study            # study/results/{results.json, report.html, votes.csv}
"""


def _key_value(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise HumantuneError(f"{flag} takes KEY=VALUE, got {text!r}")
    return key, value


def _judge_value(value: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def cmd_create(args: argparse.Namespace) -> int:
    from humantune.studies.preference.study import StudyConfig, create_study

    systems: dict[str, str] = {}
    for spec in args.system:
        name, folder = _key_value(spec, "--system")
        if name in systems:
            raise HumantuneError(f"system {name!r} is given twice")
        systems[name] = folder
    if (args.attention_good is None) != (args.attention_bad is None):
        raise HumantuneError("give both --attention-good DIR and --attention-bad DIR, or neither")
    attention = (args.attention_good, args.attention_bad) if args.attention_good else None
    checks = args.attention_checks if args.attention_checks is not None else (2 if attention else 0)
    config = StudyConfig(question=args.question, title=args.title, participants=args.participants,
                         pairs_per_participant=args.pairs_per_participant, repeats=args.repeats,
                         attention_checks=checks, seed=args.seed)
    made = create_study(systems, args.out, config, attention=attention, overwrite=args.overwrite)
    print(f"study {made.path}: {made.items} prompts × seeds, {made.comparison_pairs} comparison pairs, "
          f"{made.attention_pairs} attention-check pairs; {config.participants} participant slots with "
          f"{made.assignments_per_participant} pairs each")
    print(f"serve it:  humantune study serve {made.path}\nits links: humantune study links {made.path} "
          f"(tokens in {made.path / 'access.json'}: keep it private)")
    return 0


def _base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    return f"http://{shown}:{port}"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def cmd_serve(args: argparse.Namespace) -> int:
    from humantune.studies.preference.server import serve
    from humantune.studies.preference.study import study_links

    links = study_links(args.study, args.base_url or _base_url(args.host, args.port))
    print(f"admin page: {links['admin']}\njoin link:  {links['join']} (hands out the next free participant slot)\n"
          f"personal links: humantune study links {args.study}\nCtrl-C stops the server; votes are saved as they come.",
          flush=True)
    if not _is_loopback(args.host):
        print("note: the study is reachable from other machines; links are the only credentials, and plain HTTP "
              "exposes them on the network: put it behind HTTPS.", flush=True)
    serve(args.study, host=args.host, port=args.port)
    return 0


def cmd_links(args: argparse.Namespace) -> int:
    from humantune.studies.preference.study import study_links

    links = study_links(args.study, args.base_url)
    print(f"admin  {links['admin']}\njoin   {links['join']}")
    for name, url in links["participants"].items():
        print(f"{name:6s} {url}")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from humantune.studies.preference.judges import load_judge, run_judge
    from humantune.studies.preference.storage import StudyStore

    kwargs: dict[str, Any] = {}
    for spec in args.judge_arg:
        key, value = _key_value(spec, "--judge-arg")
        kwargs[key] = _judge_value(value)
    if args.judge == "vlm":
        if not args.vlm_url or not args.vlm_model:
            raise HumantuneError("the vlm judge needs --vlm-url URL and --vlm-model NAME (and --vlm-key-env VAR "
                                 "naming the environment variable that holds the API key, if the endpoint needs one)")
        store = StudyStore(args.study)
        question = store.meta("question")
        store.close()
        kwargs.update(url=args.vlm_url, model=args.vlm_model, key_env=args.vlm_key_env, question=question,
                      timeout=args.vlm_timeout, retries=args.vlm_retries)
    judge = load_judge(args.judge, **kwargs)
    try:
        done = run_judge(args.study, judge, progress=not args.quiet, limit=args.limit)
    finally:
        judge.close()
    print(f"{done['participant']}: {done['voted']} votes recorded, {done['skipped']} pairs without an answer, "
          f"{done['remaining']} still unanswered")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from humantune.studies.preference.results import write_results

    result = write_results(args.study, args.out, n_boot=args.bootstrap, min_attention=args.min_attention)
    for group, rows in result["win_rates"].items():
        for w in rows:
            ci = f"[{w['ci95'][0]:.3f}, {w['ci95'][1]:.3f}]" if w["ci95"] else ""
            print(f"{group:20s} {w['a']} over {w['b']}: {w['win_rate_a']:.3f} {ci}  "
                  f"({w['wins_a']} wins, {w['wins_b']} losses, {w['ties']} ties)")
        for x in result["per_prompt_summary"].get(group, []):
            print(f"{group:20s} {x['sentence']}")
    out = Path(args.out) if args.out else Path(args.study) / "results"
    print(f"results: {out / 'results.json'}\nreport:  {out / 'report.html'}\nvotes:   {out / 'votes.csv'}")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from humantune.studies.preference.study import backup_study

    out = backup_study(args.study, args.out, overwrite=args.overwrite)
    print(f"copied {args.study} to {out} (database through SQLite's backup API: consistent while serving)")
    return 0


def add_study_parser(subparsers: argparse._SubParsersAction,
                     formatter: Callable[[str], argparse.HelpFormatter]) -> argparse.ArgumentParser:
    """Add ``study`` and its subcommands to ``subparsers``; returns the ``study`` parser."""
    st = subparsers.add_parser("study", formatter_class=formatter, help="human preference study: web app, judges, "
                               "statistics", description=DESCRIPTION)
    sub = st.add_subparsers(dest="study_command", metavar="STUDY_COMMAND", required=True)

    c = sub.add_parser("create", formatter_class=formatter, help="make a study folder from generated folders",
                       description="Make a study from two or more folders of generated images (images + "
                                   "metadata.jsonl with file_name, text, seed), matched by prompt and seed. Left and "
                                   "right are randomised per participant and recorded.")
    c.add_argument("--system", action="append", default=[], required=True, metavar="NAME=DIR",
                   help="a system and its generated folder (repeat: at least two)")
    c.add_argument("--question", default="Which person looks more natural?", help="the question shown above each pair")
    c.add_argument("--title", default="Human preference study", help="the page title")
    c.add_argument("--participants", type=int, default=10, help="participant quota: number of links (default: 10)")
    c.add_argument("--pairs-per-participant", type=int,
                   help="comparison pairs per participant (default: all; fewer rotate through the pairs evenly)")
    c.add_argument("--repeats", type=int, default=0, help="pairs shown a second time, sides swapped (consistency)")
    c.add_argument("--attention-good", type=Path, help="folder of correct images for attention checks")
    c.add_argument("--attention-bad", type=Path, help="folder of broken images of the same prompts and seeds")
    c.add_argument("--attention-checks", type=int, help="attention checks per participant (default: 2 when given)")
    c.add_argument("--seed", type=int, default=0, help="seed of the order and the sides")
    c.add_argument("--out", type=Path, required=True, help="study folder to make (must be empty or absent)")
    c.add_argument("--overwrite", action="store_true", help="replace a non-empty study folder")
    c.set_defaults(func=cmd_create)

    s = sub.add_parser("serve", formatter_class=formatter, help="serve the voting pages and the admin page",
                       description="Serve the study over HTTP (FastAPI + uvicorn). Participants open their personal "
                                   "link (or the join link); the admin page shows progress and the live tally.")
    s.add_argument("study", type=Path, help="study folder")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    s.add_argument("--base-url", help="URL participants use to reach the server, for the printed links")
    s.set_defaults(func=cmd_serve)

    ln = sub.add_parser("links", formatter_class=formatter, help="print the admin, join and participant links")
    ln.add_argument("study", type=Path, help="study folder")
    ln.add_argument("--base-url", default="http://127.0.0.1:8000", help="server URL (default: http://127.0.0.1:8000)")
    ln.set_defaults(func=cmd_links)

    j = sub.add_parser("judge", formatter_class=formatter, help="let an automatic judge answer every pair",
                       description="An automatic judge answers every pair through the same storage path as people "
                                   "(participant judge:NAME); running it again resumes. Judges: pose, anatomy, "
                                   "reward (--judge-arg reward=pickscore --judge-arg model=DIR), vlm.")
    j.add_argument("study", type=Path, help="study folder")
    j.add_argument("--judge", required=True, help="judge name: pose, anatomy, reward, vlm")
    j.add_argument("--judge-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="an argument of the judge (repeatable), e.g. margin=0.5, reward=pickscore")
    j.add_argument("--vlm-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1")
    j.add_argument("--vlm-model", help="model name sent to the endpoint")
    j.add_argument("--vlm-key-env", metavar="VAR",
                   help="name of the environment variable holding the API key (the key is never stored or logged)")
    j.add_argument("--vlm-timeout", type=float, default=60.0, help="seconds per request (default: 60)")
    j.add_argument("--vlm-retries", type=int, default=3, help="retries per pair (default: 3)")
    j.add_argument("--limit", type=int, help="answer at most this many pairs now")
    j.add_argument("--quiet", action="store_true", help="no progress bar")
    j.set_defaults(func=cmd_judge)

    r = sub.add_parser("results", formatter_class=formatter, help="results.json, report.html and votes.csv",
                       description="Win rates with Wilson intervals (ties as half), Bradley–Terry strengths with "
                                   "bootstrap intervals (3+ systems), per-prompt verdicts, Fleiss' κ between people, "
                                   "Cohen's κ of each judge against the people's majority, attention-check pass rates.")
    r.add_argument("study", type=Path, help="study folder")
    r.add_argument("--out", type=Path, help="output folder (default: STUDY/results)")
    r.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    r.add_argument("--min-attention", type=float, default=0.0,
                   help="drop people whose attention-check pass rate is below this (default: 0, keep all)")
    r.set_defaults(func=cmd_results)

    b = sub.add_parser("backup", formatter_class=formatter, help="consistent copy of a study, also while serving")
    b.add_argument("study", type=Path, help="study folder")
    b.add_argument("--out", type=Path, required=True, help="copy to make (must be empty or absent)")
    b.add_argument("--overwrite", action="store_true", help="replace a non-empty folder")
    b.set_defaults(func=cmd_backup)
    return st
