"""NumPy label arrays <-> vtkOrientedImageData, and one segment's voxels on a given grid.

Arrays are ``[k, j, i]`` like everywhere in ClaraAWS. ``image_to_frame`` matrices map IJK to the
coordinate frame of the segmentation node (its own RAS, before its parent transform).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .errors import GeometryError

BINARY_LABELMAP = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row][column]))
    return matrix


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def oriented_image(array: np.ndarray, image_to_frame: np.ndarray, origin_index: Sequence[int] = (0, 0, 0)):
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
    image.SetImageToWorldMatrix(vtk_matrix(image_to_frame))
    return image


def reference_image(image_to_frame: np.ndarray, size_ijk: Sequence[int]):
    """An image that only carries a grid (no voxels), to resample onto."""
    image = slicer.vtkOrientedImageData()
    image.SetExtent(0, int(size_ijk[0]) - 1, 0, int(size_ijk[1]) - 1, 0, int(size_ijk[2]) - 1)
    image.SetImageToWorldMatrix(vtk_matrix(image_to_frame))
    return image


def image_array(image) -> np.ndarray:
    """A ``[k, j, i]`` copy of an image's scalars."""
    extent = image.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    if min(shape) <= 0 or image.GetPointData().GetScalars() is None:
        return np.zeros((0, 0, 0), np.uint8)
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape).copy()


def segment_mask(segmentation_node, segment_id: str, image_to_frame: np.ndarray, size_ijk: Sequence[int]) -> np.ndarray:
    """The voxels of one segment on the given grid, as a ``[k, j, i]`` bool array (empty segment -> all False)."""
    shape = tuple(int(v) for v in reversed(size_ijk))
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        return np.zeros(shape, bool)
    layer = slicer.vtkOrientedImageData()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.GetSegmentBinaryLabelmapRepresentation(segmentation_node, segment_id, layer, False) or layer.IsEmpty():
        return np.zeros(shape, bool)
    resampled = slicer.vtkOrientedImageData()
    reference = reference_image(image_to_frame, size_ijk)
    # Nearest neighbour, padded to the full reference extent; a shared layer keeps other segments' values.
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        layer, reference, resampled, False, True
    )
    values = image_array(resampled)
    if values.shape != shape:
        return np.zeros(shape, bool)
    return values == segment.GetLabelValue()


def segment_layer_mask(segmentation_node, segment_id: str):
    """The segment's voxels in its own layer's geometry: (bool ``[k,j,i]`` array, extent, image-to-frame) or None."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        return None
    layer = slicer.vtkOrientedImageData()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.GetSegmentBinaryLabelmapRepresentation(segmentation_node, segment_id, layer, False) or layer.IsEmpty():
        return None
    matrix = vtk.vtkMatrix4x4()
    layer.GetImageToWorldMatrix(matrix)
    return image_array(layer) == segment.GetLabelValue(), tuple(layer.GetExtent()), numpy_matrix(matrix)


def crop_to_content(mask: np.ndarray, extent: Sequence[int]):
    """Crop a bool mask to its bounding box; returns (cropped array, (i0, j0, k0)) or None when empty."""
    if not mask.any():
        return None
    bounds = [np.flatnonzero(mask.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
    (k0, k1), (j0, j1), (i0, i1) = ((b[0], b[-1] + 1) for b in bounds)
    cropped = np.ascontiguousarray(mask[k0:k1, j0:j1, i0:i1]).astype(np.uint8)
    return cropped, (extent[0] + i0, extent[2] + j0, extent[4] + k0)


def set_segment_mask(segmentation_node, segment_id: str, mask: Optional[np.ndarray], image_to_frame: np.ndarray,
                     origin_index: Sequence[int] = (0, 0, 0)) -> None:
    """Replace one segment's voxels by ``mask`` (None or all False -> empty), leaving every other segment as it was."""
    if mask is None or not mask.any():
        mask = np.zeros((1, 1, 1), np.uint8)
        origin_index = (0, 0, 0)
    image = oriented_image(mask.astype(np.uint8, copy=False), image_to_frame, origin_index)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    # No segment ids to overwrite (the default): where the new voxels overlap a segment sharing the layer,
    # Slicer moves the edited segment to a layer of its own instead of erasing the other segment.
    if not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id, logic.MODE_REPLACE):
        raise GeometryError(f"Slicer refused to update segment '{segment_id}'; its labelmap could not be replaced.")


def replace_segment_region(segmentation_node, segment_id: str, region_mask: np.ndarray, image_to_frame: np.ndarray,
                           origin_index: Sequence[int]) -> None:
    """Replace one segment's voxels inside a box of the grid by ``region_mask``; voxels outside the box stay.

    ``region_mask`` is the box's ``[k, j, i]`` content and ``origin_index`` the (i, j, k) of its first voxel.
    Only the box travels into Slicer, so a click that changes a small region costs little on a large volume.
    Slicer's replace mode would clear the whole segment, so the box is written as a minimum (removes what
    the result left out) and a maximum (adds what it found), both limited to the box's extent.
    """
    if min(region_mask.shape) == 0:
        return
    k_size, j_size, i_size = region_mask.shape
    i0, j0, k0 = (int(v) for v in origin_index)
    image = oriented_image(region_mask.astype(np.uint8, copy=False), image_to_frame, origin_index)
    extent = (i0, i0 + i_size - 1, j0, j0 + j_size - 1, k0, k0 + k_size - 1)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    # No segment ids to overwrite: where the box would cover a segment sharing the layer, Slicer moves the
    # edited segment to a layer of its own, so other segments keep their voxels.
    for mode in (logic.MODE_MERGE_MIN, logic.MODE_MERGE_MAX):
        if not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id, mode, extent):
            raise GeometryError(f"Slicer refused to update segment '{segment_id}'; its labelmap could not be changed.")
