"""Labelmap layers as NumPy boxes: read, resample (nearest neighbour) and write parts of a layer's lattice.

A *lattice* is the voxel grid of an image given by its image-to-frame matrix (IJK to the coordinate
frame of the segmentation node, before its parent transform). A *box* is an inclusive VTK-style
extent ``(i0, i1, j0, j1, k0, k1)`` on a lattice. Arrays are ``[k, j, i]`` like everywhere in ClaraAWS.
Writing a box grows the layer's extent with zeros when needed and never moves its lattice, so the
other segments of a shared layer keep every voxel where it was.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..core.errors import GeometryError

BINARY_LABELMAP = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()

Box = Tuple[int, int, int, int, int, int]
EMPTY_BOX: Box = (0, -1, 0, -1, 0, -1)

#: Lattices closer than this (in voxels) to an integer shift of each other are treated as the same lattice.
_ALIGNED_TOLERANCE = 1e-4
#: Voxel centres exactly half-way between two voxels go to the upper one, whatever the rounding noise.
_TIE_BIAS = 1e-6


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row][column]))
    return matrix


def image_to_frame(image) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def box_is_empty(box: Sequence[int]) -> bool:
    return box[0] > box[1] or box[2] > box[3] or box[4] > box[5]


def box_shape(box: Sequence[int]) -> Tuple[int, int, int]:
    return (box[5] - box[4] + 1, box[3] - box[2] + 1, box[1] - box[0] + 1)


def box_union(first: Sequence[int], second: Sequence[int]) -> Box:
    if box_is_empty(first):
        return tuple(second)  # type: ignore[return-value]
    if box_is_empty(second):
        return tuple(first)  # type: ignore[return-value]
    return tuple(min(first[n], second[n]) if n % 2 == 0 else max(first[n], second[n]) for n in range(6))  # type: ignore


def box_intersection(first: Sequence[int], second: Sequence[int]) -> Box:
    box = tuple(max(first[n], second[n]) if n % 2 == 0 else min(first[n], second[n]) for n in range(6))
    return EMPTY_BOX if box_is_empty(box) else box  # type: ignore[return-value]


def box_slices(inner: Sequence[int], outer: Sequence[int]) -> Tuple[slice, slice, slice]:
    """``[k, j, i]`` slices of ``inner`` inside an array that covers ``outer``."""
    return (slice(inner[4] - outer[4], inner[5] - outer[4] + 1), slice(inner[2] - outer[2], inner[3] - outer[2] + 1),
            slice(inner[0] - outer[0], inner[1] - outer[0] + 1))


def mask_bounds(mask: np.ndarray, origin: Sequence[int] = (0, 0, 0)) -> Box:
    """The box of the True voxels of a ``[k, j, i]`` mask whose first voxel is at ``origin`` (i, j, k)."""
    if not mask.any():
        return EMPTY_BOX
    k_any, j_any, i_any = mask.any(axis=(1, 2)), mask.any(axis=(0, 2)), mask.any(axis=(0, 1))
    bounds = []
    for flags, start in ((i_any, origin[0]), (j_any, origin[1]), (k_any, origin[2])):
        hits = np.flatnonzero(flags)
        bounds += [int(start + hits[0]), int(start + hits[-1])]
    return tuple(bounds)  # type: ignore[return-value]


def oriented_image(array: np.ndarray, image_to_frame_matrix: np.ndarray, origin_index: Sequence[int] = (0, 0, 0)):
    """A vtkOrientedImageData holding a copy of ``array``; ``origin_index`` is the (i, j, k) of ``array[0,0,0]``."""
    array = np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype.kind not in "ui":
        raise GeometryError(f"Label images must hold integers; got {array.dtype} voxels.")
    image = slicer.vtkOrientedImageData()
    k_size, j_size, i_size = array.shape
    i0, j0, k0 = (int(v) for v in origin_index)
    image.SetExtent(i0, i0 + i_size - 1, j0, j0 + j_size - 1, k0, k0 + k_size - 1)
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    scalars.SetName("labels")
    image.GetPointData().SetScalars(scalars)
    image.SetImageToWorldMatrix(vtk_matrix(image_to_frame_matrix))
    return image


def layer_extent(image) -> Box:
    """The image's extent, or the empty box when it holds no voxels."""
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        return EMPTY_BOX
    extent = tuple(int(v) for v in image.GetExtent())
    return EMPTY_BOX if box_is_empty(extent) else extent  # type: ignore[return-value]


