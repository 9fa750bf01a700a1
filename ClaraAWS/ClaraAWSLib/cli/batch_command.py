"""``clara-aws batch INPUT -o OUTDIR --model NAME``: a dataset through a segmentation server, per case.

INPUT: an image file, a folder (image files and DICOM series, recursively), an MSD ``dataset.json``
(its ``test`` list) or ``s3://bucket/prefix/``. OUTDIR gets ``<case id>.nii.gz`` per case (with
``--format dicom-seg``, ``<case id>.dcm`` for DICOM inputs) and ``report.csv``.

``add_commands`` puts it into ``clara-aws`` with the server, TLS and AWS options of the other server
commands; ``connect(args)`` opens a backend as every server command does, one per worker thread.

Requests in flight: ``--jobs N``; else, with ``--stack``, two per running task of the stack's ECS service
(one running on the task's GPU, the next queued behind it, so no task waits for an upload:
``bench_batch_throughput.py`` measures 0.63-0.75 of the limit with one per task, 0.89-0.93 with two); else 2. Ctrl-C (or SIGTERM) stops at once and exits 130; the same
command again finishes the rest, sending nothing for the cases report.csv already has as ok.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .argtypes import whole_number

DEFAULT_JOBS = 2
#: One request on each task's GPU and one queued behind it, so that no task waits for the next upload.
JOBS_PER_TASK = 2
HELP = "segment every case of a folder, dataset.json or s3:// prefix; writes OUTDIR/<case>.nii.gz and report.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Batch options only: the server, TLS and AWS options come from the parent parser."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder, dataset.json or s3://BUCKET/PREFIX/")
    parser.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="folder for the label images and report.csv")
    parser.add_argument("--model", required=True, help="segmentation model name (see 'clara-aws models')")
    parser.add_argument("--format", choices=("nifti", "dicom-seg"), default="nifti",
                        help="dicom-seg: a DICOM Segmentation for DICOM inputs (needs clara-aws[dicom])")
    parser.add_argument("--truth", metavar="DIR", help="reference labels DIR/<case>.nii.gz: adds dice_<label> columns")
    parser.add_argument("--jobs", type=whole_number(1, 64), default=None, metavar="N",
                        help=f"requests in flight at once (default: with --stack, two per running task of its ECS "
                             f"service; else {DEFAULT_JOBS})")
    parser.add_argument("--retries", type=whole_number(0, 20), default=5, metavar="N",
                        help="retries of a case the load balancer answers 502/503/504 or drops (default 5; never a 4xx); "
                             "pauses start near 1 s after a 502 or a dropped connection, near 5 s after a 503 or 504, and double")
    parser.add_argument("--no-resume", action="store_true", help="segment cases again even if report.csv says ok")


def add_commands(commands, options) -> None:
    from .connection import open_client

    parser = commands.add_parser("batch", parents=[options.connection], help=HELP)
    add_arguments(parser)
    parser.set_defaults(run=lambda args: run(args, connect=open_client))


def _segmenter(args, connect: Callable, retry: Callable = lambda action: action()):
    """(segment function, model labels, close) on one backend per worker thread; ``retry`` runs the
    first connection and the model's lookup (a task replacement can answer them 502 as well).

    The backends keep no cookies: each request is self-contained (one upload and inference, no server-side
    session), and a sticky load balancer's cookie (``clara-aws service --tasks N`` turns stickiness on for
    interactive sessions) would keep every worker on the task that answered it first, even after a task
    joins; without it, the balancer spreads the cases over every task."""
    from ..backends import AUTO_SEGMENT, opening_without_cookies
    from ..core.geometry import result_on_grid
    from ..core.nifti import encode_volume

    def open_backend():
        with opening_without_cookies():
            return connect(args)

    def first_connection():
        backend = open_backend()
        try:
            return backend, backend.check_model_task(backend.model(args.model), AUTO_SEGMENT)
        except BaseException:
            backend.close()
            raise

    first, model = retry(first_connection)
    local = threading.local()
    opened = [first]
    lock = threading.Lock()
    local.client = first

    def client():
        if getattr(local, "client", None) is None:
            local.client = open_backend()
            with lock:
                opened.append(local.client)
        return local.client

    def segment(volume):
        result = client().run_task(AUTO_SEGMENT, model, image=encode_volume(volume))
        return result_on_grid(result.labels(), volume.grid)

    def close():
        for backend in opened:
            backend.close()

    names = [str(name) for name in model.get("labels") or ()]
    by_name = model.get("label_values") or {}
    values = [int(by_name[name]) for name in names] if all(name in by_name for name in names) else []
    return segment, (names, values), close


def requests_in_flight(args, say: Callable[[str], None]) -> int:
    """--jobs when given; else JOBS_PER_TASK per running task of the --stack's ECS service; else DEFAULT_JOBS."""
    if args.jobs is not None:
        return args.jobs
    if not args.stack:
        return DEFAULT_JOBS
    from ..aws.service import ClaraService
    from ..core.errors import ClaraError

    try:
        running = ClaraService.open(args.stack, profile=args.profile, region=args.region,
                                    endpoint_url=args.aws_endpoint_url).running_tasks()
    except ClaraError as error:
        # The batch can still run through the load balancer; only the count of tasks is unknown.
        say(f"clara-aws: the ECS service of stack {args.stack} cannot be read ({str(error).rstrip('.')}), "
            f"so {DEFAULT_JOBS} requests go in flight; give --jobs N to choose.")
        return DEFAULT_JOBS
    if running < 1:
        say(f"clara-aws: the ECS service of stack {args.stack} has no running task yet, so {DEFAULT_JOBS} "
            "requests go in flight; give --jobs N to choose.")
        return DEFAULT_JOBS
    jobs = min(JOBS_PER_TASK * running, 64)
    say(f"clara-aws: {jobs} requests in flight, two per running task of stack {args.stack}'s ECS service "
        f"({running} running).")
    return jobs


