"""Which files in OUTDIR are a batch's: its journal (.clara-aws-outputs), written before each output, not
report.csv, which lags by a case and which a user may delete, replace or shorten with --no-resume. Every
other image there is the user's: never written over, and an OUTDIR inside an INPUT folder holding one is
refused. A folder a batch wrote, given as INPUT, yields no case from its outputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import rotation

from ClaraAWSLib.core.errors import InputError
from ClaraAWSLib.core.geometry import ImageGrid, Volume
from ClaraAWSLib.datasets.batch import BatchSettings, check_outputs, run_batch
from ClaraAWSLib.datasets.inputs import CaseIds, expand_inputs

GRID = ImageGrid((12, 10, 5), (0.8, 1.1, 2.0), (-12.0, 4.0, 7.5), rotation(5, -10, 20))
NAMES = ["bright", "dark"]


def ct(seed):
    return np.random.default_rng(seed).integers(-300, 300, size=GRID.size[::-1]).astype(np.int16)


def write(path, array, grid=GRID):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(Volume(array, grid).to_sitk(), str(path))


def recording():
    sent = []

    def segment(volume):
        sent.append(volume.array.copy())
        labels = np.zeros(volume.array.shape, np.uint8)
        labels[volume.array > 100] = 1
        labels[volume.array < -100] = 2
        return Volume(labels, volume.grid)

    return sent, segment


def cases_of(*specs):
    ids = CaseIds()
    return [case for spec in specs for case in expand_inputs(str(spec), ids=ids)]


def settings(outdir, **more):
    return BatchSettings(outdir=outdir, label_names=NAMES, model_name="m", **more)


def statuses(report):
    return {row.case: row.status for row in report.rows}


def dataset(folder, count=3):
    for n in range(count):
        write(folder / f"case_{n}.nii.gz", ct(n))


def test_a_rerun_after_no_resume_on_part_of_the_dataset_is_not_refused(tmp_path):
    dataset(tmp_path / "in")
    run_batch(cases_of(tmp_path / "in"), recording()[1], settings(tmp_path / "out"))
    run_batch(cases_of(tmp_path / "in" / "case_0.nii.gz"), recording()[1], settings(tmp_path / "out", resume=False))
    sent, segment = recording()
    check_outputs(cases_of(tmp_path / "in"), settings(tmp_path / "out"), [tmp_path / "in"])  # no InputError
    report = run_batch(cases_of(tmp_path / "in"), segment, settings(tmp_path / "out"))
    assert statuses(report) == {f"case_{n}": "ok" for n in range(3)} and sent == []


def test_an_output_whose_report_row_was_never_written_is_sent_again_and_replaced(tmp_path):
    """A kill between an output's rename and its report row: the journal, written first, claims the file."""
    dataset(tmp_path / "in", 2)
    run_batch(cases_of(tmp_path / "in"), recording()[1], settings(tmp_path / "out"))
    report_path = tmp_path / "out" / "report.csv"
    lines = report_path.read_text().splitlines(keepends=True)
    report_path.write_text("".join(line for line in lines if not line.startswith("case_1,")))
    stale = tmp_path / "out" / "case_1.nii.gz"
    stale.write_bytes(b"half of an output a killed run left")  # whatever lies there is the batch's own
    sent, segment = recording()
    check_outputs(cases_of(tmp_path / "in"), settings(tmp_path / "out"), [tmp_path / "in"])
    report = run_batch(cases_of(tmp_path / "in"), segment, settings(tmp_path / "out"))
    assert statuses(report) == {"case_0": "ok", "case_1": "ok"} and len(sent) == 1
    assert np.array_equal(sent[0], ct(1))
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(stale)))
    assert np.array_equal(written == 1, ct(1) > 100)


def test_a_deleted_report_means_every_case_is_sent_again_over_the_batchs_own_outputs(tmp_path):
    dataset(tmp_path / "in", 2)
    run_batch(cases_of(tmp_path / "in"), recording()[1], settings(tmp_path / "out"))
    (tmp_path / "out" / "report.csv").unlink()
    sent, segment = recording()
    check_outputs(cases_of(tmp_path / "in"), settings(tmp_path / "out"), [tmp_path / "in"])
    report = run_batch(cases_of(tmp_path / "in"), segment, settings(tmp_path / "out"))
    assert statuses(report) == {"case_0": "ok", "case_1": "ok"} and len(sent) == 2


