"""Files the extension reads and writes for the user, always inside the Lab root.

Every path comes from the browser as a path relative to the Lab root (the contents manager's
`root_dir`). `inside_root` refuses (400, naming the path) absolute paths, `..` and paths that leave
the root through a symbolic link, so a request can neither upload nor overwrite anything outside it.
Fetching never silently replaces changed work: changed files are reported (409), or, when the user
chose to overwrite, copied to a backup folder first.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import Refusal


def inside_root(root: Path, relative: object, what: str = "path") -> Path:
    """The real location of `relative` under `root`; Refusal(400) naming it if it is not inside."""
    if not isinstance(relative, str) or not relative.strip():
        raise Refusal(400, f"Field {what!r} must be a path relative to the Lab root")
    if "\0" in relative:
        raise Refusal(400, f"Path {relative!r} contains a NUL character")
    path = PurePosixPath(relative.replace("\\", "/"))
    if path.is_absolute() or relative.startswith("~"):
        raise Refusal(400, f"Path {relative!r} is absolute; give a path relative to the Lab root")
    if ".." in path.parts:
        raise Refusal(400, f"Path {relative!r} leaves the Lab root ('..')")
    real_root = root.resolve()
    target = (real_root / path).resolve()
    if target != real_root and real_root not in target.parents:
        raise Refusal(400, f"Path {relative!r} leads outside the Lab root (through a symbolic link)")
    return target


def relative_to_root(root: Path, path: Path) -> str:
    return path.relative_to(root.resolve()).as_posix()


def archive_files(data: bytes) -> dict[str, bytes]:
    """The files of a zip from the service, by relative path; entries that would escape are refused."""
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = PurePosixPath(info.filename)
            if name.is_absolute() or ".." in name.parts:
                raise Refusal(502, f"The service sent an archive with an unsafe entry {info.filename!r}")
            files[name.as_posix()] = archive.read(info)
    return files


def archive_notebooks(data: bytes) -> list[dict[str, Any]]:
    """The notebooks of a submission's zip, by path, parsed (a broken one: its error, not its cells)."""
    notebooks: list[dict[str, Any]] = []
    for path, content in sorted(archive_files(data).items()):
        if not path.endswith(".ipynb"):
            continue
        try:
            notebook = json.loads(content)
            cells = notebook["cells"] if isinstance(notebook, dict) else None
            if not isinstance(cells, list):
                raise ValueError("no cells")
        except (ValueError, KeyError, TypeError) as e:
            notebooks.append({"path": path, "cells": [], "error": f"not a readable notebook: {e}"})
            continue
        notebooks.append({"path": path, "cells": cells, "error": None})
    return notebooks


@dataclass(frozen=True)
class Fetched:
    path: str  # the assignment folder, relative to the Lab root
    files: list[str]  # every file written, relative to the Lab root
    backup: str | None  # where the replaced versions of changed files went, relative to the Lab root


def write_release(root: Path, folder: str, archive: bytes, overwrite: bool) -> Fetched:
    """Put the released files into `folder`; Refusal(409, changed=[...]) rather than lose changes."""
    files = archive_files(archive)
    targets = {name: inside_root(root, f"{folder}/{name}") for name in files}
    changed = sorted(
        relative_to_root(root, target)
        for name, target in targets.items()
        if target.exists() and (not target.is_file() or target.read_bytes() != files[name])
    )
    if changed and not overwrite:
        raise Refusal(
            409,
            f"{len(changed)} file(s) in {folder} differ from the released version: {', '.join(changed)}. "
            "Fetch again with overwrite to replace them (a backup is kept).",
            changed=changed,
        )
    backup = backup_files(root, folder, changed) if changed else None
    # The folder even when the release has no files (a command assignment's): the student's work goes there.
    inside_root(root, folder).mkdir(parents=True, exist_ok=True)
    for name, target in targets.items():
        if target.is_file() and target.read_bytes() == files[name]:
            continue
        if target.is_dir():
            shutil.rmtree(target)  # backed up above
        replace_file(target, files[name])
    return Fetched(folder, sorted(relative_to_root(root, t) for t in targets.values()), backup)


def backup_files(root: Path, folder: str, changed: list[str]) -> str:
    """Copy the changed files to `<folder>.backup-<time>/`, beside the assignment folder."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{folder}.backup-{stamp}"
    backup_dir = inside_root(root, name)
    n = 1
    while backup_dir.exists():
        n += 1
        backup_dir = inside_root(root, f"{name}-{n}")
    folder_path = inside_root(root, folder)
    for relative in changed:
        source = inside_root(root, relative)
        destination = backup_dir / source.relative_to(folder_path)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination, symlinks=True)
        else:
            shutil.copy2(source, destination)
    return relative_to_root(root, backup_dir)


def replace_file(target: Path, data: bytes) -> None:
    """Write atomically: a reader (or a crash) sees the old file or the new one, never half of one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_target(root: Path, relative: object, overwrite: bool) -> Path:
    """Where a CSV export goes: a .csv path inside the root; an existing file only with `overwrite`."""
    target = inside_root(root, relative)
    if target.suffix.lower() != ".csv":
        raise Refusal(400, f"Path {relative!r} must end in .csv")
    if target.is_dir():
        raise Refusal(409, f"{relative} is a folder")
    if target.exists() and not overwrite:
        raise Refusal(409, f"{relative} exists already; export with overwrite to replace it")
    return target


def write_export(root: Path, relative: object, text: str, overwrite: bool) -> str:
    """Write a CSV export (checked again: the file may have appeared during the download)."""
    target = export_target(root, relative, overwrite)
    replace_file(target, text.encode("utf-8"))
    return relative_to_root(root, target)