def layer_view(image) -> np.ndarray:
    """The image's voxels as a ``[k, j, i]`` view (no copy; writes go into the image)."""
    extent = layer_extent(image)
    if box_is_empty(extent):
        return np.zeros((0, 0, 0), np.uint8)
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(box_shape(extent))


def read_box(image, box: Sequence[int]) -> np.ndarray:
    """A copy of the image's voxels in ``box``; voxels outside the image's extent read as 0."""
    extent = layer_extent(image)
    values = layer_view(image)
    out = np.zeros(box_shape(box), values.dtype if values.size else np.uint8)
    inside = box_intersection(box, extent)
    if not box_is_empty(inside):
        out[box_slices(inside, box)] = values[box_slices(inside, extent)]
    return out


def write_box(image, box: Sequence[int], values: np.ndarray) -> None:
    """Write ``values`` (covering ``box``) into the image, growing its extent with zeros if the box reaches past it.

    The lattice (image-to-frame matrix) never changes; the scalar type widens if a value does not fit.
    """
    extent = layer_extent(image)
    current = layer_view(image)
    dtype = np.result_type(current.dtype if current.size else np.uint8, _smallest_label_type(values))
    grown = box_union(extent, box)
    if grown != extent or dtype != current.dtype:
        array = np.zeros(box_shape(grown), dtype)
        if current.size:
            array[box_slices(extent, grown)] = current
        array[box_slices(box, grown)] = values
        _replace_voxels(image, grown, array)
    else:
        current[box_slices(box, extent)] = values
        image.GetPointData().GetScalars().Modified()
    image.Modified()


def crop_to(image, box: Sequence[int]) -> None:
    """Shrink the image's extent to ``box`` (which must lie inside it), keeping its lattice."""
    extent = layer_extent(image)
    if box_is_empty(extent) or tuple(box) == extent:
        return
    _replace_voxels(image, box, np.ascontiguousarray(layer_view(image)[box_slices(box, extent)]))
    image.Modified()


def _replace_voxels(image, extent: Sequence[int], array: np.ndarray) -> None:
    """Give the image new voxels and extent in place (segments sharing it keep pointing at it), same lattice."""
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    scalars.SetName("labels")
    image.SetExtent(*extent)
    image.GetPointData().SetScalars(scalars)
    image.SetImageToWorldMatrix(matrix)


def make_empty(image) -> None:
    """Leave the image with no voxels, as Slicer keeps the layer of an empty segment."""
    image.SetExtent(*EMPTY_BOX)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.Modified()


def _smallest_label_type(values: np.ndarray):
    if values.size == 0:
        return np.uint8
    return np.min_scalar_type(int(values.max()))


def set_lattice(image, image_to_frame_matrix: np.ndarray) -> None:
    """Give an image that holds no voxels a lattice (an empty layer has no geometry worth keeping)."""
    if not box_is_empty(layer_extent(image)) and layer_view(image).any():
        raise GeometryError("Slicer's layer already holds voxels; its lattice cannot be changed.")
    image.SetExtent(*EMPTY_BOX)
    image.SetImageToWorldMatrix(vtk_matrix(image_to_frame_matrix))


# --- between lattices ----------------------------------------------------------------------------------
def lattice_map(source_to_frame: np.ndarray, target_to_frame: np.ndarray) -> np.ndarray:
    """4x4 matrix from target-lattice IJK to source-lattice IJK."""
    return np.linalg.inv(source_to_frame) @ target_to_frame


