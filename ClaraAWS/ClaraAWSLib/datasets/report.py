"""``report.csv`` of a batch run: one row per case, written atomically after every case.

Columns: ``case``, ``status`` (``ok``/``failed``), ``seconds``, one ``<label>_ml`` per model label
(voxel count x voxel volume / 1000), with ``--truth`` one ``dice_<label>`` per label, and ``message``
(one sentence for a failed case, or a note on an ok one), then what a rerun needs to tell whether a case is
still done: ``model``, ``input`` (the file's absolute path or the s3:// URL) and ``input_stamp``. Labels are matched by value (v is ``label_names[v-1]``), in the
result and in the truth alike. Each write replaces the file in one rename, so a reader (or a crash)
never sees half a report, and a resumed run reads the rows already there.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from ..core.errors import GeometryError, InputError
from ..core.geometry import Volume
from .files import replace_atomically
from .journal import REPORT_ENCODING, REPORT_HEADER, is_batch_report

OK, FAILED = "ok", "failed"
_UNSAFE = re.compile(r"[\s,;\"']+")


def column_label(label: str) -> str:
    """A label name as it appears in column names: runs of spaces, commas and quotes become one '_'."""
    return _UNSAFE.sub("_", str(label).strip()).strip("_") or "label"


def values_of(label_names: Sequence[str], label_values: Optional[Sequence[int]] = None) -> List[int]:
    """The value each label has in a result: ``label_values`` as the model gives them (MONAI Label's may
    skip numbers: liver 6), else the protocol's positions, ``label_names[v-1]`` for value v."""
    if label_values:
        if len(label_values) != len(label_names):
            raise ValueError("one value per label name")
        return [int(value) for value in label_values]
    return list(range(1, len(label_names) + 1))


def label_volumes_ml(labels: Volume, label_names: Sequence[str],
                     label_values: Optional[Sequence[int]] = None) -> Dict[str, float]:
    """Millilitres per label: voxels of the label's value x the voxel's volume (mm^3) / 1000."""
    values = values_of(label_names, label_values)
    voxels = np.asarray(labels.array).ravel()
    top = max(values, default=0)
    counts = np.bincount(voxels[(voxels > 0) & (voxels <= top)].astype(np.int64), minlength=top + 1)
    voxel_mm3 = float(np.prod(labels.grid.spacing))  # the direction is a rotation: it changes no volume
    return {name: float(counts[v]) * voxel_mm3 / 1000.0 for v, name in zip(values, label_names)}


def dice_scores(labels: Volume, truth: Volume, label_names: Sequence[str],
                label_values: Optional[Sequence[int]] = None) -> Dict[str, Optional[float]]:
    """Dice per label, 2|A and B| / (|A| + |B|); None where neither has the label (0/0 is not a score)."""
    if not labels.grid.matches(truth.grid):
        raise GeometryError(f"The truth labels ({truth.grid.describe()}) are not on the image's grid "
                            f"({labels.grid.describe()}), so Dice cannot be computed voxel by voxel.")
    result, expected = np.asarray(labels.array), np.asarray(truth.array)
    scores: Dict[str, Optional[float]] = {}
    for value, name in zip(values_of(label_names, label_values), label_names):
        found, wanted = result == value, expected == value
        total = int(found.sum()) + int(wanted.sum())
        scores[name] = None if total == 0 else 2.0 * int(np.logical_and(found, wanted).sum()) / total
    return scores


def one_line(text: str) -> str:
    return " ".join(str(text).split())


@dataclass
class CaseRow:
    case: str
    status: str
    seconds: float
    volumes_ml: Dict[str, float] = field(default_factory=dict)
    dice: Optional[Dict[str, Optional[float]]] = None
    message: str = ""
    #: The input's ``Case.input_stamp()`` when the case was read: a rerun sends the case again if it differs.
    input_stamp: str = ""
    #: The model that segmented it and the input it came from: a rerun with another sends the case again.
    model: str = ""
    input: str = ""
    #: Cells of columns a person added to report.csv (notes, say), kept as they were.
    extra: Dict[str, str] = field(default_factory=dict)


