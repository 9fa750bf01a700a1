"""Headless MRML scenes for tests, built with the slicer-core wheel (no Qt, no Slicer application).

Import only after ``pytest.importorskip("slicer")``. The helpers mimic what the Slicer application
does for free: scene logics, subject hierarchy items for new data nodes, ``slicer.mrmlScene``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ClaraAWSLib.core.geometry import ImageGrid, Volume
from ClaraAWSLib.scene.setup import SceneServices, ensure_scene_services


@dataclass
class HeadlessScene:
    scene: object
    services: SceneServices
    patient_item: int  # a subject hierarchy folder the helper puts volumes in

    @property
    def hierarchy(self):
        return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)


def new_scene() -> HeadlessScene:
    scene = slicer.vtkMRMLScene()
    services = ensure_scene_services(scene)
    slicer.mrmlScene = scene  # lets slicer.util helpers work, as inside Slicer
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Anonymous patient")
    study = hierarchy.CreateStudyItem(patient, "Study")
    return HeadlessScene(scene, services, study)


def vtk_matrix(array) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(np.asarray(array)[row, column]))
    return matrix


def rotation(axis: Sequence[float], degrees: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def oblique_grid(size=(48, 40, 20), spacing=(0.9, 1.3, 2.5), origin=(-31.5, 17.25, -40.0),
                 axis=(0.3, 1.0, 0.4), degrees=23.0) -> ImageGrid:
    """An oblique, anisotropic grid with a non-zero origin (LPS terms, as ImageGrid wants)."""
    return ImageGrid(size, spacing, origin, rotation(axis, degrees))


def linear_transform(translation=(12.0, -7.5, 4.25), axis=(1.0, -0.2, 0.5), degrees=17.0) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation(axis, degrees)
    matrix[:3, 3] = translation
    return matrix


def add_transform(harness: HeadlessScene, matrix: np.ndarray, name: str = "Registration"):
    node = harness.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(vtk_matrix(matrix))
    return node


def add_volume(harness: HeadlessScene, volume: Volume, name: str = "CT", transform_node=None,
               class_name: str = "vtkMRMLScalarVolumeNode"):
    """A volume node holding ``volume`` exactly, placed in the patient's study like a loaded series."""
    node = harness.scene.AddNewNodeByClass(class_name, name)
    image = vtk.vtkImageData()
    image.SetDimensions(*volume.grid.size)
    array = np.ascontiguousarray(volume.array)
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True, array_type=numpy_support.get_vtk_array_type(array.dtype))
    image.GetPointData().SetScalars(scalars)
    node.SetIJKToRASMatrix(vtk_matrix(volume.grid.ijk_to_ras()))
    node.SetAndObserveImageData(image)
    node.CreateDefaultDisplayNodes()
    if transform_node is not None:
        node.SetAndObserveTransformNodeID(transform_node.GetID())
    hierarchy = harness.hierarchy
    item = hierarchy.GetItemByDataNode(node) or hierarchy.CreateItem(harness.patient_item, node)
    hierarchy.SetItemParent(item, harness.patient_item)
    return node


def segment_ids(segmentation_node) -> List[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(index) for index in range(segmentation.GetNumberOfSegments())]


def labelmap_on_volume(segmentation_node, volume_node, ids: Optional[Iterable[str]] = None) -> np.ndarray:
    """Segments exported to the volume's grid with Slicer's own exporter; value n = n-th listed segment."""
    ids = list(ids) if ids is not None else segment_ids(segmentation_node)
    scene = segmentation_node.GetScene()
    existing = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    try:
        if volume_node.GetTransformNodeID() != segmentation_node.GetTransformNodeID():
            # Slicer's exporter misplaces edge voxels between two different transforms (it sees their chain as
            # non-linear: v5.8.1 Libs/vtkSegmentationCore/vtkOrientedImageDataResample.cxx:957-999 and 1266), so
            # read on the volume's lattice as the segmentation's frame sees it, computed here from the transforms.
            volume_node = _volume_lattice_in_frame_of(segmentation_node, volume_node)
        id_array = vtk.vtkStringArray()
        for segment_id in ids:
            id_array.InsertNextValue(segment_id)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, id_array, label_node, volume_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        )
        assert ok, "ExportSegmentsToLabelmapNode failed"
        image = label_node.GetImageData()
        if image is None or image.GetPointData().GetScalars() is None:  # only empty segments: nothing exported
            return np.zeros(volume_node.GetImageData().GetDimensions()[::-1], np.int16)
        dims = image.GetDimensions()
        return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1]).copy()
    finally:
        # The exporter also adds a display node and a colour table; leave the scene as it was.
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node.GetID() not in existing:
                scene.RemoveNode(node)


