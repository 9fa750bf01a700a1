"""DICOM SEG written from labels on an oblique source series, read back by highdicom and by pydicom.

The pydicom check is independent of highdicom: each frame's referenced segment and its plane position
(ImagePositionPatient) are mapped to a slice of the grid the test chose, and the frame's bits compared
with that slice's labels. The SNOMED CT codes expected are typed here from the DICOM standard's tables.
"""

from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
highdicom = pytest.importorskip("highdicom")

from conftest import rotation  # noqa: E402
from dicom_fixtures import PATIENT_ID, slice_position, write_series  # noqa: E402

from ClaraAWSLib.core.errors import GeometryError, InputError  # noqa: E402
from ClaraAWSLib.core.geometry import ImageGrid, Volume  # noqa: E402
from ClaraAWSLib.datasets import find_series  # noqa: E402
from ClaraAWSLib.datasets.dicom_seg import read_dicom_seg, segment_codes, write_dicom_seg  # noqa: E402

GRID = ImageGrid((18, 14, 8), (0.8, 1.2, 3.0), (-80.5, 33.25, -210.0), rotation(-9, 14, 31))
NAMES = ["liver", "spleen", "left kidney", "liver tumour", "marrow"]


@pytest.fixture
def source(tmp_path):
    ct = np.random.default_rng(5).integers(-200, 300, size=GRID.size[::-1]).astype(np.int16)
    paths = write_series(tmp_path / "ct", ct, GRID)
    return find_series(tmp_path)[0], paths


def labels_on(grid: ImageGrid) -> Volume:
    k, j, i = np.indices(grid.size[::-1])
    array = np.zeros(grid.size[::-1], np.uint8)
    array[(k >= 1) & (k <= 5) & (j < 7) & (i < 9)] = 1
    array[(k >= 3) & (j >= 8) & (i >= 10)] = 2
    array[(k == 6) & (i < 4)] = 3
    array[(k == 2) & (j == 2) & (i == 2)] = 4  # one voxel of tumour inside the liver's box
    return Volume(array, grid)  # value 5 (marrow) is named by the model but absent


