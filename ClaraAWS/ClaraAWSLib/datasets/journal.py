"""Which files in a folder a batch wrote: its journal, ``.clara-aws-outputs``, one output name per line.

A name goes into the journal (appended and flushed to disk) before its file is renamed into place, so no
crash, kill or power cut can leave an output the folder does not claim; report.csv is written after the
output and may lag by a case. The rest of ClaraAWS treats every other image in the folder as the user's:
never written over, and walked as a case. The journal is hidden, so folder walks skip it.
"""

from __future__ import annotations

import csv
import os
import threading
from pathlib import Path
from typing import FrozenSet

JOURNAL_NAME = ".clara-aws-outputs"
REPORT_NAME = "report.csv"
#: How report.csv begins: a file of that name which does not is the user's, not a batch's.
REPORT_HEADER = "case,status,seconds"
#: How report.csv is read: a spreadsheet that saved it again may have put a byte order mark first.
REPORT_ENCODING = "utf-8-sig"
#: Suffixes of the files a batch writes per case.
OUTPUT_SUFFIXES = (".nii.gz", ".dcm")

_append_lock = threading.Lock()


def record_output(path: Path) -> None:
    """Claim ``path`` (about to be renamed into place) for the batch, durably; OSError when the disk refuses."""
    with _append_lock:
        with open(path.parent / JOURNAL_NAME, "a", encoding="utf-8") as journal:
            journal.write(path.name + "\n")
            journal.flush()
            os.fsync(journal.fileno())


def is_batch_report(path: Path) -> bool:
    """report.csv as a batch wrote it, or, beside a batch's journal, with its columns moved or added to."""
    try:
        with open(path, encoding=REPORT_ENCODING) as stream:
            first = stream.readline()
    except (OSError, UnicodeDecodeError):
        return False
    if first.startswith(REPORT_HEADER):
        return True
    columns = set(next(csv.reader([first]), []))
    return (path.parent / JOURNAL_NAME).is_file() and set(REPORT_HEADER.split(",")) <= columns


def recorded_outputs(folder: Path) -> FrozenSet[str]:
    """Names of the files a batch wrote in ``folder``, as written: its journal's, and the outputs of the cases
    its report.csv lists (reports of versions before the journal)."""
    names = set()
    try:
        with open(folder / JOURNAL_NAME, encoding="utf-8") as journal:
            names.update(line.strip() for line in journal if line.strip())
    except (OSError, UnicodeDecodeError):
        pass
    report = folder / REPORT_NAME
    if is_batch_report(report):
        try:
            with open(report, newline="", encoding=REPORT_ENCODING) as stream:
                cases = [row.get("case", "") for row in csv.DictReader(stream)]
        except (OSError, UnicodeDecodeError, csv.Error):
            cases = []
        names.update(f"{case}{suffix}" for case in cases if case for suffix in OUTPUT_SUFFIXES)
    return frozenset(names)
