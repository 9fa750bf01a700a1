"""World RAS points (as markups report them) -> integer ``[i, j, k]`` voxels of the image ClaraAWS sends.

The sent image is the volume's own grid, so a world point first goes through the inverse of the
volume's parent transform (which must be linear), then through the grid's RAS-to-IJK, and is rounded.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np
import vtk

from ..core.errors import InputError, PointOutsideError
from ..core.geometry import ImageGrid
from .export import volume_grid


def world_to_local_matrix(volume_node) -> np.ndarray:
    """4x4 matrix from world RAS to the volume's own RAS; InputError under a non-linear transform."""
    transform_node = volume_node.GetParentTransformNode()
    if transform_node is None:
        return np.eye(4)
    if not transform_node.IsTransformToWorldLinear():
        raise InputError(
            f"The volume '{volume_node.GetName()}' is under a non-linear transform, so points cannot be mapped to its "
            "voxels; harden the transform on the volume (Transforms module) and place the points again."
        )
    matrix = vtk.vtkMatrix4x4()
    transform_node.GetMatrixTransformFromWorld(matrix)
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def _format_point(point: Sequence[float]) -> str:
    return "(" + ", ".join(f"{value:.1f}" for value in point) + ")"


def points_to_indices(volume_node, grid: ImageGrid, points_ras: Sequence[Sequence[float]],
                      role: str = "Point") -> List[List[int]]:
    """Voxel ``[i, j, k]`` of each world RAS point; InputError naming the first point outside the image."""
    points = np.asarray([list(point) for point in points_ras], dtype=float)
    if points.size == 0:
        return []
    if points.ndim != 2 or points.shape[1] != 3 or not np.all(np.isfinite(points)):
        raise InputError(f"{role} coordinates must be three finite numbers (R, A, S) per point.")
    local = np.c_[points, np.ones(len(points))] @ world_to_local_matrix(volume_node).T
    continuous = local @ np.linalg.inv(grid.ijk_to_ras()).T
    # Round half up (not to even) so a point on a voxel border always picks the same neighbour.
    indices = np.floor(continuous[:, :3] + 0.5).astype(int)
    outside = np.any((indices < 0) | (indices >= np.array(grid.size)), axis=1)
    if np.any(outside):
        first = int(np.argmax(outside))
        raise PointOutsideError(
            f"{role} {first + 1} at RAS {_format_point(points[first])} lies outside the volume "
            f"'{volume_node.GetName()}'; move it inside the image and try again."
        )
    return indices.tolist()


def lies_outside(volume_node, point_ras: Sequence[float]) -> bool:
    """Whether a world RAS point falls outside the image sent for ``volume_node`` (False when that cannot be
    told here: a volume ClaraAWS cannot send says why when the request is prepared)."""
    try:
        points_to_indices(volume_node, volume_grid(volume_node), [point_ras])
    except PointOutsideError:
        return True
    except InputError:
        return False
    return False
