"""The study database: one SQLite file in WAL mode (``STUDY/study.db``), the single source of truth of a study.

Tables: ``meta`` (question, settings, hashed admin and join tokens), ``systems``, ``items`` (prompt, seed),
``images`` (paths relative to the study folder), ``pairs`` (``comparison`` of two systems' images of one item, or
``attention``: a good and a broken image with a known answer), ``participants`` (kind ``person`` or ``judge``,
only a SHA-256 hash of each token is stored), ``assignments`` (a participant's n-th pair with its left and right
image: sides are randomised once and recorded) and ``votes``.

Guarantees:

- A vote is one ``INSERT`` in its own transaction, committed (``synchronous=FULL``: on disk) before the server
  answers, so a vote the client saw accepted survives ``kill -9`` and power loss, and a crash never leaves half a row.
- ``votes.assignment_id`` is UNIQUE: a participant answers each assignment at most once. A second vote for it is
  rejected (:class:`AlreadyAnswered`, carrying the recorded choice) and changes nothing.
- People and judges vote through :meth:`StudyStore.record_vote` alike.
- :meth:`StudyStore.backup` copies the database with SQLite's online backup API: a consistent snapshot while the
  server keeps writing.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from humantune.errors import HumantuneError

DB_NAME = "study.db"
SCHEMA_VERSION = 1
CHOICES = ("left", "right", "tie")
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE systems (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, source TEXT NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY, prompt TEXT NOT NULL, seed INTEGER);
CREATE TABLE images (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, item_id INTEGER NOT NULL REFERENCES items(id),
    system_id INTEGER REFERENCES systems(id), role TEXT NOT NULL CHECK (role IN ('system', 'good', 'bad')));
CREATE TABLE pairs (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('comparison', 'attention')),
    item_id INTEGER NOT NULL REFERENCES items(id),
    image_a INTEGER NOT NULL REFERENCES images(id), image_b INTEGER NOT NULL REFERENCES images(id));
CREATE TABLE participants (
    id INTEGER PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, kind TEXT NOT NULL CHECK (kind IN ('person', 'judge')),
    name TEXT NOT NULL UNIQUE, claimed_at REAL, created_at REAL NOT NULL);
CREATE TABLE assignments (
    id INTEGER PRIMARY KEY, participant_id INTEGER NOT NULL REFERENCES participants(id),
    position INTEGER NOT NULL, pair_id INTEGER NOT NULL REFERENCES pairs(id),
    left_image INTEGER NOT NULL REFERENCES images(id), right_image INTEGER NOT NULL REFERENCES images(id),
    is_repeat INTEGER NOT NULL DEFAULT 0 CHECK (is_repeat IN (0, 1)),
    UNIQUE (participant_id, position));
CREATE TABLE votes (
    id INTEGER PRIMARY KEY, assignment_id INTEGER NOT NULL UNIQUE REFERENCES assignments(id),
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie')),
    response_ms INTEGER CHECK (response_ms IS NULL OR response_ms >= 0), created_at REAL NOT NULL);
CREATE INDEX assignments_by_pair ON assignments(pair_id);
"""


class StudyError(HumantuneError):
    """A study folder is missing, malformed or used wrongly."""


class VoteRejected(StudyError):
    """A vote or request the study refuses; ``status`` is the HTTP status the server answers with."""

    status = 400


class UnknownToken(VoteRejected):
    status = 404


class NotAssigned(VoteRejected):
    status = 403


class AlreadyAnswered(VoteRejected):
    status = 409

    def __init__(self, message: str, recorded: str):
        super().__init__(message)
        self.recorded = recorded


class NotFound(VoteRejected):
    status = 404


class PathOutside(VoteRejected):
    """A file path that would leave its folder (``..``, absolute, a symlink out)."""

    status = 400


class StudyPaused(VoteRejected):
    status = 423


class StudyFull(VoteRejected):
    status = 409


