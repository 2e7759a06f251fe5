"""humantune's default torch threads (humantune/__init__.py): the free CPUs, at least one, unless the user set
OMP_NUM_THREADS."""

import os
import subprocess
import sys

from humantune import default_threads


def test_default_threads_leave_busy_cpus_alone():
    assert default_threads(16, 0.2) == 16
    assert default_threads(2, 1.1) == 1          # one other job on two cores
    assert default_threads(2, 4.6) == 1          # never zero
    assert default_threads(8, 2.5) == 6


def test_an_explicit_omp_num_threads_wins_and_is_otherwise_set_before_torch_loads():
    code = "import humantune, os, torch; print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    chosen, threads = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                     check=True).stdout.split()
    assert chosen == threads and 1 <= int(threads) <= len(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["1", "1"]
