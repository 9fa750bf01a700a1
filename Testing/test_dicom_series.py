"""DICOM series: found recursively, read onto the exact grid their tags describe, refused when irregular.

Series are written here with pydicom (Testing/dicom_fixtures.py) from a grid chosen by the test: oblique,
anisotropic, off-origin, with shuffled file names. The expected grid is that chosen grid, and each slice's
place is checked again against the ImagePositionPatient pydicom reads back from its file.
"""

from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from conftest import rotation  # noqa: E402
from dicom_fixtures import PATIENT_ID, PATIENT_NAME, slice_position, write_series  # noqa: E402

from ClaraAWSLib.core.errors import InputError  # noqa: E402
from ClaraAWSLib.core.geometry import ImageGrid, Volume  # noqa: E402
from ClaraAWSLib.datasets import find_series, read_input, read_series  # noqa: E402
from ClaraAWSLib.datasets.dicom_series import sorted_slices  # noqa: E402

GRID = ImageGrid((20, 16, 9), (0.7, 1.1, 2.5), (-100.25, 57.5, -312.75), rotation(12, -7, 25))


def voxels(grid: ImageGrid, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 2000, size=grid.size[::-1]).astype(np.int16)


def one_sentence(text: str) -> bool:
    return text.endswith(".") and ". " not in text.replace("...", "") and "\n" not in text


def test_an_oblique_anisotropic_series_is_read_on_its_exact_grid(tmp_path):
    array = voxels(GRID)
    paths = write_series(tmp_path / "ct", array, GRID)
    assert [p.name for p in paths] != sorted(p.name for p in paths), "file names must not follow slice order"
    (series,) = find_series(tmp_path)
    volume = read_series(series)

    assert volume.grid.size == GRID.size
    assert np.allclose(volume.grid.spacing, GRID.spacing, atol=1e-6, rtol=0)
    assert np.allclose(volume.grid.origin, GRID.origin, atol=1e-6, rtol=0)
    assert np.allclose(volume.grid.direction, GRID.direction, atol=1e-8, rtol=0)
    assert np.array_equal(volume.array, array)
    # Each file's own position, read back by pydicom, is where the grid puts that slice's first voxel.
    for path in paths:
        ds = pydicom.dcmread(path)
        k = int(ds.InstanceNumber) - 1
        assert np.allclose(volume.grid.ijk_to_lps() @ [0, 0, k, 1], [*map(float, ds.ImagePositionPatient), 1],
                           atol=1e-6)
        assert np.array_equal(volume.array[k], ds.pixel_array)


def test_slices_written_against_the_normal_are_ordered_along_it(tmp_path):
    # Positions decreasing along the normal of the orientation: slice order must follow the normal.
    flipped = np.column_stack([GRID.direction[:, 0], GRID.direction[:, 1], -GRID.direction[:, 2]])
    written = ImageGrid(GRID.size, GRID.spacing, GRID.origin, flipped)
    array = voxels(written, 2)
    write_series(tmp_path / "ct", array, written)
    volume = read_series(find_series(tmp_path)[0])
    last = slice_position(written, GRID.size[2] - 1)
    assert np.allclose(volume.grid.origin, last, atol=1e-6)  # the first slice along the normal
    assert np.allclose(volume.grid.direction, GRID.direction, atol=1e-8)
    assert np.array_equal(volume.array, array[::-1])


def test_nothing_but_voxels_and_geometry_leaves_the_reader(tmp_path):
    write_series(tmp_path / "ct", voxels(GRID), GRID)
    (series,) = find_series(tmp_path)
    volume = read_series(series)
    assert set(vars(volume)) == {"array", "grid"} and isinstance(volume, Volume)
    shown = repr(series) + repr(volume.grid)
    for secret in (PATIENT_NAME, PATIENT_ID, "ACC-SECRET", "Who^Doctor"):
        assert secret not in shown


