"""Where a result shows up: subject hierarchy placement, transforms between nodes, Segment Editor selection."""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from ..core.errors import InputError

SEGMENT_EDITOR_SINGLETON_TAG = "SegmentEditor"


def _to_world(node) -> np.ndarray:
    transform_node = node.GetParentTransformNode()
    if transform_node is None:
        return np.eye(4)
    matrix = vtk.vtkMatrix4x4()
    transform_node.GetMatrixTransformToWorld(matrix)
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def volume_to_segmentation_frame(volume_node, segmentation_node) -> np.ndarray:
    """4x4 matrix from the volume's own RAS to the segmentation's own RAS (identity when they share a transform)."""
    if segmentation_node is None or volume_node.GetTransformNodeID() == segmentation_node.GetTransformNodeID():
        return np.eye(4)
    for node in (volume_node, segmentation_node):
        transform_node = node.GetParentTransformNode()
        if transform_node is not None and not transform_node.IsTransformToWorldLinear():
            raise InputError(
                f"The segmentation '{segmentation_node.GetName()}' and the volume '{volume_node.GetName()}' are under "
                "different transforms and one is non-linear; put both under the same transform or choose a new segmentation."
            )
    return np.linalg.inv(_to_world(segmentation_node)) @ _to_world(volume_node)


def place_next_to(node, reference_node) -> None:
    """Put ``node`` under the same subject hierarchy parent as ``reference_node`` (creating its item if needed)."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    if hierarchy is None:
        return
    reference_item = hierarchy.GetItemByDataNode(reference_node)
    parent_item = hierarchy.GetItemParent(reference_item) if reference_item else hierarchy.GetSceneItemID()
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent_item)
    else:
        # Without Slicer's Qt plugin logic (slicer-core) nothing creates items for new nodes.
        hierarchy.CreateItem(parent_item, node)


def segment_editor_node(scene):
    """The Segment Editor module's singleton parameter node, created the way the module creates it if missing."""
    node = scene.GetSingletonNode(SEGMENT_EDITOR_SINGLETON_TAG, "vtkMRMLSegmentEditorNode")
    if node is None:
        node = slicer.vtkMRMLSegmentEditorNode()
        node.SetSingletonTag(SEGMENT_EDITOR_SINGLETON_TAG)
        node = scene.AddNode(node)
    return node


def select_in_editor(editor_node, segmentation_node, segment_id: str) -> None:
    """Select the result in the editor a request came from, if that editor still shows its segmentation.

    The editor may be embedded in another module; the user's choices in it (and in the Segment Editor
    module) are left as they are.
    """
    if editor_node is not None and editor_node.GetSegmentationNode() is segmentation_node:
        editor_node.SetSelectedSegmentID(segment_id)


def select_in_segment_editor(segmentation_node, volume_node, segment_id: str) -> None:
    editor = segment_editor_node(segmentation_node.GetScene())
    editor.SetAndObserveSegmentationNode(segmentation_node)
    editor.SetAndObserveSourceVolumeNode(volume_node)
    editor.SetSelectedSegmentID(segment_id)
