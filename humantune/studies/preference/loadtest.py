"""Load and crash test of the study server: concurrent participants vote over HTTP against a real
``humantune study serve`` process on 127.0.0.1, optionally killed with SIGKILL and restarted mid-run; afterwards
the database is checked against what the clients were told.

Each simulated participant (a thread with its own keep-alive HTTP client) repeats GET ``/next`` → POST ``/vote``
with a random choice until the server says it is done. A vote is *accepted* when the server answered 200, or 409
with the same recorded choice (a retry whose first answer was lost with the killed server). Network errors and
5xx are retried with back-off for at most ``retry_window_s``. The check (:func:`verify`) then requires: every
accepted vote in the database exactly once with its choice, no vote the clients were not told about, no row with a
missing or invalid field, and ``PRAGMA integrity_check`` = ok.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from humantune.studies.preference.storage import CHOICES, DB_NAME
from humantune.studies.preference.study import StudyConfig, create_study, read_access


def make_load_study(out: Path, participants: int, pairs: int, seed: int = 0) -> Path:
    """A two-system study with ``pairs`` comparison pairs (tiny images), every participant answering all of them."""
    for system, colour in (("a", (220, 30, 30)), ("b", (30, 30, 220))):
        folder = out.parent / f"{out.name}-gen-{system}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(pairs):
            Image.new("RGB", (8, 8), colour).save(folder / f"{i:05d}.png")
            rows.append({"file_name": f"{i:05d}.png", "text": f"prompt {i // 2}", "seed": i % 2})
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    create_study({s: out.parent / f"{out.name}-gen-{s}" for s in ("a", "b")}, out,
                 StudyConfig(participants=participants, seed=seed), overwrite=True)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m humantune study serve STUDY`` as a child process on 127.0.0.1 (``direct``: the same server
    started through :func:`~humantune.studies.preference.server.serve` without the CLI, whose start-up imports
    every recipe)."""

    def __init__(self, study: Path, port: int, log: Path, direct: bool = False):
        self.study, self.port, self.log = study, port, log
        if direct:
            self.command = [sys.executable, "-c", "import sys; from humantune.studies.preference.server import "
                            "serve; serve(sys.argv[1], port=int(sys.argv[2]))", str(study), str(port)]
        else:
            self.command = [sys.executable, "-m", "humantune", "study", "serve", str(study), "--host", "127.0.0.1",
                            "--port", str(port)]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> float:
        """Start and wait until it answers; returns the seconds that took."""
        t0 = time.perf_counter()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env)
        import httpx

        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the study server exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1.0).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"the study server did not answer within {timeout_s} s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as in a crash or ``kill -9``."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class LoadResult:
    accepted: dict[int, str] = field(default_factory=dict)   # assignment id -> choice the client was told stands
    vote_latency_s: list[float] = field(default_factory=list)
    next_latency_s: list[float] = field(default_factory=list)
    retried_requests: int = 0
    acknowledged_by_409: int = 0   # votes whose first answer was lost; the retry found them recorded
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _participant(base: str, token: str, seed: int, result: LoadResult, retry_window_s: float,
                 stop: threading.Event) -> None:
    import httpx

    rng = np.random.default_rng(seed)
    client = httpx.Client(base_url=base, timeout=10.0)

    def call(method: str, url: str, **kwargs) -> tuple[httpx.Response, float]:
        t_end, delay = time.perf_counter() + retry_window_s, 0.02
        while True:
            t0 = time.perf_counter()
            try:
                r = client.request(method, url, **kwargs)
                if r.status_code < 500:
                    return r, time.perf_counter() - t0
            except httpx.TransportError:
                pass
            with result.lock:
                result.retried_requests += 1
            if time.perf_counter() > t_end or stop.is_set():
                raise RuntimeError(f"{method} {url.split('/')[-1]}: no answer within {retry_window_s} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    try:
        while not stop.is_set():
            r, dt = call("GET", f"/api/p/{token}/next")
            nxt = r.json()
            with result.lock:
                result.next_latency_s.append(dt)
            if nxt["done"]:
                return
            choice = CHOICES[int(rng.integers(0, 3))]
            r, dt = call("POST", f"/api/p/{token}/vote", json={"assignment": nxt["assignment"], "choice": choice})
            with result.lock:
                if r.status_code == 200:
                    result.accepted[nxt["assignment"]] = choice
                    result.vote_latency_s.append(dt)
                elif r.status_code == 409 and r.json().get("recorded") == choice:
                    result.accepted[nxt["assignment"]] = choice
                    result.acknowledged_by_409 += 1
                else:
                    result.errors.append(f"vote answered {r.status_code}: {r.text[:200]}")
                    return
    except Exception as e:  # noqa: BLE001 - reported in the result, the run goes on for the others
        with result.lock:
            result.errors.append(f"{type(e).__name__}: {e}")
    finally:
        client.close()


def run_load(study: Path, kill_after: int | None = None, retry_window_s: float = 60.0,
             timeout_s: float = 1800.0, log: Path | None = None, direct: bool = False) -> dict:
    """Serve ``study`` and let each of its participants vote through all their pairs concurrently; with
    ``kill_after``, SIGKILL the server once that many votes are accepted and start it again at once. Returns the
    measurements and :func:`verify`'s checks."""
    tokens = read_access(study)["participants"]
    port = free_port()
    server = Server(study, port, log or study.parent / f"{study.name}-server.log", direct=direct)
    result, stop = LoadResult(), threading.Event()
    startup = server.start()
    restart_s = None
    threads = [threading.Thread(target=_participant, args=(f"http://127.0.0.1:{port}", t, i, result,
                                                           retry_window_s, stop), daemon=True)
               for i, t in enumerate(tokens.values())]
    t0 = time.perf_counter()
    try:
        for t in threads:
            t.start()
        killed_at = None
        while any(t.is_alive() for t in threads):
            if time.perf_counter() - t0 > timeout_s:
                stop.set()
                raise RuntimeError(f"load run exceeded {timeout_s} s")
            if kill_after is not None and killed_at is None and len(result.accepted) >= kill_after:
                killed_at = len(result.accepted)
                server.kill()
                restart_s = server.start()
            time.sleep(0.01)
        wall = time.perf_counter() - t0
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        server.stop()
    checks = verify(study / DB_NAME, result.accepted)
    return {
        "participants": len(tokens), "votes_accepted": len(result.accepted), "wall_s": wall,
        "votes_per_s": len(result.accepted) / wall if wall else None,
        "vote_latency_ms": {"p50": _ms(result.vote_latency_s, 50), "p99": _ms(result.vote_latency_s, 99),
                            "max": _ms(result.vote_latency_s, 100)},
        "next_latency_ms": {"p50": _ms(result.next_latency_s, 50), "p99": _ms(result.next_latency_s, 99)},
        "server_start_s": startup, "killed_after_votes": killed_at, "restart_s": restart_s,
        "retried_requests": result.retried_requests, "acknowledged_by_409_after_restart": result.acknowledged_by_409,
        "client_errors": result.errors[:10], **checks,
    }


def _ms(seconds: list[float], q: float) -> float | None:
    """The q-th percentile of ``seconds`` in milliseconds (None for no samples)."""
    return float(np.percentile(np.asarray(seconds) * 1000, q)) if seconds else None


def verify(db: Path, accepted: dict[int, str]) -> dict:
    """Compare the database with the accepted votes (read-only, after the server stopped)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        foreign = conn.execute("PRAGMA foreign_key_check").fetchall()
        rows = conn.execute("SELECT assignment_id, choice, created_at FROM votes").fetchall()
        bad = conn.execute("SELECT COUNT(*) FROM votes WHERE choice IS NULL OR choice NOT IN ('left', 'right', 'tie') "
                           "OR created_at IS NULL OR assignment_id NOT IN (SELECT id FROM assignments)").fetchone()[0]
    finally:
        conn.close()
    stored = {a: c for a, c, _ in rows}
    return {
        "votes_in_db": len(rows), "duplicate_votes": len(rows) - len(stored),
        "accepted_missing_from_db": sum(1 for a in accepted if a not in stored),
        "accepted_with_other_choice": sum(1 for a, c in accepted.items() if a in stored and stored[a] != c),
        "db_votes_never_acknowledged": sum(1 for a in stored if a not in accepted),
        "malformed_rows": bad, "integrity_check": integrity, "foreign_key_violations": len(foreign),
    }
