"""The batch runner: outputs per case, report.csv, retries of what a task replacement drops, resume, and
`clara-aws batch` end to end against the reference AIAA server on 127.0.0.1.

Volumes and Dice in the report are checked against numbers computed here from the files the run wrote
(voxel index sets, not the code under test)."""

from __future__ import annotations

import argparse
import csv
import threading
import time

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import rotation

from ClaraAWSLib.core.errors import InputError, ServerUnavailableError
from ClaraAWSLib.core.geometry import ImageGrid, Volume
from ClaraAWSLib.datasets.batch import BatchSettings, run_batch
from ClaraAWSLib.datasets.inputs import expand_inputs

GRID = ImageGrid((16, 12, 8), (0.9, 1.3, 2.5), (-20.0, 10.0, 5.0), rotation(0, 15, 30))
NAMES = ["bright", "dark"]


def threshold(volume: Volume) -> Volume:
    """A stand-in model: 1 above 100, 2 below -100, on the input grid."""
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[volume.array > 100] = 1
    labels[volume.array < -100] = 2
    return Volume(labels, volume.grid)


def write(path, array, grid=GRID) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(Volume(array, grid).to_sitk(), str(path))


def ct(seed):
    return np.random.default_rng(seed).integers(-300, 300, size=GRID.size[::-1]).astype(np.int16)


def read_report(path):
    with open(path, newline="") as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


def index_set(array, value):
    return set(map(tuple, np.argwhere(array == value)))


def test_a_folder_run_writes_outputs_and_a_report_checked_by_hand(tmp_path):
    for n in range(3):
        write(tmp_path / "in" / f"case_{n}.nii.gz", ct(n))
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    truth = threshold(Volume(ct(0), GRID)).array.copy()
    truth[:, :, :4] = 0  # the reference disagrees on the first four columns
    write(tmp_path / "truth" / "case_0.nii.gz", truth)

    settings = BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="threshold",
                             truth_dir=tmp_path / "truth")
    report = run_batch(expand_inputs(str(tmp_path / "in")), threshold, settings)
    rows = read_report(tmp_path / "out" / "report.csv")

    assert set(rows) == {"broken", "case_0", "case_1", "case_2"} and len(report.rows) == 4
    assert rows["broken"]["status"] == "failed" and rows["broken"]["bright_ml"] == ""
    assert rows["broken"]["message"].endswith(".") and "broken.nii.gz" in rows["broken"]["message"]
    voxel_ml = 0.9 * 1.3 * 2.5 / 1000
    for n in range(3):
        written = sitk.ReadImage(str(tmp_path / "out" / f"case_{n}.nii.gz"))
        labels = sitk.GetArrayFromImage(written)
        assert np.allclose(written.GetDirection(), GRID.direction.flatten(), atol=1e-6)  # on the input grid
        row = rows[f"case_{n}"]
        assert row["status"] == "ok" and float(row["seconds"]) >= 0
        assert float(row["bright_ml"]) == pytest.approx(len(index_set(labels, 1)) * voxel_ml, abs=6e-4)
        assert float(row["dark_ml"]) == pytest.approx(len(index_set(labels, 2)) * voxel_ml, abs=6e-4)
    result = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "case_0.nii.gz")))
    for value, name in enumerate(NAMES, start=1):
        a, b = index_set(result, value), index_set(truth, value)
        assert float(rows["case_0"][f"dice_{name}"]) == pytest.approx(2 * len(a & b) / (len(a) + len(b)), abs=1e-4)
    assert rows["case_1"]["dice_bright"] == ""  # no truth file for it


def answer(status: int):
    """The typed error the transport makes of an HTTP answer with ``status`` from a load balancer."""
    import io

    import requests

    from ClaraAWSLib.backends.transport.failures import status_error

    response = requests.Response()
    response.status_code, response.raw, response.reason = status, io.BytesIO(b"<html>error</html>"), "Whatever"
    return status_error(response, "http://clara.example.org/v1/segmentation", "model m", 1000)


def refused():
    import requests

    from ClaraAWSLib.backends.transport.failures import transport_error

    error = requests.exceptions.ConnectionError("[Errno 111] Connection refused")
    return transport_error("http://clara.example.org/v1/segmentation", error, (10, 900), "AIAA")


