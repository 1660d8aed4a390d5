"""Turning an uploaded body (zip, multipart form or a single notebook) into a directory of files.

Everything here treats the upload as hostile: paths are confined to the target directory,
links and special files are refused, and sizes are counted as bytes are written rather than
trusted from archive headers, so a zip bomb stops at the limit instead of filling the disk.

The body is read from a file, a block at a time (the API spools bodies to disk as they arrive), so
extracting an upload needs memory for a block, not for the upload.
"""

from __future__ import annotations

import io
import re
import stat
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import nbformat

from .. import safejson
from ..command.spec import glob_regex

ZIP_TYPES = ("application/zip", "application/x-zip-compressed")
NOTEBOOK_TYPES = ("application/x-ipynb+json",)
MULTIPART_TYPE = "multipart/form-data"
# Never accepted: they could change how git or the grader treats the tree.
FORBIDDEN_NAMES = {".git", ".gitmodules", ".gitattributes"}
# What Windows (8.3 short names) and macOS (case folding, ignored code points) would also open as one of
# those, as git's own checks (verify_path: is_ntfs_dotgit, is_hfs_dotgit) see them: the repositories
# are cloned and the zips unpacked on such machines.
_SHORT_NAMES = re.compile(r"(git|gitmod|gi7eba|gitatt|gi7d29)~[0-9]+", re.ASCII)
_HFS_IGNORED = dict.fromkeys(
    [0x200C, 0x200D, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF]
)
_CHUNK = 1 << 16
# The headers of one part of a multipart body (its name, file name and type) fit in this many bytes.
MAX_PART_HEADER_SIZE = 16 * 1024


