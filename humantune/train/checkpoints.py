"""A stage's checkpoints and logs on disk: which checkpoints exist, whether one is intact enough to resume from,
and ``metrics.jsonl`` files that survive a kill in the middle of a line.

A checkpoint ``checkpoints/step_XXXXXX`` is what ``accelerate save_state`` wrote, plus ``trainer_state.json``
(``{"step": s}``) written last. Before a resume the engine checks the newest one with :func:`checkpoint_problem`
and falls back to the newest intact one; damaged ones are moved aside to ``checkpoints/damaged_step_XXXXXX`` so
that neither a later resume nor the pruning of old checkpoints counts them.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

CHECKPOINT_RE = re.compile(r"^step_(\d+)$")


def find_checkpoints(stage_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Completed checkpoints of a stage (those with ``trainer_state.json``), oldest first."""
    root = Path(stage_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m and (p / "trainer_state.json").is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def numbered_file(name: str, i: int) -> str:
    """accelerate's file names: ``model.safetensors``, ``model_1.safetensors``, …"""
    stem, dot, ext = name.partition(".")
    return name if i == 0 else f"{stem}_{i}{dot}{ext}"


def checkpoint_problem(path: str | os.PathLike, models: int, optimizers: int, custom_objects: int) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed from, or None when it is intact.

    Checks what ``accelerate save_state`` writes for a run with ``models`` prepared models, ``optimizers``
    optimizers and ``custom_objects`` registered objects (schedule, EMA): ``trainer_state.json`` parses and names
    the folder's step; every ``model*.safetensors`` opens with safetensors (which checks that its tensors cover the
    file: a truncated copy does not) and holds tensors (whether they are the run's is the loader's question: a
    mismatch is a changed config, not damage); every ``optimizer*.bin``,
    ``custom_checkpoint_*.pkl`` and ``random_states_0.pkl`` is a complete torch archive (its zip directory, written
    last, is readable). ``models = 0`` skips the model and optimizer files (DeepSpeed and FSDP write their own)."""
    from safetensors import safe_open

    path = Path(path)
    m = CHECKPOINT_RE.match(path.name)
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError) as e:
        return f"trainer_state.json unreadable ({type(e).__name__})"
    if not isinstance(state, dict) or (m and state.get("step") != int(m.group(1))):
        return f"trainer_state.json does not hold step {int(m.group(1)) if m else '?'}"
    for i in range(models):
        file = path / numbered_file("model.safetensors", i)
        try:
            with safe_open(str(file), "pt") as f:
                empty = not list(f.keys())
        except Exception as e:  # safetensors raises its own error types for a torn header
            return f"{file.name} unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        if empty:
            return f"{file.name} holds no weights"
    archives = [numbered_file("optimizer.bin", i) for i in range(optimizers if models else 0)]
    archives += [f"custom_checkpoint_{i}.pkl" for i in range(custom_objects)] + ["random_states_0.pkl"]
    for name in archives:
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        try:
            with zipfile.ZipFile(file) as z:
                z.namelist()
        except (OSError, zipfile.BadZipFile):
            return f"{name} is damaged"
    return None


def repair_jsonl(path: str | os.PathLike, keep_until_step: int | None = None) -> int:
    """Rewrite the JSON-lines file ``path`` without lines that do not parse (the torn last line of a killed
    write) and, when ``keep_until_step`` is given, without rows whose ``step`` is past it. Returns the number of
    unreadable lines dropped; a missing file is left alone."""
    from humantune.io import write_text_atomic

    path = Path(path)
    if not path.is_file():
        return 0
    kept, torn = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            torn += 1
            continue
        if keep_until_step is None or (isinstance(row, dict) and row.get("step", 0) <= keep_until_step):
            kept.append(line)
    write_text_atomic(path, "".join(r + "\n" for r in kept))
    return torn


def read_jsonl_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON-lines file, skipping a line that does not parse (a torn tail); [] when missing."""
    path = Path(path)
    rows = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    return rows
