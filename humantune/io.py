"""Atomic file writes: a reader never sees a half-written file, and a crash never leaves one behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error delete it.

    Works for files and for directories (a directory is moved into place whole). A file never replaces an
    existing directory: that is a HumantuneError naming the path, and the directory stays as it was.
    """
    from humantune.errors import HumantuneError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except (FileExistsError, NotADirectoryError):
        raise HumantuneError(f"cannot write '{path}': a part of '{path.parent}' is a file, not a folder") from None
    except OSError as e:  # not writable, a full or read-only disk
        raise HumantuneError(f"cannot write '{path}': {e.strerror or e}") from None
    target = tmp / path.name
    try:
        yield target
        if not target.is_dir() and path.is_dir() and not path.is_symlink():
            raise HumantuneError(f"'{path}' is a directory; refusing to replace it with a file")
        move_into_place(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def move_into_place(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename ``source`` onto ``path``; an existing directory ``path`` is first renamed to ``.{name}.old`` and
    deleted after the swap (a kill in between leaves that backup, which :func:`remove_stale_temporaries` puts
    back)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        backup = path.with_name(f".{path.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(path, backup)
        os.replace(source, path)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(source, path)


_TEMPORARY_RE = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")
_BACKUP_RE = re.compile(r"^\.(?P<name>.+)\.old$")


def remove_stale_temporaries(root: str | os.PathLike, depth: int = 3) -> list[Path]:
    """Clean up what a killed :func:`atomic_path` left in ``root`` and its subfolders down to ``depth`` levels:
    temporary folders ``.{name}.XXXX.tmp`` are deleted; a backup ``.{name}.old`` is deleted when ``name`` exists
    and renamed back to ``name`` when it does not (the kill came between the two renames of a swap: the backup is
    the only copy). Call it only where no other process is writing. Returns the paths it deleted or restored."""
    root = Path(root)
    done: list[Path] = []
    if depth < 0 or not root.is_dir():
        return done
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            m = _TEMPORARY_RE.match(entry.name)
            if m and entry.is_file():  # mkdtemp makes folders; a stray temporary file is handled the same
                entry.unlink(missing_ok=True)
                done.append(entry)
            continue
        if _TEMPORARY_RE.match(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
            done.append(entry)
        elif m := _BACKUP_RE.match(entry.name):
            original = entry.with_name(m.group("name"))
            if original.exists():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                os.replace(entry, original)
            done.append(entry)
        elif not entry.name.startswith("."):
            done += remove_stale_temporaries(entry, depth - 1)
    return done


@contextlib.contextmanager
def new_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``path`` whole when the block succeeds.

    Refuses (HumantuneError) an existing non-empty ``path`` unless ``overwrite``: nobody's data is lost by a
    mistyped ``--out``, and a crash leaves ``path`` as it was.
    """
    from humantune.errors import HumantuneError

    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise HumantuneError(f"output folder '{path}' exists and is not empty; choose another or pass --overwrite")
    with atomic_path(path) as tmp:
        tmp.mkdir()
        yield tmp


def refuse_directory(path: str | os.PathLike) -> None:
    """HumantuneError when ``path`` is an existing directory: the file writers below never replace one."""
    from humantune.errors import HumantuneError

    if Path(path).is_dir() and not Path(path).is_symlink():
        raise HumantuneError(f"'{path}' is a directory; refusing to replace it with a file")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    refuse_directory(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def json_safe(obj: Any) -> Any:
    """``obj`` as strict JSON allows it: NaN and ±∞ → None, numpy scalars and arrays → Python numbers and lists,
    tuples → lists, keys → strings, paths → strings. Results and metrics files go through this before writing."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj
