"""The synthetic abdominal CT phantom: geometry, anatomy in LPS space, intensities, files."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ClaraAWSLib.core.geometry import ImageGrid, resample_labels_to_grid
from ClaraAWSLib.synthetic.phantom import HU, PHANTOM_LABELS, make_phantom, oblique_direction, write_phantom

SMALL = (96, 96, 40)
OBLIQUE = dict(
    size=(96, 88, 44),
    spacing=(1.3, 1.7, 3.2),
    origin=(-40.0, 25.0, -300.0),
    direction=oblique_direction((10, 0, 20)),
)


@pytest.fixture(scope="module")
def axial():
    return make_phantom(size=SMALL)


@pytest.fixture(scope="module")
def oblique():
    return make_phantom(**OBLIQUE)


def _centroids_relative_to_centre(phantom):
    """LPS centroid of each organ, relative to the grid centre, in millimetres."""
    grid = phantom.ct.grid
    matrix = grid.ijk_to_lps()
    centre = matrix[:3, :3] @ ((np.asarray(grid.size) - 1) / 2.0) + matrix[:3, 3]
    result = {}
    for value, name in enumerate(phantom.labels, start=1):
        kji = np.argwhere(phantom.truth.array == value).mean(axis=0)
        lps = matrix[:3, :3] @ kji[::-1] + matrix[:3, 3]
        result[name] = lps - centre
    return result


def test_grid_types_and_labels_are_as_requested(oblique):
    for volume in (oblique.ct, oblique.truth):
        assert volume.grid.size == OBLIQUE["size"]
        assert np.allclose(volume.grid.spacing, OBLIQUE["spacing"])
        assert np.allclose(volume.grid.origin, OBLIQUE["origin"])
        assert np.allclose(volume.grid.direction, OBLIQUE["direction"])
        assert volume.array.shape == OBLIQUE["size"][::-1]
    assert oblique.ct.array.dtype == np.int16 and oblique.truth.array.dtype == np.uint8
    assert oblique.labels == list(PHANTOM_LABELS) == ["liver", "spleen", "left kidney", "right kidney"]
    assert set(np.unique(oblique.truth.array)) == {0, 1, 2, 3, 4}
    assert oblique.label_value("spleen") == 2


def test_default_origin_centres_the_grid_on_lps_zero():
    phantom = make_phantom(size=(32, 30, 10), spacing=(2.0, 2.0, 5.0), noise_hu=0, direction=oblique_direction())
    grid = phantom.ct.grid
    centre = grid.ijk_to_lps() @ np.r_[(np.asarray(grid.size) - 1) / 2.0, 1.0]
    assert np.allclose(centre[:3], 0.0, atol=1e-6)


@pytest.mark.parametrize("which", ["axial", "oblique"])
def test_organs_sit_where_anatomy_puts_them_in_lps_space(which, request):
    centroids = _centroids_relative_to_centre(request.getfixturevalue(which))
    liver, spleen = centroids["liver"], centroids["spleen"]
    left, right = centroids["left kidney"], centroids["right kidney"]
    assert liver[0] < 0 < spleen[0]  # patient's right is negative LPS x
    assert right[0] < 0 < left[0]
    assert spleen[1] > liver[1] and left[1] > 0 and right[1] > 0  # spleen and kidneys posterior
    assert spleen[2] > left[2] and liver[2] > right[2]  # kidneys lie below liver and spleen


def test_truth_follows_the_anatomy_not_the_grid():
    """The same patient on an axial and on an oblique grid with the same centre: the truths agree."""
    size, spacing = (64, 64, 32), (2.0, 2.0, 4.0)
    centre = np.array([15.0, -20.0, 400.0])
    direction = oblique_direction((8, -5, 25))
    origin = centre - direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2.0)
    axial = make_phantom(size=size, spacing=spacing, origin=centre - (np.asarray(spacing) * (np.asarray(size) - 1) / 2.0), noise_hu=0)
    tilted = make_phantom(size=size, spacing=spacing, origin=origin, direction=direction, noise_hu=0)
    on_axial = resample_labels_to_grid(tilted.truth, axial.truth.grid).array
    # Compare away from the edges of the tilted field of view.
    inner = np.zeros(on_axial.shape, dtype=bool)
    inner[6:-6, 12:-12, 12:-12] = True
    for value in range(1, 5):
        a, b = (axial.truth.array == value) & inner, (on_axial == value) & inner
        assert 2 * np.count_nonzero(a & b) / (a.sum() + b.sum()) > 0.85, tilted.labels[value - 1]


def test_intensities_are_realistic(axial):
    ct, truth = axial.ct.array.astype(float), axial.truth.array

    def core(mask):  # away from the blurred edge
        return sitk.GetArrayFromImage(sitk.BinaryErode(sitk.GetImageFromArray(mask.astype(np.uint8)), [1, 1, 1])) > 0

    assert abs(np.median(ct[core(truth == 1)]) - HU["liver"]) < 5
    assert abs(np.median(ct[core(truth == 2)]) - HU["spleen"]) < 5
    assert abs(np.median(ct[core((truth == 3) | (truth == 4))]) - HU["kidney"]) < 5
    assert np.median(ct[0, :5, :5]) < -900  # air in the corner
    assert ct.max() > 500  # vertebral cortex
    assert ((ct > -200) & (ct < -50)).sum() > 0.03 * ct.size  # subcutaneous and perirenal fat
    # Organ order by size, like a real abdomen.
    volumes = np.bincount(truth.ravel(), minlength=5)
    assert volumes[1] > volumes[2] > 0 and volumes[3] > 0 and volumes[4] > 0


def test_noise_is_gaussian_with_the_requested_sigma_and_deterministic():
    clean = make_phantom(size=(48, 48, 16), noise_hu=0).ct.array.astype(float)
    noisy = make_phantom(size=(48, 48, 16), noise_hu=20, seed=4).ct.array.astype(float)
    again = make_phantom(size=(48, 48, 16), noise_hu=20, seed=4).ct.array
    other = make_phantom(size=(48, 48, 16), noise_hu=20, seed=5).ct.array
    inside = clean > -900  # air is clipped at -1024, so measure inside the body
    assert abs(np.std((noisy - clean)[inside]) - 20) < 1.0
    assert np.array_equal(noisy.astype(np.int16), again)
    assert not np.array_equal(again, other)


def test_oblique_direction_is_a_rotation():
    matrix = oblique_direction((10, 0, 20))
    assert np.allclose(matrix @ matrix.T, np.eye(3)) and np.isclose(np.linalg.det(matrix), 1.0)
    assert np.allclose(oblique_direction((0, 0, 0)), np.eye(3))
    assert np.allclose(oblique_direction((0, 0, 90)) @ [1, 0, 0], [0, 1, 0])


def test_write_phantom_writes_ct_and_truth_nifti_with_full_geometry(tmp_path):
    ct_path, truth_path = write_phantom(tmp_path / "out", prefix="case", size=(40, 36, 12), **{k: v for k, v in OBLIQUE.items() if k != "size"})
    assert ct_path.name == "case_ct.nii.gz" and truth_path.name == "case_truth.nii.gz"
    ct, truth = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(truth_path))
    assert ct.GetPixelID() == sitk.sitkInt16 and truth.GetPixelID() == sitk.sitkUInt8
    for image in (ct, truth):
        grid = ImageGrid(image.GetSize(), image.GetSpacing(), image.GetOrigin(), np.reshape(image.GetDirection(), (3, 3)))
        expected = ImageGrid((40, 36, 12), OBLIQUE["spacing"], OBLIQUE["origin"], OBLIQUE["direction"])
        assert grid.matches(expected)


def test_bad_sizes_are_refused_with_one_sentence():
    from ClaraAWSLib.core.errors import GeometryError, InputError

    with pytest.raises(InputError, match="three positive"):
        make_phantom(size=(0, 10, 10))
    with pytest.raises(GeometryError):
        make_phantom(size=(8, 8, 4), spacing=(1.0, -1.0, 1.0))
