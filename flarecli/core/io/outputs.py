"""Where a command's outputs may go, checked before any work starts.

* An output never replaces or modifies a file the command reads: files are compared as
  files (``os.path.samefile``), so symlinks, hard links and ``..`` paths are caught too.
* An output never lands inside a folder of cases being read (imagesTr/, labelsTr/, an infer
  input folder, a model folder), where it would later be taken for a case -- except the
  command's own run record in its own output folder, and reports beside a dataset.
* The place must be writable: its folder exists or can be made, no file sits where a folder
  is expected, and a probe file can be created there (root ignores permission bits, so
  only trying tells).
* A report (JSON, CSV) never takes the name of a scan or label map (``.nii``, ``.nii.gz``,
  ``.dcm``): it would replace one, or later be read as one.
* Two outputs of one run are never the same file (:func:`check_distinct`): one would
  silently replace the other.
* No part of an output path is longer than the file system allows (255 bytes on common
  ones): the system call would fail with ENAMETOOLONG.
* A run that keeps the outputs already in its folder (resume) makes them the way they were
  made (:func:`check_made_alike`): otherwise it would keep outputs of other settings and
  its record would claim its own.
* A run writes label maps only into a folder whose label maps the same command wrote there
  (:func:`check_ours`): pointed by a slip at a folder of annotations or of another tool's
  predictions, a run would otherwise overwrite the annotations, mix pseudo-labels among
  them, or skip the predictions as "existing" and record them as its own. Each output is
  listed in the folder's ledger (:data:`WRITTEN`) before it takes its name, so the outputs of
  a killed run are flare's too.

Each problem is one InputError (exit code 3) naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flarecli.core.errors import DiskFull, InputError, WriteFailed
from flarecli.core.words import count


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both resolved)."""
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _first_existing(path: Path) -> Path:
    """The nearest of ``path`` and its parents that exists (a name too long to look up
    counts as not existing)."""
    p = path
    while p != p.parent:
        try:
            if p.exists():
                return p
        except OSError:
            pass
        p = p.parent
    return p


#: The longest file name (bytes) when the file system cannot be asked.
NAME_MAX = 255


def check_name_lengths(path: Path, what: str) -> None:
    """Refuse a path with a part longer than its file system's limit (``NAME_MAX``)."""
    limit = NAME_MAX
    with contextlib.suppress(OSError, ValueError):
        limit = os.pathconf(_first_existing(Path(path).absolute()), "PC_NAME_MAX")
    for part in Path(path).parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise InputError(f"{path}: {what}: the name '{part[:24]}...' is {size} bytes "
                             f"long; the file system allows {limit}")


def probe_folder(folder: Path, what: str) -> None:
    """Make ``folder`` (and its parents) and create and remove a probe file in it; raises
    InputError naming the path when anything stands in the way."""
    folder = Path(folder)
    check_name_lengths(folder, what)
    existing = _first_existing(folder)
    if existing.exists() and not existing.is_dir():
        raise InputError(f"{existing}: is a file, but {what} needs a folder there")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".flare-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"{folder}: {what} cannot be written there "
                         f"({e.strerror or e})") from None


def check_output_file(path: Path | None, what: str, *, reads: Iterable[Path] = (),
                      case_dirs: Iterable[Path] = ()) -> Path | None:
    """Check a report or record path (``--json``, ``--csv``, ``--profile``, ...): not a file
    the command reads, not inside a folder of cases it reads, writable. None passes."""
    if path is None:
        return None
    path = Path(path)
    check_name_lengths(path, what)
    if path.is_dir():
        raise InputError(f"{path}: {what} is a folder; give a file name")
    for source in reads:
        if _same_file(path, Path(source)):
            raise InputError(f"{path}: {what} is an input of this command",
                             hint="flare never writes its inputs; choose another file")
    for folder in case_dirs:
        if inside(path, Path(folder)):
            raise InputError(f"{path}: {what} would land among the cases of {folder}",
                             hint="write reports beside the case folders, not inside them")
    if _image_name(path):
        raise InputError(f"{path}: {what} has the name of a scan or label map",
                         hint="reports are JSON or CSV: give a name such as report.json")
    probe_folder(path.parent, what)
    return path


def _image_name(path: Path) -> bool:
    from flarecli.core.io.nifti_header import nifti_suffix

    return nifti_suffix(path) is not None or path.suffix.lower() == ".dcm"


def _same_place(a: Path, b: Path) -> bool:
    """Whether two output paths name one file: the same resolved path (a file that does not
    exist yet), or one file on disk (a hard link, a symlink)."""
    return a.resolve() == b.resolve() or _same_file(a, b)


def check_distinct(outputs: dict[str, Path | None]) -> None:
    """Refuse two outputs of one run that name the same file (option name -> path; None
    entries are not written): one would silently replace the other."""
    named = [(what, Path(p)) for what, p in outputs.items() if p is not None]
    for i, (what, path) in enumerate(named):
        for other, other_path in named[i + 1:]:
            if _same_place(path, other_path):
                raise InputError(f"{path}: {what} and {other} name the same file",
                                 hint="give each output its own file")