class Report:
    """The rows of one batch run, in the order cases finished (a case run again replaces its row)."""

    def __init__(self, label_names: Sequence[str], *, with_dice: bool = False) -> None:
        self.label_names = list(label_names)
        self.with_dice = with_dice
        self._rows: Dict[str, CaseRow] = {}
        #: The cases of the run writing this report; rows of other cases stay from earlier runs into the same
        #: folder but say nothing about this one (None: every row is this run's).
        self.this_run: Optional[set] = None
        #: Cases of this run whose output took the place of one an earlier run wrote from another input.
        self.replaced: List[str] = []
        #: Cases of this run an earlier run had finished: not sent again.
        self.done_earlier: set = set()
        #: Columns a person added to report.csv, written after ours.
        self.extra_columns: List[str] = []
        columns = [column_label(name) for name in self.label_names]
        if len(set(columns)) != len(columns):
            raise InputError(f"The model's labels {self.label_names} give the same report column twice; "
                             "their names must differ in more than spaces and punctuation.")

    @property
    def columns(self) -> List[str]:
        names = [column_label(name) for name in self.label_names]
        dice = [f"dice_{name}" for name in names] if self.with_dice else []
        return ["case", "status", "seconds", *[f"{name}_ml" for name in names], *dice, "message", "model", "input",
                "input_stamp", *self.extra_columns]

    @property
    def rows(self) -> List[CaseRow]:
        return list(self._rows.values())

    @property
    def rows_this_run(self) -> List[CaseRow]:
        return [row for row in self._rows.values() if self.this_run is None or row.case in self.this_run]

    def add(self, row: CaseRow) -> None:
        if row.status not in (OK, FAILED):
            raise ValueError(f"status must be '{OK}' or '{FAILED}', not {row.status!r}")
        earlier = self._rows.pop(row.case, None)
        if earlier is not None and earlier.extra and not row.extra:  # a person's notes stay with the case
            row.extra = dict(earlier.extra)
        self._rows[row.case] = row

    def finished(self) -> Dict[str, CaseRow]:
        """Rows of the cases already segmented (status ok), by case."""
        return {case: row for case, row in self._rows.items() if row.status == OK}

    def _cells(self, row: CaseRow) -> List[str]:
        def number(value: Optional[float], digits: int) -> str:
            return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

        volumes = [number(row.volumes_ml.get(name), 3) if row.status == OK else "" for name in self.label_names]
        dice = []
        if self.with_dice:
            dice = [number((row.dice or {}).get(name), 4) if row.status == OK else "" for name in self.label_names]
        return [row.case, row.status, number(row.seconds, 2), *volumes, *dice, one_line(row.message), row.model,
                row.input, row.input_stamp, *[row.extra.get(column, "") for column in self.extra_columns]]

    def write(self, path: Union[str, Path]) -> Path:
        """Replace ``path`` with the current rows in one rename; OutputError (the old file kept) otherwise."""
        def save(partial: Path) -> None:
            with open(partial, "w", newline="", encoding="utf-8") as stream:
                writer = csv.writer(stream)
                writer.writerow(self.columns)
                writer.writerows(self._cells(row) for row in self.rows)
                stream.flush()
                os.fsync(stream.fileno())

        return replace_atomically(Path(path), save, "report")

    @classmethod
    def read(cls, path: Union[str, Path], label_names: Sequence[str], *, with_dice: bool = False) -> "Report":
        """The report at ``path`` (to resume a run), or an empty one when there is none. Label columns of an
        earlier model that this one lacks stay, after this model's, so no earlier row loses its volumes."""
        path = Path(path)
        if not path.exists():
            return cls(label_names, with_dice=with_dice)
        if not is_batch_report(path):
            raise InputError(f"{path} is not a report a ClaraAWS batch wrote (it does not begin with {REPORT_HEADER}), "
                             "so it may be yours; give -o a folder of its own.")
        try:
            with open(path, newline="", encoding=REPORT_ENCODING) as stream:
                reader = csv.DictReader(stream)
                records = list(reader)
                header = list(reader.fieldnames or [])
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise InputError(f"The existing report {path} cannot be read ({error}); move it away to start afresh.") from None
        ours = {f"{column_label(name)}_ml" for name in label_names}
        earlier = [column[: -len("_ml")] for column in header[: header.index("message") if "message" in header else None]
                   if column.endswith("_ml") and column not in ours]
        with_dice = with_dice or any(column.startswith("dice_") for column in header)  # earlier runs' Dice stay
        report = cls([*label_names, *earlier], with_dice=with_dice)
        ours = set(report.columns) | {column for column in header if column.startswith("dice_")}
        report.extra_columns = [column for column in header if column and column not in ours]
        for record in records:
            if (record.get("case") or "").strip():  # a spreadsheet's row of empty cells is no case
                row = _row_from(record, report.label_names)
                row.extra = {column: record.get(column) or "" for column in report.extra_columns}
                report._rows[record["case"]] = row
        return report


def _row_from(record: Dict[str, str], label_names: Iterable[str]) -> CaseRow:
    def number(text: Optional[str]) -> Optional[float]:
        try:
            return float(text) if text not in (None, "") else None
        except ValueError:
            return None

    names = list(label_names)
    volumes = {name: number(record.get(f"{column_label(name)}_ml")) for name in names}
    dice = {name: number(record.get(f"dice_{column_label(name)}")) for name in names}
    return CaseRow(
        case=record.get("case", ""),
        status=OK if record.get("status") == OK else FAILED,
        seconds=number(record.get("seconds")) or 0.0,
        volumes_ml={k: v for k, v in volumes.items() if v is not None},
        dice=dice if any(v is not None for v in dice.values()) else None,
        message=record.get("message", ""),
        input_stamp=record.get("input_stamp") or "",
        model=record.get("model") or "",
        input=record.get("input") or "",
    )
