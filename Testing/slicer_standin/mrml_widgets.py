"""Slicer's MRML widgets (qMRML*, qSlicer*) for the stand-in, on slicer-core's real MRML scene.

Behaviour follows Slicer's source (v5.8.1 and main, unchanged in these parts; see SOURCES.md):
- qMRMLWidget::setMRMLScene emits mrmlSceneChanged(vtkMRMLScene*) (Libs/MRML/Widgets/qMRMLWidget.cxx), which
  the .ui file connects to each MRML child widget's setMRMLScene.
- qMRMLNodeComboBox (Libs/MRML/Widgets/qMRMLNodeComboBox.cxx): currentNodeChanged(vtkMRMLNode*) when the
  current node changes, including to none when the node leaves the scene; with noneEnabled false, the first
  node of the accepted types becomes current when there is none.
- qMRMLSegmentSelectorWidget (Modules/Loadable/Segmentations/Widgets/qMRMLSegmentSelectorWidget.cxx):
  currentSegmentChanged(QString) on a new selection; a segment id that is not in the new segmentation is
  dropped when the node changes.
- qSlicerMarkupsPlaceWidget (Modules/Loadable/Markups/Widgets/qSlicerMarkupsPlaceWidget.cxx): placeModeEnabled
  makes the current node the selection node's active place node and the interaction node's mode Place;
  turning it off sets the mode back to ViewTransform.
"""

from __future__ import annotations

from typing import Any, List, Optional

import slicer

from . import qt_double as qt


class qMRMLWidget(qt.QWidget):  # noqa: N801
    SIGNALS = ("mrmlSceneChanged",)

    def __init__(self, parent: Optional[qt.QObject] = None) -> None:
        super().__init__(parent)
        object.__setattr__(self, "_scene", None)

    def setMRMLScene(self, scene) -> None:  # noqa: N802
        object.__setattr__(self, "_scene", scene)
        self.emit("mrmlSceneChanged", scene)

    def mrmlScene(self):  # noqa: N802
        return self._scene



class qSlicerWidget(qMRMLWidget):  # noqa: N801
    pass


class _SceneObserver:
    """qMRMLSceneModel: node removals are ignored while the scene closes; EndCloseEvent repopulates
    (qMRMLSceneModel.cxx v5.8.1:1229, 1282, 1173-1174; SOURCES.md section 13)."""

    #: Widgets observing a scene; the stand-in releases them all when it is uninstalled.
    observing: List["_SceneObserver"] = []

    def _observe_scene(self, scene) -> None:
        for tag in getattr(self, "_scene_tags", []):
            self._observed_scene.RemoveObserver(tag)
        object.__setattr__(self, "_observed_scene", scene)
        object.__setattr__(self, "_scene_tags", [])
        if self not in _SceneObserver.observing:
            _SceneObserver.observing.append(self)
        if scene is not None:
            for event in (scene.NodeRemovedEvent, scene.NodeAddedEvent, scene.EndCloseEvent):
                self._scene_tags.append(scene.AddObserver(event, self._on_scene_event))

    def _on_scene_event(self, caller, event) -> None:
        if self._observed_scene is None or self._observed_scene.IsClosing():
            return
        self._on_scene_changed()

    def _on_scene_changed(self) -> None:
        raise NotImplementedError

    @staticmethod
    def release_all() -> None:
        for widget in _SceneObserver.observing:
            widget._observe_scene(None)
        _SceneObserver.observing = []


