"""Volume node -> geometry.Volume: exact voxels, the node's own grid, clear errors for other volume kinds."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import slicer  # noqa: E402
import vtk  # noqa: E402

import slicer_scene as ss  # noqa: E402
from ClaraAWSLib.core.errors import GeometryError, InputError  # noqa: E402
from ClaraAWSLib.core.geometry import ImageGrid, Volume  # noqa: E402
from ClaraAWSLib.scene.export import export_volume, ijk_to_ras_matrix, volume_grid  # noqa: E402


def _random_volume(grid: ImageGrid, dtype=np.int16, seed=1) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.integers(-1000, 2000, size=grid.size[::-1]).astype(dtype), grid)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int32])
def test_export_is_exact_for_oblique_transformed_volume(harness, dtype):
    grid = ss.oblique_grid()
    source = _random_volume(grid, dtype)
    transform = ss.add_transform(harness, ss.linear_transform())
    node = ss.add_volume(harness, source, transform_node=transform)

    exported = export_volume(node)

    assert exported.array.dtype == np.dtype(dtype)
    assert np.array_equal(exported.array, source.array)
    assert exported.grid.size == grid.size
    # The node's own grid, not moved by the parent transform.
    assert np.allclose(exported.grid.ijk_to_lps(), grid.ijk_to_lps(), atol=1e-9)
    assert np.allclose(ijk_to_ras_matrix(node), grid.ijk_to_ras(), atol=1e-9)


def test_export_is_a_copy_the_scene_cannot_change(harness):
    node = ss.add_volume(harness, _random_volume(ss.oblique_grid()))
    exported = export_volume(node)
    before = exported.array.copy()
    slicer.util.arrayFromVolume(node)[:] = 7
    slicer.util.arrayFromVolumeModified(node)
    assert np.array_equal(exported.array, before)


def test_label_map_is_refused(harness):
    volume = Volume(np.zeros((4, 5, 6), np.uint8), ImageGrid((6, 5, 4), (1, 1, 1), (0, 0, 0)))
    node = ss.add_volume(harness, volume, class_name="vtkMRMLLabelMapVolumeNode")
    with pytest.raises(InputError, match="label map"):
        export_volume(node)


def test_vector_volume_is_refused(harness):
    node = harness.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "RGB")
    image = vtk.vtkImageData()
    image.SetDimensions(4, 4, 4)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    node.SetAndObserveImageData(image)
    with pytest.raises(InputError, match="vector"):
        export_volume(node)


def test_multi_component_scalar_volume_is_refused(harness):
    node = harness.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "4D")
    image = vtk.vtkImageData()
    image.SetDimensions(4, 4, 4)
    image.AllocateScalars(vtk.VTK_SHORT, 5)
    node.SetAndObserveImageData(image)
    with pytest.raises(InputError, match="5 components"):
        export_volume(node)


def test_volume_without_image_data_is_refused(harness):
    node = harness.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Empty")
    with pytest.raises(InputError, match="no image data"):
        export_volume(node)


def test_volume_with_zero_voxels_is_refused(harness):
    node = harness.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Zero")
    image = vtk.vtkImageData()
    image.SetDimensions(0, 0, 0)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    node.SetAndObserveImageData(image)
    with pytest.raises((InputError, GeometryError)):
        export_volume(node)


def test_sequence_frame_is_refused(harness):
    node = ss.add_volume(harness, _random_volume(ImageGrid((6, 5, 4), (1, 1, 1), (0, 0, 0))), name="Frame")
    # The Sequences module registers these classes inside Slicer; slicer-core alone does not.
    browser = harness.scene.AddNode(slicer.vtkMRMLSequenceBrowserNode())
    sequence = harness.scene.AddNode(slicer.vtkMRMLSequenceNode())
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    browser.AddProxyNode(node, sequence, False)
    with pytest.raises(InputError, match="sequence"):
        export_volume(node)


def test_no_volume_is_refused():
    with pytest.raises(InputError, match="No volume"):
        volume_grid(None)


SEGMENTATION_TRANSFORMS = ["another transform", "the volume's transform", "no transform", "volume under none"]


@pytest.mark.parametrize("shared_layer", [False, True], ids=["a layer each", "one shared layer"])
@pytest.mark.parametrize("where", SEGMENTATION_TRANSFORMS)
def test_segments_come_back_on_the_volume_grid_voxel_for_voxel(harness, where, shared_layer):
    """What a submitted label is made of: segments drawn on the volume's lattice, read back on its grid unchanged,
    whatever transforms the two nodes are under (Slicer's exporter alone moves edge voxels when they differ)."""
    from ClaraAWSLib.scene.export import segments_on_volume_grid
    from ClaraAWSLib.scene.loop import labels_by_name

    grid = ss.oblique_grid(size=(40, 32, 18), spacing=(0.83, 1.71, 2.9), origin=(512.4, -734.9, 1211.7))
    volume_transform = ss.add_transform(harness, ss.linear_transform((103.0, -21.5, 7.25), (0.2, 0.9, -0.4), 40.0))
    node = ss.add_volume(harness, _random_volume(grid), transform_node=None if where == "volume under none"
                         else volume_transform)
    other = ss.add_transform(harness, ss.linear_transform((5.0, 3.0, -2.0), (0.3, 1.0, 0.1), 33.0), "Other")
    segmentation_transform = {"another transform": other, "the volume's transform": volume_transform,
                              "no transform": None, "volume under none": other}[where]
    segmentation = ss.new_segmentation(harness, node, transform_node=segmentation_transform)
    rng = np.random.default_rng(7)
    blobs = rng.random(grid.size[::-1]) < 0.3  # ragged edges everywhere: any moved voxel shows
    spleen = blobs & (rng.random(blobs.shape) < 0.5)
    liver = blobs & ~spleen
    ids = [ss.add_segment(segmentation, name, mask, node) for name, mask in (("spleen", spleen), ("liver", liver))]
    if shared_layer:  # as Slicer keeps segments that do not overlap: one layer, label values 1 and 2
        segmentation.GetSegmentation().CollapseBinaryLabelmaps(True)
        assert segmentation.GetSegmentation().GetNumberOfLayers() == 1
    nodes_before = ss.scene_state(harness)

    merged = segments_on_volume_grid(segmentation, node, ids)

    assert np.array_equal(merged, spleen * 1 + liver * 2)
    labels, sent, skipped = labels_by_name(segmentation, node, {"liver": 6, "spleen": 1})
    assert np.array_equal(labels, spleen * 1 + liver * 6) and sent == ["spleen", "liver"] and skipped == []
    assert ss.scene_state(harness) == nodes_before
