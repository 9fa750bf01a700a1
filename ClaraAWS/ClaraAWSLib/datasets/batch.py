"""Run a batch: each case through a segmentation function, its output file and its row of report.csv.

The load balancer spreads requests over the ECS service's GPU tasks, so the runner only keeps
``workers`` cases in flight, retries what a task replacement drops (HTTP 502, 503, 504, refused or reset
connections) with exponentially growing, jittered pauses, skips cases a previous run finished (their
output exists and the report says ok), and writes the report after every case. A case that fails gets
one sentence in the report; the batch goes on. The segmentation function is given by the caller (the
command line builds it on a server backend), so this ring never imports the backends.

Ctrl-C (KeyboardInterrupt in the calling thread) stops at once: no case starts, requests in flight are
abandoned (a rerun sends them again), writes already under way finish (every output and the report are
renamed into place whole), and :class:`BatchInterrupted` carries the report of what was done.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import random as _random
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Deque, Dict, FrozenSet, Iterable, Iterator, Optional, Sequence, Tuple, TypeVar, Union

from ..core.errors import (
    ClaraError,
    GatewayTimeoutError,
    GeometryError,
    InputError,
    OutputError,
    ServerUnavailableError,
    ServerUnreachableError,
)
from ..core.geometry import Volume
from .inputs import Case, SeveralSeries
from .journal import record_output
from .outdir import check_outdir, folder_identity, foreign_files, one_batch_at_a_time, overwrite_reason
from .report import FAILED, OK, CaseRow, Report, dice_scores, label_volumes_ml

REPORT_NAME = "report.csv"
FORMATS = ("nifti", "dicom-seg")
#: What a load balancer answers while a task is replaced or busy: worth another try.
RETRYABLE = (ServerUnavailableError, GatewayTimeoutError, ServerUnreachableError)
RETRYABLE_STATUS = (502, 503, 504)
T = TypeVar("T")


@dataclass(frozen=True)
class BatchSettings:
    outdir: Path
    label_names: Sequence[str]
    model_name: str
    #: Each label's value in a result (the model's own, which may skip numbers); empty: 1..N in order.
    label_values: Sequence[int] = ()
    output_format: str = "nifti"
    truth_dir: Optional[Path] = None
    workers: int = 1
    attempts: int = 6
    #: The first retry waits pause_s/2 to pause_s; each later ceiling doubles, up to max_pause_s.
    pause_s: float = 5.0
    #: The same from a shorter start after a 502 or a dropped connection (see one_task_failed).
    quick_pause_s: float = 0.5
    max_pause_s: float = 60.0
    resume: bool = True

    def __post_init__(self) -> None:
        if self.output_format not in FORMATS:
            raise InputError(f"The output format '{self.output_format}' is not one of {', '.join(FORMATS)}.")
        if not 1 <= self.workers <= 64 or not 1 <= self.attempts <= 21:
            raise InputError("Give 1 to 64 requests in flight and 0 to 20 retries per case.")


def output_path(case: Case, settings: BatchSettings) -> Path:
    if settings.output_format == "dicom-seg" and case.kind in ("dicom", "s3-dicom"):
        return settings.outdir / f"{case.case_id}.dcm"
    return settings.outdir / f"{case.case_id}.nii.gz"


def retryable(error: BaseException) -> bool:
    """A failure a task replacement causes (502, 503, 504, a refused or dropped connection), never a 4xx."""
    status = getattr(error, "status", None)
    return isinstance(error, RETRYABLE) and (status is None or status in RETRYABLE_STATUS)


def retry_pause(retry: int, pause_s: float, max_pause_s: float, random: Callable[[], float]) -> float:
    """Seconds before retry number ``retry`` (1, 2, ...): "equal jitter" below a doubling ceiling.

    Half the ceiling is fixed, so pauses grow with each retry; the other half is random, so cases that
    one task replacement failed together do not all come back to the load balancer in the same second.
    """
    ceiling = min(max_pause_s, pause_s * 2 ** (retry - 1))
    return ceiling / 2 + random() * ceiling / 2


def one_task_failed(error: BaseException) -> bool:
    """A 502 or a dropped connection: the task that had the request failed, and the load balancer sends
    the next try to another one, so it need not wait long. A 503 or 504 says no task can answer now."""
    return getattr(error, "status", None) == 502 or isinstance(error, ServerUnreachableError)


def retrying(action: Callable[[], T], attempts: int, *, pause_s: float = 5.0, quick_pause_s: float = 0.5,
             max_pause_s: float = 60.0, sleep: Callable[[float], None] = time.sleep,
             random: Callable[[], float] = _random.random) -> T:
    """``action()``, tried up to ``attempts`` times while it fails as a task replacement makes it fail;
    the pauses start from ``quick_pause_s`` after one task's failure, from ``pause_s`` otherwise."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except ClaraError as error:
            if attempt == attempts or not retryable(error):
                raise
            base = quick_pause_s if one_task_failed(error) else pause_s
            sleep(retry_pause(attempt, base, max_pause_s, random))
    raise AssertionError("unreachable")


