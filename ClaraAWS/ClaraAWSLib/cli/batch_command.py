"""``clara-aws batch INPUT -o OUTDIR --model NAME``: a dataset through a segmentation server, per case.

INPUT: an image file, a folder (image files and DICOM series, recursively), an MSD ``dataset.json``
(its ``test`` list) or ``s3://bucket/prefix/``. OUTDIR gets ``<case id>.nii.gz`` per case (with
``--format dicom-seg``, ``<case id>.dcm`` for DICOM inputs) and ``report.csv``.

``add_commands`` puts it into ``clara-aws`` with the server, TLS and AWS options of the other server
commands; ``connect(args)`` opens a backend as every server command does, one per worker thread.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
from pathlib import Path
from typing import Callable

from .argtypes import whole_number

HELP = "segment every case of a folder, dataset.json or s3:// prefix; writes OUTDIR/<case>.nii.gz and report.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Batch options only: the server, TLS and AWS options come from the parent parser."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder, dataset.json or s3://BUCKET/PREFIX/")
    parser.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="folder for the label images and report.csv")
    parser.add_argument("--model", required=True, help="segmentation model name (see 'clara-aws models')")
    parser.add_argument("--format", choices=("nifti", "dicom-seg"), default="nifti",
                        help="dicom-seg: a DICOM Segmentation for DICOM inputs (needs clara-aws[dicom])")
    parser.add_argument("--truth", metavar="DIR", help="reference labels DIR/<case>.nii.gz: adds dice_<label> columns")
    parser.add_argument("--jobs", type=whole_number(1), default=2, metavar="N",
                        help="requests in flight at once (default 2; about the number of the service's GPU tasks)")
    parser.add_argument("--retries", type=whole_number(0), default=5, metavar="N",
                        help="retries of a case the load balancer answers 502/503/504 or drops (default 5; never a 4xx)")
    parser.add_argument("--no-resume", action="store_true", help="segment cases again even if report.csv says ok")


def add_commands(commands, options) -> None:
    from .connection import open_client

    parser = commands.add_parser("batch", parents=[options.connection], help=HELP)
    add_arguments(parser)
    parser.set_defaults(run=lambda args: run(args, connect=open_client))


def _segmenter(args, connect: Callable):
    """(segment function, model labels, close) on one backend per worker thread."""
    from ..backends import AUTO_SEGMENT
    from ..core.geometry import result_on_grid
    from ..core.nifti import encode_volume

    first = connect(args)
    model = first.check_model_task(first.model(args.model), AUTO_SEGMENT)
    local = threading.local()
    opened = [first]
    lock = threading.Lock()
    local.client = first

    def client():
        if getattr(local, "client", None) is None:
            local.client = connect(args)
            with lock:
                opened.append(local.client)
        return local.client

    def segment(volume):
        result = client().run_task(AUTO_SEGMENT, model, image=encode_volume(volume))
        return result_on_grid(result.labels(), volume.grid)

    def close():
        for backend in opened:
            backend.close()

    return segment, list(model.get("labels") or ()), close


def run(args: argparse.Namespace, connect: Callable) -> int:
    from ..core.errors import InputError
    from ..datasets.batch import BatchSettings, run_batch, summary
    from ..datasets.inputs import CaseIds, expand_inputs

    outdir = Path(args.out)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"OUTDIR {outdir} is a file; give a folder for the label images and report.csv.")
    truth = Path(args.truth) if args.truth else None
    if truth is not None and not truth.is_dir():
        raise InputError(f"--truth {truth} is not a folder of <case>.nii.gz reference labels.")
    segment, labels, close = _segmenter(args, connect)
    try:
        settings = BatchSettings(outdir=outdir, label_names=labels, model_name=args.model, output_format=args.format,
                                 truth_dir=truth, workers=args.jobs, attempts=args.retries + 1,
                                 resume=not args.no_resume)
        ids = CaseIds()  # one case-id space for every INPUT of the batch
        cases = itertools.chain.from_iterable(
            expand_inputs(spec, exclude=[outdir], profile=getattr(args, "profile", None),
                          region=getattr(args, "region", None), endpoint_url=getattr(args, "aws_endpoint_url", None),
                          ids=ids)
            for spec in args.inputs)

        def show(row) -> None:
            text = f"{row.case}: {row.status} ({row.seconds:.1f} s)" + (f": {row.message}" if row.message else "")
            print(text, file=sys.stderr)

        report = run_batch(cases, segment, settings, progress=show)
    finally:
        close()
    print(f"{summary(report)} Report: {outdir / 'report.csv'}", file=sys.stderr)
    return 0 if all(row.status == "ok" for row in report.rows) else 1
