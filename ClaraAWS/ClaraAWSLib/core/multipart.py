"""multipart/form-data for the AIAA client: a streamed request body and a response parser.

Python 3.13 removed ``cgi``; the parser here needs only ``email`` for the part headers.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from typing import Callable, Dict, Iterator, List, Optional, Protocol, Tuple

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
        self.boundary = new_boundary()
        head = form_head(self.boundary, fields, file.field_name if file else None, file.filename if file else "",
                         file.content_type if file else "")
        if file is not None:
            self._segments = [memoryview(head), memoryview(file.data), memoryview(b"\r\n")]
        else:
            self._segments = [memoryview(head)]
        self._segments.append(memoryview(f"--{self.boundary}--\r\n".encode("ascii")))
        self._length = sum(len(s) for s in self._segments)
        self._position = 0
        self._segment = 0
        self._offset = 0
        self._progress = progress
        self._cancel = cancel
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.clock = SendClock()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    @property
    def size_bytes(self) -> int:
        return self._length


    def rewind(self) -> None:
        """Start again from the first byte, to send the same body once more (a same-origin 307/308)."""
        self._position = self._segment = self._offset = 0
        self.clock = SendClock()

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
        self.clock.note(self._position)
        if data and self._progress is not None:
            self._progress(self._position, self._length)
        if self._position == self._length and self.finished_at is None:
            self.finished_at = time.perf_counter()
        return data


class SendClock:
    """When an upload's bytes were handed to the socket, sampled every ``SAMPLE_BYTES``.

    Socket and proxy buffers swallow the first megabytes at once and still hold the last ones when
    the final read returns, so the whole upload's duration misjudges the link; between 30 % and 90 %
    of the bytes the hand-over runs at the link's pace.
    """

    SAMPLE_BYTES = 256 * 1024

    def __init__(self) -> None:
        self.samples: List[Tuple[float, int, float]] = []  # (time, bytes handed over, compressor wait so far)

    def note(self, sent: int, waited: float = 0.0) -> None:
        if not self.samples or sent - self.samples[-1][1] >= self.SAMPLE_BYTES:
            self.samples.append((time.perf_counter(), sent, waited))

    def window(self, total: int) -> Tuple[int, float, float]:
        """(bytes, seconds, seconds of them waiting for the compressor) from 30 % to 90 % of ``total`` bytes."""
        inside = [sample for sample in self.samples if 0.3 * total <= sample[1] <= 0.9 * total]
        if len(inside) < 2:
            return 0, 0.0, 0.0
        (t0, b0, w0), (t1, b1, w1) = inside[0], inside[-1]
        return b1 - b0, t1 - t0, w1 - w0


def new_boundary() -> str:
    return "clara-aws-" + secrets.token_hex(16)


def form_head(boundary: str, fields: Dict[str, str], file_field: Optional[str], filename: str, content_type: str) -> bytes:
    """The text fields and, with ``file_field``, the headers of the file part that follows them."""
    head = []
    for name, value in fields.items():
        head.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode("utf-8"))
    if file_field is not None:
        head.append(
            (
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
            ).encode("utf-8")
        )
    return b"".join(head)


class StreamedFile(Protocol):
    """A file part still being produced: ``pieces()`` yields (bytes, source bytes they cover) in order."""

    raw_size: int

    def pieces(self) -> Iterator[Tuple[bytes, int]]: ...

    def estimated_size(self, raw_done: int, compressed_done: int) -> int: ...


#: The largest piece handed to the socket at once: progress moves and a cancel stops within it.
STREAM_SLICE_BYTES = 256 * 1024


class StreamingMultipartBody:
    """A multipart body whose file part is sent while it is still being compressed (chunked transfer).

    It has no length on purpose: ``requests`` then sends it with ``Transfer-Encoding: chunked``. Each
    piece goes out as soon as the compressor has it; between slices the cancel token is checked and
    progress reported against the expected total, which becomes exact at the last byte.
    """

    def __init__(
        self,
        fields: Dict[str, str],
        field_name: str,
        filename: str,
        source: StreamedFile,
        *,
        content_type: str = "application/octet-stream",
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelToken] = None,
    ) -> None:
        self.boundary = new_boundary()
        self.fields, self.field_name, self.filename, self.source = dict(fields), field_name, filename, source
        self.progress, self.cancel = progress, cancel
        self._head = form_head(self.boundary, fields, field_name, filename, content_type)
        self._tail = f"\r\n--{self.boundary}--\r\n".encode("ascii")
        self.rewind()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def rewind(self) -> None:
        """Forget what was sent, to send the same body once more (a same-origin 307/308)."""
        self.sent = 0
        self.compressor_wait = 0.0  # seconds the upload waited for the compressor, not for the wire
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.clock = SendClock()

    @property
    def size_bytes(self) -> int:
        """The bytes sent so far (all of them once ``finished_at`` is set)."""
        return self.sent

    def __iter__(self) -> Iterator[bytes]:
        self.rewind()
        self.started_at = time.perf_counter()
        raw_done = file_done = 0
        framing = len(self._head) + len(self._tail)
        yield from self._send(self._head, framing + self.source.estimated_size(0, 0))
        pieces = self.source.pieces()
        while True:
            asked = time.perf_counter()
            piece = next(pieces, None)
            self.compressor_wait += time.perf_counter() - asked
            if piece is None:
                break
            data, raw = piece
            raw_done += raw
            file_done += len(data)
            total = framing + self.source.estimated_size(raw_done, file_done)
            yield from self._send(data, total)
        self.finished_at = time.perf_counter()
        yield from self._send(self._tail, -1)

    def _send(self, data: bytes, total: int) -> Iterator[bytes]:
        view = memoryview(data)
        for start in range(0, len(view), STREAM_SLICE_BYTES):
            if self.cancel is not None and self.cancel.is_set():
                raise CancelledError("The upload was cancelled; nothing was changed.")
            # bytes, not a memoryview: urllib3 1.26 (Python 3.9, Slicer 5.8) sends only bytes or str chunks.
            piece = bytes(view[start : start + STREAM_SLICE_BYTES])
            yield piece
            self.sent += len(piece)
            self.clock.note(self.sent, self.compressor_wait)
            if self.progress is not None:
                final = total < 0
                self.progress(self.sent, self.sent if final else max(total, self.sent + 1))


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
