"""What a user meets around the edges, through the Slicer stand-in on slicer-core's scene: which volume
the panel starts with, the effect in an editor another module embeds, the effect on a server without the
model a tool needs or with no server, a question the user declines, and the names messages use.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import slicer  # noqa: E402
import vtk  # noqa: E402
from loopback_servers import LoopbackServer, _QuietHandler  # noqa: E402
from standin_fixtures import (  # noqa: E402,F401
    add_volume, closed_surface_segmentation, connect, open_effect, phantom, profile, segment_names, slicer_app,
    wait_idle, world_of_voxels,
)

from slicer_standin import qt_double as qt  # noqa: E402


def connected_panel(app, url):
    panel = app.open_module()
    connect(app, panel, url)
    assert panel.connectedUrl() == url, app.dialogs.texts()
    panel.consent.agreed(url)
    return panel


def organ_centre(phantom, organ):
    k, j, i = np.nonzero(phantom.truth.array == phantom.label_value(organ))
    return [int(np.median(axis)) for axis in (i, j, k)]


def add_derived_volume(kind, phantom):
    """A label map or a colour volume: both derive from vtkMRMLScalarVolumeNode in MRML's class tree."""
    node = slicer.mrmlScene.AddNewNodeByClass(kind, "not a CT")
    image = vtk.vtkImageData()
    image.SetDimensions(*phantom.ct.grid.size)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3 if kind == "vtkMRMLVectorVolumeNode" else 1)
    node.SetAndObserveImageData(image)
    return node


# ------------------------------------------------------------------------------------------ the input volume
@pytest.mark.parametrize("kind", ["vtkMRMLLabelMapVolumeNode", "vtkMRMLVectorVolumeNode"])
def test_a_volume_loaded_before_the_ct_that_is_no_ct_does_not_become_the_input(slicer_app, phantom,
                                                                                reference_server, kind):
    add_derived_volume(kind, phantom)
    ct = add_volume(phantom)
    panel = connected_panel(slicer_app, reference_server.url)
    assert panel._parameterNode.inputVolume is ct  # the module picks what its selector lists
    assert panel.ui.inputVolumeSelector.currentNode() is ct
    panel.ui.applyButton.click()
    wait_idle(slicer_app, panel, "auto-segmentation")
    assert slicer_app.dialogs.shown == [], slicer_app.dialogs.texts()
    assert len(segment_names(panel._parameterNode.outputSegmentation)) == 4
    assert slicer_app.slot_errors == []


def test_with_only_a_label_map_in_the_scene_nothing_is_chosen_and_auto_segment_says_why(slicer_app, phantom,
                                                                                         reference_server):
    add_derived_volume("vtkMRMLLabelMapVolumeNode", phantom)
    panel = connected_panel(slicer_app, reference_server.url)
    assert panel._parameterNode.inputVolume is None
    assert not panel.ui.applyButton.enabled and panel.ui.applyButton.toolTip == "Choose an input volume."


def test_a_label_map_set_as_input_by_a_script_blanks_the_selector_and_auto_segment_names_it(slicer_app, phantom,
                                                                                              reference_server):
    """qMRMLNodeComboBox shows nothing for a node it does not list (SOURCES.md section 13); the wrapper ignores
    the combo's None while it writes the GUI (parameterNodeWrapper/wrapper.py v5.8.1:172-191), so the
    parameter keeps the label map and Auto-segment explains."""
    add_volume(phantom)
    panel = connected_panel(slicer_app, reference_server.url)
    labels = add_derived_volume("vtkMRMLLabelMapVolumeNode", phantom)
    panel._parameterNode.inputVolume = labels
    assert panel.ui.inputVolumeSelector.currentNode() is None
    panel.ui.applyButton.click()
    wait_idle(slicer_app, panel)
    [message] = slicer_app.dialogs.texts()
    assert "The volume 'not a CT' is a label map; choose the image" in message
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0


# ------------------------------------------------------------------------ the effect in an embedded editor
def test_deepgrow_clicks_in_an_embedded_editor_edit_one_new_segment_and_leave_the_segment_editor_module_alone(
        slicer_app, phantom, reference_server):
    app = slicer_app
    volume = add_volume(phantom)
    panel = connected_panel(app, reference_server.url)
    app.open_module("SegmentEditor")
    module_editor = app.segment_editor()
    other_work = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Other work")
    module_editor.setSegmentationNode(other_work)
    module_editor.setSourceVolumeNode(volume)

    embedded = slicer.qMRMLSegmentEditorWidget()
    embedded.setMRMLSegmentEditorNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"))
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Embedded")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    embedded.setSegmentationNode(segmentation)
    embedded.setSourceVolumeNode(volume)
    embedded.setActiveEffectByName("ClaraAWS")
    effect = embedded.activeEffect().self()
    effect.deepgrowToolButton.checked = True
    centre = organ_centre(phantom, "spleen")
    clicks = effect.foregroundPlaceWidget.currentNode()
    clicks.AddControlPointWorld(*world_of_voxels(volume, [centre])[0])
    wait_idle(app, panel, "first click")
    [made] = [segmentation.GetSegmentation().GetNthSegmentID(0)]
    assert embedded.mrmlSegmentEditorNode().GetSelectedSegmentID() == made  # the next click edits it
    clicks.AddControlPointWorld(*world_of_voxels(volume, [[centre[0] + 1, centre[1], centre[2]]])[0])
    wait_idle(app, panel, "second click")
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1, segment_names(segmentation)
    assert module_editor.segmentationNode() is other_work
    assert app.dialogs.shown == [] and app.slot_errors == []


