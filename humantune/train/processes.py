"""Which processes a run has: accelerate's process state, on the CPU over gloo when there is no GPU.

``accelerate launch --multi_gpu --num_processes N`` (or ``--config_file configs/accelerate/ddp_cpu.yaml``) starts N
processes through torchrun; on a machine without a GPU they train with DDP over gloo. (accelerate's own
``MULTI_CPU`` mode starts its processes through ``mpirun``, which humantune does not need.)
"""

from __future__ import annotations

import os


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
    """Close the process group while the interpreter is still whole (the trainer registers this with ``atexit`` in
    a multi-process run): a Gloo group left to its destructor at exit can abort the process with "terminate called
    without an active exception" (seen on a loaded 2-core machine; pytorch/pytorch#190489)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