def test_what_a_task_replacement_drops_is_retried_and_other_errors_are_not(tmp_path):
    write(tmp_path / "in" / "a.nii.gz", ct(1))
    write(tmp_path / "in" / "b.nii.gz", ct(2))
    write(tmp_path / "in" / "c.nii.gz", ct(3))
    calls = {"a": 0, "b": 0, "c": 0}
    sleeps = []

    def flaky(volume):
        case = {int(ct(1)[0, 0, 0]): "a", int(ct(2)[0, 0, 0]): "b", int(ct(3)[0, 0, 0]): "c"}[int(volume.array[0, 0, 0])]
        calls[case] += 1
        if case == "a" and calls[case] < 3:
            raise ServerUnavailableError("The load balancer answered 503: no healthy target.", status=503)
        if case == "b":
            raise ServerUnavailableError("The load balancer answered 502: the target closed the connection.", status=502)
        if case == "c":
            raise InputError("The model refused this image.")
        return threshold(volume)

    settings = BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="m", attempts=3, pause_s=2.0)
    run_batch(expand_inputs(str(tmp_path / "in")), flaky, settings, sleep=sleeps.append, random=lambda: 1.0)
    rows = read_report(tmp_path / "out" / "report.csv")
    assert (rows["a"]["status"], rows["b"]["status"], rows["c"]["status"]) == ("ok", "failed", "failed")
    assert calls == {"a": 3, "b": 3, "c": 1}
    # random() at its top: whole ceilings, none after the last try; after a 502 (one task failed, the next
    # try goes to another) the ceilings start from the quick pause, 0.5 s.
    assert sorted(sleeps) == [0.5, 1.0, 2.0, 4.0]
    assert "502" in rows["b"]["message"] and rows["c"]["message"] == "The model refused this image."


@pytest.mark.parametrize("failure", [lambda: answer(502), lambda: answer(503), lambda: answer(504), refused],
                         ids=["502", "503", "504", "refused"])
def test_pauses_double_and_are_jittered(tmp_path, failure, request):
    failure_id = request.node.callspec.id
    write(tmp_path / "in" / "a.nii.gz", ct(1))
    tries, sleeps = [], []
    draws = iter([0.0, 1.0, 0.25, 0.5, 0.75])

    def fails_five_times(volume):
        tries.append(1)
        if len(tries) <= 5:
            raise failure()
        return threshold(volume)

    settings = BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="m", attempts=6, pause_s=2.0,
                             quick_pause_s=0.5, max_pause_s=60.0)
    report = run_batch(expand_inputs(str(tmp_path / "in")), fails_five_times, settings, sleep=sleeps.append,
                       random=lambda: next(draws))
    if failure_id in ("502", "refused"):  # one task failed: the balancer sends the next try to another
        # Ceilings 0.5, 1, 2, 4, 8 s; each pause is half its ceiling plus draw x the other half.
        assert sleeps == [0.25, 1.0, 1.25, 3.0, 7.0]
    else:  # no task can answer now (503) or in time (504)
        # Ceilings 2, 4, 8, 16, 32 s.
        assert sleeps == [1.0, 4.0, 5.0, 12.0, 28.0]
    assert len(tries) == 6 and report.rows[0].status == "ok"


def test_pauses_stop_growing_at_the_cap_and_the_last_failure_is_reported(tmp_path):
    write(tmp_path / "in" / "a.nii.gz", ct(1))
    sleeps = []

    def always_503(volume):
        raise answer(503)

    settings = BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="m", attempts=6, pause_s=10.0,
                             max_pause_s=30.0)
    run_batch(expand_inputs(str(tmp_path / "in")), always_503, settings, sleep=sleeps.append, random=lambda: 0.5)
    assert sleeps == [7.5, 15.0, 22.5, 22.5, 22.5]  # ceilings 10, 20, 30, 30, 30 at three quarters
    row = read_report(tmp_path / "out" / "report.csv")["a"]
    assert row["status"] == "failed" and "HTTP 503" in row["message"]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422, 429, 500])
def test_a_4xx_or_another_error_is_tried_once(tmp_path, status):
    write(tmp_path / "in" / "a.nii.gz", ct(1))
    tries, sleeps = [], []

    def refuses(volume):
        tries.append(1)
        raise answer(status)

    settings = BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="m", attempts=6)
    run_batch(expand_inputs(str(tmp_path / "in")), refuses, settings, sleep=sleeps.append)
    assert len(tries) == 1 and sleeps == []
    assert read_report(tmp_path / "out" / "report.csv")["a"]["status"] == "failed"