# --------------------------------------------------- the effect without the model a tool needs, or a server
class _ModelsOnly(_QuietHandler):
    """A server that lists the models it was given and answers nothing else (each other request is counted)."""

    def do_GET(self):  # noqa: N802
        if self.path.split("?")[0].rstrip("/") == "/v1/models":
            self.answer(200, json.dumps(self.server.owner.models).encode(), "application/json")
        else:
            self.server.owner.other_requests += 1
            self.answer(404, b"{}", "application/json")

    def do_POST(self):  # noqa: N802
        self.read_body()
        self.server.owner.other_requests += 1
        self.answer(500, b"{}", "application/json")


@pytest.fixture
def server_listing(reference_server):
    servers = []

    def listing(*without_types):
        server = LoopbackServer(_ModelsOnly)
        server.models = [model for model in requests.get(reference_server.url + "/v1/models", timeout=10).json()
                         if model["type"] not in without_types]
        server.other_requests = 0
        servers.append(server.start())
        return server

    yield listing
    for server in servers:
        server.stop()


def test_the_effect_offers_no_auto_segment_when_the_server_has_no_segmentation_model(slicer_app, phantom,
                                                                                      server_listing):
    server = server_listing("segmentation")
    volume = add_volume(phantom)
    connected_panel(slicer_app, server.url)
    asked_when_connecting = server.other_requests  # which backend it is
    editor, effect = open_effect(slicer_app, volume)
    assert effect.autoModelCombo.count == 0
    assert not effect.autoSegmentButton.enabled
    assert effect.autoSegmentButton.toolTip == "The server offers no segmentation model; choose another server."
    assert effect.annotateButton.toolTip == "Place at least 6 extreme points; 0 placed."  # its model is there
    effect.onAutoSegment()  # a script calling the slot directly gets the reason, not a request
    assert effect.statusLabel.text == effect.autoSegmentButton.toolTip
    assert slicer_app.dialogs.shown == [] and server.other_requests == asked_when_connecting


def test_a_deepgrow_click_on_a_server_without_a_deepgrow_model_says_so_and_sends_nothing(slicer_app, phantom,
                                                                                          server_listing):
    server = server_listing("deepgrow")
    volume = add_volume(phantom)
    panel = connected_panel(slicer_app, server.url)
    asked_when_connecting = server.other_requests  # which backend it is
    editor, effect = open_effect(slicer_app, volume)
    effect.deepgrowToolButton.checked = True
    effect.foregroundPlaceWidget.currentNode().AddControlPointWorld(
        *world_of_voxels(volume, [organ_centre(phantom, "spleen")])[0])
    wait_idle(slicer_app, panel)
    assert effect.statusLabel.text == "The server offers no model for this; choose another server."
    assert slicer_app.dialogs.shown == [] and server.other_requests == asked_when_connecting
    assert segment_names(editor.segmentationNode()) == []


def test_a_deepgrow_click_in_the_effect_before_connecting_asks_nothing_and_says_to_connect(slicer_app, phantom):
    volume = add_volume(phantom)
    panel = slicer_app.open_module()
    editor, effect = open_effect(slicer_app, volume)
    assert effect.serverLabel.text == "not connected"
    assert not effect.autoSegmentButton.enabled and not effect.annotateButton.enabled
    effect.deepgrowToolButton.checked = True
    effect.foregroundPlaceWidget.currentNode().AddControlPointWorld(
        *world_of_voxels(volume, [organ_centre(phantom, "spleen")])[0])
    wait_idle(slicer_app, panel)
    assert slicer_app.dialogs.shown == []  # no upload question for a server that is not there
    assert effect.statusLabel.text == "Connect to a server first."
    assert slicer_app.slot_errors == []


def test_the_panel_refuses_an_effect_request_without_a_server_before_asking_anything(slicer_app, phantom):
    panel = slicer_app.open_module()
    said, prepared = [], []
    panel.runEditRequest("deepgrow", lambda: prepared.append(1), "Deepgrow failed.", "deepgrow", said.append)
    assert said == ["Not connected: connect to a server in the ClaraAWS module first."]
    assert prepared == [] and slicer_app.dialogs.shown == []


# ---------------------------------------------------------------------- questions declined, names in messages
def test_declining_the_closed_surface_conversion_changes_nothing_and_shows_no_second_box(slicer_app, phantom,
                                                                                         reference_server):
    volume = add_volume(phantom)
    panel = connected_panel(slicer_app, reference_server.url)
    segmentation = closed_surface_segmentation(volume, phantom)
    panel._parameterNode.outputSegmentation = segmentation
    slicer_app.dialogs.answer(qt.QMessageBox.Cancel)  # "convert it?" - no
    panel.ui.applyButton.click()
    wait_idle(slicer_app, panel)
    [question] = slicer_app.dialogs.texts()
    assert "convert it?" in question
    assert segment_names(segmentation) == ["my structure"]
    assert segmentation.GetSegmentation().GetSourceRepresentationName() == "Closed surface"
    assert slicer_app.slot_errors == []


