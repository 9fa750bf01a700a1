"""Reading a request body piece by piece, sent with Content-Length or chunked transfer coding."""

from __future__ import annotations

import re
import time
from typing import BinaryIO, Callable, List, Optional

from .problems import BadRequest, PayloadTooLarge

CHUNK_LINE_LIMIT = 4096
_DIGITS = re.compile(r"[0-9]+")


def declared_content_length(values: Optional[List[str]]) -> Optional[int]:
    """The one body length a request's Content-Length headers declare; None when it has none.

    RFC 9112 §6.3: a value that is not 1*DIGIT (Python's ``int()`` would take "+2", "0_2" or " 2 "), or
    values that disagree (in one list or in repeated headers), leave the end of the body unknown: that is
    BadRequest, and the caller must close the connection. Identical values count as one (RFC 9110 §8.6).
    """
    if not values:
        return None
    elements = [element.strip(" \t") for value in values for element in value.split(",")]
    shown = ", ".join(values)
    shown = shown if len(shown) <= 40 else shown[:40] + "..."
    if not all(_DIGITS.fullmatch(element) for element in elements):
        raise BadRequest(
            f"The request's Content-Length {shown!r} is not a byte count, so where its body ends cannot be known "
            "(RFC 9112 §6.3); send one Content-Length of digits only."
        )
    if len({int(element) for element in elements}) > 1:
        raise BadRequest(
            f"The request's Content-Length values disagree ({shown!r}), so where its body ends cannot be known "
            "(RFC 9112 §6.3); send one Content-Length."
        )
    return int(elements[0])


class BodyReader:
    """``read(n)`` returns up to ``n`` bytes of the body, ``b""`` at its end; never the whole body at once.

    Raises PayloadTooLarge as soon as more than ``max_bytes`` arrived, and BadRequest when the body is
    malformed or ends early. ``on_bytes`` is told how many body bytes arrived (for statistics).
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        content_length: Optional[int],
        chunked: bool,
        max_bytes: Optional[int] = None,
        on_bytes: Optional[Callable[[int], None]] = None,
    ) -> None:
        self._stream = stream
        self._chunked = chunked
        self._remaining = 0 if chunked else (content_length or 0)
        self._chunk_left = 0
        self._finished = not chunked and self._remaining == 0
        self._max_bytes = max_bytes
        self._on_bytes = on_bytes
        self.received = 0
        self._declared = None if chunked else content_length
        #: When the last byte of the body arrived (perf_counter), None while it is still arriving.
        self.finished_at: Optional[float] = time.perf_counter() if self._finished else None

    def check_declared_size(self) -> None:
        """Refuse a body whose Content-Length alone is over the limit, before reading any of it."""
        if self._max_bytes is not None and self._declared is not None and self._declared > self._max_bytes:
            raise PayloadTooLarge(too_large_message(self._declared, self._max_bytes))

    @property
    def finished(self) -> bool:
        return self._finished

    def _finish(self) -> None:
        self._finished = True
        self.finished_at = time.perf_counter()

    def read(self, size: int) -> bytes:
        if self._finished or size <= 0:
            return b""
        data = self._read_chunked(size) if self._chunked else self._read_plain(size)
        self._count(len(data))
        return data

    def _read_plain(self, size: int) -> bytes:
        data = self._stream.read(min(size, self._remaining))
        if not data:
            raise BadRequest("The request body ended before Content-Length bytes arrived; resend the request.")
        self._remaining -= len(data)
        if self._remaining == 0:
            self._finish()
        return data

    def _read_chunked(self, size: int) -> bytes:
        if self._chunk_left == 0:
            self._chunk_left = self._next_chunk_size()
            if self._chunk_left == 0:
                self._skip_trailers()
                self._finish()
                return b""
        data = self._stream.read(min(size, self._chunk_left))
        if not data:
            raise BadRequest("The chunked request body ended in the middle of a chunk; resend the request.")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._expect_line_end()
        return data

    def _next_chunk_size(self) -> int:
        line = self._stream.readline(CHUNK_LINE_LIMIT)
        self._count(len(line), payload=False)
        if not line.endswith(b"\n"):
            raise BadRequest("The chunked request body has a malformed chunk header; resend the request.")
        text = line.split(b";", 1)[0].strip()  # chunk extensions are allowed and ignored
        try:
            return int(text, 16)
        except ValueError:
            raise BadRequest("The chunked request body has a chunk size that is not hexadecimal.") from None

    def _expect_line_end(self) -> None:
        line = self._stream.readline(CHUNK_LINE_LIMIT)
        self._count(len(line), payload=False)
        if line.strip():
            raise BadRequest("A chunk of the request body is longer than its declared size.")

    def _skip_trailers(self) -> None:
        while True:
            line = self._stream.readline(CHUNK_LINE_LIMIT)
            self._count(len(line), payload=False)
            if not line or not line.strip():
                return

    def _count(self, size: int, *, payload: bool = True) -> None:
        if not payload or not size:
            return  # chunk framing is not part of the body
        if self._on_bytes is not None:
            self._on_bytes(size)
        self.received += size
        if self._max_bytes is not None and self.received > self._max_bytes:
            raise PayloadTooLarge(too_large_message(self.received, self._max_bytes, at_least=True))

    def drain(self, *, max_bytes: int, max_seconds: float) -> bool:
        """Read and discard the rest of the body within limits; True when the body was read to its end.

        Used after answering an error early, so the client reads the answer instead of a reset
        connection (what web servers call a lingering close)."""
        self._max_bytes = None
        deadline = time.monotonic() + max_seconds
        discarded = 0
        try:
            while not self._finished:
                if discarded > max_bytes or time.monotonic() > deadline:
                    return False
                data = self.read(1 << 20)
                discarded += len(data)
        except (BadRequest, OSError):
            return False
        return True


def too_large_message(size: int, limit: int, *, at_least: bool = False) -> str:
    """One sentence for HTTP 413."""
    amount = f"more than {limit}" if at_least else str(size)
    return (
        f"The request body ({amount} bytes) exceeds this server's upload limit of {limit} bytes; "
        "send a smaller image or raise the server's --max-upload-mb."
    )