class WriteGate:
    """Lets the main thread stop a batch without a half-written file: outputs are written inside
    :meth:`writing`, and :meth:`stop` waits for those under way, after which none starts."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._writers = 0
        self.stopped = False

    @contextlib.contextmanager
    def writing(self) -> Iterator[bool]:
        """Yields False once stopped: the caller then writes nothing."""
        with self._condition:
            if self.stopped:
                yield False
                return
            self._writers += 1
        try:
            yield True
        finally:
            with self._condition:
                self._writers -= 1
                self._condition.notify_all()

    def stop(self, timeout: float = 120.0) -> None:
        with self._condition:
            self.stopped = True
            self._condition.wait_for(lambda: self._writers == 0, timeout)


def _write(case: Case, labels: Volume, settings: BatchSettings, series, foreign: FrozenSet[str],
           outdir_id: Optional[Tuple[int, int]] = None) -> Path:
    from ..core.volume_files import write_advice, write_image_file

    path = output_path(case, settings)
    if path.is_dir():
        raise OutputError(f"OUTDIR holds a folder named {path.name}, where case {case.case_id}'s labels go; nothing "
                          "was written: move or rename that folder.")
    reason = overwrite_reason(case, path, foreign)
    if reason is not None:
        raise OutputError(f"{reason}; nothing was written: give -o a folder of its own.")
    if outdir_id is not None and folder_identity(settings.outdir) != outdir_id:
        raise OutputError(f"OUTDIR {settings.outdir} was removed or replaced while the batch ran; nothing was written: "
                          "run the batch again.")
    try:
        record_output(path)  # before the file exists: no crash leaves an output its folder does not claim
    except OSError as error:
        reason = str(error.strerror or error)
        raise OutputError(f"Could not write in {path.parent} ({reason}); nothing was written: "
                          f"{write_advice(reason)}.") from None
    if path.suffix == ".dcm":
        from .dicom_seg import write_dicom_seg

        return write_dicom_seg(labels, series, settings.label_names, path, model_name=settings.model_name,
                               label_values=settings.label_values)
    write_image_file(labels, path)
    return path


def _dice(labels: Volume, case: Case, settings: BatchSettings) -> Tuple[Optional[Dict[str, Optional[float]]], str]:
    """(Dice per label, a note) against ``--truth``'s ``<case id>.nii.gz`` where there is one. A truth file that
    cannot be compared leaves the scores empty and the note says why: the segmentation itself succeeded."""
    from ..core.volume_files import read_image_file

    if settings.truth_dir is None:
        return None, ""
    path = settings.truth_dir / f"{case.case_id}.nii.gz"
    if not path.is_file():
        return None, ""
    try:
        return dice_scores(labels, read_image_file(path), settings.label_names, settings.label_values), ""
    except ClaraError as error:
        return None, f"No Dice against the truth file {path}: {error}"


def _done_earlier(case: Case, row: Optional[CaseRow], settings: BatchSettings) -> Optional[CaseRow]:
    """The report row of a case an earlier run finished from this very input and model, its Dice computed
    now against ``--truth``; None when the case must be sent (again)."""
    if row is None or not output_path(case, settings).is_file():
        return None
    # A row that does not say which model and input (its columns edited away) cannot show the case is done.
    if row.input_stamp != case.input_stamp() or row.model != settings.model_name or row.input != case.input_name:
        return None
    if settings.truth_dir is None:
        return row
    if not (settings.truth_dir / f"{case.case_id}.nii.gz").is_file():
        return replace(row, dice=None, message="")
    labels = _earlier_labels(case, settings)
    if labels is None:
        return None  # an output damaged since: segment the case again
    dice, note = _dice(labels, case, settings)
    return replace(row, dice=dice, message=note)


def _earlier_labels(case: Case, settings: BatchSettings) -> Optional[Volume]:
    """The labels an earlier run wrote for ``case``, on its grid; None when they cannot be read back."""
    from ..core.volume_files import read_image_file

    path = output_path(case, settings)
    try:
        if path.suffix != ".dcm":
            return read_image_file(path)
        from .dicom_seg import read_dicom_seg

        with case.opened() as (_, series):  # the series' slices, downloaded again for an S3 case; nothing is sent
            return read_dicom_seg(path, series, settings.label_names, settings.label_values)
    except (ClaraError, SeveralSeries):
        return None


def _failed_row(case: Case, error: Exception, seconds: float) -> CaseRow:
    # A bug must not cost the other cases; the row says what kind it was.
    message = str(error) if isinstance(error, ClaraError) else \
        f"An unexpected {type(error).__name__} stopped this case; run it again with --debug."
    return CaseRow(case.case_id, FAILED, seconds, message=message, input=case.input_name)


def process_case(case: Case, segment: Callable[[Volume], Volume], settings: BatchSettings, *,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 random: Callable[[], float] = _random.random, gate: Optional[WriteGate] = None,
                 deliver: Optional[Callable[[Union[CaseRow, SeveralSeries]], None]] = None,
                 foreign: FrozenSet[str] = frozenset(),
                 outdir_id: Optional[Tuple[int, int]] = None) -> Union[CaseRow, SeveralSeries, None]:
    """One case from input to output file and report row; every failure becomes the row's one sentence.

    ``deliver(row)`` runs before the return, for an ok row still inside ``gate``: an interruption then
    finds every output it let through already delivered. None when ``gate`` had stopped before the
    output was written: the case was abandoned. SeveralSeries when the case turned out to be several.
    ``foreign``: files in OUTDIR that are the user's (outdir.foreign_files), never written over; ``outdir_id``:
    OUTDIR's identity when the batch began (nothing is written into a folder that replaced it).
    """
    started = clock()
    stamp = case.input_stamp()  # before reading: a file replaced meanwhile is sent again by the next run
    with contextlib.ExitStack() as opened:
        try:
            volume, series = opened.enter_context(case.opened())
            labels = retrying(lambda: segment(volume), settings.attempts, pause_s=settings.pause_s,
                              quick_pause_s=settings.quick_pause_s, max_pause_s=settings.max_pause_s,
                              sleep=sleep, random=random)
            if not labels.grid.matches(volume.grid):
                raise GeometryError(f"The result of case {case.case_id} is not on its image's grid.")
        except SeveralSeries as split:
            opened.close()
            if deliver is not None:
                deliver(split)
            return split
        except Exception as error:
            row = _failed_row(case, error, clock() - started)
            opened.close()  # downloaded slices go before the row is out: the last row may end the process
            if deliver is not None:
                deliver(row)
            return row
        with gate.writing() if gate is not None else contextlib.nullcontext(True) as allowed:
            if not allowed:
                return None
            try:
                _write(case, labels, settings, series, foreign, outdir_id)
                dice, note = _dice(labels, case, settings)
                row = CaseRow(case.case_id, OK, clock() - started,
                              label_volumes_ml(labels, settings.label_names, settings.label_values),
                              dice, message=note, input_stamp=stamp, model=settings.model_name,
                              input=case.input_name)
            except Exception as error:
                row = _failed_row(case, error, clock() - started)
            opened.close()
            if deliver is not None:
                deliver(row)
            return row


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the batch; ``report`` holds (and report.csv says) what was finished."""

    def __init__(self, report: Report) -> None:
        super().__init__("The batch was interrupted.")
        self.report = report