def counting_threshold():
    """(first voxels of the volumes sent, the threshold model that records them): which cases a run sent."""
    seen = []

    def counting(volume):
        seen.append(int(volume.array[0, 0, 0]))
        return threshold(volume)

    return seen, counting


def test_a_resumed_run_skips_finished_cases_and_retries_failed_ones(tmp_path):
    for n in range(3):
        write(tmp_path / "in" / f"case_{n}.nii.gz", ct(n))
    settings = BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="m")

    def fails_on_case_2(volume):
        if int(volume.array[0, 0, 0]) == int(ct(2)[0, 0, 0]):
            raise InputError("Interrupted.")
        return threshold(volume)

    run_batch(expand_inputs(str(tmp_path / "in")), fails_on_case_2, settings)
    (tmp_path / "out" / "case_1.nii.gz").unlink()  # an output lost since: that case runs again
    seen, counting = counting_threshold()
    run_batch(expand_inputs(str(tmp_path / "in")), counting, settings)
    assert sorted(seen) == sorted([int(ct(1)[0, 0, 0]), int(ct(2)[0, 0, 0])])
    assert {row["status"] for row in read_report(tmp_path / "out" / "report.csv").values()} == {"ok"}


def test_a_rerun_sends_again_only_the_cases_whose_input_changed(tmp_path):
    pytest.importorskip("pydicom")
    from dicom_fixtures import write_series

    for n in range(3):
        write(tmp_path / "in" / f"case_{n}.nii.gz", ct(n))
    write_series(tmp_path / "in" / "patient_a", ct(3), GRID)
    settings = BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="m")
    run_batch(expand_inputs(str(tmp_path / "in")), threshold, settings)
    untouched = (tmp_path / "out" / "case_0.nii.gz").stat().st_mtime_ns
    # A corrected scan under the same name, and a series whose slices were re-exported with other voxels.
    write(tmp_path / "in" / "case_1.nii.gz", ct(11))
    write_series(tmp_path / "in" / "patient_a", ct(13), GRID)
    seen, counting = counting_threshold()
    run_batch(expand_inputs(str(tmp_path / "in")), counting, settings)
    assert sorted(seen) == sorted([int(ct(11)[0, 0, 0]), int(ct(13)[0, 0, 0])])
    for case, seed in (("case_1", 11), ("patient_a", 13)):
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"{case}.nii.gz")))
        assert np.array_equal(written, threshold(Volume(ct(seed), GRID)).array)
    assert (tmp_path / "out" / "case_0.nii.gz").stat().st_mtime_ns == untouched
    run_batch(expand_inputs(str(tmp_path / "in")), counting, settings)
    assert len(seen) == 2  # nothing changed since: nothing sent

    # A report whose input_stamp column was edited away cannot show a case is done from this input: each is
    # sent again (trusting it let a replaced CT keep the labels of the one before).
    report = tmp_path / "out" / "report.csv"
    with open(report, newline="") as stream:
        rows = list(csv.DictReader(stream))
    with open(report, "w", newline="") as stream:
        columns = [c for c in rows[0] if c != "input_stamp"]
        writer = csv.DictWriter(stream, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    run_batch(expand_inputs(str(tmp_path / "in")), counting, settings)
    assert len(seen) == 2 + 4


def test_no_more_than_workers_cases_are_in_flight(tmp_path):
    for n in range(8):
        write(tmp_path / "in" / f"case_{n}.nii.gz", ct(n))
    lock, state = threading.Lock(), {"now": 0, "most": 0}

    def slow(volume):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return threshold(volume)

    settings = BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="m", workers=3)
    report = run_batch(expand_inputs(str(tmp_path / "in")), slow, settings)
    assert len(report.rows) == 8 and state["most"] == 3


