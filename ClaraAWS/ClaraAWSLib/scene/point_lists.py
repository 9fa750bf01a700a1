"""The point lists of the interactive tools, created and observed only while their tool is in use.

Slicer's place toolbar drops points into the *active place list*. ClaraAWS never takes that over behind
the user's back: a list is created when the user starts its tool (with the previous active list put
back right away), clicks reach ClaraAWS only while their tool is active, and stopping the tool turns
place mode off, gives the previous active list back, removes the observers and deletes lists the user
left empty, so saved scenes carry no empty ClaraAWS lists.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import slicer

SELECTION_NODE_ID = "vtkMRMLSelectionNodeSingleton"
INTERACTION_NODE_ID = "vtkMRMLInteractionNodeSingleton"


@dataclass(frozen=True)
class PointRole:
    role: str  # the parameter node's property that keeps the list
    name: str
    color: Tuple[float, float, float]
    label_format: str


ROLES: Dict[str, PointRole] = {
    role.role: role for role in (
        PointRole("extremePoints", "ClaraAWS extreme points", (1.0, 0.85, 0.1), "E%d"),
        PointRole("foregroundPoints", "ClaraAWS inside clicks", (0.2, 0.85, 0.3), "+%d"),
        PointRole("backgroundPoints", "ClaraAWS outside clicks", (0.95, 0.25, 0.2), "-%d"),
    )
}
TOOLS: Dict[str, Tuple[str, ...]] = {"extreme": ("extremePoints",), "deepgrow": ("foregroundPoints", "backgroundPoints")}

OnPoint = Callable[[str, object], None]  # (role, list node) after the user placed a point


class ToolPointLists:
    """Which tool is active, its lists, and the observers that exist only while it is."""

    def __init__(self, scene, lookup: Callable[[str], Optional[object]], remember: Callable[[str, Optional[object]], None]):
        self.scene = scene
        self._lookup, self._remember = lookup, remember
        self.active_tool: Optional[str] = None
        self._observations: List[Tuple[object, int]] = []
        self._previous_place_node_id: Optional[str] = None
        self._quiet = False

    def lists(self, tool: str) -> List[object]:
        return [node for node in (self._lookup(role) for role in TOOLS[tool]) if node is not None]

    def activate(self, tool: str, on_point: OnPoint) -> List[object]:
        """Start ``tool``: its lists exist and are observed; any other tool stops first."""
        if self.active_tool == tool:
            return self.lists(tool)
        self.deactivate()
        selection = self.scene.GetNodeByID(SELECTION_NODE_ID)
        self._previous_place_node_id = selection.GetActivePlaceNodeID() if selection is not None else None
        nodes = [self._ensure(role) for role in TOOLS[tool]]
        self._restore_active_place_node()  # creating a list must not make it the toolbar's target
        self.active_tool = tool
        event = slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent
        for role, node in zip(TOOLS[tool], nodes):
            callback = self._forwarder(tool, role, node, on_point)
            self._observations.append((node, node.AddObserver(event, callback)))
        return nodes

    def deactivate(self) -> None:
        """Stop the active tool: no observers, no place mode on its lists, empty lists removed."""
        tool, self.active_tool = self.active_tool, None
        for node, tag in self._observations:
            node.RemoveObserver(tag)
        self._observations = []
        if tool is None:
            return
        ours = {node.GetID() for node in self.lists(tool)}
        selection = self.scene.GetNodeByID(SELECTION_NODE_ID)
        interaction = self.scene.GetNodeByID(INTERACTION_NODE_ID)
        if selection is not None and selection.GetActivePlaceNodeID() in ours:
            if interaction is not None and interaction.GetCurrentInteractionMode() == interaction.Place:
                interaction.SetCurrentInteractionMode(interaction.ViewTransform)
            self._restore_active_place_node()
        for role in TOOLS[tool]:
            node = self._lookup(role)
            if node is not None and node.GetNumberOfControlPoints() == 0:
                self._remember(role, None)
                self.scene.RemoveNode(node)

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Points added inside this block are not clicks (restoring saved points must not send requests)."""
        was, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = was

    def _forwarder(self, tool: str, role: str, node, on_point: OnPoint):
        def forward(caller, event):
            # A point placed while another tool (or none) is active, or put back by code, is not a request.
            if self.active_tool == tool and not self._quiet:
                on_point(role, node)
        return forward

    def _ensure(self, role: str):
        node = self._lookup(role)
        if node is not None and node.GetScene() is self.scene:
            return node
        spec = ROLES[role]
        node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", self.scene.GenerateUniqueName(spec.name))
        node.SetMarkupLabelFormat(spec.label_format)
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        if display is not None:
            display.SetSelectedColor(*spec.color)
        self._remember(role, node)
        return node

    def _restore_active_place_node(self) -> None:
        selection = self.scene.GetNodeByID(SELECTION_NODE_ID)
        if selection is not None and selection.GetActivePlaceNodeID() != self._previous_place_node_id:
            selection.SetActivePlaceNodeID(self._previous_place_node_id)


def points_world(node) -> List[List[float]]:
    """World RAS positions of the placed (defined) points of a list."""
    if node is None:
        return []
    return [list(node.GetNthControlPointPositionWorld(index)) for index in range(node.GetNumberOfControlPoints())
            if node.GetNthControlPointPositionStatus(index) == node.PositionDefined]