def test_segments_read_back_by_pydicom_match_the_labels_on_the_source_grid(source, tmp_path):
    series, paths = source
    labels = labels_on(GRID)
    output = write_dicom_seg(labels, series, NAMES, tmp_path / "out" / "ct.dcm", model_name="clara_ct_seg")
    ds = pydicom.dcmread(output)

    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.PatientID == PATIENT_ID  # the SEG belongs to the source's patient and study
    assert ds.StudyInstanceUID == pydicom.dcmread(paths[0]).StudyInstanceUID
    sources = {pydicom.dcmread(p).SOPInstanceUID for p in paths}
    referenced = {item.ReferencedSOPInstanceUID
                  for item in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == sources
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    assert [s.SegmentLabel for s in ds.SegmentSequence] == NAMES

    frames = ds.pixel_array.reshape(-1, GRID.size[1], GRID.size[0])
    rebuilt = np.zeros(GRID.size[::-1], np.uint8)
    slice_by_position = {tuple(np.round(slice_position(GRID, k), 3)): k for k in range(GRID.size[2])}
    for frame, groups in zip(frames, ds.PerFrameFunctionalGroupsSequence):
        number = groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        position = tuple(np.round([float(v) for v in groups.PlanePositionSequence[0].ImagePositionPatient], 3))
        k = slice_by_position[position]
        assert not np.any(rebuilt[k][frame > 0]), "two segments claim one voxel"
        rebuilt[k][frame > 0] = number
    assert np.array_equal(rebuilt, labels.array)
    orientation = [float(v) for v in ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                   .ImageOrientationPatient]
    assert np.allclose(orientation, list(GRID.direction[:, 0]) + list(GRID.direction[:, 1]), atol=1e-6)


def test_highdicom_reads_the_same_label_map_per_source_instance(source, tmp_path):
    series, paths = source
    labels = labels_on(GRID)
    output = write_dicom_seg(labels, series, NAMES, tmp_path / "seg.dcm", model_name="clara_ct_seg")
    seg = highdicom.seg.segread(str(output))
    assert seg.number_of_segments == len(NAMES)
    by_uid = {pydicom.dcmread(p).SOPInstanceUID: int(pydicom.dcmread(p).InstanceNumber) - 1 for p in paths}
    uids = sorted(by_uid, key=by_uid.get)
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    assert np.array_equal(pixels, labels.array)


def test_each_segment_carries_its_name_and_snomed_codes(source, tmp_path):
    series, _ = source
    output = write_dicom_seg(labels_on(GRID), series, NAMES, tmp_path / "seg.dcm", model_name="clara_ct_seg",
                             model_version="3.1")
    segments = pydicom.dcmread(output).SegmentSequence

    def codes(segment):
        kind = segment.SegmentedPropertyTypeCodeSequence[0]
        modifier = getattr(kind, "SegmentedPropertyTypeModifierCodeSequence", None)
        return (segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue, kind.CodeValue,
                modifier[0].CodeValue if modifier else None, kind.CodingSchemeDesignator)

    assert [codes(s) for s in segments] == [
        ("91723000", "10200004", None, "SCT"),       # anatomical structure: liver
        ("91723000", "78961009", None, "SCT"),       # spleen
        ("91723000", "64033007", "7771000", "SCT"),  # kidney, modifier left
        ("49755003", "108369006", None, "SCT"),      # morphologically abnormal structure: neoplasm
        ("85756007", "85756007", None, "SCT"),       # tissue: tissue (no specific code known)
    ]
    algorithm = segments[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("clara_ct_seg", "3.1")
    assert all(s.SegmentAlgorithmType == "AUTOMATIC" for s in segments)


@pytest.mark.parametrize("label, expected", [
    ("Spleen", ("78961009", None)), ("right_lung", ("39607008", "24028007")), ("kidney_l", ("64033007", "7771000")),
    ("Kidneys", ("64033007", None)), ("pancreas cancer", ("108369006", None)), ("background thing", ("85756007", None)),
])
def test_label_names_map_to_codes(label, expected):
    _, kind, side = segment_codes(label)
    assert (kind[0], side[0] if side else None) == expected


def test_labels_off_the_series_grid_or_unnamed_are_refused_and_nothing_is_written(source, tmp_path):
    series, _ = source
    output = tmp_path / "seg.dcm"
    shifted = ImageGrid(GRID.size, GRID.spacing, (GRID.origin[0] + 1.0, *GRID.origin[1:]), GRID.direction)
    with pytest.raises(GeometryError, match="not on the grid of the DICOM series ct"):
        write_dicom_seg(Volume(labels_on(GRID).array, shifted), series, NAMES, output, model_name="m")
    with pytest.raises(InputError, match=r"holds value 5, which none of the model's 4 labels has \(values 1, 2, 3, 4\)"):
        array = labels_on(GRID).array.copy()
        array[0, 0, 0] = 5
        write_dicom_seg(Volume(array, GRID), series, NAMES[:4], output, model_name="m")
    assert list(tmp_path.iterdir()) == [tmp_path / "ct"]


def test_an_existing_output_is_replaced_only_by_a_complete_file(source, tmp_path):
    series, _ = source
    output = tmp_path / "seg.dcm"
    output.write_bytes(b"previous")
    write_dicom_seg(labels_on(GRID), series, NAMES, output, model_name="m")
    assert pydicom.dcmread(output).Modality == "SEG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "seg.dcm"]  # no partial file left behind


def test_a_model_whose_label_values_skip_numbers_gets_one_segment_per_label_and_reads_back_its_values(source,
                                                                                                      tmp_path):
    """MONAI Label models give their own values (DeepEdit's liver is 6): segment n is label n whatever its value."""
    series, _ = source
    values = [6, 2, 9, 12, 14]
    positions = labels_on(GRID).array
    gapped = np.zeros_like(positions)
    for number, value in enumerate(values, start=1):
        gapped[positions == number] = value
    output = write_dicom_seg(Volume(gapped, GRID), series, NAMES, tmp_path / "seg.dcm", model_name="m",
                             label_values=values)
    ds = pydicom.dcmread(output)
    assert [s.SegmentLabel for s in ds.SegmentSequence] == NAMES
    frames = ds.pixel_array.reshape(-1, GRID.size[1], GRID.size[0])
    per_segment = {}
    for frame, groups in zip(frames, ds.PerFrameFunctionalGroupsSequence):
        number = groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        per_segment[number] = per_segment.get(number, 0) + int(np.count_nonzero(frame))
    assert per_segment == {n: int(np.count_nonzero(positions == n)) for n in range(1, 5)}  # marrow is absent
    assert np.array_equal(read_dicom_seg(output, series, NAMES, values).array, gapped)
    with pytest.raises(InputError, match="holds value 1, which none of the model's 5 labels has"):
        write_dicom_seg(Volume(positions, GRID), series, NAMES, tmp_path / "other.dcm", model_name="m",
                        label_values=values)