def test_dicom_inputs_get_a_dicom_seg_and_image_inputs_nifti(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("highdicom")
    from dicom_fixtures import write_series

    write_series(tmp_path / "in" / "patient_a", ct(4), GRID)
    write(tmp_path / "in" / "other.nii.gz", ct(5))
    settings = BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="m", output_format="dicom-seg")
    run_batch(expand_inputs(str(tmp_path / "in")), threshold, settings)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".clara-aws-lock", ".clara-aws-outputs",
                                                                     "other.nii.gz", "patient_a.dcm", "report.csv"]
    seg = pydicom.dcmread(tmp_path / "out" / "patient_a.dcm")
    assert seg.Modality == "SEG" and [s.SegmentLabel for s in seg.SegmentSequence] == NAMES


# --- clara-aws batch, end to end -------------------------------------------------------------------------


def test_batch_command_against_the_reference_server(tmp_path, reference_server, phantom_small):
    from ClaraAWSLib.backends import connect
    from ClaraAWSLib.cli import batch_command
    from ClaraAWSLib.datasets.report import column_label

    volume, truth = phantom_small.ct, phantom_small.truth
    write(tmp_path / "in" / "abdomen_1.nii.gz", volume.array, volume.grid)
    write(tmp_path / "in" / "abdomen_2.nii.gz", volume.array[::-1].copy(), volume.grid)
    write(tmp_path / "truth" / "abdomen_1.nii.gz", truth.array, truth.grid)
    write(tmp_path / "more" / "abdomen_1.nii.gz", volume.array, volume.grid)  # a second INPUT, same file name
    parser = argparse.ArgumentParser()
    batch_command.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "in"), str(tmp_path / "more" / "abdomen_1.nii.gz"), "-o",
                              str(tmp_path / "out"), "--model", "phantom_abdomen_seg", "--jobs", "2", "--retries", "2",
                              "--truth", str(tmp_path / "truth")])
    assert batch_command.run(args, connect=lambda _: connect(reference_server.url)) == 0

    rows = read_report(tmp_path / "out" / "report.csv")
    assert set(rows) == {"abdomen_1", "abdomen_2", "abdomen_1_2"} and {r["status"] for r in rows.values()} == {"ok"}
    labels_image = sitk.ReadImage(str(tmp_path / "out" / "abdomen_1.nii.gz"))
    labels = sitk.GetArrayFromImage(labels_image)
    voxel_ml = float(np.prod(labels_image.GetSpacing())) / 1000
    for value, name in enumerate(phantom_small.labels, start=1):
        row = rows["abdomen_1"]
        assert float(row[f"{column_label(name)}_ml"]) == pytest.approx(len(index_set(labels, value)) * voxel_ml,
                                                                         abs=6e-4)
        a, b = index_set(labels, value), index_set(truth.array, value)
        if a or b:
            assert float(row[f"dice_{column_label(name)}"]) == pytest.approx(2 * len(a & b) / (len(a) + len(b)),
                                                                               abs=1e-4)
    assert rows["abdomen_2"]["dice_" + column_label(phantom_small.labels[0])] == ""  # no truth for it


def test_clara_aws_batch_exits_1_when_a_case_fails_and_a_rerun_sends_only_that_case(tmp_path, reference_server,
                                                                                        phantom_small, capsys):
    """The command as a user types it: one unreadable case among good ones, then a resumed run."""
    from ClaraAWSLib.cli import main

    volume = phantom_small.ct
    write(tmp_path / "in" / "good.nii.gz", volume.array, volume.grid)
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"\x1f\x8b not a gzip at all")
    command = ["batch", "--server", reference_server.url, str(tmp_path / "in"), "-o", str(tmp_path / "out"),
               "--model", "phantom_abdomen_seg", "--jobs", "2"]
    assert main(command) == 1
    rows = read_report(tmp_path / "out" / "report.csv")
    assert rows["good"]["status"] == "ok" and rows["broken"]["status"] == "failed" and rows["broken"]["message"]
    assert (tmp_path / "out" / "good.nii.gz").is_file() and not (tmp_path / "out" / "broken.nii.gz").exists()
    uploads = reference_server.stats.image_uploads
    (tmp_path / "in" / "broken.nii.gz").unlink()
    write(tmp_path / "in" / "broken.nii.gz", volume.array, volume.grid)  # the user fixes the file
    assert main(command) == 0
    assert reference_server.stats.image_uploads == uploads + 1  # only the case that had failed went up again
    assert {row["status"] for row in read_report(tmp_path / "out" / "report.csv").values()} == {"ok"}
