"""World RAS markup points -> [i, j, k] of the image as sent, through parent transforms and oblique grids."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import vtk  # noqa: E402

import slicer_scene as ss  # noqa: E402
from ClaraAWSLib.core.errors import InputError  # noqa: E402
from ClaraAWSLib.core.geometry import Volume  # noqa: E402
from ClaraAWSLib.scene.export import volume_grid  # noqa: E402
from ClaraAWSLib.scene.points import points_to_indices  # noqa: E402


@pytest.fixture
def transformed_volume(harness):
    grid = ss.oblique_grid()
    transform = ss.add_transform(harness, ss.linear_transform())
    return ss.add_volume(harness, Volume(np.zeros(grid.size[::-1], np.int16), grid), transform_node=transform)


def test_voxel_centres_in_world_map_back_to_their_voxels(transformed_volume):
    grid = volume_grid(transformed_volume)
    rng = np.random.default_rng(11)
    voxels = [[0, 0, 0], [47, 39, 19], *rng.integers(0, [48, 40, 20], size=(30, 3)).tolist()]
    world = [ss.voxel_to_world(transformed_volume, voxel) for voxel in voxels]
    assert points_to_indices(transformed_volume, grid, world) == voxels


def test_points_round_to_the_nearest_voxel(transformed_volume):
    grid = volume_grid(transformed_volume)
    offset = [[10.4, 20.0, 5.0], [10.6, 19.6, 4.51], [9.5, 20.0, 5.0]]
    world = [ss.voxel_to_world(transformed_volume, point) for point in offset]
    assert points_to_indices(transformed_volume, grid, world) == [[10, 20, 5], [11, 20, 5], [10, 20, 5]]


def test_the_parent_transform_is_not_ignored(transformed_volume):
    grid = volume_grid(transformed_volume)
    local_ras = (grid.ijk_to_ras() @ np.array([10, 20, 5, 1.0]))[:3]  # where the voxel would be without the transform
    assert points_to_indices(transformed_volume, grid, [local_ras.tolist()]) != [[10, 20, 5]]


def test_a_point_outside_is_named(transformed_volume):
    grid = volume_grid(transformed_volume)
    inside = ss.voxel_to_world(transformed_volume, [3, 3, 3])
    outside = ss.voxel_to_world(transformed_volume, [3, 3, 20.6])
    with pytest.raises(InputError, match=r"Foreground point 2 at RAS \(") as raised:
        points_to_indices(transformed_volume, grid, [inside, outside], role="Foreground point")
    assert "outside the volume 'CT'" in str(raised.value)


def test_non_linear_parent_transform_is_refused(harness):
    grid = ss.oblique_grid()
    warp = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for index, point in enumerate(([0, 0, 0], [50, 0, 0], [0, 50, 0], [0, 0, 50], [30, 30, 30])):
        source.InsertNextPoint(point)
        target.InsertNextPoint([value + (3 if index == 4 else 0) for value in point])
    warp.SetSourceLandmarks(source)
    warp.SetTargetLandmarks(target)
    warp.SetBasisToR()
    transform = harness.scene.AddNewNodeByClass("vtkMRMLTransformNode", "Warp")
    transform.SetAndObserveTransformToParent(warp)
    node = ss.add_volume(harness, Volume(np.zeros(grid.size[::-1], np.int16), grid), transform_node=transform)
    with pytest.raises(InputError, match="non-linear transform"):
        points_to_indices(node, volume_grid(node), [[0.0, 0.0, 0.0]])


def test_malformed_points_are_refused(transformed_volume):
    with pytest.raises(InputError, match="three finite numbers"):
        points_to_indices(transformed_volume, volume_grid(transformed_volume), [[1.0, 2.0]])
    assert points_to_indices(transformed_volume, volume_grid(transformed_volume), []) == []
