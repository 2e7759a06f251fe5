"""humantune's default torch threads (humantune/threads.py): the free CPUs, at least one, unless the user set
OMP_NUM_THREADS; the command line applies them before torch loads, a plain library import changes nothing."""

import os
import subprocess
import sys

from humantune.threads import default_threads


def test_default_threads_leave_busy_cpus_alone():
    assert default_threads(16, 0.2) == 16
    assert default_threads(2, 1.1) == 1          # one other job on two cores
    assert default_threads(2, 4.6) == 1          # never zero
    assert default_threads(8, 2.5) == 6


def _run(code: str, **env_extra) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return subprocess.run([sys.executable, "-c", code], env={**env, **env_extra}, capture_output=True, text=True,
                          check=True).stdout.split()


def test_the_cli_sets_threads_before_torch_loads_and_an_explicit_setting_wins():
    code = "import humantune.cli, os, torch; print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())"
    chosen, threads = _run(code)
    assert chosen == threads and 1 <= int(threads) <= len(os.sched_getaffinity(0))
    explicit = "1" if chosen != "1" else "2"   # torch caps the count at the cores
    assert _run(code, OMP_NUM_THREADS=explicit) == [explicit, explicit]


def test_importing_the_library_leaves_the_environment_alone():
    assert _run("import os, humantune; print('OMP_NUM_THREADS' in os.environ)") == ["False"]