def test_a_segment_deleted_while_deepgrow_runs_is_named_as_the_user_knows_it(slicer_app, phantom, reference_server):
    volume = add_volume(phantom)
    panel = connected_panel(slicer_app, reference_server.url)
    panel.ui.addSegmentButton.click()
    segmentation = panel._parameterNode.outputSegmentation
    segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)
    segmentation.GetSegmentation().GetSegment(segment_id).SetName("my spleen")
    panel.ui.deepgrowGroupBox.checked = True
    panel._parameterNode.foregroundPoints.AddControlPointWorld(
        *world_of_voxels(volume, [organ_centre(phantom, "spleen")])[0])
    segmentation.GetSegmentation().RemoveSegment(segment_id)  # deleted in the Segment Editor meanwhile
    wait_idle(slicer_app, panel, "deepgrow")
    [message] = slicer_app.dialogs.texts()
    assert "The segment 'my spleen' was deleted while the server was working" in message
    assert segment_id not in message


# ------------------------------------------------------------------------------------ a click outside the volume
def outside_and_inside(volume, phantom):
    centre = organ_centre(phantom, "spleen")
    return world_of_voxels(volume, [[-5, centre[1], centre[2]], centre])


def test_a_panel_click_outside_the_volume_is_taken_back_and_the_next_click_works(slicer_app, phantom,
                                                                                  reference_server):
    volume = add_volume(phantom)
    panel = connected_panel(slicer_app, reference_server.url)
    panel.ui.addSegmentButton.click()
    panel.ui.deepgrowGroupBox.checked = True
    outside, inside = outside_and_inside(volume, phantom)
    clicks = panel._parameterNode.foregroundPoints
    clicks.AddControlPointWorld(*outside)
    wait_idle(slicer_app, panel)
    assert clicks.GetNumberOfControlPoints() == 0
    assert panel.ui.interactiveStatusLabel.text == ("That click was outside the volume 'CT', so it was removed; click inside "
                                         "the image.")
    clicks.AddControlPointWorld(*inside)
    wait_idle(slicer_app, panel, "deepgrow")
    assert slicer_app.dialogs.shown == [], slicer_app.dialogs.texts()
    assert len(segment_names(panel._parameterNode.outputSegmentation)) == 1
    assert slicer_app.slot_errors == []


def test_an_effect_click_outside_the_volume_is_taken_back_and_the_next_click_works(slicer_app, phantom,
                                                                                    reference_server):
    volume = add_volume(phantom)
    panel = connected_panel(slicer_app, reference_server.url)
    editor, effect = open_effect(slicer_app, volume)
    effect.deepgrowToolButton.checked = True
    outside, inside = outside_and_inside(volume, phantom)
    clicks = effect.foregroundPlaceWidget.currentNode()
    clicks.AddControlPointWorld(*inside)
    wait_idle(slicer_app, panel, "deepgrow")
    clicks.AddControlPointWorld(*outside)
    wait_idle(slicer_app, panel)
    assert clicks.GetNumberOfControlPoints() == 1 and effect.statusLabel.text.startswith("That click was outside")
    clicks.AddControlPointWorld(*inside)
    wait_idle(slicer_app, panel, "deepgrow")
    assert effect.statusLabel.text == "Segment updated."
    assert slicer_app.dialogs.shown == [], slicer_app.dialogs.texts()
    assert len(segment_names(editor.segmentationNode())) == 1


def test_the_effect_enables_annotate_from_the_sixth_extreme_point_as_the_panel_does(slicer_app, phantom,
                                                                                    reference_server):
    volume = add_volume(phantom)
    panel = connected_panel(slicer_app, reference_server.url)
    editor, effect = open_effect(slicer_app, volume)
    k, j, i = np.nonzero(phantom.truth.array == phantom.label_value("spleen"))
    corners = [[i.min(), j.mean(), k.mean()], [i.max(), j.mean(), k.mean()], [i.mean(), j.min(), k.mean()],
               [i.mean(), j.max(), k.mean()], [i.mean(), j.mean(), k.min()], [i.mean(), j.mean(), k.max()]]
    points = effect.extremePointsPlaceWidget.currentNode()
    for corner in world_of_voxels(volume, corners[:5]):
        points.AddControlPointWorld(*corner)
    assert not effect.annotateButton.enabled
    assert effect.annotateButton.toolTip == "Place at least 6 extreme points; 5 placed."
    points.AddControlPointWorld(*world_of_voxels(volume, corners[5:])[0])
    assert effect.annotateButton.enabled
    effect.annotateButton.click()
    wait_idle(slicer_app, panel, "annotation")
    assert slicer_app.dialogs.shown == [] and len(segment_names(editor.segmentationNode())) == 1