class UploadError(Exception):
    """Something is wrong with the upload; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class UploadLimits:
    max_extracted_size: int = 200 * 1024 * 1024
    max_files: int = 1000
    allowed_files: tuple[str, ...] = ()
    # A command assignment's `submission.files` (grader.yaml): globs where `*` stays in one directory.
    allowed_globs: tuple[str, ...] = ()


def is_git_name(part: str) -> bool:
    """Whether a path component is, or some file system would open it as, .git/.gitmodules/.gitattributes.

    Case-insensitive file systems fold ``.GIT``; Windows drops trailing dots and spaces, reads
    ``.git::$INDEX_ALLOCATION`` as ``.git`` and ``GIT~1`` as its short name; macOS ignores
    zero-width code points in names.
    """
    name = unicodedata.normalize("NFC", part.translate(_HFS_IGNORED)).casefold()
    name = name.split(":", 1)[0].rstrip(". ")
    return name in FORBIDDEN_NAMES or bool(_SHORT_NAMES.fullmatch(name))


def safe_relative_path(name: str) -> PurePosixPath:
    """A relative path with no `..`, no absolute root, no empty or dot-only parts, no git names."""
    if not name or "\\" in name or "\0" in name:
        raise UploadError(422, f"Invalid file name {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or any(part in ("..", ".", "") for part in name.rstrip("/").split("/")):
        raise UploadError(422, f"File path {name!r} points outside the upload root")
    for part in path.parts:
        if is_git_name(part):
            raise UploadError(
                422,
                f"File path {name!r} is not allowed: some file systems read {part!r} as git's own "
                ".git, .gitmodules or .gitattributes",
            )
    return path


class _Writer:
    """Writes files under a root while counting files and bytes against the limits.

    It keeps the tree the upload describes (files and the directories they imply) and refuses
    an entry that contradicts it, in whichever order the entries come: ``a`` and ``a/b`` cannot
    both be files, and a directory cannot be named like a notebook.
    """

    def __init__(self, root: Path, limits: UploadLimits):
        self.root = root
        self.limits = limits
        self.total = 0
        self.names: set[str] = set()
        self.dirs: set[str] = set()

    def add_directory(self, name: str) -> None:
        rel = safe_relative_path(name)
        key = rel.as_posix()
        if key in self.names:
            raise UploadError(422, f"{key!r} is both a file and a directory in the upload")
        self._claim_parents(rel, key)
        self._check_directory_name(key)
        self.dirs.add(key)

    def _claim_parents(self, rel: PurePosixPath, key: str) -> None:
        for parent in rel.parents:
            parent_key = parent.as_posix()
            if parent_key == ".":
                break
            if parent_key in self.names:
                raise UploadError(
                    422,
                    f"{key!r} needs {parent_key!r} to be a directory, but the upload has a file {parent_key!r}",
                )
            self._check_directory_name(parent_key)
            self.dirs.add(parent_key)

    @staticmethod
    def _check_directory_name(key: str) -> None:
        if key.casefold().endswith(".ipynb"):
            raise UploadError(422, f"{key!r} is a directory; a name ending in .ipynb must be a notebook file")

    def open(self, name: str) -> tuple[PurePosixPath, io.BufferedWriter]:
        if name.endswith("/"):
            raise UploadError(422, f"File name {name!r} ends in '/': it names a directory, not a file")
        rel = safe_relative_path(name)
        key = rel.as_posix()
        if key in self.names:
            raise UploadError(422, f"Duplicate file {key!r} in upload")
        if key in self.dirs:
            raise UploadError(422, f"{key!r} is both a file and a directory in the upload")
        if self.limits.allowed_files and not any(fnmatch(key, pat) for pat in self.limits.allowed_files):
            raise UploadError(
                422,
                f"File {key!r} is not allowed by this assignment (allowed: "
                f"{', '.join(self.limits.allowed_files)})",
            )
        if self.limits.allowed_globs and not any(
            glob_regex(g).fullmatch(key) for g in self.limits.allowed_globs
        ):
            raise UploadError(
                422,
                f"File {key!r} is not allowed by this assignment (submission.files: "
                f"{', '.join(self.limits.allowed_globs)})",
            )
        self._claim_parents(rel, key)
        self.names.add(key)
        if len(self.names) > self.limits.max_files:
            raise UploadError(413, f"Upload has more than {self.limits.max_files} files")
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return rel, open(target, "xb")

    def count(self, n: int) -> None:
        self.total += n
        if self.total > self.limits.max_extracted_size:
            raise UploadError(413, f"Upload expands to more than {self.limits.max_extracted_size} bytes")

    def write_stream(self, name: str, source: BinaryIO | Iterator[bytes]) -> None:
        """A file from a binary file or an iterator of blocks, counted as it is written."""
        blocks = iter(lambda: source.read(_CHUNK), b"") if hasattr(source, "read") else source
        _, out = self.open(name)
        with out:
            for block in blocks:
                self.count(len(block))
                out.write(block)


def extract_zip(source: BinaryIO, writer: _Writer) -> None:
    """Extract a zip archive from a seekable binary file."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, ValueError) as e:
        raise UploadError(422, f"Body is not a valid zip archive: {e}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > writer.limits.max_files * 2:
            raise UploadError(413, f"Zip archive has more than {writer.limits.max_files} files")
        declared = sum(info.file_size for info in infos)
        if declared > writer.limits.max_extracted_size:
            raise UploadError(
                413,
                f"Zip archive expands to {declared} bytes, more than the limit of "
                f"{writer.limits.max_extracted_size}",
            )
        for info in infos:
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UploadError(
                    422, f"Zip entry {info.filename!r} is a symbolic link; links are not allowed"
                )
            # Archivers that record no file type (mode 0o600 alone) mean a regular file.
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UploadError(422, f"Zip entry {info.filename!r} is not a regular file")
            if info.is_dir():
                writer.add_directory(info.filename)
                continue
            if info.flag_bits & 0x1:
                raise UploadError(422, f"Zip entry {info.filename!r} is encrypted")
            _, out = writer.open(info.filename)
            try:
                with out, archive.open(info) as src:
                    while chunk := src.read(_CHUNK):
                        writer.count(len(chunk))
                        out.write(chunk)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as e:
                raise UploadError(422, f"Zip entry {info.filename!r} cannot be read: {e}") from None


class MultipartReader:
    """The parts of a multipart body (RFC 7578), read from a file a block at a time.

    Each part's content is yielded in blocks as it is found, so a part of any size passes through a
    buffer of a block and a delimiter.
    """

    def __init__(self, source: BinaryIO, boundary: bytes, block_size: int = _CHUNK):
        self.source = source
        self.block_size = block_size
        self.delimiter = b"\r\n--" + boundary
        # The first boundary need not follow a line break: pretend one precedes the body.
        self.buf = bytearray(b"\r\n")

    def _fill(self) -> bool:
        block = self.source.read(self.block_size)
        self.buf += block
        return bool(block)

    def _starts_with(self, prefix: bytes) -> bool:
        while len(self.buf) < len(prefix) and self._fill():
            pass
        return self.buf.startswith(prefix)

    def _until(self, marker: bytes, limit: int, too_long: str, cut_off: str) -> bytes:
        """The bytes before `marker` (consumed with it), which must come within `limit` bytes."""
        while (end := self.buf.find(marker)) < 0:
            if len(self.buf) > limit:
                raise malformed(too_long)
            if not self._fill():
                raise malformed(cut_off)
        data = bytes(self.buf[:end])
        del self.buf[: end + len(marker)]
        return data

    def _content(self, cut_off: str) -> Iterator[bytes]:
        """The bytes up to the next delimiter (consumed with it), in blocks."""
        keep = len(self.delimiter) - 1  # a delimiter may straddle two blocks
        while (end := self.buf.find(self.delimiter)) < 0:
            if len(self.buf) > keep:
                yield bytes(self.buf[:-keep])
                del self.buf[:-keep]
            if not self._fill():
                raise malformed(cut_off)
        if end:
            yield bytes(self.buf[:end])
        del self.buf[: end + len(self.delimiter)]

    def parts(self) -> Iterator[tuple[Message, Iterator[bytes]]]:
        """(headers, content blocks) of each part; a part's content must be read before the next part.

        A preamble before the first boundary and an epilogue after the closing one mean nothing.
        """
        for _ in self._content("the boundary Content-Type names is not found in the body"):
            pass
        while not self._starts_with(b"--"):  # "--" right after a boundary closes the body
            padding = self._until(b"\r\n", 1024, "text after a boundary", "it ends without a final boundary")
            if padding.strip(b" \t"):
                raise malformed("text after a boundary")
            if self._starts_with(b"\r\n"):
                del self.buf[:2]
                raw = b""  # a part without headers
            else:
                raw = self._until(
                    b"\r\n\r\n",
                    MAX_PART_HEADER_SIZE,
                    f"a part's headers are longer than {MAX_PART_HEADER_SIZE} bytes",
                    "it ends inside a part's headers (a blank line must end them)",
                )
            try:
                headers = HeaderParser().parsestr(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise malformed("a part's headers are not UTF-8") from None
            disposition = headers.get_content_disposition()
            if disposition != "form-data":
                raise malformed(f"a part's Content-Disposition is {disposition or 'missing'}, not form-data")
            content = self._content("it ends inside a part, without a final boundary")
            yield headers, content
            for _ in content:
                pass  # whatever the caller left unread


def malformed(problem: str) -> UploadError:
    return UploadError(400, f"Malformed multipart/form-data body: {problem}")


def multipart_boundary(content_type: str) -> bytes:
    header = Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 70:
        raise malformed("Content-Type names no boundary of 1 to 70 characters")
    try:
        return boundary.encode("ascii")
    except UnicodeEncodeError:
        raise malformed("the boundary in Content-Type is not ASCII") from None


def extract_multipart(content_type: str, source: BinaryIO, writer: _Writer) -> None:
    """Every file part: a zip (by name and type) is extracted, anything else is a file of its name."""
    found = False
    for headers, content in MultipartReader(source, multipart_boundary(content_type)).parts():
        filename = headers.get_filename()
        if not filename:
            continue  # a plain form field, or a file input left empty
        found = True
        if filename.lower().endswith(".zip") and headers.get_content_type() in ZIP_TYPES:
            # zipfile needs to seek: the part goes to an unnamed temporary file first, beside the target.
            with tempfile.TemporaryFile(dir=writer.root.parent) as archive:
                for block in content:
                    archive.write(block)
                archive.seek(0)
                extract_zip(archive, writer)
        else:
            writer.write_stream(filename, content)
    if not found:
        raise UploadError(422, "Multipart upload contains no files")


def validate_notebooks(root: Path) -> None:
    """Every .ipynb must be a valid nbformat 4 notebook; the error names the file."""
    for path in sorted(root.rglob("*.ipynb")):
        if not path.is_file():
            continue  # the writer refuses directories named *.ipynb; never open one
        name = path.relative_to(root).as_posix()
        try:
            raw = safejson.loads(path.read_bytes(), safejson.MAX_NOTEBOOK_DEPTH)
        except safejson.JSONError as e:
            raise UploadError(422, f"{name} is not valid notebook JSON: {e}") from None
        if not isinstance(raw, dict) or raw.get("nbformat") != 4:
            raise UploadError(422, f"{name} is not an nbformat 4 notebook")
        try:
            nbformat.validate(nbformat.from_dict(raw))
        except nbformat.ValidationError as e:
            raise UploadError(422, f"{name} is not a valid notebook: {e.message}") from None


def extract_upload(
    content_type: str, source: BinaryIO, target: Path, limits: UploadLimits, filename: str | None = None
) -> list[str]:
    """Write the upload's files, read from the binary file `source`, into the empty directory `target`.

    Returns their relative paths.
    """
    mime = content_type.split(";", 1)[0].strip().lower()
    writer = _Writer(target, limits)
    if mime in ZIP_TYPES:
        extract_zip(source, writer)
    elif mime == MULTIPART_TYPE:
        extract_multipart(content_type, source, writer)
    elif mime in NOTEBOOK_TYPES:
        if not filename:
            raise UploadError(400, "A single-notebook upload needs ?filename=<name>.ipynb")
        if not filename.endswith(".ipynb"):
            raise UploadError(422, f"Notebook file name {filename!r} must end in .ipynb")
        writer.write_stream(filename, source)
    else:
        raise UploadError(
            415,
            f"Unsupported Content-Type {mime!r}: send application/zip, multipart/form-data or "
            "application/x-ipynb+json",
        )
    if not writer.names:
        raise UploadError(422, "Upload contains no files")
    validate_notebooks(target)
    return sorted(writer.names)
