"""The ClaraAWS panel: setup, module lifecycle, the parameter node, background jobs, errors and consent.

The panel is Qt only: protocol, geometry and scene work live in the library (``ClaraAWSLogic``).
Network calls run on worker threads (``panel.jobs``) that a QTimer polls, so MRML is touched only on
the GUI thread. The server section and the segmentation section are mixins of their own files.
"""

import logging
import sys
from typing import Any, Callable, List, Optional

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from ..core.errors import DeclinedError
from ..core.progress import error_text
from ..scene.export import first_image_volume
from . import registration, settings_store, slicer_app
from .consent import KEY_CONSENTED_SERVERS, ConsentBook
from .jobs import JobRunner
from .slicer_compat import connect_gui
from .processing_state import ConnectTickets, ProcessingStateMachine
from .learning_section import LearningSection
from .segment_section import SegmentSection
from .server_section import ServerSection

POLL_INTERVAL_MS = 100
#: Channels of the job runner whose results change the scene (the Segment Editor effect's included).
SCENE_CHANNELS = ("auto", "auto-effect", "annotate", "deepgrow", "next")


class ClaraAWSPanel(ServerSection, SegmentSection, LearningSection, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module widget without its parameter node class (the module file supplies ``newParameterNode``)."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._models: List[dict] = []
        self._connectedUrl = ""
        self._deployments: dict = {}  # url -> aws.Deployment
        self._observedMarkups = []
        self.pointTools = None
        self._preEncodedVolumeId = None

    # ------------------------------------------------------------------ setup and lifecycle
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ClaraAWS.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        from .. import ClaraAWSLogic
        from ..scene.point_lists import ToolPointLists

        self.logic = ClaraAWSLogic(slicer.mrmlScene)
        self.logic.confirmSourceConversion = slicer_app.confirm_source_conversion
        self.logic.beforeSegmentWrite = slicer_app.save_segment_editor_undo_state
        self.pointTools = ToolPointLists(
            slicer.mrmlScene, lambda role: getattr(self._parameterNode, role, None) if self._parameterNode else None,
            lambda role, node: setattr(self._parameterNode, role, node) if self._parameterNode else None)
        for groupBox, tool in ((self.ui.annotationGroupBox, "extreme"), (self.ui.deepgrowGroupBox, "deepgrow")):
            groupBox.connect("toggled(bool)", lambda checked, tool=tool: self.onToolToggled(tool, checked))
        self.settings = qt.QSettings()  # a settings_store.SettingsStore as it is (value/setValue)
        self.consent = ConsentBook(self.settings)
        self.connectTickets = ConnectTickets()
        self.runner = JobRunner()
        self.autoState = ProcessingStateMachine(on_change=lambda old, new: self._updateAutoSegmentGui())
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self._pollJobs)

        for placeWidget in (self.ui.extremePointsPlaceWidget, self.ui.foregroundPlaceWidget, self.ui.backgroundPlaceWidget):
            placeWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
            placeWidget.deleteAllControlPointsOptionVisible = True
        self.ui.modelsTableWidget.horizontalHeader().setSectionResizeMode(qt.QHeaderView.ResizeToContents)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)

        # Server
        self.ui.connectButton.connect("clicked(bool)", self.onConnectButton)
        self.ui.serverUrlComboBox.connect("editTextChanged(QString)", lambda text: self._updateServerGui())
        self.ui.serverUrlComboBox.connect("currentIndexChanged(int)", lambda index: self._updateServerGui())
        self.ui.serverUrlComboBox.lineEdit().connect("returnPressed()", self.onConnectButton)
        self.ui.discoverButton.connect("toggled(bool)", lambda checked: setattr(self.ui.awsGroupBox, "visible", checked))
        self.ui.findDeploymentsButton.connect("clicked(bool)", self.onFindDeployments)
        self.ui.saveStackAliasButton.connect("clicked(bool)", self.onSaveStackAlias)
        self.ui.verifyTlsCheckBox.connect("toggled(bool)", self.onVerifyTlsToggled)
        self.ui.caBundlePathLineEdit.connect("currentPathChanged(QString)", self.onCaBundleChanged)
        slicer.app.settingsDialog().connect("settingChanged(QString,QVariant)", self.onApplicationSettingChanged)
        # Auto-segmentation
        self.ui.autoModelComboBox.connect("currentIndexChanged(int)", self.onModelSelectionChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.showInSegmentEditorButton.connect("clicked(bool)", self.onShowInSegmentEditor)
        # Interactive correction
        self.ui.annotationModelComboBox.connect("currentIndexChanged(int)", self.onModelSelectionChanged)
        self.ui.deepgrowModelComboBox.connect("currentIndexChanged(int)", self.onModelSelectionChanged)
        self.ui.segmentSelectorWidget.connect("currentSegmentChanged(QString)", lambda segmentId: self._updateInteractiveGui())
        self.ui.addSegmentButton.connect("clicked(bool)", self.onAddSegment)
        self.ui.annotateButton.connect("clicked(bool)", self.onAnnotate)
        self.ui.clearExtremePointsButton.connect("clicked(bool)", lambda: self._clearPoints("extremePoints"))
        self.ui.clearDeepgrowPointsButton.connect("clicked(bool)", lambda: self._clearPoints("foregroundPoints", "backgroundPoints"))
        self.ui.deepgrowUpdateButton.connect("clicked(bool)", lambda: self.onDeepgrowPoint(None, force=True))
        self.ui.loadSavedPointsButton.connect("clicked(bool)", self.onLoadSavedPoints)
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)
        self._setupLearning()

        self._loadSettingsIntoGui()
        self.initializeParameterNode()
        # A module loaded after start-up never sees startupCompleted(): register what it would have.
        registration.register_segment_editor_effect()
        registration.register_settings_page()

    def cleanup(self) -> None:
        """Module unload and the developer Reload: nothing of this panel may keep listening or running."""
        self._pollTimer.stop()
        self._cleanupLearning()
        self._stopTools()
        slicer.app.settingsDialog().disconnect("settingChanged(QString,QVariant)", self.onApplicationSettingChanged)
        self.runner.shutdown(timeout=2.0)
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
        self.removeObservers()
        if self.logic is not None:
            self.logic.cleanup()

    def enter(self) -> None:
        self._showTlsOptions()
        self.initializeParameterNode()
        self._selectSegmentEditorSegment()

    def exit(self) -> None:
        self._stopTools()
        if self._parameterNode:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.autoState.arm_cancel()  # a scene closing during the start of a run cancels it too
        self.autoState.request_cancel()
        for channel in SCENE_CHANNELS:  # no result may land in a scene that is going away; nobody waits for one
            self.runner.abandon(channel)
        self._stopTools()
        self._observeMarkups(None)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onSceneEndImport(self, caller, event) -> None:
        # A loaded scene may bring its own parameter node and point lists: bind the panel to those.
        self._stopTools()
        self.setParameterNode(None)
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        # Reload the library too, not only this file (developer convenience).
        for name in [name for name in sys.modules if name == "ClaraAWSLib" or name.startswith("ClaraAWSLib.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    # ------------------------------------------------------------------ parameter node
    def newParameterNode(self):
        """The module's parameter node (wrapped); the module file overrides this."""
        raise NotImplementedError

    def initializeParameterNode(self) -> None:
        parameterNode = self.newParameterNode()
        if not parameterNode.inputVolume:
            parameterNode.inputVolume = first_image_volume(slicer.mrmlScene)
        # Point lists are made only when the user starts a tool (ToolPointLists), never on module open.
        self.setParameterNode(parameterNode)

    def ensureParameterNode(self):
        """The parameter node, bound now if a scene close left the panel without one (the effect needs it)."""
        if self._parameterNode is None:
            self.initializeParameterNode()
        return self._parameterNode

    def setParameterNode(self, inputParameterNode: Optional[Any]) -> None:
        if self._parameterNode:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._parameterNodeGuiTag = None
            if self.getObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified):
                self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = pn = inputParameterNode
        if pn:
            self._parameterNodeGuiTag = connect_gui(pn, self.ui)
            self.addObserver(pn, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self.ui.extremePointsPlaceWidget.setCurrentNode(pn.extremePoints)
            self.ui.foregroundPlaceWidget.setCurrentNode(pn.foregroundPoints)
            self.ui.backgroundPlaceWidget.setCurrentNode(pn.backgroundPoints)
            self._observeMarkups(pn)
            if self._models:
                self._fillModels()  # a new node (after a scene close) starts with no model chosen
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        if self.ui.segmentSelectorWidget.currentNode() != segmentation:
            self.ui.segmentSelectorWidget.setCurrentNode(segmentation)
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        if volume is not None and volume.GetID() != self._preEncodedVolumeId:
            # Compress the chosen volume in the background now, so Auto-segment finds the bytes ready.
            self._preEncodedVolumeId = volume.GetID() if self.logic.preEncode(volume) else None
        self._updateAutoSegmentGui()
        self._updateInteractiveGui()

    def _observeMarkups(self, pn: Optional[Any]) -> None:
        # VTK passes custom event ids to Python callbacks as "NoEvent", so each event gets its own callback.
        for observation in self._observedMarkups:
            self.removeObserver(*observation)
        self._observedMarkups = []
        if pn is None:
            return
        markups = slicer.vtkMRMLMarkupsNode
        for node in (pn.extremePoints, pn.foregroundPoints, pn.backgroundPoints):
            for event in (markups.PointPositionDefinedEvent, markups.PointPositionUndefinedEvent, markups.PointRemovedEvent):
                self._observedMarkups.append((node, event, self._onMarkupsChanged))
        self._observedMarkups = [observation for observation in self._observedMarkups if observation[0] is not None]
        for observation in self._observedMarkups:
            self.addObserver(*observation)

    # ------------------------------------------------------------------ jobs, errors, consent
    def _startJob(self, channel: str, work: Callable, **handlers):
        job = self.runner.start(channel, work, **handlers)
        self._pollTimer.start()
        return job

    def _pollJobs(self) -> None:
        self.runner.poll()
        if not self.runner.busy:
            self._pollTimer.stop()

    def _showError(self, what: str, error: BaseException) -> None:
        message, details = error_text(what, error)
        if isinstance(error, DeclinedError):  # the user has just said no; a box would only repeat it
            logging.info(f"ClaraAWS: {message}")
            return
        logging.error(f"ClaraAWS: {message}\n{details}")
        slicer.util.errorDisplay(message, detailedText=details)

    def _askUploadConsent(self) -> bool:
        """Ask before image data goes to a server (per server; a plain-HTTP one in every Slicer session)."""
        url = self._connectedUrl
        if not self.consent.needs_asking(url):
            return True
        plain = settings_store.is_plain_http(url)
        text = _("The voxels and geometry of the volume (no patient information or names) will be sent to {host}."
                 ).format(host=qt.QUrl(url).host() or url)
        if plain:
            text += "\n\n" + _("The connection is plain HTTP: the images travel unencrypted. Use it only for anonymised data.")
        agreed, dontAskAgain = slicer_app.ask_ok_cancel(
            text, _("Send image data?"), _("Don't ask again for this server"), check_box_enabled=not plain)
        if not agreed:
            return False
        if self.consent.agreed(url, dontAskAgain):
            slicer_app.announce_setting_changed(KEY_CONSENTED_SERVERS, self.consent.remembered())
        return True

