"""The panel's active-learning section on the real MONAI Label server, through the Slicer stand-in: a next
sample never inherits the segmentation of the volume before it, and an empty label is not stored as final.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests

pytest.importorskip("slicer")
pytestmark = [pytest.mark.slicer, pytest.mark.monailabel]

import slicer  # noqa: E402
import slicer_scene  # noqa: E402
from ClaraAWSLib.core.geometry import Volume  # noqa: E402
from standin_fixtures import connect, segment_names, wait_idle  # noqa: E402
from slicer_standin import StandinSlicer  # noqa: E402
from slicer_standin import qt_double as qt  # noqa: E402
from test_monailabel_client import organ_volume  # noqa: E402


@pytest.fixture
def app(monkeypatch):
    with StandinSlicer() as app:
        app.start()
        monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda *args, **kwargs: None)  # no slice views here
        yield app


@pytest.fixture
def unlabeled_sample(monailabel_server):
    """(Asked for before ``app``: the stand-in's module loading gives ClaraAWSLib fresh module objects.)
    The id of the only datastore image without a final label (the others get an empty one), so "first" picks it."""
    from ClaraAWSLib.backends import connect as connect_backend

    url = monailabel_server.url
    with connect_backend(url) as client:
        image_id = client.upload_image(organ_volume(seed=61))
        for other in requests.get(f"{url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]:
            if other != image_id:
                grid = client.download_image(other).grid
                client.save_label(other, Volume(np.zeros(grid.size[::-1], np.uint8), grid), {"spleen": 1})
    yield image_id
    requests.delete(f"{url}/datastore/label", params={"id": image_id, "tag": "final"}, timeout=30)


def users_work():
    """The user's own CT and segmentation, with a 'spleen' segment named like a server label."""
    volume = organ_volume(seed=62)
    ct = slicer.util.addVolumeFromArray(volume.array, volume.grid.ijk_to_ras(), "my CT")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "My seg")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    mine = np.zeros(volume.array.shape, bool)
    mine[1:4, 2:6, 2:6] = True
    slicer_scene.add_segment(segmentation, "spleen", mine, ct)
    return ct, segmentation


def connected(app, url):
    panel = app.open_module()
    connect(app, panel, url)
    wait_idle(app, panel, "the datastore listing")
    panel.consent.agreed(url)
    return panel


def next_sample(app, panel):
    panel.ui.strategyComboBox.setCurrentIndex(panel.ui.strategyComboBox.findText("first"))
    panel.ui.nextSampleButton.click()
    wait_idle(app, panel, "next sample")
    return panel._parameterNode.inputVolume


def test_a_next_sample_starts_without_the_previous_volumes_segmentation(monailabel_server, unlabeled_sample, app):
    ct, segmentation = users_work()
    spleen = segmentation.GetSegmentation().GetSegmentIdBySegmentName("spleen")
    before = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, spleen, ct).copy()
    panel = connected(app, monailabel_server.url)
    panel._parameterNode.inputVolume, panel._parameterNode.outputSegmentation = ct, segmentation
    sample = next_sample(app, panel)
    assert sample is not ct and panel._parameterNode.outputSegmentation is None

    app.dialogs.answer(qt.QMessageBox.Ok)
    panel.ui.submitLabelButton.click()  # nothing of 'My seg' may become the sample's label
    wait_idle(app, panel, "submit")
    [refusal] = app.dialogs.texts()
    assert "Choose the segmentation" in refusal
    stored = requests.get(f"{monailabel_server.url}/datastore/label",
                          params={"label": unlabeled_sample, "tag": "final"}, timeout=30)
    assert stored.status_code == 404

    panel.ui.autoModelComboBox.setCurrentIndex(panel.ui.autoModelComboBox.findText("seg_threshold"))
    panel.ui.applyButton.click()
    app.app.run_until(lambda: not panel.autoState.busy, 90, "auto-segmentation")
    assert panel._parameterNode.outputSegmentation is not segmentation  # a new segmentation for the sample
    assert segment_names(segmentation) == ["spleen"]
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, spleen, ct), before)
    assert app.slot_errors == []


def test_a_label_whose_segments_are_empty_is_refused_and_nothing_is_stored(monailabel_server, unlabeled_sample, app):
    panel = connected(app, monailabel_server.url)
    sample = next_sample(app, panel)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Empty")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(sample)
    for name in ("spleen", "liver"):
        segmentation.GetSegmentation().AddEmptySegment(name, name)
    panel._parameterNode.outputSegmentation = segmentation
    completed = requests.get(f"{monailabel_server.url}/datastore/", params={"output": "stats"}, timeout=30).json()
    app.dialogs.answer(qt.QMessageBox.Ok)
    panel.ui.submitLabelButton.click()
    wait_idle(app, panel, "submit")
    [refusal] = app.dialogs.texts()
    assert "hold no voxel" in refusal and "nothing was sent" in refusal
    after = requests.get(f"{monailabel_server.url}/datastore/", params={"output": "stats"}, timeout=30).json()
    assert after["completed"] == completed["completed"]
    assert sample is not None and app.slot_errors == []
