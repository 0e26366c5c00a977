"""Ordered, memory-bounded parallel map over cases."""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def imap_ordered(fn: Callable[[T], R], items: Iterable[T], workers: int = 1) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in input order.

    ``workers <= 1`` runs in this process. Otherwise at most ``2 * workers`` items are in flight
    at once, so memory stays bounded by a few cases whatever the folder size. Worker processes
    are spawned (not forked): safe with threads (progress bars) and torch in the parent.
    ``fn`` must be a module-level function and must not raise for expected per-case problems:
    return them in its result instead.
    """
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: deque[Future[R]] = deque()
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append(pool.submit(fn, nxt))
            yield result


_END = object()
