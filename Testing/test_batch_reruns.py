"""What a researcher does between runs of `clara-aws batch` into one OUTDIR: add --truth, switch the model,
rearrange INPUTs, fix a broken file, point -o at the images by mistake. A rerun sends exactly what is not
done from this input and model, and the exit code and summary speak of this run's cases only.

Dice is recomputed here from voxel index sets of the files the run wrote, not by the code under test."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import rotation

from ClaraAWSLib.core.geometry import ImageGrid, Volume
from ClaraAWSLib.datasets.batch import BatchSettings, run_batch
from ClaraAWSLib.datasets.inputs import CaseIds, expand_inputs

GRID = ImageGrid((14, 10, 6), (0.8, 1.1, 2.0), (-12.0, 4.0, 7.5), rotation(5, -10, 20))
NAMES = ["bright", "dark"]
MODEL = "phantom_abdomen_seg"


def ct(seed):
    return np.random.default_rng(seed).integers(-300, 300, size=GRID.size[::-1]).astype(np.int16)


def write(path, array, grid=GRID):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(Volume(array, grid).to_sitk(), str(path))


def labels_of(volume: Volume) -> Volume:
    out = np.zeros(volume.array.shape, np.uint8)
    out[volume.array > 100] = 1
    out[volume.array < -100] = 2
    return Volume(out, volume.grid)


def recording():
    sent = []

    def segment(volume):
        sent.append(volume.array.copy())
        return labels_of(volume)

    return sent, segment


def rows(outdir):
    with open(outdir / "report.csv", newline="") as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


def dice_by_hand(result, truth, value):
    a, b = set(map(tuple, np.argwhere(result == value))), set(map(tuple, np.argwhere(truth == value)))
    return None if not a and not b else 2 * len(a & b) / (len(a) + len(b))


def cases_of(*specs):
    ids = CaseIds()
    return [case for spec in specs for case in expand_inputs(str(spec), ids=ids)]


def test_truth_given_on_a_rerun_scores_the_cases_done_earlier_without_sending_them(tmp_path):
    for n in range(3):
        write(tmp_path / "in" / f"case_{n}.nii.gz", ct(n))
    truth = {n: labels_of(Volume(ct(n), GRID)).array.copy() for n in (0, 1)}
    truth[0][:, :, :5] = 0  # a reference that disagrees on a band of columns
    truth[1][truth[1] == 2] = 0
    for n, array in truth.items():
        write(tmp_path / "truth" / f"case_{n}.nii.gz", array)
    settings = BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="m")
    run_batch(cases_of(tmp_path / "in"), recording()[1], settings)
    assert "dice_bright" not in rows(tmp_path / "out")["case_0"]

    sent, segment = recording()
    with_truth = BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="m", truth_dir=tmp_path / "truth")
    report = run_batch(cases_of(tmp_path / "in"), segment, with_truth)
    assert sent == []  # nothing changed: nothing sent
    table = rows(tmp_path / "out")
    for n in (0, 1):
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"case_{n}.nii.gz")))
        for value, name in enumerate(NAMES, start=1):
            expected = dice_by_hand(written, truth[n], value)
            assert float(table[f"case_{n}"][f"dice_{name}"]) == pytest.approx(expected, abs=1e-4)
    assert table["case_2"]["dice_bright"] == "" and table["case_2"]["status"] == "ok"  # no truth file for it
    assert {row.status for row in report.rows} == {"ok"}


def test_a_truth_file_that_cannot_be_compared_leaves_the_case_ok_with_a_note(tmp_path):
    write(tmp_path / "in" / "shifted.nii.gz", ct(1))
    write(tmp_path / "in" / "garbled.nii.gz", ct(2))
    moved = ImageGrid(GRID.size, GRID.spacing, (-11.5, 4.0, 7.5), GRID.direction)
    write(tmp_path / "truth" / "shifted.nii.gz", labels_of(Volume(ct(1), GRID)).array, moved)
    (tmp_path / "truth" / "garbled.nii.gz").write_bytes(b"\x1f\x8b this is no image")
    settings = BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="m", truth_dir=tmp_path / "truth")
    run_batch(cases_of(tmp_path / "in"), recording()[1], settings)
    table = rows(tmp_path / "out")
    for case in ("shifted", "garbled"):
        assert table[case]["status"] == "ok" and table[case]["dice_bright"] == ""
        assert float(table[case]["bright_ml"]) > 0 and (tmp_path / "out" / f"{case}.nii.gz").is_file()
        assert table[case]["message"].startswith(f"No Dice against the truth file {tmp_path / 'truth' / case}.nii.gz: ")
    assert "grid" in table["shifted"]["message"]
    sent, segment = recording()
    run_batch(cases_of(tmp_path / "in"), segment, settings)
    assert sent == []  # the segmentations were fine: a rerun does not send them again


def test_a_rerun_with_another_model_segments_every_case_again(tmp_path):
    for n in range(2):
        write(tmp_path / "in" / f"case_{n}.nii.gz", ct(n))
    run_batch(cases_of(tmp_path / "in"), recording()[1],
              BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="spleen_v1"))
    sent, segment = recording()
    run_batch(cases_of(tmp_path / "in"), segment,
              BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="spleen_v2"))
    assert len(sent) == 2 and {row["model"] for row in rows(tmp_path / "out").values()} == {"spleen_v2"}


def test_a_case_id_that_now_names_another_file_is_segmented_again(tmp_path):
    """Two sites' patient.nii, the same size and time (unpacked from one archive): the INPUT order decides which
    one is `patient`, so swapping the INPUTs must not leave site A's labels under site B's case."""
    site_a, site_b = tmp_path / "siteA" / "patient.nii", tmp_path / "siteB" / "patient.nii"
    write(site_a, ct(1))
    write(site_b, ct(2))
    os.utime(site_b, ns=(site_a.stat().st_atime_ns, site_a.stat().st_mtime_ns))
    assert site_a.stat().st_size == site_b.stat().st_size
    settings = BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="m")
    run_batch(cases_of(site_a.parent, site_b.parent), recording()[1], settings)
    sent, segment = recording()
    run_batch(cases_of(site_b.parent, site_a.parent), segment, settings)
    assert len(sent) == 2
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "patient.nii.gz")))
    assert np.array_equal(written, labels_of(Volume(ct(2), GRID)).array)
    assert rows(tmp_path / "out")["patient"]["input"] == str(site_b.resolve())


# --- clara-aws batch, as typed ------------------------------------------------------------------------------


def test_a_second_dataset_with_the_same_file_names_says_which_outputs_it_replaced(tmp_path, reference_server,
                                                                                 phantom_small, capsys):
    volume = phantom_small.ct
    write(tmp_path / "site1" / "case001.nii.gz", volume.array, volume.grid)
    write(tmp_path / "site2" / "case001.nii.gz", volume.array[::-1].copy(), volume.grid)
    assert batch(reference_server, tmp_path / "site1", "-o", tmp_path / "res") == 0
    capsys.readouterr()
    assert batch(reference_server, tmp_path / "site2", "-o", tmp_path / "res") == 0
    assert "1 case (case001) replaced outputs an earlier run wrote from other inputs" in capsys.readouterr().err
    row = rows(tmp_path / "res")["case001"]
    assert row["input"] == str((tmp_path / "site2" / "case001.nii.gz").resolve())
    assert str((tmp_path / "site1" / "case001.nii.gz").resolve()) in row["message"]
    assert batch(reference_server, tmp_path / "site2", "-o", tmp_path / "res") == 0  # done: nothing replaced now
    assert "replaced" not in capsys.readouterr().err


def batch(server, *arguments):
    from ClaraAWSLib.cli import main

    return main(["batch", "--server", server.url, "--model", MODEL, "--jobs", "2", *map(str, arguments)])


def test_outdir_that_is_an_input_folder_is_refused_before_anything_is_sent(tmp_path, reference_server, phantom_small,
                                                                          capsys):
    volume = phantom_small.ct
    write(tmp_path / "scans" / "case0.nii.gz", volume.array, volume.grid)
    before = (tmp_path / "scans" / "case0.nii.gz").read_bytes()
    uploads = reference_server.stats.image_uploads
    assert batch(reference_server, tmp_path / "scans", "-o", tmp_path / "scans") == 2
    assert "is the INPUT folder" in capsys.readouterr().err
    # The image named on its own, into its own folder: its output would be the image itself.
    assert batch(reference_server, tmp_path / "scans" / "case0.nii.gz", "-o", tmp_path / "scans") == 2
    assert "which is its own INPUT image" in capsys.readouterr().err
    assert (tmp_path / "scans" / "case0.nii.gz").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "scans").iterdir()) == ["case0.nii.gz"]
    assert reference_server.stats.image_uploads == uploads


def test_exit_code_and_summary_speak_of_this_runs_cases(tmp_path, reference_server, phantom_small, capsys):
    volume = phantom_small.ct
    write(tmp_path / "in" / "good.nii.gz", volume.array, volume.grid)
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"\x1f\x8b not an image")
    assert batch(reference_server, tmp_path / "in", "-o", tmp_path / "out") == 1
    assert "1 case segmented, 1 failed." in capsys.readouterr().err
    (tmp_path / "in" / "broken.nii.gz").unlink()  # the user drops the broken file from the dataset
    assert batch(reference_server, tmp_path / "in", "-o", tmp_path / "out") == 0
    assert "1 case segmented (by an earlier run), 0 failed." in capsys.readouterr().err
    assert rows(tmp_path / "out")["broken"]["status"] == "failed"  # kept: the report is the folder's history


def test_an_unknown_model_is_a_bad_argument_in_one_line(tmp_path, reference_server, phantom_small, capsys):
    from ClaraAWSLib.cli import main

    volume = phantom_small.ct
    write(tmp_path / "in" / "good.nii.gz", volume.array, volume.grid)
    assert main(["batch", "--server", reference_server.url, "--model", "no_such_model", str(tmp_path / "in"),
                 "-o", str(tmp_path / "out")]) == 2
    assert main(["segment", "--server", reference_server.url, "--model", "no_such_model",
                 str(tmp_path / "in" / "good.nii.gz"), "-o", str(tmp_path / "labels.nii.gz")]) == 2
    errors = capsys.readouterr().err.strip().split("\n")
    assert len(errors) == 2 and all(line.startswith("clara-aws: error: The server could not find model "
                                                    "'no_such_model'") for line in errors)
    with pytest.raises(SystemExit) as stop:
        main(["batch", str(tmp_path / "in"), "--jobs", "0"])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().split("\n")
    assert line.startswith("clara-aws batch: error: ") and line.endswith("(see 'clara-aws batch --help').")
    for option, value in (("--jobs", "65"), ("--retries", "21")):  # the option named, as for any bad argument
        with pytest.raises(SystemExit) as stop:
            main(["batch", str(tmp_path / "in"), option, value])
        assert stop.value.code == 2
        (line,) = capsys.readouterr().err.strip().split("\n")
        assert line.startswith(f"clara-aws batch: error: argument {option}: {value} is more than ")


def test_dicom_seg_asked_for_image_files_says_they_stay_nifti(tmp_path, reference_server, phantom_small, capsys):
    volume = phantom_small.ct
    write(tmp_path / "in" / "abdomen.nii.gz", volume.array, volume.grid)
    assert batch(reference_server, tmp_path / "in", "-o", tmp_path / "out", "--format", "dicom-seg") == 0
    assert "1 case (abdomen) came from image files, not DICOM series, so their labels are NIfTI files" in \
        capsys.readouterr().err
    assert (tmp_path / "out" / "abdomen.nii.gz").is_file()


def test_progress_lines_survive_an_itk_call_that_holds_standard_error():
    """A worker's ITK call points file descriptor 2 at a sink for a moment (core.native_stderr); the batch's
    progress goes to a descriptor of its own, so a case finishing then still gets its line. In a child process
    whose standard error is a pipe, as in a log."""
    script = textwrap.dedent("""
        import sys, threading
        from ClaraAWSLib.cli.batch_command import _own_stderr
        from ClaraAWSLib.cli.batch_progress import BatchProgress
        from ClaraAWSLib.core.native_stderr import quiet_native_stderr
        from ClaraAWSLib.datasets.report import CaseRow

        stream = _own_stderr()  # as the command does, before any worker starts
        inside, leave = threading.Event(), threading.Event()

        def itk_call():
            with quiet_native_stderr():
                inside.set()
                leave.wait(10)

        worker = threading.Thread(target=itk_call)
        worker.start()
        inside.wait(10)
        BatchProgress(stream, tty=stream.isatty(), total=2).finished(CaseRow("kept_case", "failed", 1.0,
                                                                            message="Broken."))
        print("lost_line", file=sys.stderr, flush=True)  # what the progress did before: into the sink
        leave.set()
        worker.join()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "kept_case: failed (1.0 s): Broken." in done.stderr and "lost_line" not in done.stderr


