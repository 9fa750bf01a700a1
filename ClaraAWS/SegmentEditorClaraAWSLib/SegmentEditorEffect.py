"""The ClaraAWS effect of the Segment Editor (Effects → ClaraAWS).

Slicer loads this file by its path (``ClaraAWS.registerEditorEffect``) and names what it loads after the
path: the parent folder is the Python module name, the file's base name plus "Effect" the class name
(qSlicerSegmentEditorScriptedEffect::setPythonSource). Hence ``SegmentEditorClaraAWSLib/SegmentEditorEffect.py``
with class ``SegmentEditorEffect``, in a folder no package uses: from Slicer 5.10 on the loaded module
replaces ``sys.modules[<folder>]``, which for ``ClaraAWSLib`` would cut the library off. Imports are
absolute because the file is loaded on its own, not as part of a package.

Thin on purpose: requests go through the ClaraAWS panel (consent, background jobs) and its scene logic
(the write rule, the editor's masking and overwrite settings); connecting stays in the module.
"""

import os

import qt
import slicer
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from ClaraAWSLib.panel.processing_state import PanelInputs, annotate_blocker, auto_segment_blocker, interactive_blocker
from ClaraAWSLib.scene.point_lists import points_world

EFFECT_NAME = "ClaraAWS"
TOOLS = (("autoModelCombo", "autoSegment", "Auto-segment model:"),
         ("annotationModelCombo", "annotate", "Extreme-points model:"),
         ("deepgrowModelCombo", "deepgrow", "Deepgrow model:"))
