"""Image grids and coordinate systems: the one place where IJK, LPS and RAS meet.

Conventions used everywhere in ClaraAWS:
- ``Volume.array`` is in NumPy order ``[k, j, i]`` (as ``SimpleITK.GetArrayFromImage`` and
  ``slicer.util.arrayFromVolume`` give it); ``i`` is the fastest axis.
- ``ImageGrid`` describes the grid like ITK does: ``size``/``spacing`` in ``(i, j, k)`` order, ``origin``
  in LPS millimetres, ``direction`` a 3x3 matrix whose *columns* are the i, j, k axis directions in LPS.
- Points sent to a server are integer ``[i, j, k]`` indices of the image as sent.
- Slicer works in RAS; RAS = diag(-1, -1, 1) * LPS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence, Tuple

import numpy as np

from .errors import GeometryError, InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Two grids whose origins, spacings and directions agree within these bounds are the same grid.
#: NIfTI headers store geometry as float32, so a round trip through a server moves values by ~1e-5 mm.
SPACING_TOLERANCE_MM = 1e-4
ORIGIN_TOLERANCE_MM = 1e-3
DIRECTION_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ImageGrid:
    size: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        object.__setattr__(self, "direction", direction)
        if len(self.size) != 3 or len(self.spacing) != 3 or len(self.origin) != 3:
            raise GeometryError("Only 3D images are supported; this image is not 3D.")
        if min(self.spacing) <= 0 or not np.all(np.isfinite(self.spacing)):
            raise GeometryError(f"The image spacing {self.spacing} is not positive; check the file's header.")
        if not np.all(np.isfinite(direction)) or abs(abs(np.linalg.det(direction)) - 1) > 1e-3:
            raise GeometryError("The image direction matrix is not a rotation; check the file's header.")

    # --- matrices -------------------------------------------------------------------------
    def ijk_to_lps(self) -> np.ndarray:
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def ijk_to_ras(self) -> np.ndarray:
        return LPS_TO_RAS @ self.ijk_to_lps()

    @classmethod
    def from_ijk_to_ras(cls, matrix: np.ndarray, size: Sequence[int]) -> "ImageGrid":
        """Grid from a Slicer-style IJK-to-RAS matrix (spacing folded into the columns)."""
        lps = LPS_TO_RAS @ np.asarray(matrix, dtype=float).reshape(4, 4)
        columns = lps[:3, :3]
        spacing = np.linalg.norm(columns, axis=0)
        if np.any(spacing <= 0):
            raise GeometryError("The volume's IJK-to-RAS matrix has a zero axis; the volume geometry is broken.")
        return cls(tuple(size), tuple(spacing), tuple(lps[:3, 3]), columns / spacing)

    # --- points ---------------------------------------------------------------------------
    def lps_to_continuous_index(self, points_lps: Iterable[Sequence[float]]) -> np.ndarray:
        points = np.atleast_2d(np.asarray(list(points_lps), dtype=float))
        inverse = np.linalg.inv(self.ijk_to_lps())
        homogeneous = np.c_[points, np.ones(len(points))]
        return (homogeneous @ inverse.T)[:, :3]

    def ras_to_index(self, points_ras: Iterable[Sequence[float]]) -> list:
        """Nearest voxel ``[i, j, k]`` of each RAS point; raises when a point is outside the image."""
        points = np.atleast_2d(np.asarray(list(points_ras), dtype=float))
        if points.size == 0:
            return []
        lps = points * np.array([-1.0, -1.0, 1.0])
        indices = np.rint(self.lps_to_continuous_index(lps)).astype(int)
        outside = np.any((indices < 0) | (indices >= np.array(self.size)), axis=1)
        if np.any(outside):
            first = int(np.argmax(outside))
            raise InputError(
                f"Point {first + 1} at RAS {np.round(points[first], 1).tolist()} lies outside the volume; "
                "place every point inside the image."
            )
        return indices.tolist()

    # --- comparison -----------------------------------------------------------------------
    def matches(self, other: "ImageGrid") -> bool:
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, atol=SPACING_TOLERANCE_MM, rtol=0)
            and np.allclose(self.origin, other.origin, atol=ORIGIN_TOLERANCE_MM, rtol=0)
            and np.allclose(self.direction, other.direction, atol=DIRECTION_TOLERANCE, rtol=0)
        )

    def describe(self) -> str:
        return (
            f"size {list(self.size)}, spacing {[round(v, 4) for v in self.spacing]} mm, "
            f"origin {[round(v, 3) for v in self.origin]} mm"
        )


@dataclass
class Volume:
    """Voxels (``[k, j, i]`` NumPy order) with their grid."""

    array: np.ndarray
    grid: ImageGrid

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise GeometryError(
                f"The volume has {self.array.ndim} dimensions; ClaraAWS sends 3D scalar volumes only "
                "(extract one frame or component first)."
            )
        if tuple(self.array.shape[::-1]) != self.grid.size:
            raise GeometryError(
                f"The voxel array shape {self.array.shape[::-1]} (i, j, k) does not match the grid size {self.grid.size}."
            )
        if self.array.size == 0:
            raise GeometryError("The volume is empty (it has no voxels); load image data first.")

    @classmethod
    def from_sitk(cls, image) -> "Volume":
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise GeometryError(
                f"The image has {image.GetDimension()} dimensions; ClaraAWS works on 3D volumes only."
            )
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise GeometryError(
                "The image has several components per voxel (colour or vector); ClaraAWS needs a scalar volume."
            )
        grid = ImageGrid(
            image.GetSize(), image.GetSpacing(), image.GetOrigin(), np.array(image.GetDirection()).reshape(3, 3)
        )
        return cls(sitk.GetArrayFromImage(image), grid)

    def to_sitk(self):
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(self.grid.spacing)
        image.SetOrigin(self.grid.origin)
        image.SetDirection(tuple(self.grid.direction.flatten()))
        return image


def resample_labels_to_grid(labels: Volume, target: ImageGrid) -> Volume:
    """Nearest-neighbour resampling of a label image onto ``target``; voxels outside the source become 0."""
    if labels.grid.matches(target):
        return Volume(labels.array, target)
    import SimpleITK as sitk

    reference = sitk.Image([int(v) for v in target.size], sitk.sitkUInt8)
    reference.SetSpacing(target.spacing)
    reference.SetOrigin(target.origin)
    reference.SetDirection(tuple(target.direction.flatten()))
    resampled = sitk.Resample(
        labels.to_sitk(), reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.to_sitk().GetPixelID()
    )
    return Volume(sitk.GetArrayFromImage(resampled), target)


def _has_default_geometry(grid: ImageGrid) -> bool:
    return (
        np.allclose(grid.spacing, 1.0)
        and np.allclose(grid.origin, 0.0)
        and np.allclose(grid.direction, np.eye(3))
    )


def _corners_in_index_space(source: ImageGrid, target: ImageGrid) -> np.ndarray:
    size = np.array(source.size, float)
    corners = np.array([[i, j, k] for i in (-0.5, size[0] - 0.5) for j in (-0.5, size[1] - 0.5)
                        for k in (-0.5, size[2] - 0.5)])
    lps = np.c_[corners, np.ones(8)] @ source.ijk_to_lps().T
    return target.lps_to_continuous_index(lps[:, :3])


def lattice_offset(result: ImageGrid, grid: ImageGrid):
    """(i, j, k) of ``result``'s first voxel on ``grid`` when the result's voxels are voxels of ``grid``, else None.

    The one rule by which every path places a server's answer without resampling: the grid as sent (up to
    the float32 precision of a NIfTI header: offset (0, 0, 0)), a box of it such as a crop or an answer cut
    to its labels (its whole-voxel offset), or the voxels of the image as sent under a dropped header.
    """
    if result.matches(grid):
        return (0, 0, 0)
    if result.size == grid.size and _has_default_geometry(result) and not _has_default_geometry(grid):
        # The server wrote the voxels of the image as sent but dropped the header; the voxel order is the input's.
        return (0, 0, 0)
    if _has_default_geometry(result) and not _has_default_geometry(grid):
        return None
    return voxel_offset(result, grid)


def result_on_grid(labels: Volume, grid: ImageGrid) -> Volume:
    """The server's label image on ``grid``: placed by ``lattice_offset`` when its voxels are ``grid``'s, else
    resampled (nearest neighbour); GeometryError when it cannot be placed."""
    offset = lattice_offset(labels.grid, grid)
    if offset == (0, 0, 0) and labels.grid.size == grid.size:
        return Volume(labels.array, grid)
    if offset is not None:
        placed = place_in_grid(Volume(labels.array, labels.grid), grid, offset)
        if labels.array.any() and not placed.array.any():
            raise GeometryError(
                f"The server's result ({labels.grid.describe()}) has labels only outside the volume; "
                "its geometry is wrong, so it cannot be placed: check the server's output writer."
            )
        return placed
    if _has_default_geometry(labels.grid) and not _has_default_geometry(grid):
        raise GeometryError(
            f"The server's result has size {list(labels.grid.size)} instead of {list(grid.size)} and no geometry "
            "(origin, spacing and direction were dropped), so it cannot be placed: check the server's output writer."
        )
    corners = _corners_in_index_space(labels.grid, grid)
    low, high = corners.min(axis=0), corners.max(axis=0)
    size = np.array(grid.size, float)
    if np.any(high < -0.5) or np.any(low > size - 0.5):
        raise GeometryError(
            f"The server's result ({labels.grid.describe()}) does not overlap the volume ({grid.describe()}); "
            "its geometry is wrong, so it cannot be placed: check the server's output writer."
        )
    resampled = resample_labels_to_grid(labels, grid)
    if labels.array.any() and not resampled.array.any():
        raise GeometryError(
            f"The server's result ({labels.grid.describe()}) has labels only outside the volume; "
            "its geometry is wrong, so it cannot be placed: check the server's output writer."
        )
    return resampled


def sub_grid(grid: ImageGrid, start: Sequence[int], size: Sequence[int]) -> ImageGrid:
    """The grid of the box of ``size`` voxels starting at voxel ``start`` (i, j, k) of ``grid``: same axes, moved origin."""
    origin = (grid.ijk_to_lps() @ np.array([*(float(v) for v in start), 1.0]))[:3]
    return ImageGrid(tuple(int(v) for v in size), grid.spacing, tuple(origin), grid.direction)


#: A box's origin must fall this close (in voxels) to a voxel of the big grid to be placed without resampling.
PLACEMENT_TOLERANCE_VOXELS = 1e-3


def voxel_offset(small: ImageGrid, big: ImageGrid):
    """(i, j, k) of ``small``'s first voxel in ``big`` when ``small`` is a box of ``big``'s voxels, else None."""
    if not (np.allclose(small.spacing, big.spacing, atol=SPACING_TOLERANCE_MM, rtol=0)
            and np.allclose(small.direction, big.direction, atol=DIRECTION_TOLERANCE, rtol=0)):
        return None
    index = big.lps_to_continuous_index([small.origin])[0]
    nearest = np.rint(index)
    if np.any(np.abs(index - nearest) > PLACEMENT_TOLERANCE_VOXELS):
        return None
    return tuple(int(v) for v in nearest)


def place_in_grid(labels: Volume, big: ImageGrid, offset: Sequence[int]) -> Volume:
    """``labels`` pasted into a zero image on ``big`` with its first voxel at ``offset`` (i, j, k); clipped to ``big``."""
    out = np.zeros(big.size[::-1], dtype=labels.array.dtype)
    source, target = [], []
    for axis in (2, 1, 0):  # NumPy order k, j, i
        low = int(offset[axis])
        start, stop = max(0, low), min(big.size[axis], low + labels.grid.size[axis])
        if stop <= start:
            return Volume(out, big)
        target.append(slice(start, stop))
        source.append(slice(start - low, stop - low))
    out[tuple(target)] = labels.array[tuple(source)]
    return Volume(out, big)


@dataclass(frozen=True)
class LabelBox:
    """The labelled part of a label image on ``grid``: ``array`` ([k, j, i]) holds the voxels from ``start``
    (i, j, k) on; every voxel of ``grid`` outside it is 0. An interactive edit's answer covers a whole CT
    but labels a small region: this is all of it an edit needs to hold."""

    grid: ImageGrid
    start: Tuple[int, int, int]
    array: np.ndarray  # shape (0, 0, 0) when no voxel is labelled

    @classmethod
    def of_volume(cls, volume: Volume) -> "LabelBox":
        array = volume.array
        if not array.any():
            return cls(volume.grid, (0, 0, 0), np.zeros((0, 0, 0), array.dtype))
        k, j, i = (np.flatnonzero(array.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
        box = array[k[0]:k[-1] + 1, j[0]:j[-1] + 1, i[0]:i[-1] + 1]
        return cls(volume.grid, (int(i[0]), int(j[0]), int(k[0])), np.ascontiguousarray(box))

    @property
    def is_empty(self) -> bool:
        return self.array.size == 0

    def volume(self) -> Volume:
        """The whole label image (allocates the full grid: for paths that need it)."""
        out = np.zeros(self.grid.size[::-1], dtype=self.array.dtype)
        if not self.is_empty:
            i, j, k = self.start
            out[k:k + self.array.shape[0], j:j + self.array.shape[1], i:i + self.array.shape[2]] = self.array
        return Volume(out, self.grid)

    def on_grid(self, grid: ImageGrid) -> "LabelBox":
        """The same labels on ``grid`` by the rule of ``lattice_offset`` (exact, clipped to ``grid``), else resampled
        whole; GeometryError when they cannot be placed."""
        offset = lattice_offset(self.grid, grid)
        if offset is None:
            return LabelBox.of_volume(result_on_grid(self.volume(), grid))
        if self.is_empty:
            return LabelBox(grid, (0, 0, 0), self.array)
        start = [s + o for s, o in zip(self.start, offset)]
        low = [max(0, v) for v in start]
        high = [min(n, v + extent) for v, n, extent in zip(start, grid.size, self.array.shape[::-1])]
        if any(h <= lo for lo, h in zip(low, high)):
            raise GeometryError(
                f"The server's result ({self.grid.describe()}) has labels only outside the volume; "
                "its geometry is wrong, so it cannot be placed: check the server's output writer."
            )
        cut = self.array[low[2] - start[2]:high[2] - start[2], low[1] - start[1]:high[1] - start[1],
                         low[0] - start[0]:high[0] - start[0]]
        return LabelBox(grid, tuple(low), np.ascontiguousarray(cut))
