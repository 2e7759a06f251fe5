"""Make a preference study folder from two or more folders of generated images.

Images are matched across folders by their ``metadata.jsonl`` rows (``file_name``, ``text``, ``seed``; as
``humantune generate`` writes them): the same prompt and seed is one *item*. A row without ``seed`` is matched by
its prompt and its occurrence among that prompt's rows. Every item gives one *comparison* pair per two systems.

The study folder is self-contained (copy it, or :func:`backup_study` it while the server runs)::

    STUDY/
      study.db       SQLite (WAL): pairs, participants (hashed tokens), assignments, votes (storage.py)
      study.json     what the study is: question, systems and their source folders, counts, settings
      access.json    the admin, join and participant tokens (mode 0600; the only file holding them)
      images/NAME/   copies of every shown image, images/_attention/ the attention-check images

Each participant slot gets its own sequence of *assignments*: ``pairs_per_participant`` comparison pairs (all by
default; otherwise a rotation through one shuffled order of all pairs, so every pair is seen by about as many
people and pairs overlap between people for the agreement statistics), ``repeats`` of those shown a second time
later with sides swapped (self-consistency), and ``attention_checks`` pairs of a good and a broken image of one
prompt whose right answer is known. Order and sides are randomised per participant from ``seed`` and recorded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

from humantune import __version__
from humantune.data.readers import read_jsonl
from humantune.errors import DataError
from humantune.io import new_output_dir, write_json_atomic, write_text_atomic
from humantune.studies.preference.storage import (
    DB_NAME, StudyError, StudyStore, new_token, token_hash,
)

MANIFEST = "study.json"
ACCESS_FILE = "access.json"
SYSTEM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_QUESTION = 500


@dataclass
class StudyConfig:
    """How a study is laid out (``humantune study create`` flags)."""

    question: str = "Which person looks more natural?"
    title: str = "Human preference study"
    participants: int = 10              # participant quota: number of person slots (links)
    pairs_per_participant: int | None = None  # comparison pairs per person; None = every pair
    repeats: int = 0                    # pairs shown a second time (sides swapped) per person
    attention_checks: int = 0           # attention-check pairs per person (needs good and bad images)
    seed: int = 0                       # order and sides


@dataclass
class GeneratedImage:
    prompt: str
    seed: int | None
    path: Path


@dataclass
class CreatedStudy:
    path: Path
    items: int
    comparison_pairs: int
    attention_pairs: int
    assignments_per_participant: int
    tokens: dict = field(repr=False, default_factory=dict)


def _inside(root: Path, name: str, where: str) -> Path:
    """``root / name`` when it stays inside ``root``; DataError for absolute paths and ``..`` escapes."""
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        raise DataError(f"{where}: file_name must be a relative path inside the folder, got {name!r}")
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DataError(f"{where}: file_name {name!r} leaves the folder {root}")
    return path


def read_generated(folder: str | os.PathLike) -> dict[tuple, GeneratedImage]:
    """The images of a generated folder keyed by (prompt, seed) — or (prompt, "#k") for the k-th row of a prompt
    without a seed — from its ``metadata.jsonl``. DataError for a missing folder or file, a row without
    ``file_name``/``text``, a path leaving the folder, an unsupported image type or a duplicate key."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of generated images")
    meta = root / "metadata.jsonl"
    out: dict[tuple, GeneratedImage] = {}
    occurrences: dict[str, int] = {}
    for line, row in read_jsonl(meta, "rows of file_name, text, seed"):
        where = f"{meta}: line {line}"
        prompt = row.get("text")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{where}: needs a non-empty 'text' (the prompt)")
        path = _inside(root, row.get("file_name"), where)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{where}: {path.name} is not a {'/'.join(IMAGE_SUFFIXES)} image")
        seed = row.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise DataError(f"{where}: 'seed' must be an integer, got {seed!r}")
        if seed is None:
            occurrences[prompt] = occurrences.get(prompt, 0) + 1
            key = (prompt, f"#{occurrences[prompt]}")
        else:
            key = (prompt, seed)
        if key in out:
            raise DataError(f"{where}: a second image of prompt {prompt!r} with seed {seed}")
        out[key] = GeneratedImage(prompt, seed, path)
    if not out:
        raise DataError(f"{meta}: no images listed")
    return out


