"""ITK's and the NIfTI library's own messages, kept off the terminal and caught for an error's details."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator, Optional

from .itk_io import ITK_FILE_IO


class CapturedText:
    def __init__(self) -> None:
        self._text = ""

    def text(self) -> str:
        return self._text


#: File descriptor 2 is the process's: one redirection at a time. The blocks that redirect it are ITK's
#: file reads and writes, which must not run concurrently either, so one lock serves both.
_stderr_lock = ITK_FILE_IO


@contextlib.contextmanager
def quiet_native_stderr(captured: Optional[CapturedText] = None) -> Iterator[CapturedText]:
    """Keep ITK's and the NIfTI library's own messages (written to file descriptor 2) off the terminal.

    Their text is caught into ``captured`` for an error's details; a failure is reported as one sentence.
    """
    captured = captured if captured is not None else CapturedText()
    with _stderr_lock:
        try:
            saved = os.dup(2)
        except OSError:  # no standard error at all (a GUI process): nothing to keep quiet
            yield captured
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield captured
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                captured._text = sink.read(4096).decode("utf-8", errors="replace").strip()


@contextlib.contextmanager
def native_stderr_restored(timeout: float = 30.0) -> Iterator[None]:
    """Standard error back on its own file descriptor 2 while the block runs: waits (up to ``timeout`` s)
    for other threads' :func:`quiet_native_stderr` blocks, where whatever is printed would go to their sink."""
    acquired = _stderr_lock.acquire(timeout=timeout)
    try:
        yield
    finally:
        if acquired:
            _stderr_lock.release()


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
