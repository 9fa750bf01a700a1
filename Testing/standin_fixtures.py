"""Fixtures and user actions for tests that run ClaraAWS through the Slicer stand-in (slicer_standin/)."""

from __future__ import annotations

from typing import Iterator

import pytest

pytest.importorskip("slicer")

from slicer_standin import PROFILES, StandinSlicer  # noqa: E402

WAIT_SECONDS = 90.0


@pytest.fixture(params=PROFILES, ids=lambda profile: f"slicer-{profile.name}")
def profile(request):
    return request.param


@pytest.fixture
def slicer_app(profile) -> Iterator[StandinSlicer]:
    """A started Slicer (the module loaded, startupCompleted emitted) with nothing else done."""
    with StandinSlicer(profile) as app:
        app.start()
        yield app


@pytest.fixture(scope="module")
def phantom():
    from ClaraAWSLib.synthetic.phantom import make_phantom

    return make_phantom(size=(80, 80, 32), spacing=(3.6, 3.6, 7.5), seed=11)


def add_volume(phantom, name: str = "CT"):
    import slicer

    return slicer.util.addVolumeFromArray(phantom.ct.array, phantom.ct.grid.ijk_to_ras(), name)


def connect(app: StandinSlicer, panel, url: str) -> None:
    """The user types the address and clicks Connect; returns when the panel shows the connection."""
    panel.ui.serverUrlComboBox.setEditText(url)
    panel.ui.connectButton.click()
    app.app.run_until(lambda: panel.ui.connectButton.enabled and panel.runner.busy is False, WAIT_SECONDS,
                      "connect")


def wait_idle(app: StandinSlicer, panel, what: str = "the request") -> None:
    app.app.run_until(lambda: not panel.runner.busy, WAIT_SECONDS, what)


def segment_names(segmentation_node):
    segmentation = segmentation_node.GetSegmentation()
    return sorted(segmentation.GetNthSegment(index).GetName() for index in range(segmentation.GetNumberOfSegments()))


def nodes_of_class(class_name: str):
    import slicer

    scene = slicer.mrmlScene
    return [scene.GetNthNodeByClass(index, class_name) for index in range(scene.GetNumberOfNodesByClass(class_name))]


def open_effect(app: StandinSlicer, volume, segmentation=None):
    """The user opens the Segment Editor with a new, empty segmentation and picks Effects -> ClaraAWS."""
    import slicer

    app.open_module("SegmentEditor")
    editor = app.segment_editor()
    if segmentation is None:
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    editor.setSegmentationNode(segmentation)
    editor.setSourceVolumeNode(volume)
    editor.setActiveEffectByName("ClaraAWS")
    return editor, editor.activeEffect().self()


def voxels(segmentation, segment_id, volume) -> int:
    import numpy as np
    import slicer

    array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume)
    return 0 if array is None else int(np.count_nonzero(array))


def segment_ids(segmentation):
    seg = segmentation.GetSegmentation()
    return [seg.GetNthSegmentID(index) for index in range(seg.GetNumberOfSegments())]


def world_of_voxels(volume, voxels_ijk):
    """RAS of voxel centres (the volume has no parent transform here), as a markup click would give."""
    import numpy as np
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(matrix)
    return [list((ijk_to_ras @ np.array([*map(float, voxel), 1.0]))[:3]) for voxel in voxels_ijk]


def closed_surface_segmentation(volume, phantom, name: str = "Surfaces"):
    """A segmentation stored as closed surfaces (its source representation), with the user's 'my structure'."""
    import numpy as np
    import slicer
    import slicer_scene

    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    mine = np.zeros(phantom.ct.array.shape, bool)
    mine[4:10, 5:20, 5:20] = True
    slicer_scene.add_segment(segmentation, "my structure", mine, volume)
    segmentation.CreateClosedSurfaceRepresentation()
    segmentation.SetSourceRepresentationToClosedSurface()
    return segmentation