def test_a_report_csv_of_the_user_is_refused_and_kept(tmp_path):
    dataset(tmp_path / "in", 1)
    (tmp_path / "out").mkdir()
    mine = "patient,age,notes\ncase_0,61,contrast phase\n"
    (tmp_path / "out" / "report.csv").write_text(mine)
    with pytest.raises(InputError, match="is not a report a ClaraAWS batch wrote"):
        check_outputs(cases_of(tmp_path / "in"), settings(tmp_path / "out"), [tmp_path / "in"])
    sent, segment = recording()
    with pytest.raises(InputError):
        run_batch(cases_of(tmp_path / "in"), segment, settings(tmp_path / "out"))
    assert sent == [] and (tmp_path / "out" / "report.csv").read_text() == mine
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.csv"]


@pytest.mark.parametrize("name", ["IM000001", "slice_001.IMA", "image.dicom"])
def test_outdir_inside_an_input_folder_holding_dicom_files_of_the_user_is_refused(tmp_path, name):
    """DICOM files as scanners name them: no suffix (recognised by the DICM preamble), .IMA, .dicom."""
    dataset(tmp_path / "study" / "a", 1)
    dicom = tmp_path / "study" / "b" / name
    dicom.parent.mkdir(parents=True)
    dicom.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    with pytest.raises(InputError, match=f"lies inside the INPUT folder .*{name.lower()}"):
        check_outputs(cases_of(tmp_path / "study"), settings(tmp_path / "study" / "b"), [tmp_path / "study"])


def test_a_suffixless_file_that_is_not_dicom_is_not_an_image_of_the_user(tmp_path):
    dataset(tmp_path / "study" / "a", 1)
    (tmp_path / "study" / "b").mkdir()
    (tmp_path / "study" / "b" / "README").write_text("notes about this study\n")
    check_outputs(cases_of(tmp_path / "study"), settings(tmp_path / "study" / "b"), [tmp_path / "study"])


def test_a_folder_a_batch_wrote_given_as_input_yields_only_the_users_images(tmp_path):
    pytest.importorskip("highdicom")
    from dicom_fixtures import write_series

    write_series(tmp_path / "in" / "patient_a", ct(4), GRID)
    write(tmp_path / "in" / "other.nii.gz", ct(5))
    labels = tmp_path / "labels"
    run_batch(cases_of(tmp_path / "in"), recording()[1], settings(labels, output_format="dicom-seg"))
    assert {p.name for p in labels.iterdir()} >= {"other.nii.gz", "patient_a.dcm"}
    with pytest.raises(InputError, match="holds no image files"):
        cases_of(labels)
    write(labels / "extra_ct.nii.gz", ct(6))  # the user drops a CT into that folder later
    assert [case.case_id for case in cases_of(labels)] == ["extra_ct"]
    # The same without report.csv: the journal alone says which files are labels.
    (labels / "report.csv").unlink()
    assert [case.case_id for case in cases_of(labels)] == ["extra_ct"]


def test_the_journal_lists_each_output_once_it_is_written(tmp_path):
    dataset(tmp_path / "in", 2)
    run_batch(cases_of(tmp_path / "in"), recording()[1], settings(tmp_path / "out"))
    journal = (tmp_path / "out" / ".clara-aws-outputs").read_text().split()
    assert sorted(journal) == ["case_0.nii.gz", "case_1.nii.gz"]
    with open(tmp_path / "out" / "report.csv", newline="") as stream:
        assert sorted(row["case"] for row in csv.DictReader(stream)) == ["case_0", "case_1"]


def test_a_second_batch_into_the_same_outdir_is_refused_while_the_first_runs(tmp_path):
    """Each batch rewrites report.csv from its own rows: two at once lost the other's rows without a word."""
    import threading

    dataset(tmp_path / "in", 2)
    write(tmp_path / "more" / "ct.nii.gz", ct(7))
    inside, leave = threading.Event(), threading.Event()
    sent, segment = recording()

    def slow(volume):
        inside.set()
        leave.wait(30)
        return segment(volume)

    first = threading.Thread(target=lambda: run_batch(cases_of(tmp_path / "in"), slow, settings(tmp_path / "out")))
    first.start()
    try:
        assert inside.wait(30)
        second_sent, second = recording()
        with pytest.raises(InputError, match="Another clara-aws batch is writing in OUTDIR"):
            run_batch(cases_of(tmp_path / "more"), second, settings(tmp_path / "out"))
        assert second_sent == []
    finally:
        leave.set()
        first.join(30)
    with open(tmp_path / "out" / "report.csv", newline="") as stream:
        assert sorted(row["case"] for row in csv.DictReader(stream)) == ["case_0", "case_1"]
    # Once the first has ended, the second runs and both rows stay.
    report = run_batch(cases_of(tmp_path / "more"), recording()[1], settings(tmp_path / "out"))
    assert sorted(row.case for row in report.rows) == ["case_0", "case_1", "ct"]


