"""Batch INPUT kinds expanded into cases: image file, folder (images and DICOM series), MSD dataset.json,
and s3://bucket/prefix/ against moto on 127.0.0.1 (listed page by page, each object streamed when loaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import rotation

from ClaraAWSLib.core.errors import InputError
from ClaraAWSLib.core.geometry import ImageGrid, Volume
from ClaraAWSLib.datasets.inputs import CaseIds, SeveralSeries, case_id_of, expand_inputs

GRID = ImageGrid((10, 8, 6), (0.9, 1.3, 2.7), (-10.5, 5.25, -30.0), rotation(12, -7, 25))


def image(seed: int) -> Volume:
    return Volume(np.random.default_rng(seed).integers(-500, 500, size=GRID.size[::-1]).astype(np.int16), GRID)


def write(path, volume: Volume) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(volume.to_sitk(), str(path))


def same(a: Volume, b: Volume) -> bool:
    return a.grid.matches(b.grid) and np.array_equal(a.array, b.array)


@pytest.mark.parametrize("name, expected", [
    ("case_01.nii.gz", "case_01"), ("CASE.NII.GZ", "CASE"), ("x.nii", "x"), ("y.nrrd", "y"), ("z.mha", "z"),
    ("a:b?.mha", "a_b_"), (".hidden.nii", "hidden"), ("patient 7.nii.gz", "patient 7"),
])
def test_case_id_is_the_file_name_without_its_image_extension(name, expected):
    assert case_id_of(name) == expected


def test_case_ids_are_unique_in_a_batch():
    ids = CaseIds()
    assert [ids.claim(x) for x in ("ct", "ct", "ct_2", "CT", "ct")] == ["ct", "ct_2", "ct_2_2", "CT_3", "ct_4"]


def test_an_image_file_is_one_case(tmp_path):
    volume = image(1)
    write(tmp_path / "liver_7.nii.gz", volume)
    (case,) = expand_inputs(str(tmp_path / "liver_7.nii.gz"))
    assert (case.case_id, case.kind) == ("liver_7", "image") and same(case.load(), volume)


def test_a_folder_yields_image_files_and_dicom_series_with_unique_ids(tmp_path):
    pytest.importorskip("pydicom")
    from dicom_fixtures import write_series

    volumes = {n: image(n) for n in range(4)}
    write(tmp_path / "a" / "liver.nii.gz", volumes[0])
    write(tmp_path / "b" / "liver.nii.gz", volumes[1])  # same name in another folder
    write(tmp_path / "b" / "spleen.nrrd", volumes[2])
    write(tmp_path / ".cache" / "hidden.nii.gz", volumes[3])
    write(tmp_path / "out" / "liver.nii.gz", volumes[3])  # OUTDIR inside INPUT: excluded
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    write_series(tmp_path / "dicom" / "liver", volumes[3].array, GRID)  # a series named like a file case

    cases = list(expand_inputs(str(tmp_path), exclude=[tmp_path / "out"]))
    assert [(c.case_id, c.kind) for c in cases] == [
        ("liver", "image"), ("liver_2", "image"), ("spleen", "image"), ("liver_3", "dicom")]
    assert same(cases[0].load(), volumes[0]) and same(cases[1].load(), volumes[1]) and same(cases[2].load(), volumes[2])
    assert same(cases[3].load(), volumes[3])  # the DICOM series, on its oblique grid


def test_an_empty_folder_or_a_wrong_input_is_one_sentence(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no image files"):
        list(expand_inputs(str(tmp_path / "empty")))
    with pytest.raises(InputError, match="does not exist"):
        list(expand_inputs(str(tmp_path / "missing")))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="is not an image file"):
        list(expand_inputs(str(tmp_path / "notes.txt")))


def test_msd_dataset_json_lists_its_test_images_and_a_missing_one_fails_alone(tmp_path):
    volumes = [image(10), image(11)]
    write(tmp_path / "imagesTs" / "spleen_1.nii.gz", volumes[0])
    write(tmp_path / "imagesTs" / "spleen_7.nii.gz", volumes[1])
    dataset = {"name": "Spleen", "training": [{"image": "./imagesTr/spleen_2.nii.gz", "label": "./labelsTr/x"}],
               "test": ["./imagesTs/spleen_1.nii.gz", "./imagesTs/spleen_3.nii.gz", {"image": "imagesTs/spleen_7.nii.gz"}]}
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))

    cases = list(expand_inputs(str(tmp_path / "dataset.json")))
    assert [c.case_id for c in cases] == ["spleen_1", "spleen_3", "spleen_7"]
    assert same(cases[0].load(), volumes[0]) and same(cases[2].load(), volumes[1])
    with pytest.raises(InputError, match="does not exist"):
        cases[1].load()

    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match="not a readable JSON"):
        list(expand_inputs(str(tmp_path / "broken.json")))
    (tmp_path / "training-only.json").write_text(json.dumps({"training": []}))
    with pytest.raises(InputError, match="no 'test' list"):
        list(expand_inputs(str(tmp_path / "training-only.json")))


# --- s3://bucket/prefix/ against moto ------------------------------------------------------------------


@pytest.fixture
def bucket(moto_endpoint, aws_env, tmp_path):
    """Bucket 'scans' with five NIfTI objects under ct/ (one a non-image, one under other/)."""
    from service_fixtures import client

    s3 = client("s3", moto_endpoint)
    s3.create_bucket(Bucket="scans")
    volumes = {}
    for n in range(5):
        path = tmp_path / "upload" / f"case_{n}.nii.gz"
        volumes[f"case_{n}"] = image(20 + n)
        write(path, volumes[f"case_{n}"])
        s3.put_object(Bucket="scans", Key=f"ct/Doe Jane/case_{n}.nii.gz", Body=path.read_bytes())
    s3.put_object(Bucket="scans", Key="ct/readme.txt", Body=b"not an image")
    s3.put_object(Bucket="scans", Key="ct/broken.nii.gz", Body=b"not a gzip file")
    s3.put_object(Bucket="scans", Key="other/case_9.nii.gz", Body=b"x")
    return s3, volumes


pytest.importorskip("moto")
from aws_fixtures import aws_env, moto_endpoint, moto_server  # noqa: E402,F401


def counted(s3):
    calls = []
    s3.meta.events.register("before-call.s3.*", lambda model, **kw: calls.append(model.name))
    return calls


def test_s3_prefix_is_listed_page_by_page_and_each_object_streamed_when_loaded(bucket, tmp_path, monkeypatch):
    s3, volumes = bucket
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    calls = counted(s3)
    cases = expand_inputs("s3://scans/ct/", s3_client=s3, page_size=2)

    first = next(cases)
    assert calls == ["ListObjectsV2"]  # one page so far, nothing downloaded
    assert (first.case_id, first.kind, first.source) == ("case_0", "s3", "s3://scans/ct/Doe Jane/case_0.nii.gz")
    rest = list(cases)
    assert [c.case_id for c in rest] == ["case_1", "case_2", "case_3", "case_4", "broken"]  # S3's key order
    assert calls.count("ListObjectsV2") == 4 and "GetObject" not in calls  # 7 keys, 2 per page

    loaded = rest[1].load()
    assert same(loaded, volumes["case_2"]) and calls.count("GetObject") == 1
    assert list(temporary.iterdir()) == []  # the temporary file went with its case

    with pytest.raises(InputError) as caught:
        rest[-1].load()
    assert "s3://scans/ct/broken.nii.gz" in str(caught.value) and str(temporary) not in str(caught.value)
    assert list(temporary.iterdir()) == []


def test_an_s3_prefix_has_its_total_before_the_first_case_is_sent_when_its_listing_fits_ahead(bucket):
    """The progress bar's total (and ETA) for s3:// INPUT: the listing runs ahead of the cases sent, at most
    ``ahead`` cases; objects are still downloaded only when their case is loaded."""
    from types import SimpleNamespace

    from ClaraAWSLib.cli.batch_command import listed_ahead

    s3, _ = bucket
    calls = counted(s3)
    display = SimpleNamespace(total=None)
    cases = listed_ahead(expand_inputs("s3://scans/ct/", s3_client=s3, page_size=2), display)
    first = next(cases)
    assert first.case_id == "case_0" and display.total == 6  # 7 keys, a readme.txt among them
    assert calls == ["ListObjectsV2"] * 4
    assert [c.case_id for c in cases] == ["case_1", "case_2", "case_3", "case_4", "broken"]
    assert display.total == 6 and "GetObject" not in calls

    display, totals = SimpleNamespace(total=None), []
    cases = listed_ahead(expand_inputs("s3://scans/ct/", s3_client=s3, page_size=2), display, ahead=2)
    for case in cases:
        totals.append(display.total)
    # Case i is yielded once cases up to i + 2 were asked for: the sixth and last is asked for at i = 4.
    assert totals == [None, None, None, None, 6, 6]


def test_s3_through_the_aws_settings_and_a_vanished_object(bucket, moto_endpoint):
    s3, volumes = bucket
    cases = list(expand_inputs("s3://scans/ct/Doe Jane/", endpoint_url=moto_endpoint))
    assert [c.case_id for c in cases] == [f"case_{n}" for n in range(5)]
    assert same(cases[0].load(), volumes["case_0"])
    s3.delete_object(Bucket="scans", Key="ct/Doe Jane/case_1.nii.gz")
    with pytest.raises(InputError, match="no longer exists"):
        cases[1].load()


def test_an_s3_object_replaced_under_its_key_gets_another_input_stamp(bucket):
    s3, _ = bucket
    stamps = {c.case_id: c.input_stamp() for c in expand_inputs("s3://scans/ct/", s3_client=s3)}
    assert len(set(stamps.values())) == len(stamps) and all(stamps.values())
    s3.put_object(Bucket="scans", Key="ct/Doe Jane/case_1.nii.gz", Body=b"a corrected scan")
    again = {c.case_id: c.input_stamp() for c in expand_inputs("s3://scans/ct/", s3_client=s3)}
    assert again["case_1"] != stamps["case_1"]
    assert {k: v for k, v in again.items() if k != "case_1"} == {k: v for k, v in stamps.items() if k != "case_1"}
    assert all("Doe" not in stamp for stamp in again.values())


@pytest.fixture
def dicom_bucket(moto_endpoint, aws_env, tmp_path):
    """Bucket 'hospital': an oblique series with scanner names (no suffix), one with .dcm names, two series in
    one folder, a README without a suffix and a NIfTI beside them; the slices of each series were written
    locally first, and that local folder is what the S3 case must read like."""
    pytest.importorskip("pydicom")
    from dicom_fixtures import write_series
    from service_fixtures import client

    s3 = client("s3", moto_endpoint)
    s3.create_bucket(Bucket="hospital")
    local = tmp_path / "local"
    write_series(local / "a", image(31).array, GRID, names=[f"IM{n:04d}" for n in range(GRID.size[2])])
    write_series(local / "b", image(32).array, GRID)
    write_series(local / "two", image(33).array, GRID, series_number=1)
    write_series(local / "two", image(34).array, GRID, series_number=2)
    for folder, prefix in (("a", "Doe Jane/ct/"), ("b", "Roe Rick/ct/"), ("two", "Mixed/")):
        for path in sorted((local / folder).iterdir()):
            s3.put_object(Bucket="hospital", Key=f"dicom/{prefix}{path.name}", Body=path.read_bytes())
    s3.put_object(Bucket="hospital", Key="dicom/README", Body=b"scans of the week")
    write(tmp_path / "upload" / "x.nii.gz", image(35))
    s3.put_object(Bucket="hospital", Key="dicom/Roe Rick/x.nii.gz", Body=(tmp_path / "upload" / "x.nii.gz").read_bytes())
    return s3, local


def test_s3_dicom_folders_are_series_read_like_their_local_copies(dicom_bucket, tmp_path, monkeypatch):
    import pydicom

    from ClaraAWSLib.datasets.dicom_series import find_series, read_dicom_folder, read_series

    s3, local = dicom_bucket
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    calls = counted(s3)
    cases = list(expand_inputs("s3://hospital/dicom/", s3_client=s3, page_size=7))
    # In S3's key order, a folder as soon as the listing has passed it; README is no case.
    assert [(c.case_id, c.kind) for c in cases] == [("ct", "s3-dicom"), ("Mixed", "s3-dicom"), ("ct_2", "s3-dicom"),
                                                    ("x", "s3")]
    # The first 132 bytes of the README and of Doe Jane's first slice (names without a suffix); nothing downloaded.
    assert calls.count("GetObject") == 2
    by_source = {c.source: c for c in cases}
    for folder, source in (("a", "s3://hospital/dicom/Doe Jane/ct/"), ("b", "s3://hospital/dicom/Roe Rick/ct/")):
        assert same(by_source[source].load(), read_dicom_folder(local / folder))
    assert list(temporary.iterdir()) == []
    # A folder of two series is one case when listed (its objects are not read then), two once opened: the
    # first keeps the folder's name, the second takes the next free one, each read like its local copy.
    with pytest.raises(SeveralSeries) as caught:
        by_source["s3://hospital/dicom/Mixed/"].load()
    split = caught.value.cases
    assert [c.case_id for c in split] == ["Mixed", "Mixed_2"] and len({c.input_name for c in split}) == 2
    assert list(temporary.iterdir()) == []
    local_series = sorted(find_series(local / "two"), key=lambda series: series.files[0].name)
    by_number = {int(pydicom.dcmread(series.files[0]).SeriesNumber): read_series(series) for series in local_series}
    assert same(split[0].load(), by_number[1]) and same(split[1].load(), by_number[2])
    assert sorted(split[0].keys + split[1].keys) == sorted(by_source["s3://hospital/dicom/Mixed/"].keys)
    assert list(temporary.iterdir()) == []

    stamp = by_source["s3://hospital/dicom/Doe Jane/ct/"].input_stamp()
    first = next(local.joinpath("a").iterdir())
    s3.put_object(Bucket="hospital", Key=f"dicom/Doe Jane/ct/{first.name}", Body=first.read_bytes() + b"\0\0")
    again = {c.source: c for c in expand_inputs("s3://hospital/dicom/", s3_client=s3)}
    assert again["s3://hospital/dicom/Doe Jane/ct/"].input_stamp() != stamp
    assert again["s3://hospital/dicom/Roe Rick/ct/"].input_stamp() == by_source["s3://hospital/dicom/Roe Rick/ct/"].input_stamp()


def test_a_cases_downloaded_slices_are_gone_before_its_row_is_delivered(dicom_bucket, tmp_path, monkeypatch):
    """The last row delivered may end the process (the command returns, daemon workers die): a worker still
    removing its download folder then left slices naming the patient in the temporary folder."""
    import tempfile

    from ClaraAWSLib.core.errors import InputError
    from ClaraAWSLib.datasets.batch import BatchSettings, process_case

    s3, _ = dicom_bucket
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    monkeypatch.setattr(tempfile, "tempdir", None)
    (case,) = expand_inputs("s3://hospital/dicom/Doe Jane/", s3_client=s3)
    settings = BatchSettings(outdir=tmp_path / "out", label_names=["bright"], model_name="m")
    settings.outdir.mkdir()  # as run_batch makes it before any case
    seen = []

    def deliver(row):
        seen.append((row.status, sorted(path.name for path in temporary.iterdir())))

    def refused(volume):
        raise InputError("The model refused this image.")

    process_case(case, lambda volume: Volume((volume.array > 100).astype(np.uint8), volume.grid), settings,
                 deliver=deliver)
    process_case(case, refused, settings, deliver=deliver)
    assert seen == [("ok", []), ("failed", [])]


def test_an_s3_series_gets_a_dicom_seg_referencing_its_slices(dicom_bucket, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("highdicom")
    from ClaraAWSLib.datasets.batch import BatchSettings, run_batch

    s3, local = dicom_bucket
    settings = BatchSettings(outdir=tmp_path / "out", label_names=["bright"], model_name="m", output_format="dicom-seg")

    def bright(volume):
        return Volume((volume.array > 100).astype(np.uint8), volume.grid)

    report = run_batch(expand_inputs("s3://hospital/dicom/Doe Jane/", s3_client=s3), bright, settings)
    assert [(row.case, row.status) for row in report.rows] == [("ct", "ok")]
    seg = pydicom.dcmread(tmp_path / "out" / "ct.dcm")
    sources = {pydicom.dcmread(path).SOPInstanceUID for path in (local / "a").iterdir()}
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert seg.Modality == "SEG" and referenced == sources
    assert int(seg.NumberOfFrames) == int(np.count_nonzero((image(31).array > 100).any(axis=(1, 2))))


def test_an_s3_folder_of_two_series_is_two_cases_and_a_rerun_sends_neither(dicom_bucket, tmp_path):
    import pydicom

    from ClaraAWSLib.datasets.batch import BatchSettings, run_batch
    from ClaraAWSLib.datasets.dicom_series import find_series, read_series

    s3, local = dicom_bucket
    sent = []

    def bright(volume):
        sent.append(volume)
        return Volume((volume.array > 100).astype(np.uint8), volume.grid)

    settings = BatchSettings(outdir=tmp_path / "out", label_names=["bright"], model_name="m", workers=2)
    more = []
    report = run_batch(expand_inputs("s3://hospital/dicom/", s3_client=s3), bright, settings, more_cases=more.append)
    assert sorted((row.case, row.status) for row in report.rows) == [
        ("Mixed", "ok"), ("Mixed_2", "ok"), ("ct", "ok"), ("ct_2", "ok"), ("x", "ok")]
    assert more == [1] and len(sent) == 5
    for series in find_series(local / "two"):
        number = int(pydicom.dcmread(series.files[0]).SeriesNumber)
        volume = read_series(series)
        written = sitk.ReadImage(str(tmp_path / "out" / f"{'Mixed' if number == 1 else 'Mixed_2'}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(written), (volume.array > 100).astype(np.uint8))
    run_batch(expand_inputs("s3://hospital/dicom/", s3_client=s3), bright, settings)
    assert len(sent) == 5  # the folder is downloaded again to split it, but neither series is sent


def test_a_missing_bucket_is_one_sentence(moto_endpoint, aws_env):
    with pytest.raises(InputError, match="bucket nothing-here does not exist"):
        list(expand_inputs("s3://nothing-here/ct/", endpoint_url=moto_endpoint))


def test_an_empty_or_mistyped_s3_prefix_is_one_sentence_not_an_empty_batch(bucket):
    s3, _ = bucket
    for prefix in ("nothing-here/", "CT/"):  # S3 keys are case-sensitive: "CT/" lists nothing of "ct/"
        with pytest.raises(InputError, match=f"s3://scans/{prefix} holds no image objects"):
            list(expand_inputs(f"s3://scans/{prefix}", s3_client=s3))
    s3.put_object(Bucket="scans", Key="notes/readme.txt", Body=b"no image here")
    with pytest.raises(InputError, match="holds no image objects"):
        list(expand_inputs("s3://scans/notes/", s3_client=s3))


def test_an_input_reached_twice_is_one_case(bucket, tmp_path):
    """A folder and a file in it, the same folder twice, overlapping prefixes: each volume is sent once."""
    s3, _ = bucket
    write(tmp_path / "in" / "liver.nii.gz", image(1))
    write(tmp_path / "in" / "sub" / "spleen.nii.gz", image(2))
    ids = CaseIds()
    specs = [str(tmp_path / "in" / "liver.nii.gz"), str(tmp_path / "in"), str(tmp_path / "in" / "sub"),
             "s3://scans/ct/", "s3://scans/ct/Doe Jane/"]
    cases = [case for spec in specs for case in expand_inputs(spec, s3_client=s3, ids=ids)]
    assert sorted(case.case_id for case in cases) == ["broken", "case_0", "case_1", "case_2", "case_3", "case_4",
                                                      "liver", "spleen"]
    assert len({case.input_name for case in cases}) == len(cases)


def test_download_folders_are_removed_when_the_batch_stops_at_once(tmp_path):
    """An interrupted batch ends with os._exit, which runs no ``finally``: the downloads go first, in a child
    process as the command does it."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import threading, sys
        from pathlib import Path
        from ClaraAWSLib.cli.batch_command import _stop
        from ClaraAWSLib.cli.batch_progress import BatchProgress
        from ClaraAWSLib.datasets.batch import WORKER_NAME
        from ClaraAWSLib.datasets.inputs import download_folder

        started, never = threading.Event(), threading.Event()

        def download():
            with download_folder() as folder:
                (Path(folder) / "slice00001.dcm").write_bytes(b"PatientName Doe^Jane")
                started.set()
                never.wait()

        threading.Thread(target=download, name=WORKER_NAME + "-1", daemon=True).start()
        started.wait(10)
        _stop("clara-aws: interrupted.", BatchProgress(sys.stderr, tty=False, columns=80))
        print("not reached")
    """)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = dict(os.environ, TMPDIR=str(temporary))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 130 and "not reached" not in done.stdout, done.stderr
    assert "interrupted" in done.stderr
    assert list(temporary.iterdir()) == []
