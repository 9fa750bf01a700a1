"""The tools' point lists: created on first use, never the place toolbar's target behind the user's back."""

from __future__ import annotations

import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

from ClaraAWSLib.scene.point_lists import INTERACTION_NODE_ID, SELECTION_NODE_ID, ToolPointLists  # noqa: E402


@pytest.fixture
def tools(harness):
    kept = {}
    tools = ToolPointLists(harness.scene, kept.get, lambda role, node: kept.__setitem__(role, node))
    tools.kept = kept
    return tools


def _markups(scene):
    return [scene.GetNthNodeByClass(n, "vtkMRMLMarkupsFiducialNode")
            for n in range(scene.GetNumberOfNodesByClass("vtkMRMLMarkupsFiducialNode"))]


def _users_list(scene):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "my landmarks")
    selection = scene.GetNodeByID(SELECTION_NODE_ID)
    selection.SetActivePlaceNodeID(node.GetID())
    return node, selection


def test_no_list_exists_until_a_tool_starts_and_the_users_active_list_stays_active(harness, tools):
    mine, selection = _users_list(harness.scene)
    assert [n.GetName() for n in _markups(harness.scene)] == ["my landmarks"]
    nodes = tools.activate("deepgrow", lambda role, node: None)
    assert [n.GetName() for n in nodes] == ["ClaraAWS inside clicks", "ClaraAWS outside clicks"]
    assert selection.GetActivePlaceNodeID() == mine.GetID()
    assert "extremePoints" not in tools.kept  # the other tool's list is not made


def test_clicks_count_only_while_their_tool_is_active(harness, tools):
    seen = []
    foreground, background = tools.activate("deepgrow", lambda role, node: seen.append(role))
    foreground.AddControlPoint(1.0, 2.0, 3.0)
    background.AddControlPoint(4.0, 5.0, 6.0)
    assert seen == ["foregroundPoints", "backgroundPoints"]
    tools.activate("extreme", lambda role, node: seen.append(role))
    foreground.AddControlPoint(7.0, 8.0, 9.0)  # placed after the user switched tools: not a request
    assert seen == ["foregroundPoints", "backgroundPoints"]
    tools.deactivate()
    foreground.AddControlPoint(1.0, 1.0, 1.0)  # after leaving the module: nothing is sent
    assert seen == ["foregroundPoints", "backgroundPoints"]


def test_stopping_a_tool_ends_place_mode_restores_the_active_list_and_removes_empty_lists(harness, tools):
    mine, selection = _users_list(harness.scene)
    interaction = harness.scene.GetNodeByID(INTERACTION_NODE_ID)
    extreme, = tools.activate("extreme", lambda role, node: None)
    selection.SetActivePlaceNodeID(extreme.GetID())  # the user pressed the place button of the tool
    interaction.SetCurrentInteractionMode(interaction.Place)
    tools.deactivate()
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform
    assert selection.GetActivePlaceNodeID() == mine.GetID()
    assert harness.scene.GetNodeByID(extreme.GetID()) is None and tools.kept.get("extremePoints") is None
    assert [n.GetName() for n in _markups(harness.scene)] == ["my landmarks"]


def test_lists_with_points_survive_stopping_and_are_reused(harness, tools):
    foreground, background = tools.activate("deepgrow", lambda role, node: None)
    foreground.AddControlPoint(1.0, 2.0, 3.0)
    tools.deactivate()
    assert harness.scene.GetNodeByID(foreground.GetID()) is foreground
    assert harness.scene.GetNodeByID(background.GetID()) is None  # empty: removed
    again = tools.activate("deepgrow", lambda role, node: None)
    assert again[0] is foreground and again[1] is not background