WORKER_NAME = "clara-aws-batch"


def busy_workers() -> int:
    """Worker threads still alive: after an interruption, those waiting on an abandoned request."""
    return sum(1 for thread in threading.enumerate() if thread.name.startswith(WORKER_NAME) and thread.is_alive())


class _Workers:
    """``count`` daemon threads running ``work(case)``. Not a ThreadPoolExecutor: its threads are joined
    at exit, so a request in flight would hold an interrupted command for up to its read timeout."""

    def __init__(self, count: int, work: Callable[[Case, Callable[[Union[CaseRow, SeveralSeries]], None]], object]) -> None:
        self._cases: "queue.Queue[Optional[Case]]" = queue.Queue()
        self.rows: "queue.Queue[Union[CaseRow, SeveralSeries]]" = queue.Queue()
        self.in_flight = 0
        self._count = count
        for number in range(count):
            threading.Thread(target=self._run, args=(work,), name=f"{WORKER_NAME}-{number + 1}", daemon=True).start()

    def _run(self, work: Callable[[Case, Callable[[Union[CaseRow, SeveralSeries]], None]], object]) -> None:
        while True:
            case = self._cases.get()
            if case is None:
                return
            work(case, self.rows.put)

    def submit(self, case: Case) -> None:
        self.in_flight += 1
        self._cases.put(case)

    def next_row(self) -> Union[CaseRow, SeveralSeries]:
        while True:
            try:
                row = self.rows.get(timeout=0.25)  # a timed wait: on Windows an untimed one ignores Ctrl-C
            except queue.Empty:
                continue
            self.in_flight -= 1
            return row

    def close(self) -> None:
        for _ in range(self._count):
            self._cases.put(None)


