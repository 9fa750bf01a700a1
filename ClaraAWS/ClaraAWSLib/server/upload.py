"""A streaming multipart/form-data parser: file parts go straight to disk, never whole into memory.

The body is read in chunks of about 1 MiB; the boundary is searched across chunk edges by keeping
the last ``len(delimiter) - 1`` bytes of each chunk for the next search.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Optional, Tuple

from .problems import BadRequest

CHUNK_SIZE = 1 << 20
MAX_HEADER_BYTES = 16 * 1024
MAX_FIELD_BYTES = 16 * 1024 * 1024  # text fields (params) are held in memory, so keep them bounded
KNOWN_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".gz")


@dataclass
class UploadedFile:
    field_name: str
    filename: str  # as the client sent it; never used as a path
    path: Path  # where the server stored the bytes
    size: int

    @property
    def suffix(self) -> str:
        return file_suffix(self.filename)


@dataclass
class FormData:
    fields: Dict[str, str] = field(default_factory=dict)
    files: List[UploadedFile] = field(default_factory=list)

    def file(self, *names: str) -> Optional[UploadedFile]:
        """The first file part whose field name is one of ``names``."""
        for upload in self.files:
            if upload.field_name in names:
                return upload
        return None


def file_suffix(filename: str) -> str:
    """The format suffix of a file name, lower-case: ".nii.gz", ".nii", ".nrrd", ... or ""."""
    lower = filename.lower()
    for suffix in KNOWN_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    match = re.search(r"(\.[a-z0-9]{1,8})$", lower)
    return match.group(1) if match else ""


def header_parameters(value: str) -> Tuple[str, Dict[str, str]]:
    """Split ``main; key=value; key="quoted; value"`` into ("main", {key: value}); keys lower-case."""
    parts: List[str] = []
    current, quoted, escaped = [], False, False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    main = parts[0].strip().lower()
    params: Dict[str, str] = {}
    for part in parts[1:]:
        if "=" not in part:
            continue
        key, _, raw = part.partition("=")
        key = key.strip().lower()
        raw = raw.strip()
        if key.endswith("*"):  # RFC 5987: charset'language'percent-encoded
            charset, _, rest = raw.partition("'")
            _, _, encoded = rest.partition("'")
            params[key[:-1]] = urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="replace")
        else:
            params.setdefault(key, raw)
    return main, params


def boundary_of(content_type: Optional[str]) -> bytes:
    main, params = header_parameters(content_type or "")
    if main != "multipart/form-data":
        raise BadRequest(
            f"Expected a multipart/form-data body, got {main or 'no Content-Type'}; send the image and params "
            "as form fields."
        )
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 200:
        raise BadRequest("The multipart Content-Type has no usable boundary parameter.")
    return boundary.encode("latin-1", errors="replace")


class _Sink:
    """Where the current part's bytes go: a temp file for file parts, memory for text fields."""

    def __init__(self, name: str, filename: Optional[str], temp_dir: Path, number: int) -> None:
        self.name = name
        self.filename = filename
        self.size = 0
        self.path: Optional[Path] = None
        self._file: Optional[BinaryIO] = None
        self._text = bytearray()
        if filename is not None:
            # A generated name: the client's file name may contain anything, even a path.
            self.path = temp_dir / f"upload-{number}{file_suffix(filename)}"
            self._file = open(self.path, "wb")

    def write(self, data) -> None:
        if not data:
            return
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        if self.size > MAX_FIELD_BYTES:
            raise BadRequest(f"The form field {self.name!r} is larger than {MAX_FIELD_BYTES} bytes; send it as a file.")
        self._text += data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def text(self) -> str:
        return self._text.decode("utf-8", errors="replace")


def _parse_part_headers(block: bytes) -> Tuple[str, Optional[str]]:
    name, filename = "", None
    for line in block.decode("utf-8", errors="replace").split("\r\n"):
        header, sep, value = line.partition(":")
        if not sep or header.strip().lower() != "content-disposition":
            continue
        _, params = header_parameters(value)
        name = params.get("name", "")
        filename = params.get("filename")
    return name, filename


def parse_multipart(
    read: Callable[[int], bytes],
    boundary: bytes,
    temp_dir: Path,
    *,
    chunk_size: int = CHUNK_SIZE,
) -> FormData:
    """Parse a multipart body from ``read`` (returns b"" at the end), storing file parts in ``temp_dir``.

    Raises BadRequest for malformed bodies. Files already written stay in ``temp_dir`` either way; the
    caller owns and removes that directory."""
    delimiter = b"\r\n--" + boundary
    keep = len(delimiter) + 4  # enough to look past a delimiter at "--" or CRLF
    # A leading CRLF lets the first delimiter match even when the body starts with it.
    buffer = bytearray(b"\r\n")
    ended = False
    form = FormData()

    def fill() -> bool:
        nonlocal ended
        if ended:
            return False
        data = read(chunk_size)
        if not data:
            ended = True
            return False
        buffer.extend(data)
        return True

    # Preamble: everything before the first delimiter is ignored.
    while True:
        position = buffer.find(delimiter)
        if position >= 0:
            del buffer[: position + len(delimiter)]
            break
        del buffer[: max(0, len(buffer) - len(delimiter))]
        if not fill():
            raise BadRequest("The multipart body contains no boundary line; check the Content-Type boundary.")

    number = 0
    while True:
        # After a delimiter: "--" closes the body, otherwise optional padding and CRLF start a part.
        while len(buffer) < 2 and fill():
            pass
        if buffer[:2] == b"--":
            while fill():  # discard the epilogue so the connection can be reused
                del buffer[:]
            return form
        line_end = buffer.find(b"\r\n")
        while line_end < 0:
            if len(buffer) > MAX_HEADER_BYTES or not fill():
                raise BadRequest("The multipart body ended right after a boundary line.")
            line_end = buffer.find(b"\r\n")
        if buffer[:line_end].strip(b" \t"):
            raise BadRequest("A multipart boundary line is followed by unexpected bytes.")
        del buffer[: line_end + 2]

        header_end = 0 if buffer[:2] == b"\r\n" else buffer.find(b"\r\n\r\n")
        while header_end < 0:
            if len(buffer) > MAX_HEADER_BYTES or not fill():
                raise BadRequest("A multipart part's headers are too long or incomplete.")
            header_end = 0 if buffer[:2] == b"\r\n" else buffer.find(b"\r\n\r\n")
        name, filename = _parse_part_headers(bytes(buffer[:header_end]))
        del buffer[: header_end + (2 if header_end == 0 else 4)]

        number += 1
        sink = _Sink(name, filename, temp_dir, number)
        try:
            while True:
                position = buffer.find(delimiter)
                if position >= 0:
                    sink.write(buffer[:position])
                    del buffer[: position + len(delimiter)]
                    break
                safe = len(buffer) - keep
                if safe > 0:
                    sink.write(buffer[:safe])
                    del buffer[:safe]
                if not fill():
                    raise BadRequest("The multipart body ended inside a part; the upload was cut short.")
        finally:
            sink.close()
        if sink.path is not None:
            form.files.append(UploadedFile(name, filename or "", sink.path, sink.size))
        else:
            form.fields.setdefault(name, sink.text())