def test_an_outdir_that_cannot_be_created_is_refused_before_anything_is_sent(tmp_path, reference_server,
                                                                              phantom_small, capsys):
    from ClaraAWSLib.cli import main

    write(tmp_path / "in" / "ct0.nii.gz", phantom_small.ct.array, phantom_small.ct.grid)
    (tmp_path / "a_file").write_text("not a folder")
    uploads = reference_server.stats.image_uploads
    assert main(["batch", "--server", reference_server.url, "--model", "phantom_abdomen_seg", str(tmp_path / "in"),
                 "-o", str(tmp_path / "a_file" / "sub")]) == 2
    (line,) = capsys.readouterr().err.strip().split("\n")
    assert "cannot be created or written" in line and "free some disk space" not in line
    assert reference_server.stats.image_uploads == uploads


def test_a_folder_where_an_output_goes_fails_that_case_in_words_for_a_batch(tmp_path):
    dataset(tmp_path / "in", 2)
    (tmp_path / "out" / "case_1.nii.gz").mkdir(parents=True)
    report = run_batch(cases_of(tmp_path / "in"), recording()[1], settings(tmp_path / "out"))
    rows = {row.case: row for row in report.rows}
    assert rows["case_0"].status == "ok" and rows["case_1"].status == "failed"
    assert "holds a folder named case_1.nii.gz" in rows["case_1"].message
    assert (tmp_path / "out" / "case_1.nii.gz").is_dir()


def test_rows_of_an_earlier_model_keep_their_volumes_when_another_model_writes_in_the_folder(tmp_path):
    write(tmp_path / "site_a" / "a.nii.gz", ct(1))
    write(tmp_path / "site_b" / "b.nii.gz", ct(2))
    run_batch(cases_of(tmp_path / "site_a"), recording()[1],
              BatchSettings(outdir=tmp_path / "out", label_names=["liver", "dark"], model_name="old"))
    run_batch(cases_of(tmp_path / "site_b"), recording()[1],
              BatchSettings(outdir=tmp_path / "out", label_names=["Liver", "Spleen"], model_name="new"))
    with open(tmp_path / "out" / "report.csv", newline="") as stream:
        reader = csv.DictReader(stream)
        table = {row["case"]: row for row in reader}
        header = reader.fieldnames
    assert header[3:7] == ["Liver_ml", "Spleen_ml", "liver_ml", "dark_ml"]
    voxel_ml = float(np.prod(GRID.spacing)) / 1000
    assert float(table["a"]["liver_ml"]) == pytest.approx(np.count_nonzero(ct(1) > 100) * voxel_ml, abs=1e-3)
    assert float(table["a"]["dark_ml"]) == pytest.approx(np.count_nonzero(ct(1) < -100) * voxel_ml, abs=1e-3)
    assert float(table["b"]["Liver_ml"]) == pytest.approx(np.count_nonzero(ct(2) > 100) * voxel_ml, abs=1e-3)
    assert table["a"]["Liver_ml"] == "" and table["b"]["liver_ml"] == ""


