"""Grids, points and placing a server's result on the volume's grid (pure NumPy and SimpleITK)."""

from __future__ import annotations

import numpy as np
import pytest

from ClaraAWSLib.core.errors import GeometryError, InputError
from ClaraAWSLib.core.geometry import ImageGrid, Volume, result_on_grid

from conftest import rotation


def test_slicer_matrices_round_trip(oblique_grid):
    again = ImageGrid.from_ijk_to_ras(oblique_grid.ijk_to_ras(), oblique_grid.size)
    assert again.matches(oblique_grid)
    assert np.allclose(again.ijk_to_lps(), oblique_grid.ijk_to_lps())


def test_ras_points_map_to_the_nearest_voxel_and_outside_points_are_refused(oblique_grid):
    voxels = [[0, 0, 0], [47, 39, 23], [20, 18, 11]]
    ras = [(oblique_grid.ijk_to_ras() @ [*v, 1])[:3] + 0.2 for v in voxels]  # a little off the centres
    assert oblique_grid.ras_to_index(ras) == voxels
    outside = (oblique_grid.ijk_to_ras() @ [48.6, 0, 0, 1])[:3]
    with pytest.raises(InputError, match="Point 2 .* outside the volume"):
        oblique_grid.ras_to_index([ras[0], outside])


def test_a_cropped_coarser_result_lands_in_the_right_place(oblique_grid):
    # The server cropped i 10..29, j 8..27, k 4..15 and doubled the spacing; a block at its centre is labelled.
    start = np.array([10, 8, 4])
    crop_origin = oblique_grid.ijk_to_lps()[:3] @ [*start, 1]
    crop = ImageGrid((10, 10, 6), tuple(2 * s for s in oblique_grid.spacing), tuple(crop_origin[:3]), oblique_grid.direction)
    array = np.zeros((6, 10, 10), np.uint8)
    array[2:4, 3:7, 3:7] = 2
    placed = result_on_grid(Volume(array, crop), oblique_grid)
    assert placed.grid is oblique_grid and placed.array.shape == oblique_grid.size[::-1]
    # Coarse voxels 3..6 (i, j) and 2..3 (k) cover fine indices start + 2c - 1 .. start + 2c + 1: every fine
    # voxel strictly inside is labelled, none outside; the shared borders may go either way (nearest neighbour).
    low, high = start + 2 * np.array([3, 3, 2]), start + 2 * np.array([6, 6, 3])
    labelled = placed.array == 2
    assert labelled[low[2] : high[2] + 1, low[1] : high[1] + 1, low[0] : high[0] + 1].all()
    k, j, i = np.nonzero(labelled)
    assert np.all(np.array([i.min(), j.min(), k.min()]) >= low - 1) and np.all(np.array([i.max(), j.max(), k.max()]) <= high + 1)


def test_results_that_cannot_be_placed_are_refused(oblique_grid):
    far = ImageGrid(oblique_grid.size, oblique_grid.spacing, (5000.0, 0.0, 0.0), oblique_grid.direction)
    with pytest.raises(GeometryError, match="does not overlap"):
        result_on_grid(Volume(np.ones(oblique_grid.size[::-1], np.uint8), far), oblique_grid)
    headerless = ImageGrid((10, 10, 10), (1, 1, 1), (0, 0, 0))
    with pytest.raises(GeometryError, match="no geometry"):
        result_on_grid(Volume(np.ones((10, 10, 10), np.uint8), headerless), oblique_grid)


def test_a_result_whose_header_was_dropped_keeps_the_voxels_of_the_image_as_sent(oblique_grid):
    array = np.random.default_rng(0).integers(0, 3, size=oblique_grid.size[::-1]).astype(np.uint8)
    headerless = ImageGrid(oblique_grid.size, (1, 1, 1), (0, 0, 0))
    placed = result_on_grid(Volume(array, headerless), oblique_grid)
    assert placed.grid is oblique_grid and np.array_equal(placed.array, array)


def test_broken_grids_are_refused():
    with pytest.raises(GeometryError, match="not positive"):
        ImageGrid((2, 2, 2), (1, 0, 1), (0, 0, 0))
    with pytest.raises(GeometryError, match="not a rotation"):
        ImageGrid((2, 2, 2), (1, 1, 1), (0, 0, 0), np.diag([1.0, 1.0, 0.0]))
    assert ImageGrid((2, 2, 2), (1, 1, 1), (0, 0, 0), rotation(10, 20, 30)).size == (2, 2, 2)


def test_a_result_that_is_a_box_of_the_lattice_is_placed_at_its_offset_not_resampled(oblique_grid):
    # The answer's header as the server wrote it: float32 origin of a crop of the grid as sent.
    from ClaraAWSLib.core.geometry import LabelBox, result_on_grid, sub_grid

    start, size = (7, 4, 3), (9, 6, 5)
    crop = sub_grid(oblique_grid, start, size)
    crop = ImageGrid(crop.size, np.float32(crop.spacing), np.float32(crop.origin), np.float32(crop.direction))
    box = np.random.default_rng(2).integers(0, 3, size=size[::-1]).astype(np.uint8)
    placed = result_on_grid(Volume(box, crop), oblique_grid)
    expected = np.zeros(oblique_grid.size[::-1], np.uint8)
    expected[3:8, 4:10, 7:16] = box
    assert np.array_equal(placed.array, expected)
    on_grid = LabelBox(crop, (1, 0, 2), box[2:, :, 1:]).on_grid(oblique_grid)
    assert on_grid.start == (8, 4, 5) and np.array_equal(on_grid.array, box[2:, :, 1:])
    assert np.array_equal(on_grid.volume().array[5:8, 4:10, 8:16], box[2:, :, 1:])