ICON = os.path.join(os.path.dirname(__file__), "..", "Resources", "Icons", "ClaraAWS.png")


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    def __init__(self, scriptedEffect):
        scriptedEffect.name = EFFECT_NAME
        scriptedEffect.perSegment = True  # edits change the selected segment...
        scriptedEffect.requireSegments = False  # ...but auto-segmentation fills an empty segmentation too
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        cloned = effects.qSlicerSegmentEditorScriptedEffect(None)
        cloned.setPythonSource(__file__.replace("\\", "/"))
        return cloned

    def icon(self):
        return qt.QIcon(ICON) if os.path.exists(ICON) else qt.QIcon()

    def helpText(self):
        return ("<html>AI segmentation on a ClaraAWS server (connect in the ClaraAWS module).<br>"
                "<b>Auto-segment</b> fills the model's segments; <b>Extreme points</b>: place 6 or more points around "
                "the structure and click Annotate; <b>Deepgrow</b>: each inside/outside click updates the selected "
                "segment (a new one when none is selected). Undo (Ctrl+Z) takes back an AI edit like any stroke; "
                "the masking and overwrite settings apply.</html>")

    # --- options ------------------------------------------------------------------------------------
    def setupOptionsFrame(self):
        self.serverLabel = qt.QLabel()
        self.scriptedEffect.addLabeledOptionsWidget("Server:", self.serverLabel)
        self.openModuleButton = qt.QPushButton("Connect or discover servers…")
        self.openModuleButton.connect("clicked()", lambda: slicer.util.selectModule("ClaraAWS"))
        self.scriptedEffect.addOptionsWidget(self.openModuleButton)
        for attribute, _task, label in TOOLS:
            combo = qt.QComboBox()
            setattr(self, attribute, combo)
            self.scriptedEffect.addLabeledOptionsWidget(label, combo)
        self.autoSegmentButton = qt.QPushButton("Auto-segment")
        self.autoSegmentButton.connect("clicked()", self.onAutoSegment)
        self.scriptedEffect.addOptionsWidget(self.autoSegmentButton)
        self.extremeToolButton = qt.QRadioButton("Extreme points")
        self.deepgrowToolButton = qt.QRadioButton("Deepgrow clicks")
        self.extremeToolButton.checked = True
        for button in (self.extremeToolButton, self.deepgrowToolButton):
            button.connect("toggled(bool)", lambda checked: self._startTool() if checked else None)
            self.scriptedEffect.addOptionsWidget(button)
        self.extremePointsPlaceWidget = self._placeWidget()
        self.scriptedEffect.addLabeledOptionsWidget("Extreme points:", self.extremePointsPlaceWidget)
        self.annotateButton = qt.QPushButton("Annotate")
        self.annotateButton.connect("clicked()", self.onAnnotate)
        self.scriptedEffect.addOptionsWidget(self.annotateButton)
        self.foregroundPlaceWidget = self._placeWidget()
        self.scriptedEffect.addLabeledOptionsWidget("Inside clicks:", self.foregroundPlaceWidget)
        self.backgroundPlaceWidget = self._placeWidget()
        self.scriptedEffect.addLabeledOptionsWidget("Outside clicks:", self.backgroundPlaceWidget)
        self.statusLabel = qt.QLabel()
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

    @staticmethod
    def _placeWidget():
        widget = slicer.qSlicerMarkupsPlaceWidget()
        widget.setMRMLScene(slicer.mrmlScene)
        widget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        return widget

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor  # points are placed with the markups tools, not painted

    # --- the panel and its logic ------------------------------------------------------------------------
    @staticmethod
    def _panel():
        return slicer.modules.claraaws.widgetRepresentation().self()

    def activate(self):
        self._startTool()
        self.updateGUIFromMRML()

    def _startTool(self):
        """One point tool at a time, through the panel's ToolPointLists (never the place toolbar's target)."""
        panel = self._panel()
        panel.ensureParameterNode()  # the lists live in the parameter node; without one nobody removes them
        tool = "extreme" if self.extremeToolButton.checked else "deepgrow"
        nodes = panel.pointTools.activate(tool, self._onPoint)
        widgets = [self.extremePointsPlaceWidget] if tool == "extreme" else [self.foregroundPlaceWidget,
                                                                             self.backgroundPlaceWidget]
        for widget, node in zip(widgets, nodes):
            widget.setCurrentNode(node)
        self.extremePointsPlaceWidget.enabled = tool == "extreme"
        self.foregroundPlaceWidget.enabled = self.backgroundPlaceWidget.enabled = tool == "deepgrow"

    def deactivate(self):
        for widget in (self.extremePointsPlaceWidget, self.foregroundPlaceWidget, self.backgroundPlaceWidget):
            widget.placeModeEnabled = False
        self._panel().pointTools.deactivate()

    def updateGUIFromMRML(self):
        panel = self._panel()
        url = panel.connectedUrl()
        self.serverLabel.text = url or "not connected"
        for attribute, task, _label in TOOLS:
            combo = getattr(self, attribute)
            names = panel.modelNamesFor(task) if url else []
            if [combo.itemText(index) for index in range(combo.count)] != names:
                combo.clear()
                combo.addItems(names)
        for button, combo, blocker in ((self.autoSegmentButton, self.autoModelCombo, auto_segment_blocker),
                                       (self.annotateButton, self.annotationModelCombo, annotate_blocker)):
            reason = self._blocker(combo, blocker)
            button.enabled, button.toolTip = not reason, reason

    def _blocker(self, combo, blocker):
        """Why a tool cannot run now ("" when it can), in the panel's words. A segment is not needed: the
        effect makes one when none is selected."""
        volume, _segmentation, _segment = self._targets()
        extreme = len(points_world(self.extremePointsPlaceWidget.currentNode()))
        return blocker(PanelInputs(connected=bool(self._panel().connectedUrl()), model=combo.currentText,
                                   has_volume=volume is not None, has_segment=True, extreme_points=extreme))

    def _canRun(self, combo, blocker=interactive_blocker):
        reason = self._blocker(combo, blocker)
        self._report(reason)
        return not reason

    def _targets(self):
        parameters = self.scriptedEffect.parameterSetNode()
        return parameters.GetSourceVolumeNode(), parameters.GetSegmentationNode(), parameters.GetSelectedSegmentID()

    def _report(self, text):
        self.statusLabel.text = text

    def _saveUndoState(self, segmentationNode):
        self.scriptedEffect.saveStateForUndo()  # this editor's undo, whichever module hosts it

    def _run(self, channel, prepare, what, detail):
        self._panel().runEditRequest(channel, prepare, what, detail, self._report, beforeWrite=self._saveUndoState,
                                     editorNode=self.scriptedEffect.parameterSetNode())

    def onAutoSegment(self):
        if not self._canRun(self.autoModelCombo, auto_segment_blocker):
            return
        volume, segmentation, _segment = self._targets()
        logic = self._panel().logic
        model = self.autoModelCombo.currentText
        self._run("auto-effect", lambda: logic.prepareAutoSegment(volume, model, segmentation),
                  "Auto-segmentation failed.", "segmentation")

    def onAnnotate(self):
        if not self._canRun(self.annotationModelCombo, annotate_blocker):
            return
        volume, segmentation, segment = self._targets()
        points = points_world(self.extremePointsPlaceWidget.currentNode())
        logic = self._panel().logic
        model = self.annotationModelCombo.currentText
        self._run("annotate", lambda: logic.prepareAnnotate(volume, segmentation, segment or None, model, points),
                  "Annotation failed.", "dextr3d")

    def _onPoint(self, role, node):
        if role not in ("foregroundPoints", "backgroundPoints"):
            self.updateGUIFromMRML()  # an extreme point: Annotate is enabled from the sixth on
            return
        volume, segmentation, segment = self._targets()
        foreground = points_world(self.foregroundPlaceWidget.currentNode())
        background = points_world(self.backgroundPlaceWidget.currentNode())
        clicked = points_world(node)[-1:] or [None]
        if not foreground:
            self._report("Click inside the structure first.")
            return
        if not self._canRun(self.deepgrowModelCombo):
            return
        if self._panel().takeBackClickOutside(volume, node, self._report):
            return
        logic = self._panel().logic
        model = self.deepgrowModelCombo.currentText
        self._run("deepgrow", lambda: logic.prepareDeepgrow(volume, segmentation, segment or None, model, foreground,
                                                            background, clicked[0]),
                  "Deepgrow failed.", "deepgrow")
