"""humantune: fine-tune diffusion models so they draw humans better, and measure it."""

__version__ = "0.1.0"


def default_threads(cpus: int, load: float) -> int:
    """Threads per torch process when the user sets none: the CPUs this process may use minus those already busy
    (the 1-minute load average), at least 1. Two torch processes with all cores each on a 2-core machine slow each
    other 5-7x (spinning OpenMP threads); with this choice a job beside one other costs about 2.4x
    (benchmarks/cpu_contention.py)."""
    return max(1, cpus - int(round(load)))


def _apply_default_threads() -> None:
    # Before torch is imported (torch reads OMP_NUM_THREADS once); an explicit OMP_NUM_THREADS always wins.
    import os

    if "OMP_NUM_THREADS" in os.environ or not hasattr(os, "getloadavg"):
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(default_threads(cpus, os.getloadavg()[0]))


_apply_default_threads()