def check_output_dir(path: Path, what: str, *, case_dirs: Iterable[Path] = ()) -> Path:
    """Check an output folder: not a folder of cases the command reads, nor inside one
    (outputs would mix with inputs), and writable."""
    path = Path(path)
    check_name_lengths(path, what)
    for folder in case_dirs:
        folder = Path(folder)
        if inside(path, folder):
            where = ("the input folder" if path.resolve() == folder.resolve()
                     else f"inside the input folder {folder}")
            raise InputError(f"{path}: {what} is {where}",
                             hint="flare never writes among its inputs; choose another folder")
    probe_folder(path, what)
    return path


#: An output folder's ledger: a line ``command<TAB>name`` for every output a command wrote
#: there, appended before the output takes its name (a killed run's outputs are listed too);
#: hidden, so no command takes it for a case. A share of a job array or a torchrun rank keeps
#: its own (``.flare-written.shard-1-of-4``): shards run at once never write one file.
WRITTEN = ".flare-written"


def note_written(target: Path, command: str, share: str | None = None) -> None:
    """Add ``target`` to its folder's ledger (:data:`WRITTEN`) as ``command``'s output; call
    before writing it. A full disk is DiskFull, as the output's own write would be."""
    target = Path(target)
    ledger = target.parent / (WRITTEN if share is None else f"{WRITTEN}.{share}")
    try:
        # a line cut short (a full disk, a kill) is ended by the next one's leading newline
        with open(ledger, "a", encoding="utf-8") as f:
            f.write(f"\n{command}\t{target.name}\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFull(f"{target}: no space left on the device; stopped",
                           hint="free some space and run the same command again: finished "
                           "outputs are kept") from None
        raise WriteFailed(f"{target}: cannot be written ({e.strerror or e})") from None


def written_here(folder: Path, command: str) -> set[str]:
    """The names ``command`` wrote into ``folder``, by its ledgers (every share's)."""
    names: set[str] = set()
    for ledger in sorted(Path(folder).glob(WRITTEN + "*")):
        try:
            text = ledger.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            who, _, name = line.partition("\t")
            if who == command and name:
                names.add(name)
    return names


def has_ledger(folder: Path) -> bool:
    return any(Path(folder).glob(WRITTEN + "*"))


def _label_map_like(path: Path) -> bool:
    return not path.name.startswith(".") and _image_name(path)


def check_ours(folder: Path, command: str, targets: Iterable[Path],
               recorded: Iterable[str] = ()) -> None:
    """Refuse a run into ``folder`` that holds a label map (or DICOM file) ``command`` did not
    write there -- under one of the run's output names (``targets``) or any other: neither in
    the folder's ledger as ``command``'s nor in ``recorded`` (the names a run record of the
    folder gives as written outputs, for a folder from before the ledger). An output would
    replace, remove or be kept in place of it, or mix with it (pseudo-labels added to a
    folder of annotations). Refused with --overwrite too."""
    folder = Path(folder)
    ours = written_here(folder, command) | set(recorded)
    try:
        present = [p for p in folder.iterdir() if _label_map_like(p)]
    except OSError:
        present = []
    foreign = sorted({p.name for p in present if p.name not in ours}
                     | {Path(t).name for t in targets
                        if Path(t).name not in ours and (Path(t).exists()
                                                         or Path(t).is_symlink())})
    if foreign:
        names = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise InputError(f"{folder}: holds {count(len(foreign), 'file')} that flare {command} "
                         f"did not write there ({names}; see {WRITTEN})",
                         hint="flare never replaces, adopts or writes among files it did not "
                         "write, --overwrite or not: choose another output folder, or move "
                         "those files away")


#: The hint of a run refused by :func:`check_made_alike`.
REDO_HINT = ("choose another output folder, or --overwrite to redo every output with these "
             "settings")


def check_made_alike(record: Path, made: dict[str, Any], hint: str = REDO_HINT) -> None:
    """Refuse a run into a folder whose run record says its outputs were made with other
    settings (``made``: setting -> value, as JSON holds them; a setting the record lacks,
    from an older flare, is not compared). The run would keep those outputs as they are --
    a re-run skips what exists -- and its record would then claim settings that did not
    make them."""
    try:
        before = json.loads(Path(record).read_text())
    except (OSError, ValueError):
        return  # none yet, or unreadable: the run writes a new one
    if not isinstance(before, dict):
        return
    made = json.loads(json.dumps(made))  # tuples as lists, keys as strings
    differ = [k for k in made if k in before and before[k] != made[k]]
    if differ:
        was = "; ".join(f"{k} {json.dumps(before[k])} (now {json.dumps(made[k])})"
                        for k in differ)
        raise InputError(f"{Path(record).parent}: holds outputs made with other settings: "
                         f"{was} (see {Path(record).name})", hint=hint)