def match_items(folders: dict[str, dict[tuple, GeneratedImage]]) -> list[tuple]:
    """Keys present in every folder, in the first folder's order; StudyError naming the folders when none is."""
    names = list(folders)
    common = [k for k in folders[names[0]] if all(k in folders[n] for n in names[1:])]
    if not common:
        raise StudyError(f"no image is in all of {', '.join(names)}: folders are matched by prompt and seed "
                         "(metadata.jsonl 'text' and 'seed'); generate them with the same prompts and seeds")
    return common


def plan_assignments(comparisons: list[int], order: list[int], attention: list[int], index: int,
                     config: StudyConfig, rng: np.random.Generator) -> list[tuple[int, bool, bool]]:
    """One participant's sequence of (pair id, is_repeat, a_on_left).

    ``order`` is one shuffled order of all comparison pairs shared by every participant; participant ``index``
    takes the next ``pairs_per_participant`` of it (wrapping), so coverage stays even. The chosen pairs are shuffled;
    repeats go after their first showing with sides swapped; attention checks go anywhere but first.
    """
    m = len(comparisons) if config.pairs_per_participant is None else min(config.pairs_per_participant,
                                                                           len(comparisons))
    chosen = [order[(index * m + k) % len(order)] for k in range(m)]
    rng.shuffle(chosen)
    seq: list[tuple[int, bool, bool]] = [(pair, False, bool(rng.random() < 0.5)) for pair in chosen]
    for k in sorted(rng.choice(len(chosen), size=min(config.repeats, len(chosen)), replace=False).tolist()):
        first = next(i for i, s in enumerate(seq) if s[0] == chosen[k] and not s[1])
        at = int(rng.integers(first + 1, len(seq) + 1))
        seq.insert(at, (chosen[k], True, not seq[first][2]))
    if attention and config.attention_checks:
        picks = rng.choice(attention, size=config.attention_checks,
                           replace=config.attention_checks > len(attention)).tolist()
        for pair in picks:
            seq.insert(int(rng.integers(1, len(seq) + 1)), (int(pair), False, bool(rng.random() < 0.5)))
    return seq


def _check_config(config: StudyConfig, systems: dict) -> None:
    if len(systems) < 2:
        raise StudyError(f"a study needs at least two systems (--system NAME=DIR), got {len(systems)}")
    for name in systems:
        if not SYSTEM_NAME.match(name):
            raise StudyError(f"system name {name!r}: use letters, digits, '_', '.', '-' (up to 64, not starting "
                             "with a symbol)")
    if not config.question.strip() or len(config.question) > MAX_QUESTION:
        raise StudyError(f"the question must be 1 to {MAX_QUESTION} characters")
    if config.participants < 1:
        raise StudyError(f"--participants must be at least 1, got {config.participants}")
    if config.pairs_per_participant is not None and config.pairs_per_participant < 1:
        raise StudyError(f"--pairs-per-participant must be at least 1, got {config.pairs_per_participant}")
    if config.repeats < 0 or config.attention_checks < 0:
        raise StudyError("--repeats and --attention-checks must be non-negative")


