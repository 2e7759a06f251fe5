"""What the command line checks and how it reports a mistake: argparse value types that name the option
(counts, sizes, finite numbers), output paths checked before any work (never a folder replaced by a file, never
an input of the same command), and the one-line ``humantune: error: ...`` on a fresh line after any progress bar."""

from __future__ import annotations

import argparse
import math
import os
import sys
import typing
from pathlib import Path

from humantune.errors import HumantuneError


class OneLineParser(argparse.ArgumentParser):
    """argparse with humantune's error format: one line ``humantune: error: ...``, exit status 2 (not argparse's
    usage block)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"humantune: error: {' '.join(message.split())} (see: {self.prog} --help)\n")


# --- values checked before any work (argparse types: the error names the option) ------------------------------------

MAX_IMAGE_SIZE = 8192


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def image_size(text: str) -> int:
    """A side in pixels: at least 1 and at most :data:`MAX_IMAGE_SIZE` (the model's own multiple is checked when
    the model is known)."""
    value = positive_int(text)
    if value > MAX_IMAGE_SIZE:
        gib = value * value * 3 * 4 / 2**30
        raise argparse.ArgumentTypeError(f"{value} is too large (at most {MAX_IMAGE_SIZE}): one {value}×{value} image "
                                         f"alone is {gib:,.0f} GiB as float32 RGB, before any model runs")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def _check_writable_place(path: Path, option: str) -> None:
    """HumantuneError unless ``path`` can be made: no part of it is a file, and its nearest existing folder is
    writable."""
    existing = _first_existing(path.parent if path != path.parent else path)
    if not existing.is_dir():
        raise HumantuneError(f"{option} '{path}': '{existing}' is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HumantuneError(f"{option} '{path}': the folder '{existing}' is not writable")


def check_output_file(path: Path, option: str = "--out") -> None:
    """An output *file*: never an existing folder (a file must not replace one), and writable."""
    if path.is_dir():
        raise HumantuneError(f"{option} '{path}' is a folder; give a file name (e.g. {path / 'sheet.html'})")
    _check_writable_place(path, option)


def check_output_folder(path: Path, overwrite: bool = False, option: str = "--out",
                        inputs: dict[str, object] | None = None) -> None:
    """An output *folder*, before any work: not a file, writable, empty or absent unless ``overwrite``, and never
    one of the ``inputs`` (option → path) or a folder holding one, which replacing it would delete."""
    if path.exists() and not path.is_dir():
        raise HumantuneError(f"{option} '{path}' is a file, not a folder")
    _check_writable_place(path, option)
    if path.is_dir() and not overwrite and any(path.iterdir()):
        raise HumantuneError(f"{option} '{path}' exists and is not empty; choose another or pass --overwrite")
    out = path.resolve()
    for name, value in (inputs or {}).items():
        if value is None or not Path(str(value)).exists():
            continue
        source = Path(str(value)).resolve()
        if out == source or out in source.parents:
            raise HumantuneError(f"{option} '{path}' would replace {name} '{value}', which this command reads; "
                                 "choose another output folder")


def end_progress_bars() -> None:
    """Close the progress bars still on the screen (a bar left by an exception ends mid-line), each left standing
    where it stopped and ending its line, so that a message starts on a line of its own in a terminal and in a log
    file alike."""
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is None:
        return
    for bar in list(getattr(tqdm_module.tqdm, "_instances", ())):
        try:
            bar.leave = True
            bar.close()
        except Exception:  # noqa: BLE001 - a half-torn-down bar must not hide the user's error
            pass
    sys.stdout.flush()


class LineEnd:
    """A text stream that remembers the last character written to it: a progress bar ends its updates with a
    carriage return (and one closed with ``leave=False`` clears itself that way), so a message after it would be
    glued to it in a log file."""

    def __init__(self, stream: typing.TextIO) -> None:
        self.stream, self.last = stream, "\n"

    def write(self, text: str) -> int:
        if text:
            self.last = text[-1]
        return self.stream.write(text)

    def __getattr__(self, name: str) -> typing.Any:
        return getattr(self.stream, name)


def fresh_line(stream: typing.TextIO) -> None:
    """Start a new line on ``stream`` unless the cursor is at the start of one (a terminal is, after a bar cleared
    itself with a carriage return; a file is not)."""
    last = getattr(stream, "last", "\n")
    at_start = last == "\n" or (last == "\r" and getattr(stream, "isatty", lambda: False)())
    if not at_start:
        stream.write("\n")


def report(message: str) -> None:
    end_progress_bars()
    fresh_line(sys.stderr)
    print(f"humantune: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever the message
