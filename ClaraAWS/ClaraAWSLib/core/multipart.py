"""multipart/form-data for the AIAA client: a streamed request body and a response parser.

Python 3.13 removed ``cgi``; the parser here needs only ``email`` for the part headers.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from typing import Callable, Dict, List, Optional, Protocol

from .errors import CancelledError, MalformedResponseError

ProgressCallback = Callable[[int, int], None]


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class FilePart:
    field_name: str
    filename: str
    data: bytes
    content_type: str = "application/octet-stream"


class MultipartBody:
    """A file-like request body that ``requests`` streams with a Content-Length.

    Reading it reports progress and checks the cancel token between chunks, so a cancelled upload
    stops within one chunk and a progress bar moves while the bytes leave.
    """

    def __init__(
        self,
        fields: Dict[str, str],
        file: Optional[FilePart] = None,
        *,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelToken] = None,
    ) -> None:
        self.boundary = "clara-aws-" + secrets.token_hex(16)
        self._segments: List[memoryview] = []
        head = []
        for name, value in fields.items():
            head.append(
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode("utf-8")
            )
        if file is not None:
            head.append(
                (
                    f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"{file.field_name}\"; "
                    f"filename=\"{file.filename}\"\r\nContent-Type: {file.content_type}\r\n\r\n"
                ).encode("utf-8")
            )
            self._segments = [memoryview(b"".join(head)), memoryview(file.data), memoryview(b"\r\n")]
        else:
            self._segments = [memoryview(b"".join(head))]
        self._segments.append(memoryview(f"--{self.boundary}--\r\n".encode("ascii")))
        self._length = sum(len(s) for s in self._segments)
        self._position = 0
        self._segment = 0
        self._offset = 0
        self._progress = progress
        self._cancel = cancel
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def rewind(self) -> None:
        """Start again from the first byte, to send the same body once more (a same-origin 307/308)."""
        self._position = self._segment = self._offset = 0

    def read(self, size: int = -1) -> bytes:
        if self._cancel is not None and self._cancel.is_set():
            raise CancelledError("The upload was cancelled; nothing was changed.")
        if self.started_at is None:
            self.started_at = time.perf_counter()
        if size is None or size < 0:
            size = self._length - self._position
        chunks = []
        while size > 0 and self._segment < len(self._segments):
            segment = self._segments[self._segment]
            take = min(size, len(segment) - self._offset)
            chunks.append(segment[self._offset : self._offset + take])
            self._offset += take
            size -= take
            if self._offset == len(segment):
                self._segment += 1
                self._offset = 0
        data = b"".join(chunks)
        self._position += len(data)
        if data and self._progress is not None:
            self._progress(self._position, self._length)
        if self._position == self._length and self.finished_at is None:
            self.finished_at = time.perf_counter()
        return data


@dataclass
class Part:
    name: Optional[str]
    filename: Optional[str]
    data: bytes
    headers: Dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def parse_multipart(content_type: str, body: bytes) -> List[Part]:
    """The parts of a multipart body, in order; raises MalformedResponseError on a broken body."""
    message = Message()
    message["content-type"] = content_type
    boundary = message.get_param("boundary")
    if not boundary or not isinstance(boundary, str):
        raise MalformedResponseError("The server sent a multipart answer without a boundary; the response is malformed.")
    delimiter = b"--" + boundary.encode("latin-1")
    # The first delimiter may start the body; every later one follows a line break.
    first = body.find(delimiter)
    if first < 0:
        raise MalformedResponseError("The server's multipart answer has no parts; the response is malformed.")
    after = body[first + len(delimiter) : first + len(delimiter) + 2]
    newline = b"\n" if after[:1] == b"\n" else b"\r\n"
    data = newline + body
    sections = data.split(newline + delimiter)
    if len(sections) < 2:
        raise MalformedResponseError("The server's multipart answer has no parts; the response is malformed.")
    parts = []
    closed = False
    for section in sections[1:]:
        if section.startswith(b"--"):
            closed = True
            break
        # Skip transport padding and the line break that ends the delimiter line.
        line_end = section.find(newline)
        if line_end < 0:
            raise MalformedResponseError("A part of the server's multipart answer is cut off; the response is malformed.")
        section = section[line_end + len(newline) :]
        header_end = section.find(newline + newline)
        if header_end < 0:
            if section.startswith(newline):
                header_block, content = b"", section[len(newline) :]
            else:
                raise MalformedResponseError("A part of the server's multipart answer has no headers; the response is malformed.")
        else:
            header_block, content = section[:header_end], section[header_end + 2 * len(newline) :]
        headers = HeaderParser().parsestr(header_block.decode("utf-8", errors="replace"))
        parts.append(
            Part(
                name=headers.get_param("name", header="content-disposition"),
                filename=headers.get_filename(),
                data=content,
                headers={k.lower(): v for k, v in headers.items()},
            )
        )
    if not closed:
        raise MalformedResponseError(
            "The server's multipart answer ends without its closing boundary; the download was cut short."
        )
    return parts