def _cases(args, outdir: Path):
    """The cases of every INPUT, in one case-id space: a list for local INPUTs, a generator with s3://."""
    from ..datasets.inputs import CaseIds, expand_inputs

    ids = CaseIds()
    cases = itertools.chain.from_iterable(
        expand_inputs(spec, exclude=[outdir], profile=getattr(args, "profile", None),
                      region=getattr(args, "region", None), endpoint_url=getattr(args, "aws_endpoint_url", None),
                      ids=ids)
        for spec in args.inputs)
    if any(spec.lower().startswith("s3://") for spec in args.inputs):
        return cases  # a prefix is listed page by page as the batch goes: it may hold millions of keys
    return list(cases)  # local listings are quick; listed first, a bad INPUT costs nothing and the bar has a total


#: Cases listed ahead of the one sent: an S3 prefix of up to this many cases has its total (and the bar its
#: ETA) from the start, a larger one once the rest fits; a Case is a few hundred bytes.
LISTED_AHEAD = 2000


def listed_ahead(cases: Iterable, display, ahead: int = LISTED_AHEAD) -> Iterator:
    """``cases`` in their order, listed up to ``ahead`` cases before the one yielded; ``display.total`` is
    set as soon as the listing ends."""
    source, waiting, given, listed_all = iter(cases), collections.deque(), 0, False
    while True:
        while not listed_all and len(waiting) <= ahead:
            try:
                waiting.append(next(source))
            except StopIteration:
                listed_all = True
                display.total = given + len(waiting)
        if not waiting:
            return
        given += 1
        yield waiting.popleft()


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt: a shell starting the command in the background makes it
    ignore SIGINT, and a scheduler stops it with SIGTERM; both must still stop it cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def interrupted_text(report, total, outdir: Path, *, resume: bool = True) -> str:
    """Counts this run's cases only: report.csv may hold rows of other INPUTs an earlier run wrote there."""
    ok = sum(1 for row in report.rows_this_run if row.status == "ok") if report is not None else None
    done = f"{ok} case{'s' if ok != 1 else ''} done" if ok is not None else "the cases done so far"
    where = f"clara-aws: interrupted; {done} in {outdir / 'report.csv'}"
    if not resume:  # the same command would send every case again
        return f"{where}, and the command again without --no-resume segments only the cases not done."
    rest = f"the other {max(total - ok, 0)}" if ok is not None and total is not None else "the rest"
    return f"{where}, and the same command again segments {rest}."


