"""exit_process: a single process exits normally; one in a process group closes the group, runs the atexit
handlers, flushes its output and leaves with the given status (without the interpreter's finalization)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from humantune.train.processes import exit_process, process_group_up

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import atexit, sys
    from pathlib import Path
    out = Path(sys.argv[1])
    if sys.argv[2] == "group":
        import torch, torch.distributed as dist
        dist.init_process_group("gloo", init_method=f"file://{out / 'store'}", rank=0, world_size=1)
        dist.broadcast_object_list([{"results": 1}])   # a collective on Python-made tensors just before exit
    import humantune.train.processes as processes
    atexit.register(lambda: (out / "atexit_ran").write_text(str(processes.process_group_up())))
    print("unflushed line", end="")                   # stdout is a pipe: block-buffered until flushed
    processes.exit_process(int(sys.argv[3]))
""")


@pytest.mark.parametrize("mode", ["single", "group"])
def test_exit_process_returns_the_status_and_runs_atexit_handlers(tmp_path, mode):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), mode, "3"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stdout == "unflushed line"
    # the handler ran after the group was closed (exit_process closes it first)
    assert (tmp_path / "atexit_ran").read_text() == "False"


def test_exit_process_without_a_group_is_sys_exit():
    assert not process_group_up()
    with pytest.raises(SystemExit) as e:
        exit_process(5)
    assert e.value.code == 5
