"""Files flare writes, and how it knows they are whole.

Every output is written under a temporary name in its own folder and renamed into place
(:func:`atomic_path`), so an interrupted run never leaves a half-written file under the final
name; what an interrupted run of this host left behind is removed before the next write
(:func:`remove_stale_parts`). Before a rename, and before a re-run skips an existing output,
the file is read back to its end (:func:`damaged`): ITK's NIfTI writer reports no failed write.
JSON is read through one helper (:func:`read_json`) that names what was being read.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import socket
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flarecli.core.errors import DataError, DiskFull, FlareError, InputError, WriteFailed
from flarecli.core.io.nifti_header import nifti_suffix, parse_header


def _umask() -> int:
    """The process's umask (read once: setting it back at once is the only way to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()
_HOST = socket.gethostname().replace(".", "_") or "host"
_PART = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.part(\..+)?$")


def _write_error(path: Path, error: OSError) -> WriteFailed:
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"{path}: no space left on the device ({reason}); stopped",
                        hint="free some space and run the same command again: finished "
                        "outputs are kept")
    return WriteFailed(f"{path}: cannot be written ({reason})")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success rename it onto ``path``.

    The temporary name starts with '.' (so case discovery ignores it), names this host and
    process (so :func:`remove_stale_parts` knows an abandoned one) and keeps the file's
    suffix (SimpleITK picks the format from it). The final file gets the permissions any
    new file of this process would (0666 less the umask), not the private 0600 of a
    temporary file. On any error the temporary file is removed, so an interrupted run never
    leaves a half-written output under the final name. An OSError becomes WriteFailed
    (DiskFull when the device is full).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(path.parent, path.name)
        suffix = nifti_suffix(path) or "".join(path.suffixes[-1:])
        fd, tmp = tempfile.mkstemp(prefix=f".{_part_key(path.name)}.{_HOST}-{os.getpid()}.",
                                   suffix=f".part{suffix}", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _write_error(path, e) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except OSError as e:
        raise _write_error(path, e) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _part_key(name: str) -> str:
    """The output's name as its temporary files carry it: the name itself, or, for a name
    too long to take the temporary file's additions within the file system's 255 bytes, its
    first 96 bytes and a hash of the whole."""
    raw = name.encode()
    if len(raw) <= 120:
        return name
    return f"{raw[:96].decode(errors='ignore')}~{hashlib.sha256(raw).hexdigest()[:16]}"


def remove_stale_parts(folder: Path, name: str | None = None) -> int:
    """Remove temporary files that an interrupted run of this host left in ``folder`` (of
    the output ``name`` only, when given); a live process's file in progress is kept.
    Returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    key = _part_key(name) if name else None
    pattern = f".{glob.escape(key)}.{glob.escape(_HOST)}-*" if key else ".*"
    for p in folder.glob(pattern):
        m = _PART.match(p.name)
        if not m or m.group("host") != _HOST or (key and m.group("name") != key):
            continue
        pid = int(m.group("pid"))
        if pid != os.getpid() and _alive(pid):
            continue
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_json(path: Path, what: str, error: type[FlareError] = InputError) -> Any:
    """Parse a JSON file; a missing or unreadable file raises ``error`` naming ``what``."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM some editors add
    except FileNotFoundError as e:
        raise error(f"{path}: {what} not found") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: unreadable {what} ({e})") from e
    except RecursionError:
        raise error(f"{path}: unreadable {what} (nested too deeply)") from None


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)


def damaged(path: Path) -> str | None:
    """Why a written output cannot be read back whole, or None when it can.

    An output on disk is trusted only when every byte it declares is there: a .nii.gz is
    decompressed to its end (gzip checks its CRC and length), a .nii has at least the bytes
    its header declares, a DICOM file is parsed to its end. Used before an output is renamed
    into place (ITK's NIfTI writer reports no write error: on a full disk it leaves a short
    file and returns) and before a re-run skips an existing output.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".dcm":
            return _dicom_damage(path)
        with open(path, "rb") as raw:
            if nifti_suffix(path) == ".nii":
                header = parse_header(raw.read(540), str(path))
                stored = os.fstat(raw.fileno()).st_size
                return (None if stored >= header.data_end else
                        f"truncated file ({stored} of {header.data_end} bytes)")
            return _gzip_damage(raw, str(path))
    except DataError as e:
        return str(e).removeprefix(f"{path}: ")
    except OSError as e:
        return f"unreadable ({e.strerror or e})"


def kept(path: Path, overwrite: bool = False) -> bool:
    """Whether a re-run keeps an existing output: it is there, reads back whole, and is not
    to be redone. An output that does not read back whole is computed again."""
    return not overwrite and Path(path).is_file() and damaged(path) is None


def newer_source(target: Path, source: Path | str | None) -> bool:
    """Whether ``source`` (a scan, a label map, or a DICOM series folder: the newest of the
    files in it, hidden ones and sub-folders left out) was modified after the output
    ``target`` was written, so that a re-run computes the output again rather than keep one
    made from what the source no longer holds. Judged by modification times: a file put
    back with its old time (``cp -p``, ``rsync -a``) is not seen as changed."""
    if source is None:
        return False
    try:
        written = Path(target).stat().st_mtime_ns
        newest = max((p.stat().st_mtime_ns for p in source_files(source)), default=0)
    except OSError:
        return False
    return newest > written


def source_files(source: Path | str) -> list[Path]:
    """The files an input stands for: itself, or those of a DICOM series folder (hidden
    ones and sub-folders left out), sorted."""
    src = Path(source)
    if src.is_dir():
        return sorted(p for p in src.iterdir() if not p.name.startswith(".") and p.is_file())
    return [src]


def file_identity(source: Path | str) -> list:
    """Path, size and modification time of each file of an input (:func:`source_files`):
    what tells a changed input from the one something was made of."""
    return [[str(p), st.st_size, st.st_mtime_ns]
            for p in source_files(source) for st in (p.stat(),)]


#: The note of an output computed again because its source changed after it was written.
SOURCE_CHANGED = "its input changed after it was written"


def _gzip_damage(raw, where: str) -> str | None:
    """Decompress a .nii.gz stream to its end in bounded pieces (a label map of 512 x 512 x
    300 in 0.16 s) and compare its length with what the header declares."""
    inflate = zlib.decompressobj(31)
    head = b""
    size = 0
    try:
        while chunk := raw.read(1 << 20):
            while chunk:
                piece = inflate.decompress(chunk, 1 << 16)
                if len(head) < 540:
                    head += piece[:540 - len(head)]
                size += len(piece)
                chunk = inflate.unconsumed_tail
                if inflate.eof:
                    break
            if inflate.eof:
                break
    except zlib.error as e:
        return f"corrupt gzip stream ({e})"
    if not inflate.eof:
        return "truncated gzip stream"
    header = parse_header(head, where)
    if size < header.data_end:
        return f"truncated file ({size} of {header.data_end} bytes)"
    return None


def _dicom_damage(path: Path) -> str | None:
    try:
        import pydicom
    except ImportError:
        return None  # nothing wrote it then: flare writes DICOM only with pydicom
    try:
        data = pydicom.dcmread(path)
        data.PixelData  # noqa: B018 -- a cut file ends before its pixel data
    except Exception as e:  # pydicom raises many types for a damaged file
        return f"unreadable DICOM ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})"
    return None
