"""Volume node -> ``geometry.Volume``: the exact voxels and the node's own (untransformed) grid.

A parent transform is deliberately left out of the exported grid: the server sees the volume as it is
stored, and the result goes back under the same parent transform, so it lines up wherever the
transform moves the volume. Oblique volumes keep their full direction matrix.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..core.errors import GeometryError, InputError
from ..core.finite import check_finite
from ..core.geometry import ImageGrid, Volume
from .labelmaps import vtk_matrix
from .placement import volume_to_segmentation_frame

#: Volume node classes that are scalar in the MRML class tree but are not plain scalar intensities.
_NOT_SCALAR_CLASSES: Tuple[Tuple[str, str], ...] = (
    ("vtkMRMLLabelMapVolumeNode", "is a label map; choose the image (scalar volume) it was drawn on instead"),
    ("vtkMRMLStreamingVolumeNode", "is a video stream; ClaraAWS segments 3D scalar volumes only"),
    ("vtkMRMLDiffusionTensorVolumeNode", "is a tensor volume; ClaraAWS segments 3D scalar volumes only"),
    ("vtkMRMLDiffusionWeightedVolumeNode", "is a diffusion-weighted (4D) volume; extract one scalar volume first"),
    ("vtkMRMLMultiVolumeNode", "is a 4D multi-volume; extract one frame as a scalar volume first"),
    ("vtkMRMLVectorVolumeNode", "is a vector (colour) volume; convert it to a scalar volume first"),
)


def ijk_to_ras_matrix(volume_node) -> np.ndarray:
    """The node's own IJK-to-RAS matrix (parent transforms not applied) as a 4x4 array."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def _node_label(volume_node) -> str:
    return f"'{volume_node.GetName()}'" if volume_node.GetName() else "the selected volume"


def _is_sequence_frame(volume_node) -> bool:
    scene = volume_node.GetScene()
    if scene is None:
        return False
    browser_class = "vtkMRMLSequenceBrowserNode"
    for index in range(scene.GetNumberOfNodesByClass(browser_class)):
        if scene.GetNthNodeByClass(index, browser_class).IsProxyNodeID(volume_node.GetID()):
            return True
    return False


def first_image_volume(scene):
    """The first volume the panel's input selector lists, or None.

    The selector lists only plain ``vtkMRMLScalarVolumeNode`` nodes (``showChildNodeTypes`` false in
    ClaraAWS.ui), so label maps and colour volumes, which derive from it, are passed over here too;
    ``GetFirstNodeByClass`` would return them.
    """
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if node.GetClassName() == "vtkMRMLScalarVolumeNode" and not node.GetHideFromEditors():
            return node
    return None


def check_scalar_volume(volume_node) -> None:
    """Raise InputError unless ``volume_node`` is a 3D single-component scalar volume with voxels."""
    if volume_node is None or not volume_node.IsA("vtkMRMLVolumeNode"):
        raise InputError("No volume is selected; choose a CT or MR volume to segment.")
    for class_name, reason in _NOT_SCALAR_CLASSES:
        if volume_node.IsA(class_name):
            raise InputError(f"The volume {_node_label(volume_node)} {reason}.")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(
            f"The volume {_node_label(volume_node)} is a {volume_node.GetClassName()}; "
            "ClaraAWS segments 3D scalar volumes only."
        )
    image = volume_node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"The volume {_node_label(volume_node)} has no image data; load its voxels first.")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"The volume {_node_label(volume_node)} has {image.GetNumberOfScalarComponents()} components per voxel; "
            "ClaraAWS needs a single-component scalar volume (extract one component or frame first)."
        )
    if _is_sequence_frame(volume_node):
        raise InputError(
            f"The volume {_node_label(volume_node)} is a frame of a sequence (4D); "
            "clone the current frame into a plain volume and segment that."
        )
    dimensions = image.GetDimensions()
    if min(dimensions) < 1 or int(np.prod(dimensions)) == 0:
        raise GeometryError(f"The volume {_node_label(volume_node)} is empty (it has no voxels); load image data first.")


def volume_grid(volume_node) -> ImageGrid:
    """The grid of the image ClaraAWS sends for ``volume_node`` (checks the volume kind first)."""
    check_scalar_volume(volume_node)
    return ImageGrid.from_ijk_to_ras(ijk_to_ras_matrix(volume_node), volume_node.GetImageData().GetDimensions())


def export_volume(volume_node) -> Volume:
    """Copy the voxels and grid of ``volume_node`` into a Volume that worker threads may use freely."""
    grid = volume_grid(volume_node)
    image = volume_node.GetImageData()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    # A copy: the worker thread must never read VTK memory that the GUI thread may change or free.
    array = np.array(scalars, copy=True).reshape(tuple(reversed(grid.size)))
    volume = Volume(array, grid)
    # Here, on the GUI thread, so the panel says it when the button is pressed rather than after a wait.
    check_finite(volume, f"The volume {_node_label(volume_node)}" if volume_node.GetName() else "The selected volume")
    return volume


def segments_on_volume_grid(segmentation_node, volume_node, segment_ids: Sequence[str]) -> np.ndarray:
    """The segments as one ``[k, j, i]`` array on the volume's own grid: value n for the n-th id, 0 elsewhere.

    Slicer's exporter does the work (closed surfaces are converted as Slicer converts them). When the two
    nodes are under different transforms, it would move the volume's geometry into the segmentation's
    frame with ``TransformOrientedImage``, and a chain of two node transforms is not recognised as linear
    there (Slicer v5.8.1 Libs/vtkSegmentationCore/vtkOrientedImageDataResample.cxx:957-999, also on main),
    so only the extent changes (same file, line 1266): segments are resampled twice between lattices that
    do not line up, and voxels at a structure's edges move. Instead the exporter gets a stand-in of the
    volume under the segmentation's own transform, whose lattice is the volume's seen from that frame:
    nothing is left to transform, and a segment drawn on the volume's lattice is copied voxel for voxel.
    """
    scene = segmentation_node.GetScene()
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    dims = volume_node.GetImageData().GetDimensions()
    try:
        reference = volume_node
        if volume_node.GetTransformNodeID() != segmentation_node.GetTransformNodeID():
            frame = volume_to_segmentation_frame(volume_node, segmentation_node) @ ijk_to_ras_matrix(volume_node)
            reference = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ClaraAWS reference grid")
            reference.SetIJKToRASMatrix(vtk_matrix(frame))
            geometry = vtk.vtkImageData()
            geometry.SetDimensions(*dims)
            reference.SetAndObserveImageData(geometry)
            reference.SetAndObserveTransformNodeID(segmentation_node.GetTransformNodeID())
        label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "ClaraAWS export")
        ids = vtk.vtkStringArray()
        for segment_id in segment_ids:
            ids.InsertNextValue(segment_id)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, label_node, reference, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        )
        if not ok:
            raise InputError(f"The segments of '{segmentation_node.GetName()}' could not be exported on the volume's grid.")
        image = label_node.GetImageData()
        if image is None or image.GetPointData().GetScalars() is None:  # only empty segments
            return np.zeros(dims[::-1], np.uint8)
        return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1]).copy()
    finally:
        # The exporter adds a display node and a colour table too: leave the scene exactly as it was.
        for node in [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]:
            if node.GetID() not in before:
                scene.RemoveNode(node)
