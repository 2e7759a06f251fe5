"""A recipe's output folder tells the truth about what is in it.

A run folder records the config it was trained with in ``config.yaml``. Running a recipe into a folder
(:func:`prepare_run_folder`) compares the new config with the recorded one:

- an empty or new folder starts a run (and records its config at once, so a kill during setup leaves a folder
  that the same command resumes);
- the same config resumes it;
- a different config is refused with one line listing the changed keys (dotted: ``train.seed``,
  ``stages[1].train.learning_rate``) and the ways out: ``allow_config_change`` (``--allow-config-change``)
  continues the run with the new values and appends the change to ``config_changes.jsonl``; ``resume=False``
  (``--no-resume``) starts over, also recorded;
- keys that never change the trained weights (:data:`RESULT_NEUTRAL_KEYS`) may change silently;
- a non-empty folder without a ``config.yaml`` (not a humantune run), or a run of another recipe, is refused.

A run that fails on bad input before its setup finished (before :meth:`RunFolder.commit`) leaves nothing behind:
a folder it created is removed again, and a folder that was empty is emptied. Temporary folders a killed run left
in the folder (``.NAME.XXXX.tmp``) are removed when the next run opens it.

Under ``accelerate launch`` every process checks the folder, and only the main process writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import yaml

from humantune.config import config_to_dict, save_config
from humantune.errors import HumantuneError
from humantune.io import remove_stale_temporaries
from humantune.train.processes import process_state

RESULT_NEUTRAL_KEYS = (
    re.compile(r"(^|\.)(log_every|checkpoint_every|checkpoints_total_limit|num_workers)$"),
    re.compile(r"^eval\."),
)
"""Dotted keys that may change between runs in one folder without notice: how often the engine logs and
checkpoints, how many checkpoints it keeps, its DataLoader workers, and the evaluation after training (``eval.*``,
which is recomputed whenever what it scores changed: ``humantune.studies.heldout`` fingerprints it). None of them
changes the trained weights."""

CONFIG_FILE = "config.yaml"
CHANGES_FILE = "config_changes.jsonl"
_HEADER_RE = re.compile(r"^# (?P<kind>[\w.]+): resolved config")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (what schedulers send before they kill a job) raises KeyboardInterrupt, as
    Ctrl-C does: the same message, the same cleanup, and the run resumes from its last checkpoint. Only the main
    thread can receive signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def interrupt(signum, frame):
        if os.getpid() != owner:  # a forked worker (e.g. a multiprocessing pool's) ends as it would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A plain config (mappings, lists, values) as {dotted key: value}; lists of mappings are indexed
    (``stages[0].name``), other lists are one value."""
    if isinstance(config, dict):
        out: dict[str, Any] = {}
        for k, v in config.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(config, list) and config and all(isinstance(v, dict) for v in config):
        out = {}
        for i, v in enumerate(config):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: config}


