"""Data parallelism through ``torch.distributed``: DDP, or FSDP (FSDP2 ``fully_shard``) for models
that don't fit one device.

Launch with ``torchrun``: ``torchrun --nproc-per-node 8 -m training.cli pt -c pt.yaml`` on one GPU
machine, add ``--nnodes N --node-rank R --rdzv-endpoint HOST:PORT`` across machines (NCCL), or
``torchrun --nproc-per-node 2 ...`` on CPU (gloo). Without torchrun's environment a run is a single
process. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_model_state_dict,
    set_optimizer_state_dict,
)

from astrai_core.errors import ConfigError
from astrai_core.model import Block

PARALLEL_MODES = ("auto", "none", "ddp", "fsdp")


@dataclass
class DistContext:
    """Where this process sits: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {device!r} is not a valid torch device (try 'auto', 'cpu' or 'cuda')") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return dev


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return DistContext(device=dev)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    initialized_here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        initialized_here = True
    return DistContext(rank, world, local_rank, dev, initialized_here)


def shutdown(ctx: DistContext) -> None:
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(module: nn.Module, ctx: DistContext, mode: str) -> nn.Module:
    """Place ``module`` on this rank's device and return what the loop calls: the module itself, a DDP
    wrapper, or the module sharded in place by FSDP2.

    Under FSDP the module is sharded *before* it moves: ``fully_shard`` moves one block at a time, so a
    device never holds more than one unsharded block (the full model only needs to fit in host memory).
    """
    if mode not in PARALLEL_MODES:
        raise ConfigError(f"parallel={mode!r}; expected one of {PARALLEL_MODES}")
    if mode == "auto":
        mode = "ddp" if ctx.distributed else "none"
    if mode == "none" or not ctx.distributed:
        return module.to(ctx.device)
    if mode == "ddp":
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module.to(ctx.device), device_ids=ids)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    # Shard each transformer block, then the root (embeddings, final norm, head).
    for sub in module.modules():
        if isinstance(sub, Block):
            fully_shard(sub, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


def no_sync(wrapped: nn.Module, last_micro_batch: bool):
    """Skip DDP's gradient all-reduce on all but the last micro-batch of an accumulation."""
    if not last_micro_batch and isinstance(wrapped, nn.parallel.DistributedDataParallel):
        return wrapped.no_sync()
    return nullcontext()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def full_state(module: nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    """Full (unsharded, CPU) model and optimizer state, identical in layout for none/DDP/FSDP."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(module, options=opts)
    optim_state = get_optimizer_state_dict(module, optimizer, options=opts) if optimizer is not None else None
    return model_state, optim_state


def load_full_state(module: nn.Module, optimizer: torch.optim.Optimizer | None, model_state: dict,
                    optim_state: dict | None) -> None:
    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(module, model_state, options=opts)
    if optimizer is not None and optim_state is not None:
        set_optimizer_state_dict(module, optimizer, optim_state, options=opts)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