def _copy_image(src: Path, dest: Path, where: str) -> None:
    try:
        with Image.open(src) as im:
            im.verify()
    except FileNotFoundError:
        raise DataError(f"{src}: image not found ({where})") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{src}: not a readable image ({where}): {e}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def create_study(systems: dict[str, str | os.PathLike], out: str | os.PathLike, config: StudyConfig | None = None,
                 attention: tuple[str | os.PathLike, str | os.PathLike] | None = None,
                 overwrite: bool = False) -> CreatedStudy:
    """Write a study folder at ``out`` (all or nothing) from ``systems`` = {name: generated folder}.

    ``attention`` = (good folder, bad folder) of images matched like the systems (e.g. world renders and broken
    renders of the same prompts); with ``config.attention_checks`` > 0 each participant gets that many of them.
    Returns the counts and the tokens (also in ``out/access.json``).
    """
    config = config or StudyConfig()
    _check_config(config, systems)
    if config.attention_checks and attention is None:
        raise StudyError("--attention-checks needs --attention-good DIR and --attention-bad DIR")
    folders = {name: read_generated(folder) for name, folder in systems.items()}
    keys = match_items(folders)
    attention_keys: list[tuple] = []
    if attention is not None:
        good, bad = read_generated(attention[0]), read_generated(attention[1])
        attention_keys = match_items({"attention-good": good, "attention-bad": bad})
    rng = np.random.default_rng(config.seed)

    with new_output_dir(out, overwrite) as tmp:
        store = StudyStore(tmp, create=True)
        try:
            with store.write() as conn:
                system_ids = {}
                for name, folder in systems.items():
                    system_ids[name] = conn.execute("INSERT INTO systems (name, source) VALUES (?, ?)",
                                                    (name, str(Path(folder).resolve()))).lastrowid

                def add_image(src: GeneratedImage, rel: str, item: int, system: int | None, role: str) -> int:
                    _copy_image(src.path, tmp / rel, f"item {item}")
                    return conn.execute("INSERT INTO images (path, item_id, system_id, role) VALUES (?, ?, ?, ?)",
                                        (rel, item, system, role)).lastrowid

                comparisons = []
                for k, key in enumerate(keys):
                    first = folders[next(iter(folders))][key]
                    item = conn.execute("INSERT INTO items (prompt, seed) VALUES (?, ?)",
                                        (first.prompt, first.seed)).lastrowid
                    image_ids = {name: add_image(folders[name][key],
                                                 f"images/{name}/{k:05d}{folders[name][key].path.suffix.lower()}",
                                                 item, system_ids[name], "system") for name in systems}
                    for a, b in combinations(systems, 2):
                        comparisons.append(conn.execute(
                            "INSERT INTO pairs (kind, item_id, image_a, image_b) VALUES ('comparison', ?, ?, ?)",
                            (item, image_ids[a], image_ids[b])).lastrowid)
                attention_pairs = []
                for k, key in enumerate(attention_keys):
                    item = conn.execute("INSERT INTO items (prompt, seed) VALUES (?, ?)",
                                        (good[key].prompt, good[key].seed)).lastrowid
                    g = add_image(good[key], f"images/_attention/good_{k:05d}{good[key].path.suffix.lower()}",
                                  item, None, "good")
                    b_ = add_image(bad[key], f"images/_attention/bad_{k:05d}{bad[key].path.suffix.lower()}",
                                   item, None, "bad")
                    attention_pairs.append(conn.execute(
                        "INSERT INTO pairs (kind, item_id, image_a, image_b) VALUES ('attention', ?, ?, ?)",
                        (item, g, b_)).lastrowid)

                order = list(comparisons)
                rng.shuffle(order)
                width = len(str(config.participants))
                tokens = {"admin": new_token(), "join": new_token(), "participants": {}}
                per_participant = 0
                for index in range(config.participants):
                    name = f"P{index + 1:0{width}d}"
                    token = new_token()
                    tokens["participants"][name] = token
                    pid = conn.execute("INSERT INTO participants (token_hash, kind, name, created_at) "
                                       "VALUES (?, 'person', ?, ?)", (token_hash(token), name, time.time())).lastrowid
                    plan = plan_assignments(comparisons, order, attention_pairs, index, config, rng)
                    _insert_plan(conn, pid, plan)
                    per_participant = len(plan)
                for key, value in {"admin_token_hash": token_hash(tokens["admin"]),
                                   "join_token_hash": token_hash(tokens["join"]),
                                   "question": config.question, "title": config.title,
                                   "config": json.dumps(asdict(config))}.items():
                    store.set_meta_in(conn, key, value)
        finally:
            store.close()
        manifest = {
            "title": config.title, "question": config.question,
            "systems": [{"name": n, "source": str(Path(f).resolve()), "images": len(keys)} for n, f in systems.items()],
            "items": len(keys), "comparison_pairs": len(comparisons), "attention_pairs": len(attention_pairs),
            "participants": config.participants, "assignments_per_participant": per_participant,
            "config": asdict(config), "database": DB_NAME, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "humantune_version": __version__,
        }
        write_json_atomic(tmp / MANIFEST, manifest)
        write_text_atomic(tmp / ACCESS_FILE, json.dumps(tokens, indent=2) + "\n")
        os.chmod(tmp / ACCESS_FILE, 0o600)
    return CreatedStudy(Path(out), len(keys), len(comparisons), len(attention_pairs), per_participant, tokens)


