"""Turning a notebook, a directory or a zip file into an upload body, before anything is sent."""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

NOTEBOOK_TYPE = "application/x-ipynb+json"
ZIP_TYPE = "application/zip"
# Never uploaded from a directory: version control, editor and Jupyter state, caches.
SKIPPED_DIRS = {"__pycache__", "node_modules"}


@dataclass(frozen=True)
class Upload:
    data: bytes
    content_type: str
    filename: str | None  # for a single notebook: the name it gets in the assignment
    files: tuple[str, ...]  # what is in it, for messages


def directory_files(directory: Path) -> list[Path]:
    """The files a directory upload contains: no hidden files or folders, no caches, no symlinks."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and d not in SKIPPED_DIRS and not Path(root, d).is_symlink()
        )
        for name in sorted(files):
            path = Path(root, name)
            if not name.startswith(".") and not path.is_symlink() and path.is_file():
                found.append(path)
    return found


class NoNotebook(UsageError):
    """A directory without a notebook: nothing for a notebook assignment (a command one takes any files)."""


def pack(path: Path | str, any_files: bool = False) -> Upload:
    """A notebook as itself, a .zip as is, a directory zipped; UsageError when it cannot be uploaded.

    A directory must hold a notebook, unless `any_files` (a command assignment's files)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    if path.is_dir():
        files = directory_files(path)
        if not files:
            raise UsageError(f"{path} contains no files; nothing to upload")
        if not any_files and not any(f.suffix == ".ipynb" for f in files):
            raise NoNotebook(f"{path} contains no notebook (.ipynb); nothing to upload")
        buffer = io.BytesIO()
        names = []
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in files:
                name = file.relative_to(path).as_posix()
                try:
                    archive.write(file, name)
                except OSError as e:
                    raise UsageError(f"Cannot read {file}: {e.strerror or e}") from None
                names.append(name)
        return Upload(buffer.getvalue(), ZIP_TYPE, None, tuple(names))
    try:
        data = path.read_bytes() if path.suffix in (".ipynb", ".zip") else b""
    except OSError as e:
        raise UsageError(f"Cannot read {path}: {e.strerror or e}") from None
    if path.suffix == ".ipynb":
        return Upload(data, NOTEBOOK_TYPE, path.name, (path.name,))
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = tuple(archive.namelist())
        except zipfile.BadZipFile:
            raise UsageError(f"{path} is not a valid zip file") from None
        return Upload(data, ZIP_TYPE, None, names)
    raise UsageError(f"{path} is neither a notebook (.ipynb), a .zip file nor a directory")
