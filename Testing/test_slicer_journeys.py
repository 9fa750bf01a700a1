"""A user's session in Slicer 5.8.1 and in current Slicer, through the Slicer stand-in, against the
reference server on 127.0.0.1: connect, auto-segment, cancel, close the scene and go on; the Segment
Editor effect (an empty segmentation, extreme points, deepgrow clicks, Ctrl+Z/Ctrl+Y); saved points;
a failed reconnect; the MONAI Label section with its server gone.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import slicer  # noqa: E402
from standin_fixtures import (  # noqa: E402,F401
    add_volume, closed_surface_segmentation, connect, nodes_of_class, open_effect, phantom, profile, segment_ids, segment_names, slicer_app, voxels,
    wait_idle, world_of_voxels,
)

from slicer_standin import StandinSlicer  # noqa: E402
from slicer_standin import qt_double as qt  # noqa: E402

ORGANS = ["left kidney", "liver", "right kidney", "spleen"]


@pytest.fixture
def connected(slicer_app, reference_server, phantom):
    """The ClaraAWS module open, a CT loaded, connected to the reference server, uploads agreed."""
    volume = add_volume(phantom)
    panel = slicer_app.open_module()
    connect(slicer_app, panel, reference_server.url)
    assert panel.connectedUrl() == reference_server.url, slicer_app.dialogs.texts()
    panel.consent.agreed(reference_server.url)  # plain HTTP asks every session; tests answer it once here
    return slicer_app, panel, volume


def auto_segment(app, panel):
    panel.ui.applyButton.click()
    app.app.run_until(lambda: not panel.autoState.busy, 90, "auto-segmentation")


def test_connect_auto_segment_close_the_scene_and_auto_segment_again(connected, phantom):
    app, panel, volume = connected
    assert panel.ui.applyButton.enabled and panel.ui.autoModelComboBox.currentText
    auto_segment(app, panel)
    first = panel._parameterNode.outputSegmentation
    assert panel.autoState.state.value == "done" and segment_names(first) == ORGANS

    app.close_scene()  # File -> Close Scene: the parameter node is reset
    volume = add_volume(phantom, "CT after close")
    panel._parameterNode.inputVolume = volume
    assert panel._parameterNode.modelName == panel.ui.autoModelComboBox.currentText != ""
    auto_segment(app, panel)
    assert panel.autoState.state.value == "done", app.dialogs.texts()
    assert segment_names(panel._parameterNode.outputSegmentation) == ORGANS
    assert app.slot_errors == [] and app.dialogs.shown == []


def test_cancel_leaves_the_scene_as_it_was(connected):
    app, panel, volume = connected
    nodes_before = slicer.mrmlScene.GetNumberOfNodes()
    panel.ui.applyButton.click()
    assert panel.ui.applyButton.text == "Cancel"
    panel.ui.applyButton.click()  # the user cancels at once
    app.app.run_until(lambda: not panel.autoState.busy, 30, "cancel")
    app.app.run_until(lambda: not panel.runner.busy, 30, "the worker to end")
    assert panel.autoState.state.value in ("cancelled", "idle")
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes_before
    assert app.slot_errors == []


def test_closing_the_scene_during_an_effect_auto_segmentation_drops_its_answer(connected):
    app, panel, volume = connected
    editor, effect = open_effect(app, volume)
    effect.autoSegmentButton.click()
    app.close_scene()
    wait_idle(app, panel, "the abandoned request")
    app.app.processEvents()
    assert nodes_of_class("vtkMRMLSegmentationNode") == []  # nothing landed in the new scene
    assert app.slot_errors == []


# ------------------------------------------------------------------------------- the Segment Editor effect


def test_effect_auto_segments_an_empty_segmentation_and_ctrl_z_ctrl_y_undo_and_redo_it(connected):
    app, panel, volume = connected
    editor, effect = open_effect(app, volume)
    assert editor.effect_button_enabled("ClaraAWS")  # a segmentation with no segment yet
    assert effect.serverLabel.text == panel.connectedUrl() and effect.autoModelCombo.currentText
    effect.autoSegmentButton.click()
    wait_idle(app, panel, "effect auto-segmentation")
    segmentation = editor.segmentationNode()
    assert segment_names(segmentation) == ORGANS, app.dialogs.texts()
    editor.press_key("Ctrl+Z")  # the editor's own undo takes the AI edit back
    assert segment_names(segmentation) == []
    editor.press_key("Ctrl+Y")
    assert segment_names(segmentation) == ORGANS
    assert app.slot_errors == []


def test_the_effect_in_another_modules_editor_is_a_step_of_that_editors_undo(connected):
    """Modules embed their own qMRMLSegmentEditorWidget; the effect saves undo state in the editor hosting it."""
    app, panel, volume = connected
    editor_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    embedded = slicer.qMRMLSegmentEditorWidget()
    embedded.setMRMLSegmentEditorNode(editor_node)
    embedded.installKeyboardShortcuts()
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Embedded")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    embedded.setSegmentationNode(segmentation)
    embedded.setSourceVolumeNode(volume)
    embedded.setActiveEffectByName("ClaraAWS")
    embedded.activeEffect().self().autoSegmentButton.click()
    wait_idle(app, panel, "effect auto-segmentation")
    assert segment_names(segmentation) == ORGANS
    embedded.press_key("Ctrl+Z")
    assert segment_names(segmentation) == []
    assert app.slot_errors == []


def test_effect_extreme_points_then_deepgrow_clicks_edit_the_selected_segment(connected, phantom):
    app, panel, volume = connected
    editor, effect = open_effect(app, volume)
    spleen = phantom.truth.array == phantom.label_value("spleen")
    k, j, i = np.nonzero(spleen)
    ijk = list(zip(i, j, k))
    extremes = [pick(ijk, key=lambda voxel: voxel[axis]) for axis in range(3) for pick in (min, max)]
    points = effect.extremePointsPlaceWidget.currentNode()
    assert points is not None and effect.extremeToolButton.checked
    for point in world_of_voxels(volume, extremes):
        points.AddControlPointWorld(*point)
    effect.annotateButton.click()
    wait_idle(app, panel, "annotation")
    segmentation = editor.segmentationNode()
    [segment] = segment_ids(segmentation)
    annotated = voxels(segmentation, segment, volume)
    assert annotated > 0.5 * spleen.sum(), app.dialogs.texts()

    editor.setCurrentSegmentID(segment)
    effect.deepgrowToolButton.checked = True  # the deepgrow tool: each inside click is a request
    inside = effect.foregroundPlaceWidget.currentNode()
    centre = [int(np.median(axis)) for axis in (i, j, k)]
    inside.AddControlPointWorld(*world_of_voxels(volume, [centre])[0])
    wait_idle(app, panel, "deepgrow")
    assert segment_ids(segmentation) == [segment]
    assert voxels(segmentation, segment, volume) > 0
    editor.press_key("Ctrl+Z")
    assert voxels(segmentation, segment, volume) == annotated  # one step back: the annotation
    assert app.slot_errors == []

    editor.setActiveEffectByName("")  # deactivate: lists the user left empty are removed
    assert [node.GetName() for node in nodes_of_class("vtkMRMLMarkupsFiducialNode")
            if node.GetNumberOfControlPoints() == 0] == []


def test_the_effect_after_a_scene_close_keeps_its_point_lists_in_the_parameter_node(connected, phantom):
    app, panel, volume = connected
    app.open_module("SegmentEditor")  # the ClaraAWS module is left
    app.close_scene()  # its parameter node is reset and not bound again (the module is not shown)
    volume = add_volume(phantom)
    editor, effect = open_effect(app, volume)
    lists = nodes_of_class("vtkMRMLMarkupsFiducialNode")
    assert len(lists) == 1 and panel._parameterNode.extremePoints is lists[0]
    editor.setActiveEffectByName("")
    assert nodes_of_class("vtkMRMLMarkupsFiducialNode") == []  # nobody's orphan
    assert app.slot_errors == []


# ------------------------------------------------------------------------------------------- the panel


def test_load_saved_points_restores_the_clicks_without_sending_them(connected, phantom, reference_server):
    app, panel, volume = connected
    panel.ui.addSegmentButton.click()  # "New": an empty segment to edit
    panel.ui.deepgrowGroupBox.checked = True
    spleen = phantom.truth.array == phantom.label_value("spleen")
    k, j, i = np.nonzero(spleen)
    centre = [int(np.median(axis)) for axis in (i, j, k)]
    panel._parameterNode.foregroundPoints.AddControlPointWorld(*world_of_voxels(volume, [centre])[0])
    wait_idle(app, panel, "deepgrow")
    segmentation = panel._parameterNode.outputSegmentation
    [segment] = segment_ids(segmentation)
    panel._clearPoints("foregroundPoints", "backgroundPoints")
    requests_before = sum(reference_server.stats.requests.values())
    panel.ui.segmentSelectorWidget.setCurrentSegmentID(segment)
    panel.ui.loadSavedPointsButton.click()
    app.app.processEvents()
    assert not panel.runner.is_running("deepgrow")
    assert panel._parameterNode.foregroundPoints.GetNumberOfControlPoints() == 1
    assert sum(reference_server.stats.requests.values()) == requests_before
    assert app.slot_errors == []


def test_a_failed_reconnect_leaves_no_half_alive_connection(connected):
    app, panel, volume = connected
    from aws_fixtures import closed_local_port

    app.dialogs.answer(qt.QMessageBox.Ok)  # the error box
    connect(app, panel, f"http://127.0.0.1:{closed_local_port()}")
    assert panel.logic.client is None and panel.connectedUrl() == ""
    assert not panel.ui.applyButton.enabled
    editor, effect = open_effect(app, volume)
    assert effect.serverLabel.text == "not connected" and not effect.autoSegmentButton.enabled
    assert len(app.dialogs.shown) == 1 and app.slot_errors == []


def test_a_closed_surface_segmentation_is_converted_after_asking_also_under_testing(reference_server, phantom):
    """Under --testing Slicer's confirmOkCancelDisplay answers False; ClaraAWS's question answers OK there."""
    with StandinSlicer(testing=True) as app:
        app.start()
        from ClaraAWSLib.panel import slicer_app as panel_app

        assert slicer.util.confirmOkCancelDisplay("?") is False  # Slicer's own, as its source computes it
        assert panel_app.ask_ok_cancel("Convert?", "Title") == (True, False)
        volume = add_volume(phantom)
        panel = app.open_module()
        connect(app, panel, reference_server.url)
        segmentation = closed_surface_segmentation(volume, phantom)
        panel._parameterNode.inputVolume = volume
        panel._parameterNode.outputSegmentation = segmentation
        auto_segment(app, panel)
        assert panel.autoState.state.value == "done"
        assert segment_names(segmentation) == sorted(ORGANS + ["my structure"]) and app.slot_errors == []


# ------------------------------------------------------------------------------------ MONAI Label section


@pytest.mark.monailabel
def test_training_status_while_the_server_goes_away_is_reported_in_the_section_not_in_a_box_each_poll(
        monailabel_server):
    from loopback_servers import TcpForwarder

    with TcpForwarder(monailabel_server.url) as route, StandinSlicer() as app:
        app.start()
        panel = app.open_module()
        connect(app, panel, route.url)
        assert panel.ui.activeLearningCollapsibleButton.visible
        wait_idle(app, panel, "the datastore listing")
        assert panel.ui.trainerComboBox.count > 0
        panel.ui.maxEpochsSpinBox.value = 1
        panel.ui.trainButton.click()
        app.app.run_until(lambda: panel._trainingTimer.isActive(), 60, "training to start")
        try:
            route.stop()  # the server is gone for the client, before the first status poll
            panel._trainingTimer.start(50)  # the real timer, polling faster than every 3 s
            app.app.run_until(lambda: not panel._trainingTimer.isActive(), 60, "polling to give up")
        finally:
            import requests

            requests.delete(f"{monailabel_server.url}/train/", timeout=30)  # leave the server idle
        assert app.dialogs.shown == []  # no modal box per poll
        assert "could not be read" in panel.ui.trainingStatusLabel.text
        assert app.slot_errors == []