def test_outdir_holding_another_cases_input_is_refused_in_either_order(tmp_path, reference_server, phantom_small,
                                                                       capsys):
    volume = phantom_small.ct
    write(tmp_path / "other" / "ct.nii.gz", volume.array, volume.grid)
    write(tmp_path / "out" / "ct.nii.gz", volume.array[::-1].copy(), volume.grid)  # a CT the user keeps in OUTDIR
    kept = {path: path.read_bytes() for path in (tmp_path / "other" / "ct.nii.gz", tmp_path / "out" / "ct.nii.gz")}
    uploads = reference_server.stats.image_uploads
    for inputs in ([tmp_path / "other", tmp_path / "out" / "ct.nii.gz"], [tmp_path / "out" / "ct.nii.gz", tmp_path / "other"]):
        assert batch(reference_server, *inputs, "-o", tmp_path / "out") == 2
        assert "INPUT image" in capsys.readouterr().err
    assert all(path.read_bytes() == data for path, data in kept.items())
    assert reference_server.stats.image_uploads == uploads


def test_files_of_the_user_in_outdir_are_never_replaced(tmp_path, reference_server, phantom_small, capsys):
    volume = phantom_small.ct
    write(tmp_path / "scans" / "ct1.nii.gz", volume.array, volume.grid)  # an unrelated CT, no report.csv beside it
    write(tmp_path / "scans" / "new" / "ct1.nii.gz", volume.array[::-1].copy(), volume.grid)
    before = (tmp_path / "scans" / "ct1.nii.gz").read_bytes()
    uploads = reference_server.stats.image_uploads
    assert batch(reference_server, tmp_path / "scans" / "new", "-o", tmp_path / "scans") == 2
    assert "holds images no batch wrote there (ct1.nii.gz)" in capsys.readouterr().err
    # OUTDIR inside an INPUT folder holding images of its own: the walk leaves it out, so they would go unseen.
    write(tmp_path / "study" / "a" / "x.nii.gz", volume.array, volume.grid)
    write(tmp_path / "study" / "b" / "y.nii", volume.array, volume.grid)
    assert batch(reference_server, tmp_path / "study", "-o", tmp_path / "study" / "b") == 2
    assert "lies inside the INPUT folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "study" / "b").iterdir()] == ["y.nii"]  # nothing written beside it
    assert (tmp_path / "scans" / "ct1.nii.gz").read_bytes() == before
    assert reference_server.stats.image_uploads == uploads


