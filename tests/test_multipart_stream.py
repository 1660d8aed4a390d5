"""The streaming multipart reader: the same parts as tornado's in-memory parser, from a file, in blocks.

Bodies are cut into blocks of every small size, so that each delimiter, line break and header lands
across a block boundary somewhere; tornado's `parse_multipart_form_data` is the oracle for valid bodies.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from tornado.httputil import HTTPFile, parse_multipart_form_data

from grader_service.storage.uploads import (
    MultipartReader,
    UploadError,
    UploadLimits,
    extract_upload,
    multipart_boundary,
)

BOUNDARY = b"----b0und4ry"


def part(headers: str, content: bytes) -> bytes:
    return b"--" + BOUNDARY + b"\r\n" + headers.encode() + b"\r\n\r\n" + content + b"\r\n"


def body(*parts: bytes, epilogue: bytes = b"") -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n" + epilogue


def read_all(data: bytes, block_size: int) -> list[tuple[str | None, str, bytes]]:
    """(file name, content type, content) of each part, as the reader yields them."""
    found = []
    for headers, content in MultipartReader(io.BytesIO(data), BOUNDARY, block_size).parts():
        found.append((headers.get_filename(), headers.get_content_type(), b"".join(content)))
    return found


def tornado_files(data: bytes) -> list[tuple[str, bytes]]:
    arguments: dict[str, list[bytes]] = {}
    files: dict[str, list[HTTPFile]] = {}
    parse_multipart_form_data(BOUNDARY, data, arguments, files)
    return sorted((f.filename, f.body) for field in files.values() for f in field)


TRICKY = [
    # Content that looks like a delimiter without being one, CRLFs at the edges, an empty file.
    b"--" + BOUNDARY[:-1] + b"\r\n--" + BOUNDARY[:5] + b"\r\n\r\n",
    b"\r\n",
    b"",
    bytes(range(256)) * 3,
    b"\r\n--" + BOUNDARY + b"X",  # a delimiter and more on its line: malformed (see below)
]


@pytest.mark.parametrize("block_size", [1, 2, 3, 5, 7, 16, 61, 4096])
def test_parts_match_tornado_in_any_block_size(block_size: int) -> None:
    contents = TRICKY[:4]
    data = body(
        part('Content-Disposition: form-data; name="field"', b"plain value"),
        *(
            part(f'Content-Disposition: form-data; name="f{i}"; filename="f{i}.bin"', content)
            for i, content in enumerate(contents)
        ),
        part(
            'Content-Disposition: form-data; name="nb"; filename="dir/ünï.ipynb"\r\n'
            "Content-Type: application/x-ipynb+json",
            b'{"cells": []}',
        ),
        epilogue=b"ignored epilogue",
    )
    found = read_all(data, block_size)
    # A preamble before the first boundary means nothing (tornado refuses one; RFC 2046 allows it).
    assert read_all(b"ignored preamble\r\n" + data, block_size) == found
    assert found[0] == (None, "text/plain", b"plain value")
    files = sorted((name, content) for name, _, content in found if name is not None)
    assert files == tornado_files(data)
    assert ("dir/ünï.ipynb", "application/x-ipynb+json", b'{"cells": []}') in found


@pytest.mark.parametrize("block_size", [1, 3, 64])
def test_a_delimiter_needs_the_whole_boundary_line(block_size: int) -> None:
    """`\\r\\n--<boundary>X` ends the part (the boundary is a prefix match, as RFC 2046 says), and the
    rest of that line must be blank: anything else is malformed, not silently glued to a part."""
    data = body(part('Content-Disposition: form-data; name="a"; filename="a"', TRICKY[4]))
    with pytest.raises(UploadError) as e:
        read_all(data, block_size)
    assert e.value.status == 400 and "after a boundary" in e.value.message


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"no boundary anywhere", "is not found in the body"),
        (b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=a\r\n\r\nabc", "ends inside a part"),
        (b"--" + BOUNDARY + b"\r\nX: " + b"y" * 20000 + b"\r\n\r\nabc", "headers are longer than"),
        (b"--" + BOUNDARY + b"\r\nX: \xff\xfe\r\n\r\nabc\r\n--" + BOUNDARY + b"--", "not UTF-8"),
        (b"--" + BOUNDARY, "without a final boundary"),
    ],
)
def test_malformed_bodies_are_400_naming_the_problem(data: bytes, fragment: str) -> None:
    with pytest.raises(UploadError) as e:
        read_all(data, 7)
    assert e.value.status == 400 and fragment in e.value.message, e.value.message


def test_padding_after_a_boundary_and_parts_that_are_not_form_data() -> None:
    disposition = 'Content-Disposition: form-data; name="a"'
    data = b"--" + BOUNDARY + b" \t\r\n" + disposition.encode() + b"\r\n\r\nvalue\r\n--" + BOUNDARY + b"--"
    assert read_all(data, 4) == [(None, "text/plain", b"value")]
    for headers, fragment in (
        (b"", "missing, not form-data"),
        (b"Content-Disposition: inline", "inline, not"),
    ):
        data = b"--" + BOUNDARY + b"\r\n" + headers + b"\r\n\r\nvalue\r\n--" + BOUNDARY + b"--"
        with pytest.raises(UploadError) as e:
            read_all(data, 4)
        assert e.value.status == 400 and fragment in e.value.message, e.value.message


@pytest.mark.parametrize(
    ("content_type", "fragment"),
    [
        ("multipart/form-data", "names no boundary"),
        ("multipart/form-data; boundary=" + "x" * 71, "1 to 70"),
        ('multipart/form-data; boundary="ü"', "not ASCII"),
    ],
)
def test_boundary_from_content_type(content_type: str, fragment: str) -> None:
    with pytest.raises(UploadError) as e:
        multipart_boundary(content_type)
    assert e.value.status == 400 and fragment in e.value.message
    assert multipart_boundary('multipart/form-data; boundary="a b"') == b"a b"


def test_extract_multipart_with_a_zip_part_from_a_file(tmp_path: Path) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("inner/data.txt", b"inside the zip")
    data = body(
        part(
            'Content-Disposition: form-data; name="z"; filename="bundle.zip"\r\nContent-Type: application/zip',
            archive.getvalue(),
        ),
        part('Content-Disposition: form-data; name="t"; filename="notes.txt"', b"plain file"),
        part('Content-Disposition: form-data; name="empty"; filename=""', b""),
    )
    source = tmp_path / "body"
    source.write_bytes(data)
    target = tmp_path / "out"
    target.mkdir()
    with open(source, "rb") as f:
        names = extract_upload(
            "multipart/form-data; boundary=" + BOUNDARY.decode(), f, target, UploadLimits()
        )
    assert names == ["inner/data.txt", "notes.txt"]
    assert (target / "inner" / "data.txt").read_bytes() == b"inside the zip"
    assert (target / "notes.txt").read_bytes() == b"plain file"


def test_extracted_size_is_counted_while_streaming(tmp_path: Path) -> None:
    data = body(part('Content-Disposition: form-data; name="f"; filename="big.txt"', b"x" * 5000))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(UploadError) as e:
        extract_upload(
            "multipart/form-data; boundary=" + BOUNDARY.decode(),
            io.BytesIO(data),
            target,
            UploadLimits(max_extracted_size=4096),
        )
    assert e.value.status == 413
