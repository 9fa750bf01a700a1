"""Run a batch: each case through a segmentation function, its output file and its row of report.csv.

The load balancer spreads requests over the ECS service's GPU tasks, so the runner only keeps
``workers`` cases in flight, retries what a task replacement drops (HTTP 502, 503, 504, refused or reset
connections) with a growing pause, skips cases a previous run finished (their output exists and the
report says ok), and writes the report after every case. A case that fails gets one sentence in the
report; the batch goes on. The segmentation function is given by the caller (the command line builds
it on a server backend), so this ring never imports the backends.
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from ..core.errors import (
    ClaraError,
    GatewayTimeoutError,
    GeometryError,
    InputError,
    ServerUnavailableError,
    ServerUnreachableError,
)
from ..core.geometry import Volume
from .inputs import Case
from .report import FAILED, OK, CaseRow, Report, dice_scores, label_volumes_ml

REPORT_NAME = "report.csv"
FORMATS = ("nifti", "dicom-seg")
#: What a load balancer answers while a task is replaced or busy: worth another try.
RETRYABLE = (ServerUnavailableError, GatewayTimeoutError, ServerUnreachableError)


@dataclass(frozen=True)
class BatchSettings:
    outdir: Path
    label_names: Sequence[str]
    model_name: str
    output_format: str = "nifti"
    truth_dir: Optional[Path] = None
    workers: int = 1
    attempts: int = 3
    pause_s: float = 5.0
    resume: bool = True

    def __post_init__(self) -> None:
        if self.output_format not in FORMATS:
            raise InputError(f"The output format '{self.output_format}' is not one of {', '.join(FORMATS)}.")
        if not 1 <= self.workers <= 64 or not 1 <= self.attempts <= 10:
            raise InputError("Give 1 to 64 workers and 1 to 10 attempts per case.")


def output_path(case: Case, settings: BatchSettings) -> Path:
    if settings.output_format == "dicom-seg" and case.kind == "dicom":
        return settings.outdir / f"{case.case_id}.dcm"
    return settings.outdir / f"{case.case_id}.nii.gz"


def _segment_with_retries(segment: Callable[[Volume], Volume], volume: Volume, settings: BatchSettings,
                          sleep: Callable[[float], None]) -> Volume:
    for attempt in range(1, settings.attempts + 1):
        try:
            return segment(volume)
        except RETRYABLE:
            if attempt == settings.attempts:
                raise
            sleep(settings.pause_s * attempt)
    raise AssertionError("unreachable")


def _write(case: Case, labels: Volume, settings: BatchSettings) -> Path:
    from ..core.volume_files import write_image_file

    path = output_path(case, settings)
    if path.suffix == ".dcm":
        from .dicom_seg import write_dicom_seg

        return write_dicom_seg(labels, case.series, settings.label_names, path, model_name=settings.model_name)
    write_image_file(labels, path)
    return path


def _truth(case: Case, settings: BatchSettings) -> Optional[Volume]:
    from ..core.volume_files import read_image_file

    if settings.truth_dir is None:
        return None
    path = settings.truth_dir / f"{case.case_id}.nii.gz"
    return read_image_file(path) if path.is_file() else None


def process_case(case: Case, segment: Callable[[Volume], Volume], settings: BatchSettings, *,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> CaseRow:
    """One case from input to output file and report row; every failure becomes the row's one sentence."""
    started = clock()
    try:
        volume = case.load()
        labels = _segment_with_retries(segment, volume, settings, sleep)
        if not labels.grid.matches(volume.grid):
            raise GeometryError(f"The result of case {case.case_id} is not on its image's grid.")
        _write(case, labels, settings)
        truth = _truth(case, settings)
        dice = dice_scores(labels, truth, settings.label_names) if truth is not None else None
        return CaseRow(case.case_id, OK, clock() - started, label_volumes_ml(labels, settings.label_names), dice)
    except ClaraError as error:
        return CaseRow(case.case_id, FAILED, clock() - started, message=str(error))
    except Exception as error:  # a bug must not cost the other cases; the row says what kind it was
        return CaseRow(case.case_id, FAILED, clock() - started,
                       message=f"An unexpected {type(error).__name__} stopped this case; run it again with --debug.")


def run_batch(cases: Iterable[Case], segment: Callable[[Volume], Volume], settings: BatchSettings, *,
              progress: Optional[Callable[[CaseRow], None]] = None, sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic) -> Report:
    """Every case of ``cases`` (consumed lazily, ``workers`` at a time); the report is rewritten after each."""
    report_path = settings.outdir / REPORT_NAME
    with_dice = settings.truth_dir is not None
    report = Report.read(report_path, settings.label_names, with_dice=with_dice) if settings.resume else \
        Report(settings.label_names, with_dice=with_dice)
    finished = report.finished()

    def finish(row: CaseRow) -> None:
        report.add(row)
        report.write(report_path)
        if progress is not None:
            progress(row)

    pending: set = set()
    with concurrent.futures.ThreadPoolExecutor(max_workers=settings.workers) as pool:
        try:
            for case in cases:
                if case.case_id in finished and output_path(case, settings).is_file():
                    continue  # done by an earlier run
                while len(pending) >= settings.workers:
                    done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in done:
                        finish(future.result())
                pending.add(pool.submit(process_case, case, segment, settings, sleep=sleep, clock=clock))
            for future in concurrent.futures.as_completed(pending):
                finish(future.result())
            pending = set()
        finally:
            for future in pending:  # interrupted: what is not running yet never starts
                future.cancel()
    if not report_path.exists():
        report.write(report_path)  # an empty batch still leaves its (header-only) report
    return report


def summary(report: Report) -> str:
    ok = sum(1 for row in report.rows if row.status == OK)
    failed = len(report.rows) - ok
    return f"{ok} case{'s' if ok != 1 else ''} segmented, {failed} failed."