class qMRMLNodeComboBox(_SceneObserver, qt.QWidget):  # noqa: N801
    SIGNALS = ("currentNodeChanged", "currentNodeIDChanged", "nodeAdded", "nodeActivated")
    PROPERTIES = {"nodeTypes": ([], None), "noneEnabled": (False, None), "addEnabled": (True, None),
                  "removeEnabled": (True, None), "renameEnabled": (False, None), "showChildNodeTypes": (True, None),
                  "noneDisplay": ("None", None), "showHidden": (False, None), "selectNodeUponCreation": (True, None)}

    def __init__(self, parent: Optional[qt.QObject] = None) -> None:
        super().__init__(parent)
        object.__setattr__(self, "_current", None)
        object.__setattr__(self, "_observed_scene", None)

    def setMRMLScene(self, scene) -> None:  # noqa: N802
        self._observe_scene(scene)
        self._select_default()

    def _accepts(self, node) -> bool:
        types = list(self.nodeTypes)
        if not types:
            return True
        if self.showChildNodeTypes:
            return any(node.IsA(name) for name in types)
        return node.GetClassName() in types

    def nodes(self) -> List[Any]:
        scene = self._observed_scene
        if scene is None:
            return []
        found = []
        for index in range(scene.GetNumberOfNodes()):
            node = scene.GetNthNode(index)
            if self._accepts(node) and (self.showHidden or not node.GetHideFromEditors()):
                found.append(node)
        return found

    def _select_default(self) -> None:
        current = self._current
        if current is not None and (self._observed_scene is None or current.GetScene() is not self._observed_scene):
            current = None
        if current is None and not self.noneEnabled:
            candidates = self.nodes()
            current = candidates[0] if candidates else None
        self._set_current(current)

    def _on_scene_changed(self) -> None:
        self._select_default()

    def _set_current(self, node) -> None:
        """emitCurrentNodeChanged (qMRMLNodeComboBox.cxx v5.8.1:752-773): the node, then its ID."""
        if node is self._current:
            return
        object.__setattr__(self, "_current", node)
        self.emit("currentNodeChanged", node)
        self.emit("currentNodeIDChanged", node.GetID() if node is not None else "")

    def currentNode(self):  # noqa: N802
        return self._current

    def currentNodeID(self) -> str:  # noqa: N802
        return self._current.GetID() if self._current is not None else ""

    def setCurrentNode(self, node) -> None:  # noqa: N802
        if node is not None and not self._accepts(node):
            # A node the combo box does not list blanks it and signals None (qMRMLNodeComboBox.cxx
            # v5.8.1:933-945 setCurrentIndex(-1), then emitCurrentNodeChanged 752-773).
            self._set_current(None)
            return
        self._set_current(node)
        if node is None and not self.noneEnabled:
            self._select_default()

    def setCurrentNodeID(self, node_id: str) -> None:  # noqa: N802
        scene = self._observed_scene
        self.setCurrentNode(scene.GetNodeByID(node_id) if scene is not None and node_id else None)


class qMRMLSegmentSelectorWidget(_SceneObserver, qMRMLWidget):  # noqa: N801
    """Libs/MRML/Widgets/qMRMLSegmentSelectorWidget.cxx v5.8.1 (SOURCES.md section 13):
    populateSegmentCombobox 181-282, onCurrentSegmentChanged 285-308, setCurrentSegmentID 374-395."""

    SIGNALS = ("currentSegmentChanged", "currentNodeChanged", "segmentSelectionChanged")
    PROPERTIES = {"noneEnabled": (False, None), "segmentationNodeSelectorVisible": (True, None),
                  "editEnabled": (False, None), "multiSelection": (False, None)}

    def __init__(self, parent: Optional[qt.QObject] = None) -> None:
        super().__init__(parent)
        object.__setattr__(self, "_node", None)
        object.__setattr__(self, "_segment_id", "")
        object.__setattr__(self, "_observed_scene", None)
        object.__setattr__(self, "_segment_tags", [])

    def setMRMLScene(self, scene) -> None:  # noqa: N802
        super().setMRMLScene(scene)
        self._observe_scene(scene)

    def _on_scene_changed(self) -> None:
        if self._node is not None and self._node.GetScene() is None:
            self.setCurrentNode(None)

    def currentNode(self):  # noqa: N802
        return self._node

    def setCurrentNode(self, node) -> None:  # noqa: N802
        if node is self._node:
            return
        for tag in self._segment_tags:
            self._node.GetSegmentation().RemoveObserver(tag)
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_segment_tags", [])
        if node is not None:
            segmentation = node.GetSegmentation()
            for event in (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved):
                self._segment_tags.append(segmentation.AddObserver(event, lambda caller, event: self._populate()))
        self.emit("currentNodeChanged", node)
        self._populate()

    def segment_ids(self) -> List[str]:
        if self._node is None:
            return []
        segmentation = self._node.GetSegmentation()
        return [segmentation.GetNthSegmentID(index) for index in range(segmentation.GetNumberOfSegments())]

    def _populate(self) -> None:
        ids = self.segment_ids()
        if not ids:
            return  # no emission; the stored ID stays (populateSegmentCombobox returns early)
        if self._segment_id in ids or (self.noneEnabled and not self._segment_id):
            return
        object.__setattr__(self, "_segment_id", ids[0])
        self.emit("currentSegmentChanged", ids[0])

    def currentSegmentID(self) -> str:  # noqa: N802
        return self._segment_id

    def setCurrentSegmentID(self, segment_id: str) -> None:  # noqa: N802
        segment_id = segment_id or ""
        if segment_id and segment_id not in self.segment_ids():
            return  # an unknown ID is ignored
        if not segment_id and not self.noneEnabled:
            return
        if segment_id != self._segment_id and self._node is not None:
            object.__setattr__(self, "_segment_id", segment_id)
            self.emit("currentSegmentChanged", segment_id)


