"""Distributed data parallel helpers: one process per GPU (or several CPU processes), started by ``torchrun``.

``torchrun --nproc_per_node N -m tcts train-selector …`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the
rendezvous variables; :func:`init_distributed` reads them, picks NCCL when the processes use CUDA and gloo
otherwise, and binds each process to ``cuda:LOCAL_RANK``. Without those variables everything runs in one
process and the helpers are no-ops.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto``: ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; ``cuda`` gets the local rank's GPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (or run single-process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world <= 1:
        return DistInfo(0, 1, 0, resolved, "")
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                **({"device_id": resolved} if resolved.type == "cuda" else {}))
    return DistInfo(rank, world, local_rank, resolved, backend)


def barrier(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        if info.backend == "nccl":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of a tensor over all processes (the tensor itself in a single process)."""
    if not info.distributed:
        return value
    out = value.detach().clone().to(info.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(value.device)


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` when there are several processes."""
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if info.device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[info.device.index], output_device=info.device.index)
    return DistributedDataParallel(model)


def cleanup(info: DistInfo) -> None:
    """Leave the process group in step with the other processes.

    DDP wrappers that are still alive (reference cycles through training closures) hold gloo work
    objects; destroying the group under them, or while a peer is still inside a collective, aborts the
    process at exit ("terminate called without an active exception"). So: collect them, meet at a
    barrier, then destroy."""
    if info.distributed and dist.is_initialized():
        import gc

        gc.collect()
        barrier(info)
        dist.destroy_process_group()