def test_a_report_saved_again_by_a_spreadsheet_still_resumes(tmp_path):
    """Excel writes a byte order mark and CRLF line ends; the rows are the same."""
    dataset(tmp_path / "in", 2)
    run_batch(cases_of(tmp_path / "in"), recording()[1], settings(tmp_path / "out"))
    report_path = tmp_path / "out" / "report.csv"
    report_path.write_bytes(b"\xef\xbb\xbf" + report_path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    sent, segment = recording()
    check_outputs(cases_of(tmp_path / "in"), settings(tmp_path / "out"), [tmp_path / "in"])
    report = run_batch(cases_of(tmp_path / "in"), segment, settings(tmp_path / "out"))
    assert sent == [] and statuses(report) == {"case_0": "ok", "case_1": "ok"}


def test_truth_given_on_a_rerun_scores_dicom_seg_outputs_without_sending_them(tmp_path):
    """The SEG is read back onto its series' grid; a changed truth changes the Dice, still sending nothing."""
    pytest.importorskip("highdicom")
    from dicom_fixtures import write_series

    write_series(tmp_path / "in" / "patient", ct(4), GRID)
    run_batch(cases_of(tmp_path / "in"), recording()[1], settings(tmp_path / "out", output_format="dicom-seg"))
    bright = (ct(4) > 100).astype(np.uint8)
    half = bright.copy()
    half[:, :, : GRID.size[0] // 2] = 0
    for truth, expected in ((bright, 1.0), (half, 2 * half.sum() / (half.sum() + bright.sum())),
                            (np.zeros_like(bright), 0.0)):
        write(tmp_path / "truth" / "patient.nii.gz", truth)
        sent, segment = recording()
        report = run_batch(cases_of(tmp_path / "in"), segment,
                           settings(tmp_path / "out", output_format="dicom-seg", truth_dir=tmp_path / "truth"))
        (row,) = report.rows
        assert sent == [] and row.status == "ok" and row.dice["bright"] == pytest.approx(expected)


def test_columns_a_person_added_to_the_report_stay_and_moved_columns_still_resume(tmp_path):
    dataset(tmp_path / "in", 2)
    run_batch(cases_of(tmp_path / "in"), recording()[1], settings(tmp_path / "out"))
    report_path = tmp_path / "out" / "report.csv"
    with open(report_path, newline="") as stream:
        table = list(csv.DictReader(stream))
    columns = ["notes", *reversed(list(table[0]))]  # a column of notes first, ours in another order
    with open(report_path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, columns)
        writer.writeheader()
        for row in table:
            writer.writerow({**row, "notes": f"checked {row['case']} by hand"})
        writer.writerow({column: "" for column in columns})  # a spreadsheet's row of empty cells
    write(tmp_path / "in" / "case_2.nii.gz", ct(2))
    sent, segment = recording()
    report = run_batch(cases_of(tmp_path / "in"), segment, settings(tmp_path / "out"))
    assert len(sent) == 1 and sorted(row.case for row in report.rows) == ["case_0", "case_1", "case_2"]
    with open(report_path, newline="") as stream:
        kept = {row["case"]: row["notes"] for row in csv.DictReader(stream)}
    assert kept == {"case_0": "checked case_0 by hand", "case_1": "checked case_1 by hand", "case_2": ""}
    # A case sent again keeps its note.
    run_batch(cases_of(tmp_path / "in" / "case_0.nii.gz"), recording()[1], settings(tmp_path / "out", resume=False))
    with open(report_path, newline="") as stream:
        assert {row["case"]: row["notes"] for row in csv.DictReader(stream)}["case_0"] == "checked case_0 by hand"


def test_a_batch_stops_when_its_outdir_is_removed_and_never_writes_into_the_folder_made_in_its_place(tmp_path):
    import shutil

    from ClaraAWSLib.core.errors import OutputError

    dataset(tmp_path / "in", 4)
    outdir = tmp_path / "out"
    count = [0]
    sent, segment = recording()

    def meanwhile(volume):
        count[0] += 1
        if count[0] == 2:  # the user deletes OUTDIR; another batch makes it again and writes its report
            shutil.rmtree(outdir)
            outdir.mkdir()
            (outdir / "report.csv").write_text("case,status,seconds,message\nother,ok,1.0,\n")
        return segment(volume)

    with pytest.raises(OutputError, match="was removed or replaced while the batch ran"):
        run_batch(cases_of(tmp_path / "in"), meanwhile, settings(outdir))
    assert sorted(p.name for p in outdir.iterdir()) == ["report.csv"]
    assert (outdir / "report.csv").read_text() == "case,status,seconds,message\nother,ok,1.0,\n"


def test_half_written_files_a_killed_batch_left_are_removed_by_the_next(tmp_path):
    dataset(tmp_path / "in", 1)
    (tmp_path / "out").mkdir()
    stale = [".report.csv.0a1b2c3d.partial", ".case_0.deadbeef.partial.nii.gz"]
    for name in stale:
        (tmp_path / "out" / name).write_bytes(b"half")
    (tmp_path / "out" / ".my_notes.partial.txt").write_text("not ours: no 8-hex token")
    run_batch(cases_of(tmp_path / "in"), recording()[1], settings(tmp_path / "out"))
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert not names & set(stale) and ".my_notes.partial.txt" in names


def test_an_empty_outdir_argument_is_a_bad_argument(tmp_path, monkeypatch, capsys):
    from ClaraAWSLib.cli import main

    dataset(tmp_path / "in", 1)
    monkeypatch.chdir(tmp_path)
    assert main(["batch", "--server", "http://127.0.0.1:9", "--model", "m", str(tmp_path / "in"), "-o", ""]) == 2
    assert "-o OUTDIR is empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_write_refused_for_permission_says_so_not_to_free_disk_space(tmp_path):
    from ClaraAWSLib.core.errors import OutputError
    from ClaraAWSLib.datasets.files import replace_atomically

    def refused(partial):
        raise PermissionError(1, "Operation not permitted")

    with pytest.raises(OutputError) as raised:
        replace_atomically(tmp_path / "report.csv", refused, "report")
    assert "make the folder writable" in str(raised.value) and "disk space" not in str(raised.value)
