"""The panel's segmentation section: auto-segmentation, interactive tools (extreme points, deepgrow), undo."""

from typing import Callable, Optional

import slicer
from slicer.i18n import tr as _

from ..core.progress import Stage, StageProgress, describe, describe_any
from ..scene.logic import TAG_BACKGROUND_POINTS, TAG_EXTREME_POINTS, TAG_FOREGROUND_POINTS
from ..scene.point_lists import points_world
from ..scene.points import lies_outside
from . import settings_store
from .processing_state import (
    bar_settings,
    PanelInputs,
    annotate_blocker,
    apply_button_view,
    auto_segment_blocker,
    extreme_points_text,
    inputs_editable,
    interactive_blocker,
    progress_visible,
    result_actions_visible,
)


class SegmentSection:
    """Mixin of ClaraAWSPanel: runs requests through the logic and shows their results."""

    def _panelInputs(self, model: str) -> PanelInputs:
        pn = self._parameterNode
        return PanelInputs(connected=bool(self._connectedUrl), model=model, has_volume=bool(pn and pn.inputVolume),
                           has_segment=bool(pn and pn.outputSegmentation and self._segmentId()),
                           auto_busy=self.autoState.busy,
                           extreme_points=len(points_world(pn.extremePoints)) if pn else 0)

    def _updateAutoSegmentGui(self) -> None:
        state = self.autoState.state
        blocker = auto_segment_blocker(self._panelInputs(self.ui.autoModelComboBox.currentText))
        view = apply_button_view(state, ready=not blocker, not_ready_reason=blocker)
        self.ui.applyButton.text, self.ui.applyButton.enabled, self.ui.applyButton.toolTip = view.text, view.enabled, view.tooltip
        self.ui.progressBar.visible = self.ui.progressLabel.visible = progress_visible(state)
        self.ui.showInSegmentEditorButton.visible = result_actions_visible(state)
        for widget in (self.ui.inputVolumeSelector, self.ui.outputSegmentationSelector, self.ui.autoModelComboBox,
                       self.ui.serverUrlComboBox, self.ui.connectButton):
            widget.enabled = inputs_editable(state)

    def _showProgress(self, view) -> None:
        shown = bar_settings(view.text, view.value, view.maximum)
        bar = self.ui.progressBar
        bar.minimum, bar.maximum, bar.value, bar.format, bar.toolTip = (shown.minimum, shown.maximum, shown.value,
                                                                        shown.bar_text, view.text)
        self.ui.progressLabel.text = shown.label_text  # a busy bar draws no text of its own
        bar.repaint()  # paints now, without running the event loop
        self.ui.progressLabel.repaint()

    def onApplyButton(self) -> None:
        if self.autoState.busy:  # the button reads "Cancel" while a request is out
            if self.autoState.request_cancel():  # False for a click queued while the run was starting
                self.runner.abandon("auto")  # idle at once; a late answer is dropped
            return
        pn = self._parameterNode
        if not self._askUploadConsent():
            return
        self.logic.createSurfaceAfterImport = settings_store.surface_after_import(self.settings)
        try:
            job = self.logic.prepareAutoSegment(pn.inputVolume, pn.modelName, pn.outputSegmentation)
        except Exception as error:
            self._showError(_("Auto-segmentation did not start."), error)
            return
        self.autoState.start(cancel_armed=False)
        self._showProgress(describe(StageProgress(Stage.ENCODING)))
        slicer.app.processEvents()  # clicks queued during the export land now, before the button means Cancel
        self.autoState.arm_cancel()
        self._startJob("auto", lambda progress, cancel: job.run(progress, cancel),
                       on_progress=lambda payload: self._showProgress(describe_any(payload, detail=job.endpoint)),
                       on_result=lambda result: self._importAutoSegment(job),
                       on_error=self._onAutoSegmentFailed, on_cancelled=self.autoState.cancelled)

    def _importAutoSegment(self, job) -> None:
        self.autoState.result_arrived()
        self._showProgress(describe(StageProgress(Stage.IMPORTING)))
        segmentation = self.logic.apply(job)  # an exception here reaches _onAutoSegmentFailed
        if segmentation is not None:  # None: a newer request replaced this one
            segmentation.CreateDefaultDisplayNodes()
            segmentation.GetDisplayNode().SetVisibility(True)
            self._parameterNode.outputSegmentation = segmentation
        self.autoState.imported()
        self._updateInteractiveGui()

    def _onAutoSegmentFailed(self, error: BaseException) -> None:
        self.autoState.fail()
        self._showError(_("Auto-segmentation failed."), error)

    def onShowInSegmentEditor(self) -> None:
        pn = self._parameterNode
        # The selector may read "Create new segmentation" again since the run: show what the run made.
        segmentation = pn.outputSegmentation or self.logic.lastSegmentationNode
        if segmentation is None or segmentation.GetScene() is None:
            self._setStatus(_("There is no result to show yet."))
            return
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentation)
        editor.setSourceVolumeNode(pn.inputVolume)
        editor.setCurrentSegmentID(self._segmentId() or segmentation.GetSegmentation().GetNthSegmentID(0))

    # ------------------------------------------------------------------ interactive correction
    def _selectSegmentEditorSegment(self) -> None:
        """Start from the segment the Segment Editor has selected, when it edits our segmentation."""
        editorNode = slicer.mrmlScene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
        pn = self._parameterNode
        if editorNode and pn and pn.outputSegmentation and editorNode.GetSegmentationNode() == pn.outputSegmentation \
                and editorNode.GetSelectedSegmentID():
            self.ui.segmentSelectorWidget.setCurrentSegmentID(editorNode.GetSelectedSegmentID())

    def _segmentId(self) -> str:
        """The selected segment, if it still exists: the selector keeps a deleted segment's ID while the
        segmentation has no segments left (qMRMLSegmentSelectorWidget::populateSegmentCombobox)."""
        segmentId = self.ui.segmentSelectorWidget.currentSegmentID() or ""
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        if not segmentId or segmentation is None or segmentation.GetSegmentation().GetSegment(segmentId) is None:
            return ""
        return segmentId

    def _updateInteractiveGui(self) -> None:
        pn = self._parameterNode
        if pn is None:
            return
        annotation = self._panelInputs(pn.annotationModel)
        self.ui.extremePointsCountLabel.text = extreme_points_text(annotation.extreme_points)
        blocker = annotate_blocker(annotation)
        self.ui.annotateButton.enabled = not blocker and not self.runner.is_running("annotate")
        self.ui.annotateButton.toolTip = blocker or _("Segment the structure outlined by the extreme points.")
        self.ui.extremePointsPlaceWidget.enabled = bool(pn.inputVolume)
        blocker = interactive_blocker(self._panelInputs(pn.deepgrowModel))
        for widget in (self.ui.foregroundPlaceWidget, self.ui.backgroundPlaceWidget):
            widget.enabled = not blocker
            widget.toolTip = blocker or _("Each click updates the selected segment.")
        self.ui.undoButton.enabled = bool(pn.outputSegmentation) and self.logic.canUndo(pn.outputSegmentation)

    def onAddSegment(self) -> None:
        pn = self._parameterNode
        segmentation = pn.outputSegmentation
        if segmentation is None:
            segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
            segmentation.CreateDefaultDisplayNodes()
            if pn.inputVolume:
                segmentation.SetReferenceImageGeometryParameterFromVolumeNode(pn.inputVolume)
            pn.outputSegmentation = segmentation
        segmentId = segmentation.GetSegmentation().AddEmptySegment()
        self.ui.segmentSelectorWidget.setCurrentNode(segmentation)
        self.ui.segmentSelectorWidget.setCurrentSegmentID(segmentId)

    def _onMarkupsChanged(self, caller, event) -> None:
        self._updateInteractiveGui()

    def _clearPoints(self, *roles: str) -> None:
        if "foregroundPoints" in roles:
            self.runner.cancel("deepgrow")
        for role in roles:
            node = getattr(self._parameterNode, role)
            if node:
                node.RemoveAllControlPoints()
        self._updateInteractiveGui()

    def _setStatus(self, text: str) -> None:
        self.ui.interactiveStatusLabel.text = text

    def _startInteractive(self, channel: str, prepare: Callable, what: str, detail: str) -> None:
        self.runEditRequest(channel, prepare, what, detail, self._setStatus,
                            applied=self.ui.segmentSelectorWidget.setCurrentSegmentID, finished=self._updateInteractiveGui)
        self._updateInteractiveGui()

    def runEditRequest(self, channel: str, prepare: Callable, what: str, detail: str, report: Callable[[str], None],
                       applied: Optional[Callable[[str], None]] = None,
                       finished: Optional[Callable[[], None]] = None,
                       beforeWrite: Optional[Callable[[object], None]] = None,
                       editorNode: Optional[object] = None) -> None:
        """Prepare on the GUI thread, send on a worker thread, apply the answer on the GUI thread.

        Used by the panel and by the Segment Editor effect; ``report`` shows a one-line status;
        ``beforeWrite`` saves the undo state of the editor the request came from, and ``editorNode`` (that
        editor's vtkMRMLSegmentEditorNode) selects the result there.
        """
        if not self._connectedUrl:
            report(_("Not connected: connect to a server in the ClaraAWS module first."))
            return
        if not self._askUploadConsent():
            return
        self.logic.createSurfaceAfterImport = settings_store.surface_after_import(self.settings)
        try:
            job = prepare()
        except Exception as error:
            self._showError(what, error)
            return
        job.before_write = beforeWrite
        job.editor_node_id = editorNode.GetID() if editorNode is not None else None
        report(describe(StageProgress(Stage.WAITING, detail=detail)).text)

        def onResult(result):
            outcome = self.logic.apply(job)  # None: a newer click replaced this request
            if outcome is not None:
                report(_("Segment updated."))
                if applied is not None:
                    applied(outcome)
            if finished is not None:
                finished()

        def onError(error):
            report("")
            if finished is not None:
                finished()
            self._showError(what, error)

        self._startJob(channel, lambda progress, cancel: job.run(progress, cancel),
                       on_progress=lambda payload: report(describe_any(payload, detail=detail).text),
                       on_result=onResult, on_error=onError, on_cancelled=lambda: report(_("Cancelled.")))

    def onAnnotate(self) -> None:
        pn = self._parameterNode
        segmentId, points = self._segmentId(), points_world(pn.extremePoints)
        self._startInteractive("annotate", lambda: self.logic.prepareAnnotate(
            pn.inputVolume, pn.outputSegmentation, segmentId, pn.annotationModel, points), _("Annotation failed."), "dextr3d")

    # ------------------------------------------------------------------ interactive tools
    def onToolToggled(self, tool: str, checked: bool) -> None:
        """Starting a tool makes its point lists; stopping it ends place mode and the observers (ToolPointLists)."""
        other = self.ui.deepgrowGroupBox if tool == "extreme" else self.ui.annotationGroupBox
        if checked:
            nodes = self.pointTools.activate(tool, self._onToolPoint)
            other.checked = False  # one tool at a time
            widgets = [self.ui.extremePointsPlaceWidget] if tool == "extreme" else \
                [self.ui.foregroundPlaceWidget, self.ui.backgroundPlaceWidget]
            for widget, node in zip(widgets, nodes):
                widget.setCurrentNode(node)
            self._observeMarkups(self._parameterNode)
        elif self.pointTools.active_tool == tool:
            self._stopTools()
        self._updateInteractiveGui()

    def _stopTools(self) -> None:
        if self.pointTools is None:
            return
        for widget in (self.ui.extremePointsPlaceWidget, self.ui.foregroundPlaceWidget, self.ui.backgroundPlaceWidget):
            widget.placeModeEnabled = False
        self.pointTools.deactivate()
        for groupBox in (self.ui.annotationGroupBox, self.ui.deepgrowGroupBox):
            if groupBox.checked:
                groupBox.blockSignals(True)
                groupBox.checked = False
                groupBox.blockSignals(False)

    def _onToolPoint(self, role: str, node) -> None:
        if role in ("foregroundPoints", "backgroundPoints"):
            self.onDeepgrowPoint(node)

    def onDeepgrowPoint(self, clickedNode, event=None, force: bool = False) -> None:
        """A click was placed on the inside or outside list: send a request at once (or on Update)."""
        pn = self._parameterNode
        if pn is None or interactive_blocker(self._panelInputs(pn.deepgrowModel)):
            return
        if self.takeBackClickOutside(pn.inputVolume, clickedNode, self._setStatus):
            return
        foreground, background = points_world(pn.foregroundPoints), points_world(pn.backgroundPoints)
        if not foreground:
            self._setStatus(_("Click inside the structure first."))
            return
        if not force and not settings_store.update_on_every_click(self.settings):
            self._setStatus(_("{count} clicks placed: click Update segment to send them.").format(
                count=len(foreground) + len(background)))
            return
        clicked = points_world(clickedNode)[-1] if clickedNode is not None else None
        segmentId = self._segmentId()
        # A newer click supersedes the request still running for an older one (same channel).
        self._startInteractive("deepgrow", lambda: self.logic.prepareDeepgrow(
            pn.inputVolume, pn.outputSegmentation, segmentId, pn.deepgrowModel, foreground, background, clicked),
            _("Deepgrow failed."), "deepgrow")

    def takeBackClickOutside(self, volumeNode, clickedNode, report: Callable[[str], None]) -> bool:
        """Remove a click just placed outside the volume and say so; True if it was.

        Left in its list, it would make every later click fail on it until the user found and deleted it.
        """
        clicked = points_world(clickedNode)[-1:] if clickedNode is not None else []
        if not clicked or volumeNode is None or not lies_outside(volumeNode, clicked[0]):
            return False
        with self.pointTools.quiet():
            clickedNode.RemoveNthControlPoint(clickedNode.GetNumberOfControlPoints() - 1)
        report(_("That click was outside the volume '{name}', so it was removed; click inside the image.").format(
            name=volumeNode.GetName()))
        return True

    def onLoadSavedPoints(self) -> None:
        """Put the points stored with the selected segment back into the tools' lists, to edit them again."""
        pn = self._parameterNode
        segmentId = self._segmentId()
        stored = self.logic.pointsOfSegment(pn.outputSegmentation, segmentId) if pn and segmentId else {}
        extreme = stored.get(TAG_EXTREME_POINTS, [])
        clicks = {"foregroundPoints": stored.get(TAG_FOREGROUND_POINTS, []),
                  "backgroundPoints": stored.get(TAG_BACKGROUND_POINTS, [])}
        if not extreme and not any(clicks.values()):
            self._setStatus(_("The selected segment has no points saved by ClaraAWS."))
            return
        groupBox, lists = (self.ui.annotationGroupBox, {"extremePoints": extreme}) if extreme else \
            (self.ui.deepgrowGroupBox, clicks)
        groupBox.checked = True  # starts the tool, which makes its lists
        with self.pointTools.quiet():  # AddControlPointWorld fires PointPositionDefinedEvent for each point
            for role, points in lists.items():
                node = getattr(pn, role)
                node.RemoveAllControlPoints()
                for point in points:
                    node.AddControlPointWorld(*point)
        self._updateInteractiveGui()
        self._setStatus(_("Saved points loaded: place or move a point to update the segment."))

    def onUndo(self) -> None:
        try:
            self.logic.undo(self._parameterNode.outputSegmentation)
            self._setStatus(self.logic.lastUndoSummary or _("Last AI edit undone."))
        except Exception as error:
            self._showError(_("Undo failed."), error)
        self._updateInteractiveGui()