def changed_keys(recorded: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (recorded value, current value)} of every key whose value differs (a key missing on one side
    has the value None there), except :data:`RESULT_NEUTRAL_KEYS`."""
    a, b = flatten(recorded), flatten(current)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b), key=lambda k: (k not in b, k))
            if a.get(k) != b.get(k) and not any(p.search(k) for p in RESULT_NEUTRAL_KEYS)}


def _plain(cfg: Any) -> dict:
    """``cfg`` as ``config.yaml`` reads back (floats, paths and tuples normalised by a YAML round trip)."""
    return yaml.safe_load(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True))


def _kind(cfg: Any) -> str:
    return f"{type(cfg).__module__}.{type(cfg).__qualname__}"


class RunFolder:
    """One recipe run's output folder; see the module docstring. Built by :func:`prepare_run_folder`."""

    def __init__(self, out: str | Path, cfg: Any, resume: bool, allow_config_change: bool) -> None:
        self.out, self.cfg, self.resume, self.allow_config_change = Path(out), cfg, resume, allow_config_change
        self.existed = self.out.exists()
        self.fresh = not self.existed or (self.out.is_dir() and not any(self.out.iterdir()))
        self.changes: dict[str, tuple[Any, Any]] = {}
        self.committed = False

    def check(self) -> None:
        """HumantuneError (one line) unless this run may use the folder; reads, never writes."""
        out = self.out
        if self.fresh:
            return
        if not out.is_dir():
            raise HumantuneError(f"output folder '{out}' is a file; give a folder")
        recorded = out / CONFIG_FILE
        if not recorded.is_file():
            raise HumantuneError(f"output folder '{out}' is not empty and holds no humantune run (no {CONFIG_FILE}); "
                                 "choose a new or empty folder")
        text = recorded.read_text()
        header = _HEADER_RE.match(text)
        if header and header.group("kind") != _kind(self.cfg):
            raise HumantuneError(f"output folder '{out}' holds a {header.group('kind').rsplit('.', 1)[-1]} run, not "
                                 f"a {type(self.cfg).__name__} one; choose another folder")
        try:
            old = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            old = {}
        self.changes = changed_keys(old, _plain(self.cfg))
        if self.changes and self.resume and not self.allow_config_change:
            keys = list(self.changes)
            shown = ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
            raise HumantuneError(
                f"output folder '{out}' holds a run with a different config (changed: {shown}); run with its "
                f"{CONFIG_FILE} to resume, add --allow-config-change to continue it with the new values (recorded in "
                f"{CHANGES_FILE}), or --no-resume to start over")

    def create(self) -> None:
        """Make a new folder and record its config (main process)."""
        if self.fresh:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out / CONFIG_FILE)
        else:
            for path in remove_stale_temporaries(self.out):
                print(f"{self.out}: removed {path.relative_to(self.out)} (left by an interrupted write)")

    def commit(self) -> None:
        """Setup succeeded: record the config (and an accepted change) and keep the folder from now on. Main
        process only writes; every process may call it."""
        if process_state().is_main_process and not self.fresh:
            if self.changes:
                row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "how": "--allow-config-change" if self.resume
                       else "--no-resume (started over)",
                       "changed": {k: {"from": a, "to": b} for k, (a, b) in self.changes.items()}}
                with open(self.out / CHANGES_FILE, "a") as f:
                    f.write(json.dumps(row, default=str) + "\n")
            save_config(self.cfg, self.out / CONFIG_FILE)
        self.committed = True

    def discard(self) -> None:
        """Remove what this run created, when its setup failed before :meth:`commit` (main process)."""
        if not self.fresh or not self.out.is_dir():
            return
        if not self.existed:
            shutil.rmtree(self.out, ignore_errors=True)
        else:  # the folder was there and empty: empty it again
            for child in self.out.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


class RecipeRun:
    """What every recipe's run holds: its config ``cfg``, its output folder ``out``, whether a run already there is
    resumed (``resume``, ``--no-resume``) and whether it may continue under a changed config
    (``allow_config_change``, ``--allow-config-change``). :meth:`open_folder` opens ``out`` with
    :func:`prepare_run_folder`."""

    def __init__(self, cfg: Any, output_dir: str | Path, resume: bool = True, allow_config_change: bool = False):
        self.cfg, self.out, self.resume, self.allow_config_change = cfg, Path(output_dir), resume, allow_config_change

    def open_folder(self) -> contextlib.AbstractContextManager[RunFolder]:
        """``prepare_run_folder(out, cfg, resume, allow_config_change)``: commit the folder once setup validated
        its inputs; a failure before that leaves nothing behind."""
        return prepare_run_folder(self.out, self.cfg, self.resume, self.allow_config_change)


@contextlib.contextmanager
def prepare_run_folder(out: str | Path, cfg: Any, resume: bool = True,
                       allow_config_change: bool = False) -> Iterator[RunFolder]:
    """Open ``out`` for a run of ``cfg`` (see the module docstring). The recipe calls ``folder.commit()`` once its
    setup has validated its inputs; an exception before that removes what the run created. SIGTERM is handled
    like Ctrl-C inside the block."""
    state = process_state()
    folder = RunFolder(out, cfg, resume, allow_config_change)
    folder.check()
    state.wait_for_everyone()   # every process has looked before the main one writes
    if state.is_main_process:
        folder.create()
    state.wait_for_everyone()
    try:
        with sigterm_as_interrupt():
            yield folder
    except Exception:
        if not folder.committed and state.is_main_process:
            folder.discard()
        raise