def test_a_write_onto_a_file_of_the_user_fails_that_case_only(tmp_path):
    """The same rule while a batch runs (an S3 prefix is listed as it goes, so it cannot be checked first)."""
    for n in range(2):
        write(tmp_path / "in" / f"case_{n}.nii.gz", ct(n))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "case_1.nii.gz").write_bytes(b"the user's own file")
    report = run_batch(cases_of(tmp_path / "in"), recording()[1],
                       BatchSettings(outdir=tmp_path / "out", label_names=NAMES, model_name="m"))
    status = {row.case: (row.status, row.message) for row in report.rows}
    assert status["case_0"] == ("ok", "") and status["case_1"][0] == "failed"
    assert "would replace a file of yours" in status["case_1"][1]
    assert (tmp_path / "out" / "case_1.nii.gz").read_bytes() == b"the user's own file"


def test_a_rerun_without_truth_keeps_the_dice_of_earlier_runs(tmp_path):
    write(tmp_path / "in" / "case_0.nii.gz", ct(0))
    write(tmp_path / "truth" / "case_0.nii.gz", labels_of(Volume(ct(0), GRID)).array)
    run_batch(cases_of(tmp_path / "in"), recording()[1], BatchSettings(
        outdir=tmp_path / "out", label_names=NAMES, model_name="m", truth_dir=tmp_path / "truth"))
    write(tmp_path / "in" / "case_1.nii.gz", ct(1))
    run_batch(cases_of(tmp_path / "in"), recording()[1], BatchSettings(outdir=tmp_path / "out", label_names=NAMES,
                                                                      model_name="m"))
    table = rows(tmp_path / "out")
    assert float(table["case_0"]["dice_bright"]) == 1.0 and table["case_1"]["dice_bright"] == ""


def test_a_folder_an_earlier_batch_wrote_is_not_walked_for_cases(tmp_path):
    for n in range(2):
        write(tmp_path / "in" / f"case_{n}.nii.gz", ct(n))
    run_batch(cases_of(tmp_path / "in"), recording()[1],
              BatchSettings(outdir=tmp_path / "in" / "seg", label_names=NAMES, model_name="m"))
    assert sorted(case.case_id for case in cases_of(tmp_path / "in")) == ["case_0", "case_1"]
