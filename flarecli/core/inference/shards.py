"""Shares of a folder's cases: ``--shard I/N`` and the ranks of a ``torchrun`` launch.

A case belongs to a share by a hash of its id, so shares are disjoint, cover every case and
keep their cases when others are added; under ``torchrun`` each rank takes its share of the
shard, and rank 0 gathers every rank's results for the one run record (CPU collectives).
"""

from __future__ import annotations

from typing import Any

from flarecli.core.errors import InputError


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (1 <= I <= N, decimal digits only, no spaces or signs) -> (I, N); None
    stays None. Raises InputError."""
    if text is None:
        return None
    # only digits: int() would take " 1", "+1" or "1_0", so a typo would pick a shard
    parts = text.split("/")
    if len(parts) == 2 and all(p.isascii() and p.isdigit() for p in parts):
        i, n = int(parts[0]), int(parts[1])
    else:
        i = n = 0
    if not 1 <= i <= n:
        raise InputError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 2/8")
    return i, n


def in_shard(case_id: str, shard: tuple[int, int] | None) -> bool:
    """Whether a case belongs to a shard: by a hash of its id, so shares are disjoint, cover
    every case, and a case keeps its shard when others are added."""
    if shard is None:
        return True
    import hashlib

    digest = int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "big")
    return digest % shard[1] == shard[0] - 1


def distributed() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when started by torchrun with more than one process."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or "RANK" not in os.environ:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0") or 0)


def gather(items: list[Any]) -> list[Any] | None:
    """Every rank's items on rank 0 (None on the others); CPU collectives (gloo)."""
    import torch.distributed as dist

    from flarecli.core.runtime import join_process_group

    join_process_group("gloo")
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    if dist.get_rank() != 0:
        return None
    return [x for part in gathered for x in part]