def run_batch(cases: Iterable[Case], segment: Callable[[Volume], Volume], settings: BatchSettings, *,
              progress: Optional[Callable[[CaseRow], None]] = None, skipped: Optional[Callable[[Case], None]] = None,
              more_cases: Optional[Callable[[int], None]] = None,
              sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
              random: Callable[[], float] = _random.random) -> Report:
    """Every case of ``cases`` (consumed lazily, ``workers`` at a time); the report is rewritten after each.

    ``progress(row)`` follows each finished case, ``skipped(case)`` each case an earlier run finished and
    ``more_cases(n)`` a case that turned out to be n + 1 (an S3 folder of several DICOM series), all in the
    calling thread. KeyboardInterrupt there becomes :class:`BatchInterrupted`. One batch at a time writes in
    OUTDIR (InputError for a second one, before anything is sent).
    """
    read_report(settings)  # a report.csv of the user's is refused before the lock file is put beside it
    with one_batch_at_a_time(settings.outdir):
        return _run_batch(cases, segment, settings, progress=progress, skipped=skipped, more_cases=more_cases,
                          sleep=sleep, clock=clock, random=random)


def _run_batch(cases: Iterable[Case], segment: Callable[[Volume], Volume], settings: BatchSettings, *,
               progress: Optional[Callable[[CaseRow], None]], skipped: Optional[Callable[[Case], None]],
               more_cases: Optional[Callable[[int], None]], sleep: Callable[[float], None],
               clock: Callable[[], float], random: Callable[[], float]) -> Report:
    report_path = settings.outdir / REPORT_NAME
    report = read_report(settings)  # with --no-resume too: the rows of cases not sent again stay
    before = {row.case: row for row in report.rows}
    foreign = foreign_files(settings.outdir)
    outdir_id = folder_identity(settings.outdir)
    finished = report.finished() if settings.resume else {}

    def save() -> None:
        if folder_identity(settings.outdir) != outdir_id:  # another batch may own the folder now: keep out
            raise OutputError(f"OUTDIR {settings.outdir} was removed or replaced while the batch ran, so the batch "
                              "stopped; run it again to finish the cases not done.")
        report.write(report_path)

    report.this_run = set()
    listed = iter(cases)
    split_off: Deque[Case] = collections.deque()  # the cases of an S3 folder of several series, sent first
    unsaved = False

    def take(result: Union[CaseRow, SeveralSeries]) -> None:
        nonlocal unsaved
        if isinstance(result, SeveralSeries):
            split_off.extend(result.cases)
            if more_cases is not None:
                more_cases(len(result.cases) - 1)
            return
        unsaved = False
        noted = _with_replaced_note(result, before.get(result.case))
        if noted is not result:
            report.replaced.append(result.case)
        result = noted
        report.add(result)
        save()
        if progress is not None:
            progress(result)

    gate = WriteGate()
    workers = _Workers(settings.workers, lambda case, deliver: process_case(
        case, segment, settings, sleep=sleep, clock=clock, random=random, gate=gate, deliver=deliver,
        foreign=foreign, outdir_id=outdir_id))
    try:
        while True:
            case = split_off.popleft() if split_off else next(listed, None)
            if case is None:
                if not workers.in_flight:
                    break
                take(workers.next_row())  # it may split into more cases
                continue
            report.this_run.add(case.case_id)
            earlier = _done_earlier(case, finished.get(case.case_id), settings)
            if earlier is not None:
                report.done_earlier.add(case.case_id)
                if earlier != finished[case.case_id]:  # its Dice, now that --truth is given
                    report.add(earlier)
                    unsaved = True
                if skipped is not None:
                    skipped(case)
                continue  # done by an earlier run
            while workers.in_flight >= settings.workers:
                take(workers.next_row())
            workers.submit(case)
    except BaseException as error:  # Ctrl-C, or an INPUT that fails while it is listed
        gate.stop()  # the writes under way finish; the cases still in flight are abandoned
        while True:  # cases that finished meanwhile are done: record them rather than send them again
            try:
                result = workers.rows.get_nowait()
            except queue.Empty:
                break
            if isinstance(result, CaseRow):
                report.add(result)
        if report.rows or report_path.exists():  # an INPUT refused at once leaves no empty report behind
            with contextlib.suppress(OutputError):  # the error that stopped the batch is the one to tell
                save()
        if isinstance(error, KeyboardInterrupt):
            raise BatchInterrupted(report) from None
        raise
    finally:
        workers.close()
    if unsaved or not report_path.exists():  # an empty batch still leaves its (header-only) report
        save()
    return report


