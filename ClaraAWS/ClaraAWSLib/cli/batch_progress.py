"""What ``clara-aws batch`` shows while it runs: a bar redrawn in place on a terminal, and one plain line
per finished case anywhere else (CI logs, a file), where carriage returns would pile up unreadably.

The text comes from pure functions of :class:`BatchCounts` (counts and seconds in, text out);
:class:`BatchProgress` only keeps the counts and writes to its stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, TextIO

BAR_WIDTH = 20


@dataclass(frozen=True)
class BatchCounts:
    #: Cases finished by this run, ok or failed, and how many of them failed.
    done: int = 0
    failed: int = 0
    #: Cases an earlier run finished (a resumed batch skips them).
    skipped: int = 0
    #: Cases in the batch; None while the INPUTs are still being listed.
    total: Optional[int] = None
    #: Seconds since this run started.
    elapsed_s: float = 0.0


def per_minute(counts: BatchCounts) -> Optional[float]:
    """Cases this run finishes per minute; None before the first one."""
    if counts.done == 0 or counts.elapsed_s <= 0:
        return None
    return counts.done * 60.0 / counts.elapsed_s


def eta_seconds(counts: BatchCounts) -> Optional[float]:
    """Seconds until the rest is done at this run's pace; None without a pace or a total."""
    rate = per_minute(counts)
    if rate is None or counts.total is None:
        return None
    return max(counts.total - counts.skipped - counts.done, 0) * 60.0 / rate


def duration_text(seconds: float) -> str:
    whole = int(round(max(seconds, 0)))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def status_text(counts: BatchCounts) -> str:
    """E.g. ``15/40 cases (3 from an earlier run), 1 failed, 3.2 cases/min, ETA 8 min 45 s``."""
    finished = counts.done + counts.skipped
    parts = [f"{finished}/{counts.total} cases" if counts.total is not None else f"{finished} cases so far"]
    if counts.skipped:
        parts[0] += f" ({counts.skipped} from an earlier run)"
    parts.append(f"{counts.failed} failed")
    rate, eta = per_minute(counts), eta_seconds(counts)
    if rate is not None:
        parts.append(f"{rate:.1f} cases/min")
    if eta is not None:
        parts.append(f"ETA {duration_text(eta)}")
    return ", ".join(parts)


def bar_text(counts: BatchCounts, width: int = BAR_WIDTH) -> str:
    """The terminal's line: a bar of the finished share (none while the total is unknown) and the status."""
    if not counts.total:
        return status_text(counts)
    filled = min(width, (counts.done + counts.skipped) * width // counts.total)
    return f"[{'#' * filled}{'.' * (width - filled)}] {status_text(counts)}"


def case_text(case: str, status: str, seconds: float, message: str = "") -> str:
    return f"{case}: {status} ({seconds:.1f} s)" + (f": {message}" if message else "")


class BatchProgress:
    """Keeps the counts of one run and shows them on ``stream``: a redrawn bar when ``tty``, else plain lines."""

    def __init__(self, stream: TextIO, *, tty: bool, total: Optional[int] = None, columns: int = 100,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.tty, self.total, self.columns = stream, tty, total, max(columns, 20)
        self._clock = clock
        self._started = clock()
        self._done = self._failed = self._skipped = self._split_off = 0
        self._bar_shown = False

    def counts(self) -> BatchCounts:
        total = self.total + self._split_off if self.total is not None else None
        return BatchCounts(self._done, self._failed, self._skipped, total, self._clock() - self._started)

    def more_cases(self, count: int) -> None:
        """``count`` cases more than were listed: an S3 folder found to hold several DICOM series."""
        self._split_off += count

    def skipped(self, _case=None) -> None:
        self._skipped += 1
        if self.tty:
            self._draw()

    def finished(self, row) -> None:
        """A report row (case, status, seconds, message) is in: count it and show it."""
        self._done += 1
        self._failed += row.status != "ok"
        line = case_text(row.case, row.status, row.seconds, row.message)
        if not self.tty:
            # The counts first, in brackets: a failure's sentence then ends the line as it ends its row.
            print(f"[{status_text(self.counts())}] {line}", file=self.stream, flush=True)
            return
        if row.status != "ok":  # failures stay on screen above the bar; successes only move it
            self._clear()
            print(line, file=self.stream)
        self._draw()

    def close(self) -> None:
        """End the bar's line, so what follows starts on a fresh one."""
        if self._bar_shown:
            print(file=self.stream, flush=True)
            self._bar_shown = False

    def _draw(self) -> None:
        # Cut to the terminal's width: a wrapped line cannot be redrawn with a carriage return.
        self.stream.write("\r" + bar_text(self.counts())[: self.columns - 1] + "\x1b[K")
        self.stream.flush()
        self._bar_shown = True

    def _clear(self) -> None:
        if self._bar_shown:
            self.stream.write("\r\x1b[K")
            self._bar_shown = False
