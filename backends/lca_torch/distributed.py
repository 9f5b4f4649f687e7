"""Data-parallel evaluation under ``torch.distributed``: each process a shard of the chunks.

When a process group is initialised (``torchrun``, Lightning's DDP strategy, the Hugging
Face ``Trainer`` under ``accelerate``/``torchrun``), every process holds the same
evaluation set and evaluates every ``world``-th chunk of it, starting at its rank — whole
chunks, so the chunks (and BatchNorm's batch statistics) are those of one process. The
partial sums are all-reduced in float64, so every process gets the same loss and gradient,
hence the same allocation; rank 0 alone writes the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist

from lca_core.errors import DistributedError

from .evaluation_sets import Chunk, EvaluationSet, Streamed


class Shards:
    """This process's place in the job (rank 0 of 1 without a process group)."""

    def __init__(self) -> None:
        active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if active else 0
        self.world = dist.get_world_size() if active else 1

    def mine(self, chunks: EvaluationSet) -> Iterable[Chunk]:
        """The chunks this process evaluates: every ``world``-th, from its rank (a streamed
        set is read past the others' chunks without copying them to the device)."""
        if isinstance(chunks, Streamed):
            return chunks.shard(self.rank, self.world)
        return chunks[self.rank :: self.world]

    def from_rank0(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) in every process."""
        if self.world == 1:
            return value
        box = [value]
        try:
            dist.broadcast_object_list(box, src=0)
        except Exception as exc:
            raise DistributedError(
                f"rank {self.rank}: receiving the run's state from rank 0 failed ({exc}); "
                "every process of the job must create its tracker (or callback)."
            ) from exc
        return box[0]

    def all_reduce(self, arrays: list[Any], device: torch.device) -> list[Any]:
        """Element-wise sums over the processes, in float64, in one collective call; each
        array comes back as it went (a host array, or a tensor on its device)."""
        if self.world == 1:
            return arrays
        on = device if dist.get_backend() == "nccl" else torch.device("cpu")
        tensors = [torch.as_tensor(a).reshape(-1).to(on, torch.float64) for a in arrays]
        packed = torch.cat(tensors)
        try:
            dist.all_reduce(packed)
        except Exception as exc:  # the collective's own errors: a peer died or timed out
            raise DistributedError.peer_lost(f"rank {self.rank}", exc) from exc
        out, start = [], 0
        for a in arrays:
            size = a.numel() if isinstance(a, torch.Tensor) else a.size
            part, start = packed[start : start + size], start + size
            if isinstance(a, torch.Tensor):
                out.append(part.reshape(a.shape).to(a.device))
            else:
                out.append(part.reshape(a.shape).cpu().numpy())
        return out
