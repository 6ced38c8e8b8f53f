"""Data-parallel training under ``torchrun``: one process per device, rank 0 writes.

``torchrun --nproc_per_node N -m asr.cli.main dnn train ...`` sets ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK``; each process then trains a DistributedDataParallel replica (gloo on CPU, nccl on
GPU) on its shard of the minibatches.
"""
from __future__ import annotations

import os

import torch

from asr.jobs.device import choose_device


def init_distributed(device_name: str | None) -> tuple[torch.device, int]:
    """Initialise ``torch.distributed`` when launched by torchrun with more than one process;
    returns ``(device, rank)`` (``(choose_device(device_name), 0)`` for a plain run). Under CUDA
    each process takes the GPU of its ``LOCAL_RANK``."""
    import torch.distributed as dist

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        local = int(os.environ.get("LOCAL_RANK", 0))
        dev = choose_device(device_name)
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return dev, dist.get_rank()
    return choose_device(device_name), 0