REPLACED_NOTE = "It replaces the output of {input}, an earlier case of the same id."


def _with_replaced_note(row: CaseRow, earlier: Optional[CaseRow]) -> CaseRow:
    """An ok row whose output took the place of another input's (two datasets with the same file names into
    one OUTDIR) says so: the earlier result is gone, and the user should know which."""
    if row.status != OK or earlier is None or earlier.status != OK or not earlier.input or earlier.input == row.input:
        return row
    note = REPLACED_NOTE.format(input=earlier.input)
    return replace(row, message=f"{row.message} {note}".strip())


def read_report(settings: BatchSettings) -> Report:
    """OUTDIR's report.csv as earlier runs left it; it keeps its Dice columns when this run has no --truth."""
    return Report.read(settings.outdir / REPORT_NAME, settings.label_names, with_dice=settings.truth_dir is not None)


def check_outputs(cases: Sequence[Case], settings: BatchSettings, input_folders: Iterable[Path]) -> None:
    """Before anything is sent: refuse a batch that would write over an input or a file of the user's in
    OUTDIR, or leave the user's images in an OUTDIR inside an INPUT folder out (outdir.check_outdir)."""
    read_report(settings)  # a report.csv of the user's is refused here, before anything is sent
    foreign = foreign_files(settings.outdir)
    check_outdir(cases, lambda case: output_path(case, settings), settings.outdir, foreign, input_folders)


def summary(report: Report) -> str:
    """What happened to this run's cases (rows kept from earlier runs of other inputs are not counted)."""
    rows = report.rows_this_run
    ok = sum(1 for row in rows if row.status == OK)
    failed = len(rows) - ok
    earlier = len(report.done_earlier & {row.case for row in rows if row.status == OK})
    by_earlier = ("" if not earlier else " (by an earlier run)" if earlier == ok == 1 else
                  " (all by an earlier run)" if earlier == ok else f" ({earlier} by an earlier run)")
    return f"{ok} case{'s' if ok != 1 else ''} segmented{by_earlier}, {failed} failed."
