"""Model folders as one zip file: ``flare export`` writes it, ``--model model.zip`` reads it.

The zip holds ``recipe.json``, each stage's ``model.json`` with the weights it names (state
dicts, loaded with ``weights_only=True`` and checked against their SHA-256 as in a folder),
and ``README.md``, the model's provenance. Training leftovers (checkpoints, metrics) stay
behind.

Reading checks the whole archive before anything is unpacked, and refuses it (ModelError,
exit code 5):

* a member that is not one of those files: a name leading outside the folder it is unpacked
  into (absolute paths, ``..``, drive letters, links: zip-slip), a folder, or a file that no
  ``model.json`` names;
* a name that appears twice (zip readers disagree on which copy wins);
* a member that would unpack to more than it may: ``recipe.json``, ``README.md`` and each
  ``model.json`` at most :data:`MAX_TEXT_BYTES`; a weights file at most the size its
  ``model.json`` declares (``bytes``, ratio 1:1 -- a byte more and its checksum could not
  match anyway), or, for bundles written before sizes were recorded, at most
  :data:`UNDECLARED_RATIO` times its compressed size (float weights barely compress; a member
  of zeros, a zip bomb, expands about 1000:1). Unpacking stops at the same bound in case an
  archive's size fields lie.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from flarecli.core.errors import FlareError, InputError, ModelError

#: What a member of a model zip may be called: recipe.json, README.md, <stage>/<file>.
_MEMBER = re.compile(r"^(recipe\.json|README\.md|[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)$")

#: The most recipe.json, README.md or a model.json may unpack to (they are a few KiB).
MAX_TEXT_BYTES = 4 << 20

#: Unpacked / compressed size allowed for a weights file whose model.json declares no size.
UNDECLARED_RATIO = 16


def is_model_zip(path: Path) -> bool:
    return Path(path).suffix.lower() == ".zip"


def _stages(model_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    from flarecli.core.io.bundle import read_bundle

    stages = []
    for folder in sorted(p for p in Path(model_dir).iterdir() if (p / "model.json").is_file()):
        stages.append((folder.name, read_bundle(folder)))
    if not stages:
        raise ModelError(f"{model_dir}: no model bundles (<stage>/model.json) to export")
    return stages


def provenance(model_dir: Path, stages: list[tuple[str, dict[str, Any]]]) -> str:
    """The README of an exported model: what it is, where it came from, its checksums."""
    from flarecli import __version__

    recipe = {}
    if (Path(model_dir) / "recipe.json").is_file():
        recipe = json.loads((Path(model_dir) / "recipe.json").read_text())
    lines = [f"# flare model: recipe '{recipe.get('name', 'stmt')}'"
             f" (preset '{recipe.get('preset', '?')}')", "",
             f"Exported by flare {__version__} on "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from `{model_dir}`.",
             "", "Run it with `flare infer IMAGES OUT --model THIS.zip`.", "",
             "| stage | weights | file | SHA-256 | trained |", "|---|---|---|---|---|"]
    for name, meta in stages:
        training = meta.get("training", {})
        trained = ", ".join(f"{k} {v}" for k, v in training.items()
                            if k in ("steps", "epochs", "cases", "seconds", "source")) or "-"
        for which, entry in meta["weights"].items():
            lines.append(f"| {name} | {which} | {entry['file']} | `{entry['sha256']}` | "
                         f"{trained} |")
    if recipe.get("description"):
        lines += ["", recipe["description"]]
    return "\n".join(lines) + "\n"


def export_model(model_dir: Path, target: Path) -> list[str]:
    """Write the model folder as a zip (atomically); returns the member names."""
    from flarecli.core.io.bundle import sha256
    from flarecli.core.io.files import atomic_path

    model_dir = Path(model_dir)
    stages = _stages(model_dir)
    members: list[tuple[str, Path | str]] = []
    if (model_dir / "recipe.json").is_file():
        members.append(("recipe.json", model_dir / "recipe.json"))
    for name, meta in stages:
        members.append((f"{name}/model.json", model_dir / name / "model.json"))
        for entry in meta["weights"].values():
            path = model_dir / name / entry["file"]
            if not path.is_file() or sha256(path) != entry["sha256"]:
                raise ModelError(f"{path}: missing or checksum mismatch; not exported")
            if f"{name}/{entry['file']}" not in [m for m, _ in members]:
                members.append((f"{name}/{entry['file']}", path))
    members.append(("README.md", provenance(model_dir, stages)))
    with atomic_path(Path(target)) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, source in members:
            if isinstance(source, Path):
                z.write(source, arcname)
            else:
                z.writestr(arcname, source)
    return [m for m, _ in members]


def _refuse(where: Path, name: str, why: str) -> ModelError:
    return ModelError(f"{where}: refusing member '{name}' ({why})")


def _read_limited(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, where: Path,
                  dst=None) -> bytes:
    """A member's bytes (or, with ``dst``, copied there), never more than ``limit``."""
    data, size = [], 0
    with zf.open(info) as src:
        while chunk := src.read(min(1 << 20, limit + 1 - size)):
            size += len(chunk)
            if size > limit:
                raise _refuse(where, info.filename, f"unpacks to more than {limit} bytes, "
                              "more than its model declares")
            if dst is None:
                data.append(chunk)
            else:
                dst.write(chunk)
    return b"".join(data)