class qSlicerMarkupsPlaceWidget(qSlicerWidget):  # noqa: N801
    HidePlaceMultipleMarkupsOption, ShowPlaceMultipleMarkupsOption, ForcePlaceSingleMarkup, \
        ForcePlaceMultipleMarkups = 0, 1, 2, 3
    SIGNALS = ("activeMarkupsPlaceModeChanged", "activeMarkupsFiducialPlaceModeChanged")
    PROPERTIES = {"placeMultipleMarkups": (1, None), "deleteAllControlPointsOptionVisible": (True, None),
                  "buttonsVisible": (True, None), "unsetLastControlPointOptionVisible": (False, None),
                  "deleteAllMarkupsOptionVisible": (True, None)}

    def __init__(self, parent: Optional[qt.QObject] = None) -> None:
        super().__init__(parent)
        object.__setattr__(self, "_node", None)

    def setCurrentNode(self, node) -> None:  # noqa: N802
        object.__setattr__(self, "_node", node)

    def currentNode(self):  # noqa: N802
        return self._node

    def _nodes(self):
        scene = slicer.mrmlScene
        return (scene.GetNodeByID("vtkMRMLSelectionNodeSingleton"), scene.GetNodeByID("vtkMRMLInteractionNodeSingleton"))

    def __getattr__(self, name: str) -> Any:
        if name == "placeModeEnabled":
            selection, interaction = self._nodes()
            return bool(self._node is not None and selection is not None and interaction is not None
                        and selection.GetActivePlaceNodeID() == self._node.GetID()
                        and interaction.GetCurrentInteractionMode() == interaction.Place)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "placeModeEnabled":
            self.setPlaceModeEnabled(value)
            return
        super().__setattr__(name, value)

    def setPlaceModeEnabled(self, enabled: bool) -> None:  # noqa: N802
        selection, interaction = self._nodes()
        if selection is None or interaction is None:
            return
        if enabled and self._node is not None:
            selection.SetReferenceActivePlaceNodeClassName(self._node.GetClassName())
            selection.SetActivePlaceNodeID(self._node.GetID())
            interaction.SetPlaceModePersistence(self.placeMultipleMarkups == self.ForcePlaceMultipleMarkups)
            interaction.SetCurrentInteractionMode(interaction.Place)
        elif not enabled and self.placeModeEnabled:
            interaction.SetCurrentInteractionMode(interaction.ViewTransform)
        self.emit("activeMarkupsPlaceModeChanged", bool(enabled))


WIDGET_CLASSES = {
    "qMRMLWidget": qMRMLWidget,
    "qSlicerWidget": qSlicerWidget,
    "qMRMLNodeComboBox": qMRMLNodeComboBox,
    "qMRMLSegmentSelectorWidget": qMRMLSegmentSelectorWidget,
    "qSlicerMarkupsPlaceWidget": qSlicerMarkupsPlaceWidget,
}