def _insert_plan(conn, participant_id: int, plan: list[tuple[int, bool, bool]]) -> None:
    pairs = {r[0]: (r[1], r[2]) for r in conn.execute(
        f"SELECT id, image_a, image_b FROM pairs WHERE id IN ({','.join('?' * len(plan))})", [p for p, _, _ in plan])}
    conn.executemany(
        "INSERT INTO assignments (participant_id, position, pair_id, left_image, right_image, is_repeat) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(participant_id, pos, pair, *(pairs[pair] if a_left else pairs[pair][::-1]), int(repeat))
         for pos, (pair, repeat, a_left) in enumerate(plan)])


def add_judge(store: StudyStore, name: str) -> int:
    """The participant id of judge ``name`` (kind ``judge``), created on first use with one assignment per
    comparison and attention pair, in a random order with random sides (seeded by the study seed and the name)."""
    existing = store.participant_named(name)
    if existing is not None:
        if existing.kind != "judge":
            raise StudyError(f"{name!r} is a person's name in this study, not a judge")
        return existing.id
    config = json.loads(store.meta("config", "{}"))
    rng = np.random.default_rng([int(config.get("seed", 0)), *name.encode("utf-8")])
    with store.write() as conn:
        pairs = [r[0] for r in conn.execute("SELECT id FROM pairs ORDER BY id")]
        pid = conn.execute("INSERT INTO participants (token_hash, kind, name, created_at, claimed_at) "
                           "VALUES (?, 'judge', ?, ?, ?)",
                           (token_hash(new_token()), name, time.time(), time.time())).lastrowid
        rng.shuffle(pairs)
        _insert_plan(conn, pid, [(p, False, bool(rng.random() < 0.5)) for p in pairs])
    return pid


def read_access(study_dir: str | os.PathLike) -> dict:
    """The study's tokens (``access.json``): {"admin": ..., "join": ..., "participants": {name: token}}."""
    path = Path(study_dir) / ACCESS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"{path}: missing (the study's links are lost; make a new study)") from None
    except json.JSONDecodeError as e:
        raise StudyError(f"{path}: not valid JSON ({e.msg})") from None


def study_links(study_dir: str | os.PathLike, base_url: str) -> dict:
    """Every link of the study under ``base_url`` (e.g. ``http://127.0.0.1:8000``)."""
    access = read_access(study_dir)
    base = base_url.rstrip("/")
    return {"admin": f"{base}/admin/{access['admin']}", "join": f"{base}/join/{access['join']}",
            "participants": {n: f"{base}/s/{t}" for n, t in access["participants"].items()}}


def backup_study(study_dir: str | os.PathLike, dest: str | os.PathLike, overwrite: bool = False) -> Path:
    """Copy a study folder to ``dest``, the database through SQLite's backup API: a consistent copy even while the
    server is taking votes (copying ``study.db`` with ``cp`` then could catch a half-applied WAL)."""
    src = Path(study_dir)
    store = StudyStore(src)
    try:
        with new_output_dir(dest, overwrite) as tmp:
            for entry in src.iterdir():
                if entry.name.startswith(DB_NAME):
                    continue
                if entry.is_dir():
                    shutil.copytree(entry, tmp / entry.name)
                else:
                    shutil.copy2(entry, tmp / entry.name)
            store.backup(tmp / DB_NAME)
    finally:
        store.close()
    return Path(dest)