def _stage_folder_entry(info: zipfile.ZipInfo) -> bool:
    """An empty entry for a stage's folder (``coarse/``), as ``zip -r``, Finder and Windows
    add when a user unzips a bundle and zips it again: it unpacks to nothing, so it is
    passed over; any other folder entry is still refused."""
    return (info.is_dir() and info.file_size == 0 and (info.external_attr >> 16) & 0o170000
            != 0o120000 and re.fullmatch(r"[A-Za-z0-9_.-]+/", info.filename) is not None
            and info.filename not in ("./", "../"))


def _check_members(zf: zipfile.ZipFile, where: Path) -> list[tuple[zipfile.ZipInfo, int]]:
    """Each member with the most it may unpack to; raises ModelError (see the module
    docstring) before anything is unpacked."""
    infos = [i for i in zf.infolist() if not _stage_folder_entry(i)]
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        pure = PurePosixPath(name)
        mode = info.external_attr >> 16
        if (info.is_dir() or pure.is_absolute() or ".." in pure.parts or "\\" in name
                or ":" in name or not _MEMBER.match(name) or (mode & 0o170000) == 0o120000):
            raise _refuse(where, name, "not a model file, or a path leading out of the model "
                          "folder")
        if name in seen:
            raise _refuse(where, name, "its name appears twice in the archive")
        seen.add(name)
    limits = {"recipe.json": MAX_TEXT_BYTES, "README.md": MAX_TEXT_BYTES}
    for info in infos:
        stage, _, file = info.filename.partition("/")
        if file != "model.json":
            continue
        limits[info.filename] = MAX_TEXT_BYTES
        try:
            meta = json.loads(_read_limited(zf, info, MAX_TEXT_BYTES, where))
            entries = list(meta["weights"].values())
            declared = {e["file"]: e.get("bytes") for e in entries}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ModelError(f"{where}: {info.filename} is not a readable model.json") from None
        for weights, size in declared.items():
            if isinstance(weights, str) and _MEMBER.match(f"{stage}/{weights}"):
                limits[f"{stage}/{weights}"] = size if type(size) is int else -1
    out = []
    for info in infos:
        limit = limits.get(info.filename)
        if limit is None:
            raise _refuse(where, info.filename, "no model.json names it")
        if limit < 0:  # no declared size (written before sizes were recorded)
            limit = UNDECLARED_RATIO * info.compress_size
        if info.file_size > limit:
            raise _refuse(where, info.filename, f"unpacks to {info.file_size} bytes, more than "
                          f"the {limit} its model declares")
        out.append((info, limit))
    return out


@contextlib.contextmanager
def opened_model(path: Path) -> Iterator[Path]:
    """The model folder of ``path``: itself, or a zip unpacked into a private temporary
    folder (removed afterwards). Raises ModelError for a bad zip or member."""
    path = Path(path)
    if not is_model_zip(path):
        yield path
        return
    if not path.is_file():
        raise InputError(f"{path}: model zip not found")
    tmp = Path(tempfile.mkdtemp(prefix="flare-model-"))
    try:
        try:
            with zipfile.ZipFile(path) as zf:
                for info, limit in _check_members(zf, path):
                    target = tmp / info.filename
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "wb") as dst:
                        _read_limited(zf, info, limit, path, dst)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
            raise ModelError(f"{path}: not a readable zip ({e})") from None
        try:
            yield tmp
        except FlareError as e:  # name the zip's member, not the private folder it is in
            def in_zip(text: str) -> str:
                for private in {str(tmp), str(tmp.resolve())}:
                    text = text.replace(private + "/", f"{path}:").replace(private, str(path))
                return text

            e.message = in_zip(e.message)
            e.hint = e.hint and in_zip(e.hint)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