def _stop(sentence: str, display) -> None:
    """Say ``sentence`` and, when abandoned requests still hold worker threads, end the process with 130 here.

    Those threads cannot be stopped, and Python's shutdown aborts the process (SIGABRT, no message) when one
    wakes inside ITK's C++ code; everything worth keeping is already renamed into place. The sentence waits
    for any worker's ITK call that has file descriptor 2 redirected, or it would vanish into that sink.
    """
    from ..core.native_stderr import native_stderr_restored
    from ..datasets.batch import busy_workers
    from ..datasets.inputs import remove_downloads

    with native_stderr_restored():
        display.close()
        print(sentence, file=sys.stderr, flush=True)
        if busy_workers():
            remove_downloads()  # os._exit runs no cleanup, and downloaded DICOM slices name patients
            sys.stdout.flush()
            os._exit(130)


def run(args: argparse.Namespace, connect: Callable) -> int:
    from ..core.errors import InputError, OutputError
    from ..datasets.batch import BatchSettings, check_outputs, retrying, run_batch, summary
    from .batch_progress import BatchProgress

    if not args.out.strip():  # an unset shell variable: not "here"
        raise InputError("-o OUTDIR is empty; give the folder for the label images and report.csv.")
    outdir = Path(args.out)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"OUTDIR {outdir} is a file; give a folder for the label images and report.csv.")
    truth = Path(args.truth) if args.truth else None
    if truth is not None and not truth.is_dir():
        raise InputError(f"--truth {truth} is not a folder of <case>.nii.gz reference labels.")
    say = lambda text: print(text, file=sys.stderr)  # noqa: E731
    stream = _own_stderr()
    display = BatchProgress(stream, tty=stream.isatty(), columns=shutil.get_terminal_size().columns)
    report = None
    with _interrupts():
        try:
            cases = _cases(args, outdir)
            display.total = len(cases) if isinstance(cases, list) else None
            jobs = requests_in_flight(args, say)
            segment, (labels, values), close = _segmenter(args, connect,
                                                          lambda action: retrying(action, args.retries + 1))
            try:
                settings = BatchSettings(outdir=outdir, label_names=labels, label_values=values, model_name=args.model,
                                         output_format=args.format, truth_dir=truth, workers=jobs,
                                         attempts=args.retries + 1, resume=not args.no_resume)
                check_outputs(cases if isinstance(cases, list) else [], settings,
                              [Path(spec) for spec in args.inputs if not spec.lower().startswith("s3://")])
                try:
                    report = run_batch(listed_ahead(cases, display), segment, settings, progress=display.finished,
                                       skipped=display.skipped, more_cases=display.more_cases)
                except OutputError as error:  # report.csv could not be saved once cases were under way
                    display.close()
                    say(f"clara-aws: error: {error}")
                    return 1
            finally:
                display.close()
                close()
        except KeyboardInterrupt as interrupt:
            _stop(interrupted_text(getattr(interrupt, "report", None), display.total, outdir,
                                   resume=not args.no_resume), display)
            return 130
        finally:
            if stream is not sys.stderr:
                stream.close()
    say(f"{summary(report)} Report: {outdir / 'report.csv'}")
    replaced = report.replaced
    if replaced:
        count = f"{len(replaced)} case{'s' if len(replaced) != 1 else ''}"
        say(f"clara-aws: {count} ({', '.join(replaced[:3])}{', ...' if len(replaced) > 3 else ''}) replaced outputs an "
            "earlier run wrote from other inputs with the same case id; report.csv's message names each; give -o a "
            "folder per dataset to keep both.")
    if args.format == "dicom-seg":
        _say_nifti_cases(report, outdir, say)
    return 0 if all(row.status == "ok" for row in report.rows_this_run) else 1


def _own_stderr():
    """Standard error on a file descriptor of its own for the progress lines: a worker's ITK call points file
    descriptor 2 at a sink for a moment (core.native_stderr), and a line written to it then would vanish."""
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                         errors="replace")
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test capturing, an embedding program)
        return sys.stderr


def _say_nifti_cases(report, outdir: Path, say: Callable[[str], None]) -> None:
    nifti = [row.case for row in report.rows_this_run
             if row.status == "ok" and not (outdir / f"{row.case}.dcm").is_file()]
    if nifti:
        count = f"{len(nifti)} case{'s' if len(nifti) != 1 else ''}"
        say(f"clara-aws: {count} ({', '.join(nifti[:3])}{', ...' if len(nifti) > 3 else ''}) came from image files, "
            "not DICOM series, so their labels are NIfTI files: a DICOM Segmentation needs the series it refers to.")
