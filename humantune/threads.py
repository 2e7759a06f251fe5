"""How many threads torch uses when the user says nothing: the free CPUs (humantune's command line applies it).

Two torch processes with a thread per core slow each other 5-7× on a 2-core machine (spinning OpenMP threads); with
one thread per free CPU a job beside one other costs about 2.2× (``benchmarks/cpu_contention.py``). An explicit
``OMP_NUM_THREADS`` always wins. A resumed training run goes back to the thread count it started with (recorded in
its checkpoints), since float sums, and so the trajectory, depend on it.
"""

from __future__ import annotations

import os


def default_threads(cpus: int, load: float) -> int:
    """Threads per torch process when the user sets none: the CPUs this process may use minus those already busy
    (the 1-minute load average), at least 1."""
    return max(1, cpus - int(round(load)))


def apply_default_threads() -> None:
    """Set ``OMP_NUM_THREADS`` to :func:`default_threads` unless the user set it; call it before torch is imported
    (torch reads it once)."""
    if "OMP_NUM_THREADS" in os.environ or not hasattr(os, "getloadavg"):
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(default_threads(cpus, os.getloadavg()[0]))