def safe_file(root: Path, relative: str) -> Path:
    """``root / relative`` when it is an existing file inside ``root``; :class:`PathOutside` for ``..``, absolute
    paths and symlinks out, :class:`NotFound` for a missing file."""
    root = root.resolve()
    if not relative or relative.startswith(("/", "\\")) or "\\" in relative or "\x00" in relative:
        raise PathOutside(f"bad file path {relative!r}")
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise PathOutside("file path leaves its folder")
    if not path.is_file():
        raise NotFound("no such file")
    return path


def new_token() -> str:
    """A random URL-safe token (128 bits)."""
    return secrets.token_urlsafe(16)


def token_hash(token: str) -> str:
    """SHA-256 of a token: the database never holds a token itself, so a copied study leaks no link."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Participant:
    id: int
    name: str
    kind: str


@dataclass(frozen=True)
class Assignment:
    """One pair as one participant sees it: the prompt, and which image is on which side."""

    id: int
    position: int
    pair_id: int
    prompt: str
    left_path: str
    right_path: str


class StudyStore:
    """The study database of the folder ``study_dir``: one connection per thread, writes serialised by a lock
    (SQLite allows one writer; the lock avoids its busy-wait back-off), reads concurrent (WAL)."""

    def __init__(self, study_dir: str | Path, create: bool = False):
        self.study_dir = Path(study_dir)
        self.path = self.study_dir / DB_NAME
        if not create and not self.path.is_file():
            raise StudyError(f"{self.study_dir}: not a study folder (no {DB_NAME}); make one with `humantune study "
                             "create`")
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        if create:
            self.conn().executescript(SCHEMA)
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif self.meta("schema_version") != str(SCHEMA_VERSION):
            raise StudyError(f"{self.path}: study schema version {self.meta('schema_version')}, this humantune "
                             f"reads version {SCHEMA_VERSION}")

    # --- connections -------------------------------------------------------------------------------------------

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a committed vote is on disk before the client hears "ok"
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            self._connections.append(conn)
        return conn

    def write(self) -> "_Transaction":
        """``with store.write() as conn:`` one IMMEDIATE transaction, committed at the end, rolled back on error."""
        return _Transaction(self)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """``with store.snapshot():`` every read inside sees the database as of one moment (a read transaction)."""
        conn = self.conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        for conn in self._connections:
            conn.close()
        self._connections.clear()
        self._local = threading.local()

    def backup(self, dest: str | Path) -> Path:
        """Copy the database to ``dest`` with SQLite's online backup API: a consistent snapshot even while votes
        are being written (the copy is a plain single-file database)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(dest)
        try:
            self.conn().backup(target)
        finally:
            target.close()
        return dest

    # --- meta ----------------------------------------------------------------------------------------------------

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    @staticmethod
    def set_meta_in(conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                     (key, value))

    def set_meta(self, key: str, value: str) -> None:
        with self.write() as conn:
            self.set_meta_in(conn, key, value)

    @property
    def paused(self) -> bool:
        return self.meta("paused", "0") == "1"

    def check_secret(self, key: str, token: str) -> bool:
        """Whether ``token`` is the study's admin or join token (``key`` = ``admin_token_hash`` / ...)."""
        stored = self.meta(key)
        return bool(TOKEN_PATTERN.match(token) and stored and secrets.compare_digest(stored, token_hash(token)))

    # --- participants --------------------------------------------------------------------------------------------

    def participant(self, token: str) -> Participant:
        """The participant whose link carries ``token``; :class:`UnknownToken` otherwise."""
        if not TOKEN_PATTERN.match(token):
            raise UnknownToken("unknown participant token")
        row = self.conn().execute("SELECT id, name, kind FROM participants WHERE token_hash = ?",
                                  (token_hash(token),)).fetchone()
        if row is None:
            raise UnknownToken("unknown participant token")
        return Participant(row["id"], row["name"], row["kind"])

    def participant_named(self, name: str) -> Participant | None:
        row = self.conn().execute("SELECT id, name, kind FROM participants WHERE name = ?", (name,)).fetchone()
        return Participant(row["id"], row["name"], row["kind"]) if row else None

    def claim(self, participant_id: int) -> None:
        """Mark a participant's slot as taken (first visit of their link or a join-link hand-out)."""
        with self.write() as conn:
            conn.execute("UPDATE participants SET claimed_at = ? WHERE id = ? AND claimed_at IS NULL",
                         (time.time(), participant_id))

    def claim_free_slot(self, tokens: dict[str, str]) -> str:
        """Hand out the first unclaimed person slot (join link); ``tokens`` maps participant name → token
        (the study's access file). :class:`StudyFull` when the quota is used up."""
        with self.write() as conn:
            rows = conn.execute("SELECT id, name FROM participants WHERE kind = 'person' AND claimed_at IS NULL "
                                "ORDER BY id").fetchall()
            for row in rows:
                if row["name"] in tokens:
                    conn.execute("UPDATE participants SET claimed_at = ? WHERE id = ?", (time.time(), row["id"]))
                    return tokens[row["name"]]
        raise StudyFull("the study is full: every participant slot is taken")

    # --- assignments and votes -----------------------------------------------------------------------------------

    _ASSIGNMENT_SQL = """
        SELECT a.id, a.position, a.pair_id, it.prompt, li.path AS left_path, ri.path AS right_path
        FROM assignments a JOIN pairs p ON p.id = a.pair_id JOIN items it ON it.id = p.item_id
        JOIN images li ON li.id = a.left_image JOIN images ri ON ri.id = a.right_image
    """

    def next_assignment(self, participant_id: int) -> Assignment | None:
        """The participant's first unanswered assignment in their order; None when they are done."""
        row = self.conn().execute(
            self._ASSIGNMENT_SQL + " LEFT JOIN votes v ON v.assignment_id = a.id "
            "WHERE a.participant_id = ? AND v.id IS NULL ORDER BY a.position LIMIT 1", (participant_id,)).fetchone()
        return Assignment(**dict(row)) if row else None

    def assignment(self, participant_id: int, assignment_id: int) -> Assignment:
        """One of the participant's assignments; :class:`NotAssigned` when it is not theirs (or does not exist)."""
        row = self.conn().execute(self._ASSIGNMENT_SQL + " WHERE a.id = ? AND a.participant_id = ?",
                                  (assignment_id, participant_id)).fetchone()
        if row is None:
            raise NotAssigned(f"pair {assignment_id} is not assigned to this participant")
        return Assignment(**dict(row))

    def unanswered(self, participant_id: int) -> list[Assignment]:
        rows = self.conn().execute(
            self._ASSIGNMENT_SQL + " LEFT JOIN votes v ON v.assignment_id = a.id "
            "WHERE a.participant_id = ? AND v.id IS NULL ORDER BY a.position", (participant_id,)).fetchall()
        return [Assignment(**dict(r)) for r in rows]

    def progress(self, participant_id: int) -> tuple[int, int]:
        """(answered, total) assignments of a participant."""
        row = self.conn().execute(
            "SELECT COUNT(v.id), COUNT(a.id) FROM assignments a LEFT JOIN votes v ON v.assignment_id = a.id "
            "WHERE a.participant_id = ?", (participant_id,)).fetchone()
        return int(row[0]), int(row[1])

    def record_vote(self, participant_id: int, assignment_id: int, choice: str,
                    response_ms: int | None = None) -> None:
        """Store one answer, in its own committed transaction. Raises :class:`NotAssigned` for another
        participant's (or a missing) assignment, :class:`AlreadyAnswered` when it was answered before (nothing
        changes), :class:`StudyPaused` while the study is paused, ``VoteRejected`` for a bad choice."""
        if choice not in CHOICES:
            raise VoteRejected(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
        if response_ms is not None and (not isinstance(response_ms, int) or response_ms < 0):
            raise VoteRejected(f"response_ms must be a non-negative integer, got {response_ms!r}")
        with self.write() as conn:
            paused = conn.execute("SELECT value FROM meta WHERE key = 'paused'").fetchone()
            if paused is not None and paused[0] == "1":
                raise StudyPaused("the study is paused; try again later")
            owner = conn.execute("SELECT participant_id FROM assignments WHERE id = ?", (assignment_id,)).fetchone()
            if owner is None or owner[0] != participant_id:
                raise NotAssigned(f"pair {assignment_id} is not assigned to this participant")
            done = conn.execute("SELECT choice FROM votes WHERE assignment_id = ?", (assignment_id,)).fetchone()
            if done is not None:
                raise AlreadyAnswered(f"pair {assignment_id} was already answered ({done[0]}); the first answer "
                                      "stands", recorded=done[0])
            conn.execute("INSERT INTO votes (assignment_id, choice, response_ms, created_at) VALUES (?, ?, ?, ?)",
                         (assignment_id, choice, response_ms, time.time()))

    def recorded_choice(self, assignment_id: int) -> str | None:
        row = self.conn().execute("SELECT choice FROM votes WHERE assignment_id = ?", (assignment_id,)).fetchone()
        return row[0] if row else None

    # --- reading the whole study ---------------------------------------------------------------------------------

    def systems(self) -> list[str]:
        return [r[0] for r in self.conn().execute("SELECT name FROM systems ORDER BY id")]

    def rows(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn().execute(sql, params)]

    def vote_rows(self) -> list[dict[str, Any]]:
        """Every vote with its context, in the order recorded: participant (name, kind), pair (id, kind), prompt,
        seed, the system (or ``good``/``bad``) shown on each side, the choice and the chosen system."""
        return self.rows("""
            SELECT v.id AS vote_id, pt.name AS participant, pt.kind AS participant_kind, a.id AS assignment_id,
                   a.position, a.is_repeat, p.id AS pair_id, p.kind AS pair_kind, it.prompt, it.seed,
                   COALESCE(ls.name, li.role) AS left_system, COALESCE(rs.name, ri.role) AS right_system,
                   li.path AS left_image, ri.path AS right_image, v.choice, v.response_ms, v.created_at
            FROM votes v JOIN assignments a ON a.id = v.assignment_id JOIN participants pt ON pt.id = a.participant_id
            JOIN pairs p ON p.id = a.pair_id JOIN items it ON it.id = p.item_id
            JOIN images li ON li.id = a.left_image JOIN images ri ON ri.id = a.right_image
            LEFT JOIN systems ls ON ls.id = li.system_id LEFT JOIN systems rs ON rs.id = ri.system_id
            ORDER BY v.id""")

    def participant_progress(self) -> list[dict[str, Any]]:
        """Per participant: name, kind, claimed, answered, total, attention checks answered and passed."""
        return self.rows("""
            SELECT pt.name, pt.kind, pt.claimed_at IS NOT NULL AS claimed,
                   COUNT(v.id) AS answered, COUNT(a.id) AS total,
                   SUM(p.kind = 'attention' AND v.id IS NOT NULL) AS attention_answered,
                   SUM(p.kind = 'attention' AND ((v.choice = 'left' AND li.role = 'good')
                                                 OR (v.choice = 'right' AND ri.role = 'good'))) AS attention_passed,
                   MAX(v.created_at) AS last_vote
            FROM participants pt LEFT JOIN assignments a ON a.participant_id = pt.id
            LEFT JOIN pairs p ON p.id = a.pair_id LEFT JOIN votes v ON v.assignment_id = a.id
            LEFT JOIN images li ON li.id = a.left_image LEFT JOIN images ri ON ri.id = a.right_image
            GROUP BY pt.id ORDER BY pt.kind DESC, pt.id""")


class _Transaction:
    def __init__(self, store: StudyStore):
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._write_lock.acquire()
        try:
            self.conn = self.store.conn()
            self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.store._write_lock.release()
            raise
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self.store._write_lock.release()