@pytest.mark.parametrize("defect, expected", [
    ({"skip": [4]}, "lacks about 1 slice"),
    ({"skip": [3, 4]}, "lacks about 2 slice"),
    ({"position_offsets": {8: tuple(0.6 * GRID.direction[:, 2])}}, "slice spacings that vary"),
    ({"position_offsets": {5: tuple(-2.5 * GRID.direction[:, 2])}}, "two slices at the same position"),
    ({"position_offsets": {k: tuple(0.5 * k * GRID.direction[:, 1]) for k in range(9)}}, "tilted gantry"),
    ({"orientation_override": {2: [1, 0, 0, 0, 1, 0]}}, "different orientations"),
])
def test_an_irregular_series_is_refused_with_one_sentence(tmp_path, defect, expected):
    write_series(tmp_path / "broken", voxels(GRID), GRID, **defect)
    write_series(tmp_path / "fine", voxels(GRID), GRID, series_number=2)
    found = {s.case_id: s for s in find_series(tmp_path)}
    assert set(found) == {"broken", "fine"}
    with pytest.raises(InputError) as caught:
        read_series(found["broken"])
    message = str(caught.value)
    assert expected in message and "broken" in message and one_sentence(message)
    assert PATIENT_NAME not in message
    assert read_series(found["fine"]).grid.matches(GRID)  # the other case is untouched


def test_a_single_slice_is_not_a_volume(tmp_path):
    write_series(tmp_path / "scout", voxels(GRID)[:1], GRID)
    with pytest.raises(InputError, match="one slice"):
        read_series(find_series(tmp_path)[0])


def test_case_ids_name_the_folder_and_number_several_series_in_one(tmp_path):
    small = ImageGrid((6, 5, 3), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0))
    array = voxels(small)
    write_series(tmp_path / "patient1" / "ct", array, small, series_number=7)
    write_series(tmp_path / "patient1" / "ct", array + 1, small, series_number=3)
    write_series(tmp_path / "patient1" / "ct", array + 2, small, series_number=12)
    write_series(tmp_path / "patient2", array, small)
    write_series(tmp_path / ".partial" / "ct", array, small)  # hidden folders hold no cases
    write_series(tmp_path / "out" / "ct", array, small)
    (tmp_path / "patient2" / "notes.txt").write_text("not DICOM")

    found = find_series(tmp_path, exclude=[tmp_path / "out"])
    assert [s.case_id for s in found] == ["ct", "ct_2", "ct_3", "patient2"]
    # Series-number order: 3, 7, 12.
    assert [int(read_series(s).array[0, 0, 0]) - int(array[0, 0, 0]) for s in found[:3]] == [1, 0, 2]


def test_read_input_takes_a_file_or_a_folder_of_one_series(tmp_path):
    import SimpleITK as sitk

    array = voxels(GRID)
    write_series(tmp_path / "one" / "ct", array, GRID)
    from_folder = read_input(tmp_path / "one")
    assert from_folder.grid.matches(GRID) and np.array_equal(from_folder.array, array)

    nifti = tmp_path / "image.nii.gz"
    sitk.WriteImage(from_folder.to_sitk(), str(nifti))
    assert read_input(nifti).grid.matches(GRID)

    write_series(tmp_path / "two" / "a", array, GRID)
    write_series(tmp_path / "two" / "b", array, GRID)
    with pytest.raises(InputError, match=r"holds 2 DICOM series \(series 1 in a, series 1 in b\)"):
        read_input(tmp_path / "two")
    # Two series in one folder: their numbers tell them apart, and the advice is one the user can follow.
    write_series(tmp_path / "mixed", array, GRID, series_number=3)
    write_series(tmp_path / "mixed", array, GRID, series_number=7)
    with pytest.raises(InputError) as raised:
        read_input(tmp_path / "mixed")
    assert "(series 3 and series 7 in the folder itself); move each series' files to a folder of its own, or run " \
           "'clara-aws batch'" in str(raised.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no DICOM series"):
        read_input(tmp_path / "empty")


def test_sorted_slices_lists_files_from_first_to_last(tmp_path):
    paths = write_series(tmp_path / "ct", voxels(GRID), GRID)
    files, grid = sorted_slices(find_series(tmp_path)[0])
    assert [int(pydicom.dcmread(f).InstanceNumber) for f in files] == list(range(1, len(paths) + 1))
    assert grid.matches(GRID)