def integer_shift(mapping: np.ndarray) -> Optional[Tuple[int, int, int]]:
    """The (di, dj, dk) when ``mapping`` is a whole-voxel translation (the lattices coincide), else None."""
    if not np.allclose(mapping[:3, :3], np.eye(3), atol=_ALIGNED_TOLERANCE):
        return None
    shift = mapping[:3, 3]
    rounded = np.round(shift)
    if not np.allclose(shift, rounded, atol=_ALIGNED_TOLERANCE):
        return None
    return tuple(int(v) for v in rounded)  # type: ignore[return-value]


def box_on_lattice(box: Sequence[int], box_to_frame: np.ndarray, lattice_to_frame: np.ndarray) -> Box:
    """The smallest box of the other lattice whose voxels can hold a centre inside ``box`` (voxel faces included)."""
    if box_is_empty(box):
        return EMPTY_BOX
    mapping = lattice_map(lattice_to_frame, box_to_frame)
    shift = integer_shift(mapping)
    if shift is not None:
        return (box[0] + shift[0], box[1] + shift[0], box[2] + shift[1], box[3] + shift[1],
                box[4] + shift[2], box[5] + shift[2])
    corners = np.array([[i, j, k, 1.0] for i in (box[0] - 0.5, box[1] + 0.5) for j in (box[2] - 0.5, box[3] + 0.5)
                        for k in (box[4] - 0.5, box[5] + 0.5)])
    mapped = (mapping @ corners.T)[:3]
    low, high = np.floor(mapped.min(axis=1)), np.ceil(mapped.max(axis=1))
    return (int(low[0]), int(high[0]), int(low[1]), int(high[1]), int(low[2]), int(high[2]))


def resample_box(values: np.ndarray, values_box: Sequence[int], values_to_frame: np.ndarray,
                 target_box: Sequence[int], target_to_frame: np.ndarray, fill) -> np.ndarray:
    """Nearest-neighbour samples of ``values`` (covering ``values_box``) at the voxel centres of ``target_box``.

    Centres that fall outside ``values_box`` get ``fill``. Lattices that coincide are copied, not resampled.
    """
    out = np.full(box_shape(target_box), fill, dtype=np.result_type(values.dtype, np.min_scalar_type(fill)))
    if box_is_empty(target_box) or box_is_empty(values_box):
        return out
    mapping = lattice_map(values_to_frame, target_to_frame)
    shift = integer_shift(mapping)
    if shift is not None:
        shifted = (target_box[0] + shift[0], target_box[1] + shift[0], target_box[2] + shift[1],
                   target_box[3] + shift[1], target_box[4] + shift[2], target_box[5] + shift[2])
        inside = box_intersection(shifted, values_box)
        if not box_is_empty(inside):
            out[box_slices(inside, shifted)] = values[box_slices(inside, values_box)]
        return out
    i = np.arange(target_box[0], target_box[1] + 1, dtype=float)
    j = np.arange(target_box[2], target_box[3] + 1, dtype=float)
    jj, ii = np.meshgrid(j, i, indexing="ij")
    low = np.array(values_box[0::2])
    high = np.array(values_box[1::2])
    for plane, k in enumerate(range(target_box[4], target_box[5] + 1)):  # a slice at a time keeps memory flat
        index = [np.floor(mapping[axis, 0] * ii + mapping[axis, 1] * jj + mapping[axis, 2] * k + mapping[axis, 3]
                          + 0.5 + _TIE_BIAS).astype(np.int64) for axis in range(3)]
        valid = np.ones(ii.shape, bool)
        for axis in range(3):
            valid &= (index[axis] >= low[axis]) & (index[axis] <= high[axis])
        if valid.any():
            out[plane][valid] = values[index[2][valid] - low[2], index[1][valid] - low[1], index[0][valid] - low[0]]
    return out