def _volume_lattice_in_frame_of(segmentation_node, volume_node):
    stand_in = segmentation_node.GetScene().AddNewNodeByClass("vtkMRMLScalarVolumeNode", "volume lattice")
    stand_in.SetIJKToRASMatrix(vtk_matrix(volume_frame(volume_node, segmentation_node)))
    geometry = vtk.vtkImageData()
    geometry.SetDimensions(*volume_node.GetImageData().GetDimensions())
    stand_in.SetAndObserveImageData(geometry)
    stand_in.SetAndObserveTransformNodeID(segmentation_node.GetTransformNodeID())
    return stand_in


def segment_on_volume(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    return labelmap_on_volume(segmentation_node, volume_node, [segment_id]) > 0


def scene_state(harness: HeadlessScene) -> Dict[str, str]:
    """Node id -> class name, for before/after comparisons."""
    scene = harness.scene
    return {scene.GetNthNode(i).GetID(): scene.GetNthNode(i).GetClassName() for i in range(scene.GetNumberOfNodes())}


def segments_state(segmentation_node, volume_node) -> Dict[str, tuple]:
    """Segment id -> (name, voxels on the volume grid as bytes) for exact before/after comparisons."""
    state = {}
    for segment_id in segment_ids(segmentation_node):
        mask = segment_on_volume(segmentation_node, segment_id, volume_node)
        state[segment_id] = (segmentation_node.GetSegmentation().GetSegment(segment_id).GetName(), mask.tobytes())
    return state


def volume_frame(volume_node, segmentation_node) -> np.ndarray:
    """Volume IJK -> the segmentation's own RAS, computed here from the two transforms (not by ClaraAWS)."""
    def to_world(node):
        matrix = vtk.vtkMatrix4x4()
        transform = node.GetParentTransformNode()
        if transform is not None:
            transform.GetMatrixTransformToWorld(matrix)
        return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])

    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    ijk = np.array([[ijk_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)])
    return np.linalg.inv(to_world(segmentation_node)) @ to_world(volume_node) @ ijk


def paint_segment(segmentation_node, segment_id: str, mask: np.ndarray, image_to_frame: np.ndarray, mode=None) -> None:
    """Set a segment's voxels with Slicer's own API, as a user's stroke would (``mask`` on the given lattice)."""
    image = slicer.vtkOrientedImageData()
    array = np.ascontiguousarray(mask.astype(np.uint8))
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.ravel(), deep=True))
    image.SetImageToWorldMatrix(vtk_matrix(image_to_frame))
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id,
                                            logic.MODE_REPLACE if mode is None else mode)


def add_segment(segmentation_node, name: str, mask: np.ndarray, volume_node, color=(0.2, 0.6, 0.9)) -> str:
    """A user-drawn segment with ``mask`` (``[k,j,i]`` on the volume grid)."""
    segment_id = segmentation_node.GetSegmentation().AddEmptySegment("", name, list(color))
    if mask.any():
        paint_segment(segmentation_node, segment_id, mask, volume_frame(volume_node, segmentation_node))
    return segment_id


def new_segmentation(harness: HeadlessScene, volume_node, name: str = "Segmentation", transform_node=None):
    node = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    if transform_node is not None:
        node.SetAndObserveTransformNodeID(transform_node.GetID())
    # As the Segment Editor does for a new segmentation: its reference grid is the source volume's, in its own frame.
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    return node


def read_segment_tag(segment, name: str):
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


def voxel_to_world(volume_node, ijk: Sequence[float]) -> List[float]:
    """World RAS of a voxel centre (through the volume's parent transform), as a markup would report it."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    local = matrix.MultiplyPoint([float(v) for v in ijk] + [1.0])[:3]
    world = [0.0, 0.0, 0.0]
    volume_node.TransformPointToWorld(local, world)
    return list(world)


def extreme_points(mask: np.ndarray) -> List[List[int]]:
    """The six extreme voxels [i, j, k] of a mask, one at each end of each axis."""
    k, j, i = np.nonzero(mask)
    points = []
    for axis in (i, j, k):
        for index in (int(np.argmin(axis)), int(np.argmax(axis))):
            points.append([int(i[index]), int(j[index]), int(k[index])])
    return points


def centre_voxel(mask: np.ndarray) -> List[int]:
    k, j, i = np.nonzero(mask)
    middle = np.argmin((k - k.mean()) ** 2 + (j - j.mean()) ** 2 + (i - i.mean()) ** 2)
    return [int(i[middle]), int(j[middle]), int(k[middle])]


def world_points(volume_node, voxels) -> List[List[float]]:
    return [voxel_to_world(volume_node, voxel) for voxel in voxels]

