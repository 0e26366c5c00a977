"""Independent jobs side by side, each lane a process pinned to its own share of the CPUs.

The runner trains a recipe's independent steps this way (the student's coarse, organ and
tumor stages): a small network on a 2-core CPU trains only about 1.5 times faster on two
threads than on one (a training step of the demo's organ stage 354 ms on two, 534 ms on
one, and two one-thread runs side by side 521 and 543 ms each; 2-core AMD EPYC, AVX2), so
two steps on one core each end sooner than one after the other on both.

The plan is fixed before anything runs -- lane ``i`` takes the ``i``-th share of the CPUs and
every ``n``-th job from the ``i``-th on, in order -- so a job runs on the same number of
threads every time: oneDNN's sums depend on it, and a re-run or a resume trains the same
weights. A lane's CPUs are its affinity mask, which is what flare's runtime sizes its
threads by (:func:`~flarecli.core.runtime.usable_cpus`).

Lanes are spawned (not forked: a fork of a process whose OpenMP pool has run can hang). A
job's ``work(job, emit)`` reports through ``emit(kind, payload)``; the parent hands each
report to ``on_event``. A job that raises stops the others (their finished epochs are
checkpointed and resume), and the parent raises: a :class:`FlareError` as the job raised it
(message, hint, exit code), Ctrl-C as ``KeyboardInterrupt``, anything else as a RuntimeError
carrying the lane's traceback.
"""

from __future__ import annotations

import os
import queue as queues
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from flarecli.core.errors import FlareError

Emit = Callable[[str, Any], None]


def cpu_set() -> list[int]:
    """The CPUs this process may run on, in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux: no pinning, one lane
        return [0]


def plan(n_jobs: int, cpus: Sequence[int]) -> list[tuple[list[int], list[int]]]:
    """(CPUs, job indices) per lane: as many lanes as jobs or CPUs allow, the CPUs split into
    contiguous shares (the first lanes get the remainder), the jobs dealt out in turn."""
    lanes = max(1, min(n_jobs, len(cpus)))
    shares = [list(cpus[i * len(cpus) // lanes:(i + 1) * len(cpus) // lanes])
              for i in range(lanes)]
    return [(shares[i], list(range(i, n_jobs, lanes))) for i in range(lanes)]


class LaneError(RuntimeError):
    """A job failed with an error that is not flare's (a bug): the lane's traceback."""


def _lane(work: Callable[[Any, Emit], Any], jobs: list[tuple[str, Any]], cpus: list[int],
          events) -> None:
    """One lane's process: its jobs in order, each reported as start / done or error."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    for key, job in jobs:
        events.put(("start", key, None))
        t0 = time.perf_counter()
        try:
            value = work(job, lambda kind, payload, key=key: events.put((kind, key, payload)))
        except FlareError as e:
            events.put(("error", key, (e.exit_code, e.message, e.hint)))
            return
        except KeyboardInterrupt:
            events.put(("interrupted", key, None))
            return
        except BaseException:  # noqa: BLE001 -- a bug: its traceback goes to the parent
            events.put(("crash", key, traceback.format_exc()))
            return
        events.put(("done", key, (value, time.perf_counter() - t0)))


def _raise(kind: str, key: str, payload: Any) -> None:
    if kind == "interrupted":
        raise KeyboardInterrupt
    if kind == "crash":
        raise LaneError(f"{key} failed:\n{payload}")
    code, message, hint = payload
    error = FlareError(message, hint)
    error.exit_code = code  # the class is flare's own; its exit code is what the CLI needs
    raise error


def run_lanes(work: Callable[[Any, Emit], Any],
              lanes: Sequence[tuple[Sequence[int], Sequence[tuple[str, Any]]]],
              on_event: Callable[[str, str, Any], None], poll_s: float = 0.5
              ) -> dict[str, tuple[Any, float]]:
    """Run each lane's jobs ((key, job) pairs, in order; ``work`` and the jobs picklable) in
    a process on the lane's CPUs (:func:`plan` makes the lanes; one left without jobs is not
    started). ``on_event(kind, key, payload)`` gets every report in the parent: 'start',
    'done' ((value, seconds)) and whatever the jobs emit. Returns key -> (value, seconds)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    procs = []
    n_jobs = 0
    for cpus, jobs in lanes:
        if not jobs:
            continue
        p = context.Process(target=_lane, args=(work, list(jobs), list(cpus), events),
                            name="flare-lane")
        p.start()
        procs.append(p)
        n_jobs += len(jobs)
    results: dict[str, tuple[Any, float]] = {}
    try:
        while len(results) < n_jobs:
            try:
                kind, key, payload = events.get(timeout=poll_s)
            except queues.Empty:
                dead = [p for p in procs if not p.is_alive() and p.exitcode != 0]
                if dead and events.empty():
                    raise LaneError(f"a training process ended without a word (exit code "
                                    f"{dead[0].exitcode}: killed, or out of memory?)"
                                    ) from None
                continue
            if kind in ("error", "crash", "interrupted"):
                _raise(kind, key, payload)
            if kind == "done":
                results[key] = payload
            on_event(kind, key, payload)
    except BaseException as e:
        _stop(procs, interrupted=isinstance(e, KeyboardInterrupt))
        raise
    for p in procs:
        p.join()
    return results


def _stop(procs: list, interrupted: bool, grace_s: float = 30.0) -> None:
    """End the lanes still running: Ctrl-C lets each end its step as an interrupted run does
    (it may have had the signal already, from the terminal); a failure elsewhere ends them at
    once (their finished epochs are checkpointed)."""
    for p in procs:
        if p.is_alive():
            if interrupted:
                os.kill(p.pid, signal.SIGINT)
            else:
                p.terminate()
    deadline = time.monotonic() + (grace_s if interrupted else 5.0)
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
