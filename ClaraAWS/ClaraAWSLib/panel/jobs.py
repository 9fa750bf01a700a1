"""Background jobs for a GUI: work runs on a worker thread, results are handed over on the GUI thread.

The Slicer panel must never wait on the network, and must touch MRML and Qt only on its own thread.
So a job's work function runs on a ``threading.Thread`` and reports through a ``queue.Queue``; the
panel calls :meth:`JobRunner.poll` from a timer on the GUI thread, and every callback (progress,
result, error, cancelled) runs inside ``poll``, on the caller's thread. Nothing here imports Qt.

Channels give "supersede" semantics: starting a job on a channel that already has one running
cancels the older job, and whatever the older job produces later is dropped silently. That is what
click-driven deepgrow needs: only the answer to the latest click matters.
"""

from __future__ import annotations

import enum
import itertools
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol

#: ``progress(payload)`` or ``progress(sent, total)`` as handed to a work function; the handler
#: receives the single value, or the values as a tuple.
ProgressFn = Callable[..., None]


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


#: ``work(progress, cancel) -> result``; runs on the worker thread, so it must not touch the GUI.
WorkFn = Callable[[ProgressFn, CancelToken], Any]


class JobOutcome(enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"


@dataclass
class JobHandlers:
    """Callbacks of one job; each runs on the thread that calls :meth:`JobRunner.poll`."""

    on_progress: Optional[Callable[[Any], None]] = None
    on_result: Optional[Callable[[Any], None]] = None
    on_error: Optional[Callable[[BaseException], None]] = None
    #: Called once the worker of a cancelled job has ended (its result or error is dropped).
    on_cancelled: Optional[Callable[[], None]] = None


@dataclass(eq=False)
class Job:
    job_id: int
    channel: str
    handlers: JobHandlers
    cancel_event: threading.Event = field(default_factory=threading.Event)
    outcome: JobOutcome = JobOutcome.RUNNING
    #: Set by the runner when a newer job on the same channel replaced this one.
    superseded: bool = False

    @property
    def finished(self) -> bool:
        return self.outcome is not JobOutcome.RUNNING

    def cancel(self) -> None:
        self.cancel_event.set()


# Queue messages: (kind, job, payload)
_PROGRESS, _RESULT, _ERROR = "progress", "result", "error"


class JobRunner:
    """Runs work functions on worker threads and delivers their outcome through :meth:`poll`."""

    def __init__(self, *, thread_name_prefix: str = "ClaraAWS-job") -> None:
        self._events: "queue.Queue[tuple[str, Job, Any]]" = queue.Queue()
        self._ids = itertools.count(1)
        self._thread_name_prefix = thread_name_prefix
        self._current: Dict[str, Job] = {}  # latest job of each channel
        self._live: Dict[int, Job] = {}  # every job whose worker has not been reported finished
        self._threads: Dict[int, threading.Thread] = {}
        self._polling = False

    # --- starting and stopping -------------------------------------------------------------
    def start(
        self,
        channel: str,
        work: WorkFn,
        *,
        on_progress: Optional[Callable[[Any], None]] = None,
        on_result: Optional[Callable[[Any], None]] = None,
        on_error: Optional[Callable[[BaseException], None]] = None,
        on_cancelled: Optional[Callable[[], None]] = None,
    ) -> Job:
        """Start ``work`` on a new thread; a job still running on ``channel`` is superseded."""
        older = self._current.get(channel)
        if older is not None and not older.finished:
            older.superseded = True
            older.cancel()
        job = Job(next(self._ids), channel, JobHandlers(on_progress, on_result, on_error, on_cancelled))
        self._current[channel] = job
        self._live[job.job_id] = job
        thread = threading.Thread(
            target=self._run, args=(job, work), name=f"{self._thread_name_prefix}-{channel}-{job.job_id}", daemon=True
        )
        self._threads[job.job_id] = thread
        thread.start()
        return job

    def cancel(self, channel: str) -> bool:
        """Ask the running job of ``channel`` to stop; returns False when nothing was running."""
        job = self._current.get(channel)
        if job is None or job.finished or job.cancel_event.is_set():
            return False
        job.cancel()
        return True

    def abandon(self, channel: str) -> bool:
        """Cancel and stop waiting for the job of ``channel``: ``on_cancelled`` runs now, on this (GUI) thread.

        A worker blocked in a long server wait may report much later; what it reports is dropped, so
        the panel is idle at once and a late answer never reaches the scene.
        """
        job = self._current.get(channel)
        if job is None or job.finished or job.superseded:
            return False
        job.superseded = True
        job.cancel()
        del self._current[channel]
        if job.handlers.on_cancelled is not None:
            job.handlers.on_cancelled()
        return True

    def cancel_all(self) -> None:
        for job in list(self._live.values()):
            job.cancel()

    def is_running(self, channel: str) -> bool:
        job = self._current.get(channel)
        return job is not None and not job.finished

    @property
    def busy(self) -> bool:
        """True while any worker (superseded ones included) has not been reported finished."""
        return bool(self._live)

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Cancel everything, wait up to ``timeout`` seconds for the workers, and drop what they send.

        Returns True when every worker ended in time. No callback runs after this call.
        """
        self.cancel_all()
        for job in self._live.values():
            job.superseded = True  # nobody is left to receive results
        deadline_threads = list(self._threads.values())
        per_thread = timeout / max(1, len(deadline_threads))
        for thread in deadline_threads:
            thread.join(per_thread)
        all_ended = not any(thread.is_alive() for thread in deadline_threads)
        self._drain_silently()
        return all_ended

    # --- the worker side ------------------------------------------------------------------
    def _run(self, job: Job, work: WorkFn) -> None:
        def report(*values: Any) -> None:
            # One value is passed on as it is; several (the client's ``progress(sent, total)``) as a tuple.
            if not job.cancel_event.is_set():
                self._events.put((_PROGRESS, job, values[0] if len(values) == 1 else values))

        try:
            result = work(report, job.cancel_event)
        except BaseException as error:  # noqa: BLE001 - handed to the GUI thread, never lost
            self._events.put((_ERROR, job, error))
        else:
            self._events.put((_RESULT, job, result))

    # --- the GUI side -----------------------------------------------------------------------
    def poll(self) -> int:
        """Deliver what the workers reported since the last call; returns how many callbacks ran.

        Only the newest progress payload of each job is delivered per call, so a fast uploader
        cannot flood the GUI. An exception raised by a result handler goes to the same job's
        error handler (an import that fails is reported like a request that fails). A call made
        from inside a callback (a handler that runs the event loop) returns 0: callbacks never nest.
        """
        if self._polling:
            return 0
        self._polling = True
        try:
            return self._deliver(self._drain())
        finally:
            self._polling = False

    def _deliver(self, pending: list) -> int:
        latest_progress: Dict[int, Any] = {}
        endings: List[tuple] = []
        for kind, job, payload in pending:
            if kind == _PROGRESS:
                latest_progress[job.job_id] = (job, payload)
            else:
                endings.append((kind, job, payload))
        delivered = 0
        for job, payload in latest_progress.values():
            if job.finished or job.superseded or job.cancel_event.is_set():
                continue
            if job.handlers.on_progress is not None:
                job.handlers.on_progress(payload)
                delivered += 1
        for kind, job, payload in endings:
            delivered += self._finish(job, kind, payload)
        return delivered

    def _finish(self, job: Job, kind: str, payload: Any) -> int:
        self._live.pop(job.job_id, None)
        self._threads.pop(job.job_id, None)
        if job.superseded:
            job.outcome = JobOutcome.SUPERSEDED
            return 0
        if job.cancel_event.is_set():
            job.outcome = JobOutcome.CANCELLED
            if job.handlers.on_cancelled is not None:
                job.handlers.on_cancelled()
                return 1
            return 0
        if kind == _RESULT:
            job.outcome = JobOutcome.SUCCEEDED
            if job.handlers.on_result is None:
                return 0
            try:
                job.handlers.on_result(payload)
            except Exception as error:  # noqa: BLE001 - reported through the job's error handler
                job.outcome = JobOutcome.FAILED
                if job.handlers.on_error is None:
                    raise
                job.handlers.on_error(error)
            return 1
        job.outcome = JobOutcome.FAILED
        if job.handlers.on_error is not None:
            job.handlers.on_error(payload)
            return 1
        return 0

    def _drain(self) -> list:
        drained = []
        while True:
            try:
                drained.append(self._events.get_nowait())
            except queue.Empty:
                return drained

    def _drain_silently(self) -> None:
        for _kind, job, _payload in self._drain():
            self._live.pop(job.job_id, None)
            self._threads.pop(job.job_id, None)
            job.outcome = JobOutcome.SUPERSEDED
