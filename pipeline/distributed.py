"""One stage, several processes, on PyTorch's own engine: `torchrun` starts the processes
(ranks) and `torch.distributed` connects them.

`dist.nproc_per_node` (and `dist.nnodes`) in params.yaml is the only switch: with more than one
process a stage command re-executes itself under `torchrun`, each rank joins the process group
(NCCL on CUDA, gloo on CPU) and the stage splits its work by rank. Outside `torchrun` every
function here answers for a world of one process, so single-process code needs no branch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

from pipeline.config import DistParams

# A rank that waits longer than this for the others (e.g. one of them was killed) gives up.
TIMEOUT = timedelta(minutes=30)


def launched() -> bool:
    """Whether this process is a rank started by torchrun."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def processes(params: DistParams) -> int:
    return params.nproc_per_node * params.nnodes


def torchrun_command(params: DistParams, module: str, args: list[str]) -> list[str]:
    """The torchrun command line that runs `python -m <module> <args>` as every rank."""
    command = [sys.executable, "-m", "torch.distributed.run"]
    command += [f"--nproc-per-node={params.nproc_per_node}", f"--nnodes={params.nnodes}"]
    if params.nnodes == 1:
        command.append("--standalone")  # a free local port: runs side by side do not collide
    else:
        command += [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={params.rdzv_endpoint}",
            f"--rdzv-id={module}",
        ]
    return [*command, "-m", module, *args]


def relaunch(params: DistParams, module: str, args: list[str]) -> None:
    """Replace this process by torchrun running `module` as every rank (never returns)."""
    command = torchrun_command(params, module, args)
    os.execv(command[0], command)


@contextmanager
def process_group(backend: str, device: str) -> Iterator[None]:
    """Join the process group of the ranks torchrun started (a no-op outside torchrun).

    `backend` auto is NCCL when the ranks compute on CUDA, gloo otherwise. On CUDA each rank
    takes the GPU of its local rank, so `torch.device("cuda")` means that one."""
    if not launched():
        yield
        return
    on_cuda = device != "cpu" and torch.cuda.is_available()
    if backend == "auto":
        backend = "nccl" if on_cuda else "gloo"
    if on_cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend, timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the one process that logs, checkpoints and commits a stage's output."""
    return rank() == 0


def ranks_on_this_machine() -> int:
    """How many ranks share this machine's memory (1 outside torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if launched() else 1


def barrier() -> None:
    """Wait until every rank is here."""
    if world_size() > 1:
        dist.barrier()


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of `values` over every rank (`values` itself in one process)."""
    if world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values
