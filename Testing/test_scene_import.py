"""Label Volume -> segments: by value, on the volume's grid, next to the volume, never touching other segments."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import slicer  # noqa: E402
import vtk  # noqa: E402

import segment_layouts as sl  # noqa: E402
import slicer_scene as ss  # noqa: E402
from ClaraAWSLib.core.errors import GeometryError  # noqa: E402
from ClaraAWSLib.core.geometry import ImageGrid, Volume, resample_labels_to_grid  # noqa: E402
from ClaraAWSLib.scene.importer import LabelSegment, import_label_volume, segments_for_labels  # noqa: E402
from ClaraAWSLib.scene.terminology import terminology_tag  # noqa: E402
from ClaraAWSLib.scene.undo import read_tag  # noqa: E402


@pytest.fixture
def grid():
    return ss.oblique_grid()


@pytest.fixture
def volume_node(harness, grid):
    rng = np.random.default_rng(5)
    transform = ss.add_transform(harness, ss.linear_transform())
    return ss.add_volume(harness, Volume(rng.integers(-100, 100, grid.size[::-1]).astype(np.int16), grid),
                         transform_node=transform)


def _labels(grid: ImageGrid) -> np.ndarray:
    labels = np.zeros(grid.size[::-1], np.uint8)
    labels[2:9, 4:20, 6:30] = 1
    labels[10:16, 20:33, 12:40] = 2
    labels[15:18, 1:4, 1:5] = 7
    return labels


def test_segments_for_labels_maps_by_value():
    segments = segments_for_labels(["liver", "spleen"], [2, 5])
    assert segments == [LabelSegment(1, "liver"), LabelSegment(2, "spleen"), LabelSegment(5, "label 5")]
    assert [s.name for s in segments_for_labels(["tumor", "tumor"], [])] == ["tumor", "tumor (2)"]


def test_new_segmentation_matches_labels_voxel_for_voxel(harness, grid, volume_node):
    labels = _labels(grid)
    outcome = import_label_volume(volume_node, Volume(labels, grid),
                                  segments_for_labels(["liver", "spleen", "left kidney"], np.unique(labels)))
    seg = outcome.segmentation_node
    segmentation = seg.GetSegmentation()
    assert outcome.created_node
    assert [segmentation.GetSegment(i).GetName() for i in outcome.segment_ids] == ["liver", "spleen", "left kidney", "label 7"]
    exported = ss.labelmap_on_volume(seg, volume_node, outcome.segment_ids)
    expected = np.select([labels == 1, labels == 2, labels == 7], [1, 2, 4], 0)
    assert np.array_equal(exported, expected)
    assert not (exported == 3).any()  # "left kidney" exists but is empty
    # Placement: same parent transform and subject hierarchy parent as the volume, reference geometry set.
    assert seg.GetTransformNodeID() == volume_node.GetTransformNodeID()
    hierarchy = harness.hierarchy
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(seg)) == hierarchy.GetItemParent(
        hierarchy.GetItemByDataNode(volume_node))
    assert seg.GetNodeReferenceID(seg.GetReferenceImageGeometryReferenceRole()) == volume_node.GetID()
    # Terminology where known; colours all distinct.
    liver = segmentation.GetSegment(outcome.segment_ids[0])
    assert read_tag(liver, liver.GetTerminologyEntryTagName()) == terminology_tag("liver")
    assert "SCT^10200004^Liver" in terminology_tag("liver")
    assert "SCT^7771000^Left" in read_tag(segmentation.GetSegment(outcome.segment_ids[2]), liver.GetTerminologyEntryTagName())
    unknown = read_tag(segmentation.GetSegment(outcome.segment_ids[3]), liver.GetTerminologyEntryTagName())
    assert unknown is None or "Anatomical Structure" not in unknown  # Slicer's generic default, not a guess
    colors = [tuple(np.round(segmentation.GetSegment(i).GetColor(), 3)) for i in outcome.segment_ids]
    assert len(set(colors)) == len(colors)


def test_result_on_another_grid_is_resampled_to_the_volume_grid(harness, grid, volume_node):
    labels = _labels(grid)
    # A server that cropped the volume and resampled it to other spacing (as some deepgrow servers do).
    cropped_origin = grid.ijk_to_lps() @ np.array([5, 3, 1, 1.0])
    other = ImageGrid((30, 28, 30), (0.7, 0.8, 0.9), tuple(cropped_origin[:3]), grid.direction)
    server_result = resample_labels_to_grid(Volume(labels, grid), other)
    expected = resample_labels_to_grid(server_result, grid).array

    outcome = import_label_volume(volume_node, server_result, segments_for_labels(["liver", "spleen"], [1, 2, 7]))

    exported = ss.labelmap_on_volume(outcome.segmentation_node, volume_node, outcome.segment_ids)
    assert exported.shape == labels.shape
    assert np.array_equal(exported == 1, expected == 1)
    assert np.array_equal(exported == 2, expected == 2)
    assert (exported == 1).sum() > 100


def test_existing_segmentation_keeps_other_segments_and_replaces_named_ones(harness, grid, volume_node):
    seg = ss.new_segmentation(harness, volume_node, transform_node=volume_node.GetParentTransformNode())
    user_mask = np.zeros(grid.size[::-1], bool)
    user_mask[0:12, 0:25, 0:25] = True  # overlaps the model's liver and spleen
    user_id = ss.add_segment(seg, "my lesion", user_mask, volume_node)
    old_liver = np.zeros_like(user_mask)
    old_liver[18:20, 30:35, 40:45] = True
    liver_id = ss.add_segment(seg, "liver", old_liver, volume_node, color=(0.1, 0.2, 0.3))
    before = ss.segments_state(seg, volume_node)

    labels = _labels(grid)
    outcome = import_label_volume(volume_node, Volume(labels, grid), segments_for_labels(["liver", "spleen"], [1, 2]), seg)

    after = ss.segments_state(seg, volume_node)
    assert after[user_id] == before[user_id]  # voxel-identical
    assert outcome.segment_ids[0] == liver_id  # replaced in place, same ID
    assert np.array_equal(ss.segment_on_volume(seg, liver_id, volume_node), labels == 1)
    assert np.array_equal(ss.segment_on_volume(seg, outcome.segment_ids[1], volume_node), labels == 2)
    assert np.allclose(seg.GetSegmentation().GetSegment(liver_id).GetColor(), (0.1, 0.2, 0.3))  # the user's colour
    assert ss.segment_ids(seg)[:2] == [user_id, liver_id]  # order kept
    assert outcome.created_segment_ids == [outcome.segment_ids[1]]
    # The undo entry restores the segmentation exactly.
    outcome.undo_entry.undo(seg)
    assert ss.segments_state(seg, volume_node) == before


def test_segmentation_under_another_transform_gets_result_in_the_right_place(harness, grid, volume_node):
    other_transform = ss.add_transform(harness, ss.linear_transform((-20, 5, 9), (0, 0, 1), -31), "Other")
    seg = ss.new_segmentation(harness, volume_node, transform_node=other_transform)
    labels = _labels(grid)
    outcome = import_label_volume(volume_node, Volume(labels, grid), segments_for_labels(["liver", "spleen"], [1, 2]), seg)
    assert seg.GetTransformNodeID() == other_transform.GetID()  # the user's choice is kept
    # The stored labelmap holds the voxels unchanged, on a grid that coincides with the volume's in world space.
    layer = slicer.vtkOrientedImageData()
    assert slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(seg, outcome.segment_ids[0], layer, False)
    image_to_segmentation = vtk.vtkMatrix4x4()
    layer.GetImageToWorldMatrix(image_to_segmentation)
    segmentation_to_world, volume_to_world = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    other_transform.GetMatrixTransformToWorld(segmentation_to_world)
    volume_node.GetParentTransformNode().GetMatrixTransformToWorld(volume_to_world)
    as_array = slicer.util.arrayFromVTKMatrix
    layer_world = as_array(segmentation_to_world) @ as_array(image_to_segmentation)
    volume_world = as_array(volume_to_world) @ grid.ijk_to_ras()
    assert np.allclose(layer_world, volume_world, atol=1e-6)
    k, j, i = np.nonzero(labels == 1)
    expected = np.stack([i, j, k], axis=1)
    assert np.array_equal(sl.layer_positions(layer, 1), expected[np.lexsort(expected.T[::-1])])  # voxels unchanged
    # Slicer's exporter resamples across the two transforms; nearly every voxel still agrees.
    exported = ss.labelmap_on_volume(seg, volume_node)
    for value in (1, 2):
        overlap = ((exported == value) & (labels == value)).sum()
        assert overlap > 0.95 * (labels == value).sum()


def test_bad_labels_change_nothing(harness, grid, volume_node):
    seg = ss.new_segmentation(harness, volume_node, transform_node=volume_node.GetParentTransformNode())
    user_id = ss.add_segment(seg, "mine", np.ones(grid.size[::-1], bool), volume_node)
    nodes, segments = ss.scene_state(harness), ss.segments_state(seg, volume_node)
    negative = np.zeros(grid.size[::-1], np.int16)
    negative[0, 0, 0] = -3
    with pytest.raises(GeometryError):
        import_label_volume(volume_node, Volume(negative, grid), segments_for_labels(["liver"], [1]), seg)
    with pytest.raises(GeometryError):
        import_label_volume(volume_node, Volume(negative, grid), segments_for_labels(["liver"], [1]))
    assert ss.scene_state(harness) == nodes
    assert ss.segments_state(seg, volume_node) == segments
    assert ss.segment_ids(seg) == [user_id]
