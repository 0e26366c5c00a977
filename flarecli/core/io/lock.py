"""One run at a time per output folder: a lock file created with ``O_EXCL``.

``infer`` and ``pseudolabel`` take ``OUTPUT/.flare.lock`` (its name starts with '.', so no
command reads it as a case) holding ``<host> <pid>``, and remove it when the run ends. Two
runs writing one folder -- say with different models -- would interleave their label maps
and run records; the second one is refused (InputError, exit code 3: ``OUTPUT: folder in use
by PID N``) before it writes anything.

Shares of one job are meant to write one folder together, so a run with ``--shard I/N`` (or a
rank of a ``torchrun`` launch) takes ``.flare.<share>.lock`` instead: it is refused by a live
lock of its own share or by a live whole-folder lock; a whole-folder run is refused by any
live lock in the folder.

A lock whose process is gone (a run killed with SIGKILL, a crash) is stale: it is taken over,
with a note naming the dead PID. A lock of another host cannot be checked and counts as live.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from flarecli.core.errors import InputError

LOCK = ".flare.lock"
_HOST = socket.gethostname() or "host"


def lock_name(share: str | None = None) -> str:
    """The lock file of a whole-folder run (``share`` None) or of one share of a job."""
    return LOCK if share is None else f".flare.{share}.lock"


def _holder(path: Path) -> tuple[str, int] | None:
    """(host, pid) written in a lock file; None when it is gone or unreadable (being
    written by its run this very moment, or damaged)."""
    try:
        host, pid = path.read_text().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


def _alive(host: str, pid: int) -> bool:
    if host != _HOST:
        return True  # another machine's process cannot be looked up
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _live_locks(folder: Path, names: list[str]) -> list[tuple[Path, int | None]]:
    """The locks among ``names`` in ``folder`` whose process runs: (path, pid or None)."""
    out = []
    for name in names:
        path = folder / name
        if not path.exists():
            continue
        holder = _holder(path)
        if holder is None or _alive(*holder):
            out.append((path, holder[1] if holder else None))
    return out


def _in_use(folder: Path, pid: int | None, path: Path) -> InputError:
    who = f"PID {pid}" if pid is not None else "another run"
    return InputError(f"{folder}: folder in use by {who}",
                      hint=f"wait for that run to end, or write elsewhere; if no flare run "
                      f"uses it, remove {path}")


@contextlib.contextmanager
def output_lock(folder: Path, share: str | None = None,
                notes: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold the lock of ``folder`` (made if needed) for the ``with`` block; see the module
    docstring. Raises InputError when a live run holds a conflicting lock; a stale lock is
    taken over with a note to ``notes``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / lock_name(share)
    others = sorted(p.name for p in folder.glob(".flare.*.lock")) if share is None else [LOCK]
    for path, pid in _live_locks(folder, [n for n in others if n != mine.name]):
        raise _in_use(folder, pid, path)
    for _ in range(3):
        try:
            fd = os.open(mine, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(mine)
            if holder is None or _alive(*holder):
                raise _in_use(folder, holder[1] if holder else None, mine) from None
            if notes is not None:
                notes(f"note: {mine}: took over the lock of PID {holder[1]}, which no longer "
                      "runs (a run that was killed)")
            with contextlib.suppress(FileNotFoundError):
                mine.unlink()
            continue
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise InputError(f"{folder}: output folder cannot be written there "
                                 f"({e.strerror})") from None
            raise
        with os.fdopen(fd, "w") as f:
            f.write(f"{_HOST} {os.getpid()}\n")
        break
    else:
        raise _in_use(folder, None, mine)
    try:
        yield mine
    finally:
        if _holder(mine) == (_HOST, os.getpid()):
            with contextlib.suppress(OSError):
                mine.unlink()
