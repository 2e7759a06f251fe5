"""Which processes a run has: accelerate's process state, on the CPU over gloo when there is no GPU.

``accelerate launch --multi_gpu --num_processes N`` (or ``--config_file configs/accelerate/ddp_cpu.yaml``) starts N
processes through torchrun; on a machine without a GPU they train with DDP over gloo. (accelerate's own
``MULTI_CPU`` mode starts its processes through ``mpirun``, which humantune does not need.)
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn


def use_cpu() -> bool:
    """True when the processes must run on the CPU: asked for (``ACCELERATE_USE_CPU``), or launched as several
    processes on a machine with no CUDA GPU."""
    import torch
    from accelerate.utils import parse_flag_from_env

    launched = "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1
    return parse_flag_from_env("ACCELERATE_USE_CPU") or (launched and not torch.cuda.is_available())


def process_state():
    """accelerate's ``PartialState`` of this process (rank, count, main process, barriers, collectives)."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu())


def destroy_process_group() -> None:
    """Close the process group while the interpreter is still whole. The trainer registers this with ``atexit`` in a
    multi-process run, for scripts that use it directly: a Gloo group left to its destructor at exit can abort the
    process with "terminate called without an active exception" (pytorch/pytorch#190489). Entry points end through
    :func:`exit_process`, which also avoids the finalization race that this alone leaves open."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def process_group_up() -> bool:
    """True when this process has a torch.distributed process group up, as under ``accelerate launch`` (never
    imports torch)."""
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()


def exit_process(code: int) -> NoReturn:
    """Leave the process with status ``code``; every multi-process entry point (``humantune``, the distributed test
    scripts) ends through this.

    A single process exits normally (``sys.exit``). In a process group the process closes the group, runs the
    ``atexit`` handlers, flushes stdout and stderr and leaves without the interpreter's finalization
    (``os._exit``). Gloo's worker thread can still be releasing the tensors of the run's last collective (the
    held-out evaluation's ``broadcast_object_list``) when the main thread finalizes Python; it then needs the GIL,
    the finalizing interpreter ends the thread, and the C++ unwinding aborts the process with "terminate called
    without an active exception" after all its files were written (about 1 run in 50 on a loaded 2-core machine;
    the core dump: ``ProcessGroupGloo::runLoop`` → ``~AsyncBroadcastWork`` → ``decref_pyobject`` → ``take_gil``
    → ``pthread_exit``; pytorch/pytorch#179291 describes it). ``os._exit`` stops those threads without unwinding.
    """
    if not process_group_up():
        sys.exit(code)
    try:
        destroy_process_group()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing left to flush
                pass
        os._exit(code)
