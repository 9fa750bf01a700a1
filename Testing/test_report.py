"""report.csv: volumes and Dice checked against numbers worked out by hand from boxes of known size."""

from __future__ import annotations

import csv
import errno
import os

import numpy as np
import pytest

from conftest import rotation

from ClaraAWSLib.core.errors import GeometryError, InputError, OutputError
from ClaraAWSLib.core.geometry import ImageGrid, Volume
from ClaraAWSLib.datasets.report import FAILED, OK, CaseRow, Report, dice_scores, label_volumes_ml

GRID = ImageGrid((40, 30, 20), (0.8, 1.25, 2.5), (10.0, -20.0, 30.0), rotation(20, 0, -35))
NAMES = ["liver", "spleen", "left kidney"]
VOXEL_MM3 = 0.8 * 1.25 * 2.5  # 2.5 mm^3


def boxes(*specs) -> Volume:
    """Label volume from (value, (k0, k1), (j0, j1), (i0, i1)) half-open boxes."""
    array = np.zeros(GRID.size[::-1], np.uint8)
    for value, (k0, k1), (j0, j1), (i0, i1) in specs:
        array[k0:k1, j0:j1, i0:i1] = value
    return Volume(array, GRID)


def test_volumes_are_voxel_counts_times_voxel_volume():
    labels = boxes((1, (0, 10), (0, 10), (0, 10)), (2, (12, 14), (0, 5), (0, 3)), (7, (19, 20), (0, 1), (0, 1)))
    volumes = label_volumes_ml(labels, NAMES)
    # 1000 voxels x 2.5 mm^3 = 2.5 ml; 30 voxels = 0.075 ml; value 7 has no name and no column.
    assert volumes == pytest.approx({"liver": 2.5, "spleen": 0.075, "left kidney": 0.0}, abs=1e-12)


def test_dice_per_label_from_overlaps_worked_out_by_hand():
    result = boxes((1, (0, 10), (0, 10), (0, 10)), (2, (12, 14), (0, 5), (0, 4)))
    truth = boxes((1, (0, 10), (0, 10), (2, 12)), (3, (15, 16), (0, 2), (0, 2)))
    scores = dice_scores(result, truth, NAMES)
    # liver: overlap 10x10x8 = 800 of 1000 + 1000 -> 0.8; spleen only in the result -> 0; kidney only in truth -> 0.
    assert scores == {"liver": pytest.approx(0.8), "spleen": 0.0, "left kidney": 0.0}
    empty = Volume(np.zeros(GRID.size[::-1], np.uint8), GRID)
    assert dice_scores(empty, empty, NAMES) == {"liver": None, "spleen": None, "left kidney": None}


def test_dice_refuses_truth_on_another_grid():
    moved = ImageGrid(GRID.size, GRID.spacing, (11.0, -20.0, 30.0), GRID.direction)
    labels = boxes((1, (0, 2), (0, 2), (0, 2)))
    with pytest.raises(GeometryError, match="not on the image's grid"):
        dice_scores(labels, Volume(labels.array, moved), NAMES)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))


def test_report_columns_rows_and_failed_cases(tmp_path):
    report = Report(NAMES, with_dice=True)
    report.add(CaseRow("case_01", OK, 12.3456, {"liver": 2.5, "spleen": 0.075, "left kidney": 0.0},
                       {"liver": 0.8, "spleen": None, "left kidney": 0.0}, input_stamp="0123456789abcdef",
                       model="organs", input="/data/case_01.nii.gz"))
    report.add(CaseRow("case_02", FAILED, 0.5, message="The server answered 503:\nthe target is restarting."))
    path = report.write(tmp_path / "out" / "report.csv")

    rows = read_csv(path)
    assert rows[0] == ["case", "status", "seconds", "liver_ml", "spleen_ml", "left_kidney_ml",
                       "dice_liver", "dice_spleen", "dice_left_kidney", "message", "model", "input", "input_stamp"]
    assert rows[1] == ["case_01", "ok", "12.35", "2.500", "0.075", "0.000", "0.8000", "", "0.0000", "",
                       "organs", "/data/case_01.nii.gz", "0123456789abcdef"]
    assert rows[2] == ["case_02", "failed", "0.50", "", "", "", "", "", "",
                       "The server answered 503: the target is restarting.", "", "", ""]
    assert Report(NAMES).columns == ["case", "status", "seconds", "liver_ml", "spleen_ml", "left_kidney_ml", "message",
                                     "model", "input", "input_stamp"]


def test_a_case_run_again_replaces_its_row_and_a_resumed_run_reads_the_rows(tmp_path):
    path = tmp_path / "report.csv"
    report = Report(NAMES)
    report.add(CaseRow("a", FAILED, 1.0, message="Timed out."))
    report.add(CaseRow("b", OK, 2.0, {"liver": 1.0}))
    report.add(CaseRow("a", OK, 3.0, {"liver": 4.0}, input_stamp="fedcba9876543210", model="organs",
                       input="/data/a.nii.gz"))
    report.write(path)
    assert [row[0] for row in read_csv(path)[1:]] == ["b", "a"]

    resumed = Report.read(path, NAMES)
    finished = resumed.finished()
    assert sorted(finished) == ["a", "b"]  # each finished case, with what it was segmented from
    assert (finished["a"].input_stamp, finished["a"].model, finished["a"].input) == \
        ("fedcba9876543210", "organs", "/data/a.nii.gz")
    assert (finished["b"].input_stamp, finished["b"].model, finished["b"].input) == ("", "", "")
    assert resumed.rows[1].volumes_ml["liver"] == 4.0 and resumed.rows[1].seconds == 3.0
    assert Report.read(tmp_path / "none.csv", NAMES).rows == []


def test_a_failed_write_keeps_the_previous_report_and_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "report.csv"
    first = Report(NAMES)
    first.add(CaseRow("a", OK, 1.0, {"liver": 1.0}))
    first.write(path)
    before = path.read_bytes()

    def disk_full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    first.add(CaseRow("b", OK, 1.0, {"liver": 2.0}))
    with pytest.raises(OutputError, match="the report .* the previous file is unchanged"):
        first.write(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]


def test_labels_that_collide_as_columns_are_refused():
    with pytest.raises(InputError, match="same report column"):
        Report(["left kidney", "left_kidney"])
