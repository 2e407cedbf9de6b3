"""Collectives for GRAIL's discriminator when several training processes run (`accelerate launch`):
each process holds a copy of D, and these keep the copies identical.
"""

from __future__ import annotations


def process_group():
    """torch.distributed when several training processes run (accelerate launch), else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def across_processes(tensors, *, op: str):
    """Each tensor's mean or max over processes, or rank 0's value ("rank0"), as new tensors on their devices.

    One flat collective per call; with NCCL the buffer travels through the GPU even when D lives on
    the CPU (GAIL_DEVICE=cpu).
    """
    import torch

    dist = process_group()
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    comm_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else flat.device
    buffer = flat.to(comm_device)
    if op == "rank0":
        dist.broadcast(buffer, src=0)
    else:
        dist.all_reduce(buffer, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        if op == "mean":
            buffer /= dist.get_world_size()
    buffer = buffer.to(flat.device)
    out, offset = [], 0
    for t in tensors:
        out.append(buffer[offset:offset + t.numel()].view_as(t).to(device=t.device, dtype=t.dtype))
        offset += t.numel()
    return out
