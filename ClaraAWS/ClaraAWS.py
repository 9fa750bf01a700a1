"""ClaraAWS: segment volumes with NVIDIA Clara AIAA servers (local or on AWS) from a Slicer panel.

This file holds only Qt and module boilerplate. Protocol, geometry and scene work live in
ClaraAWSLib (``ClaraAWSLogic``); background jobs, the run state machine, settings and panel text are
pure helpers there too. Network calls run on worker threads (ClaraAWSLib.panel.jobs) that this panel polls
with a QTimer, so MRML is touched only on the GUI thread.
"""

import logging
import sys
import time
from typing import Callable, List, Optional

import qt
import vtk

import slicer
from ClaraAWSLib.scene.point_lists import points_world
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from ClaraAWSLib.panel import model_choices, settings_store, slicer_app
from ClaraAWSLib.core.errors import ClaraError
from ClaraAWSLib.panel.jobs import JobRunner
from ClaraAWSLib.panel.processing_state import (PanelInputs, ProcessingStateMachine, annotate_blocker, apply_button_view,
                                          auto_segment_blocker, extreme_points_text, inputs_editable,
                                          interactive_blocker, progress_visible, result_actions_visible)
from ClaraAWSLib.core.progress import Stage, StageProgress, describe, describe_any, error_text

BOTO3_REQUIREMENT = "boto3>=1.26"
POLL_INTERVAL_MS = 100
#: Channels of the job runner whose results change the scene.
SCENE_CHANNELS = ("auto", "annotate", "deepgrow")


class ClaraAWS(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("ClaraAWS")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Markups", "Segmentations"]
        self.parent.contributors = ["ClaraAWS developers"]
        self.parent.helpText = _(
            "Segment CT volumes with an NVIDIA Clara AI-Assisted Annotation (AIAA) server: one you run yourself, "
            "or one deployed in your AWS account by the Clara Quick Start (<b>Discover on AWS</b> finds it). "
            "Pick a model and click <b>Auto-segment</b>, or correct a segment with extreme points or clicks. "
            "Only the voxels and the geometry of the volume are sent; no names or patient information. "
            'See <a href="https://github.com/claraaws/SlicerClaraAWS">the project page</a>.')
        self.parent.acknowledgementText = _(
            "ClaraAWS speaks the Clara AIAA v1 protocol published by NVIDIA. It is not affiliated with NVIDIA or "
            "Amazon Web Services. The module layout follows the 3D Slicer scripted-module template.")


@parameterNodeWrapper
class ClaraAWSParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelName: str = ""
    annotationModel: str = ""
    deepgrowModel: str = ""
    extremePoints: vtkMRMLMarkupsFiducialNode
    foregroundPoints: vtkMRMLMarkupsFiducialNode
    backgroundPoints: vtkMRMLMarkupsFiducialNode


class ClaraAWSParameters(ScriptedLoadableModuleLogic):
    """Finds the module's parameter node; the scene work itself is ClaraAWSLib.ClaraAWSLogic."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleName = "ClaraAWS"

    def getParameterNode(self) -> ClaraAWSParameterNode:
        return ClaraAWSParameterNode(super().getParameterNode())


class ClaraAWSWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._models: List[dict] = []
        self._connectedUrl = ""
        self._deployments: dict = {}  # url -> aws.Deployment
        self._consentedHosts = set()
        self._observedMarkups = []
        self.pointTools = None

    # ------------------------------------------------------------------ setup and lifecycle
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ClaraAWS.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        from ClaraAWSLib import ClaraAWSLogic

        from ClaraAWSLib.scene.point_lists import ToolPointLists

        self.logic = ClaraAWSLogic(slicer.mrmlScene)
        self.logic.confirmSourceConversion = slicer_app.confirm_source_conversion
        self.logic.beforeSegmentWrite = slicer_app.save_segment_editor_undo_state
        self.pointTools = ToolPointLists(
            slicer.mrmlScene, lambda role: getattr(self._parameterNode, role, None) if self._parameterNode else None,
            lambda role, node: setattr(self._parameterNode, role, node) if self._parameterNode else None)
        for groupBox, tool in ((self.ui.annotationGroupBox, "extreme"), (self.ui.deepgrowGroupBox, "deepgrow")):
            groupBox.connect("toggled(bool)", lambda checked, tool=tool: self.onToolToggled(tool, checked))
        self.settings = qt.QSettings()  # a settings_store.SettingsStore as it is (value/setValue)
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

        # Server
        self.ui.connectButton.connect("clicked(bool)", self.onConnectButton)
        self.ui.serverUrlComboBox.connect("editTextChanged(QString)", lambda text: self._updateServerGui())
        self.ui.serverUrlComboBox.connect("currentIndexChanged(int)", lambda index: self._updateServerGui())
        self.ui.serverUrlComboBox.lineEdit().connect("returnPressed()", self.onConnectButton)
        self.ui.discoverButton.connect("toggled(bool)", lambda checked: setattr(self.ui.awsGroupBox, "visible", checked))
        self.ui.findDeploymentsButton.connect("clicked(bool)", self.onFindDeployments)
        self.ui.saveStackAliasButton.connect("clicked(bool)", self.onSaveStackAlias)
        self.ui.verifyTlsCheckBox.connect("toggled(bool)", self.onTlsOptionsChanged)
        self.ui.caBundlePathLineEdit.connect("currentPathChanged(QString)", self.onTlsOptionsChanged)
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
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)

        self._loadSettingsIntoGui()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._pollTimer.stop()
        self.runner.shutdown(timeout=2.0)
        self.removeObservers()
        if self.logic is not None:
            self.logic.cleanup()

    def enter(self) -> None:
        self.initializeParameterNode()
        self._selectSegmentEditorSegment()

    def exit(self) -> None:
        self._stopTools()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        for channel in SCENE_CHANNELS:  # no result may land in a scene that is going away
            self.runner.cancel(channel)
        self.autoState.request_cancel()
        self._stopTools()
        self._observeMarkups(None)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        # Reload the library too, not only this file (developer convenience).
        for name in [name for name in sys.modules if name == "ClaraAWSLib" or name.startswith("ClaraAWSLib.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self) -> None:
        parameterNode = ClaraAWSParameters().getParameterNode()
        if not parameterNode.inputVolume:
            parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        # Point lists are made only when the user starts a tool (ToolPointLists), never on module open.
        self.setParameterNode(parameterNode)

    def setParameterNode(self, inputParameterNode: Optional[ClaraAWSParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = pn = inputParameterNode
        if pn:
            self._parameterNodeGuiTag = pn.connectGui(self.ui)
            self.addObserver(pn, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self.ui.extremePointsPlaceWidget.setCurrentNode(pn.extremePoints)
            self.ui.foregroundPlaceWidget.setCurrentNode(pn.foregroundPoints)
            self.ui.backgroundPlaceWidget.setCurrentNode(pn.backgroundPoints)
            self._observeMarkups(pn)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        if self.ui.segmentSelectorWidget.currentNode() != segmentation:
            self.ui.segmentSelectorWidget.setCurrentNode(segmentation)
        self._updateAutoSegmentGui()
        self._updateInteractiveGui()

    def _observeMarkups(self, pn: Optional[ClaraAWSParameterNode]) -> None:
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
        logging.error(f"ClaraAWS: {message}\n{details}")
        slicer.util.errorDisplay(message, detailedText=details)

    def _askUploadConsent(self) -> bool:
        """Ask once per server and Slicer session (unless "don't show again") before image data is sent."""
        host = qt.QUrl(self._connectedUrl).host() or self._connectedUrl
        if host in self._consentedHosts:
            return True
        text = _("The voxels and geometry of the volume (no patient information or names) will be sent to {host}."
                 ).format(host=host)
        if settings_store.is_plain_http(self._connectedUrl):
            text += "\n\n" + _("The connection is plain HTTP: the images travel unencrypted. Use it only for anonymised data.")
        if not slicer.util.confirmOkCancelDisplay(text, windowTitle=_("Send image data?"),
                                                  dontShowAgainSettingsKey=settings_store.KEY_DONT_ASK_BEFORE_UPLOAD):
            return False
        self._consentedHosts.add(host)
        return True

    # ------------------------------------------------------------------ server
    def _loadSettingsIntoGui(self) -> None:
        tls = settings_store.load_tls_options(self.settings)
        for widget, prop, value in ((self.ui.verifyTlsCheckBox, "checked", tls.verify),
                                    (self.ui.caBundlePathLineEdit, "currentPath", tls.ca_bundle)):
            wasBlocked = widget.blockSignals(True)  # saving half-loaded options would lose the other one
            setattr(widget, prop, value)
            widget.blockSignals(wasBlocked)
        self.onTlsOptionsChanged()
        aws = settings_store.load_aws_options(self.settings)
        self.ui.awsProfileLineEdit.text, self.ui.awsRegionLineEdit.text = aws.profile, aws.region
        self._fillServerCombo(settings_store.last_url(self.settings))

    def _fillServerCombo(self, selectedUrl: str) -> None:
        combo = self.ui.serverUrlComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for url, deployment in self._deployments.items():
            combo.addItem(model_choices.deployment_label(deployment.stack_name, deployment.region, url), url)
        for url in settings_store.url_history(self.settings):
            if url not in self._deployments:
                combo.addItem(url, url)
        index = combo.findData(selectedUrl)
        if index >= 0:
            combo.setCurrentIndex(index)
        else:
            combo.setEditText(selectedUrl)
        combo.blockSignals(wasBlocked)
        self._updateServerGui()

    def _serverUrl(self) -> str:
        combo = self.ui.serverUrlComboBox
        text, index = combo.currentText.strip(), combo.currentIndex
        if index >= 0 and combo.itemText(index) == text and combo.itemData(index):
            return str(combo.itemData(index))  # a "stack (region) url" entry
        return settings_store.normalize_server_url(text)

    def _updateServerGui(self) -> None:
        self.ui.httpWarningLabel.visible = settings_store.is_plain_http(self._serverUrl())
        deployment = self._deployments.get(self._serverUrl())
        self.ui.deploymentNoteLabel.text = (deployment.note or "") if deployment else ""
        self.ui.stackAliasLineEdit.enabled = self.ui.saveStackAliasButton.enabled = deployment is not None
        aliases = settings_store.stack_aliases(self.settings)
        self.ui.stackAliasLineEdit.text = aliases.get(deployment.stack_name, "") if deployment else ""

    def onTlsOptionsChanged(self, *args) -> None:
        options = settings_store.TLSOptions(self.ui.verifyTlsCheckBox.checked, self.ui.caBundlePathLineEdit.currentPath)
        settings_store.save_tls_options(self.settings, options)
        self.ui.tlsWarningLabel.visible = not options.verify
        self.ui.caBundlePathLineEdit.enabled = options.verify

    def onConnectButton(self) -> None:
        url = self._serverUrl()
        if not url:
            slicer.util.errorDisplay(_("Type the server address first, for example https://clara.example.org."))
            return
        verify = settings_store.load_tls_options(self.settings).client_verify()
        for channel in ("annotate", "deepgrow"):
            self.runner.cancel(channel)  # they use the client that connect() replaces
        self._connectedUrl = ""
        self._onParameterNodeModified()
        self.ui.connectButton.enabled = False
        self.ui.connectionStatusLabel.text = _("Connecting to {url}…").format(url=url)
        self._startJob("connect", lambda progress, cancel: self.logic.connect(url, verify=verify),
                       on_result=lambda models: self._onConnected(url, models), on_error=self._onConnectFailed)

    def _onConnected(self, url: str, models: List[dict]) -> None:
        self.ui.connectButton.enabled = True
        self._connectedUrl = url
        settings_store.remember_url(self.settings, url)
        self._fillServerCombo(url)
        self._models = list(models)
        self.ui.connectionStatusLabel.text = _("Connected: {count} models.").format(count=len(self._models))
        self._fillModels()

    def _onConnectFailed(self, error: BaseException) -> None:
        self.ui.connectButton.enabled = True
        self._models = []
        self._fillModels()
        self.ui.connectionStatusLabel.text = _("Not connected.")
        self._showError(_("Could not connect to the server."), error)

    def _fillModels(self) -> None:
        table = self.ui.modelsTableWidget
        table.setRowCount(len(self._models))
        for row, model in enumerate(self._models):
            cells = model_choices.model_row(model)
            for column, text in enumerate((cells.name, cells.type, cells.labels, cells.description)):
                item = qt.QTableWidgetItem(text)
                item.setToolTip(cells.tooltip)
                table.setItem(row, column, item)
        pn = self._parameterNode
        for combo, types, field in ((self.ui.autoModelComboBox, model_choices.AUTO_SEGMENT_TYPES, "modelName"),
                                    (self.ui.annotationModelComboBox, model_choices.ANNOTATION_TYPES, "annotationModel"),
                                    (self.ui.deepgrowModelComboBox, model_choices.DEEPGROW_TYPES, "deepgrowModel")):
            names = model_choices.models_of_types(self._models, types)
            chosen = model_choices.choose(names, getattr(pn, field) if pn else "", combo.currentText)
            wasBlocked = combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            combo.setCurrentIndex(names.index(chosen) if chosen else -1)
            combo.blockSignals(wasBlocked)
        self.onModelSelectionChanged()

    def onModelSelectionChanged(self, *args) -> None:
        pn = self._parameterNode
        if pn:
            with slicer.util.NodeModify(pn):
                pn.modelName = self.ui.autoModelComboBox.currentText
                pn.annotationModel = self.ui.annotationModelComboBox.currentText
                pn.deepgrowModel = self.ui.deepgrowModelComboBox.currentText
        self._onParameterNodeModified()

    # ------------------------------------------------------------------ AWS discovery
    def _ensureBoto3(self) -> bool:
        """boto3 is not bundled with Slicer: install it on first use, after asking."""
        from ClaraAWSLib import aws

        if aws.boto3_available():
            return True
        try:
            import slicer.packaging

            slicer.packaging.pip_ensure(BOTO3_REQUIREMENT, requester="ClaraAWS")  # asks the user first
        except ImportError:  # Slicer before 5.12
            if not slicer.util.confirmOkCancelDisplay(_(
                    "Finding Clara servers on AWS needs the boto3 package, which Slicer does not include. "
                    "Install it now from the Python Package Index?")):
                return False
            slicer.util.pip_install(BOTO3_REQUIREMENT)
        except RuntimeError:  # the user declined
            return False
        except Exception as error:
            self._showError(_("boto3 could not be installed."), error)
            return False
        import importlib

        importlib.invalidate_caches()
        if not aws.boto3_available():
            slicer.util.errorDisplay(_("boto3 is not installed, so AWS discovery cannot run; install boto3 and try again."))
            return False
        return True

    def onFindDeployments(self) -> None:
        from ClaraAWSLib import aws

        try:
            options = settings_store.save_aws_options(self.settings, settings_store.AwsOptions(
                self.ui.awsProfileLineEdit.text, self.ui.awsRegionLineEdit.text))
        except ClaraError as error:
            self._showError(_("Check the AWS settings."), error)
            return
        if not self._ensureBoto3():
            return
        aliases = settings_store.stack_aliases(self.settings)
        self.ui.findDeploymentsButton.enabled = False
        self.ui.deploymentNoteLabel.text = _("Searching CloudFormation stacks…")
        self._startJob(
            "discover",
            lambda progress, cancel: aws.discover(profile=options.profile or None, region=options.region or None,
                                                  aliases=aliases),
            on_result=self._onDeploymentsFound, on_error=self._onDiscoveryFailed)

    def _onDeploymentsFound(self, deployments) -> None:
        self.ui.findDeploymentsButton.enabled = True
        self._deployments = {deployment.url: deployment for deployment in deployments}
        self._fillServerCombo(deployments[0].url if deployments else self._serverUrl())

    def _onDiscoveryFailed(self, error: BaseException) -> None:
        self.ui.findDeploymentsButton.enabled = True
        self.ui.deploymentNoteLabel.text = ""
        self._showError(_("AWS discovery failed."), error)

    def onSaveStackAlias(self) -> None:
        deployment = self._deployments.get(self._serverUrl())
        if deployment is None:
            return
        try:
            settings_store.set_stack_alias(self.settings, deployment.stack_name, self.ui.stackAliasLineEdit.text)
        except ClaraError as error:
            self._showError(_("The DNS alias was not saved."), error)
            return
        self.onFindDeployments()  # the stack's URL changes with its alias

    # ------------------------------------------------------------------ auto-segmentation
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
        self.ui.progressBar.visible = progress_visible(state)
        self.ui.showInSegmentEditorButton.visible = result_actions_visible(state)
        for widget in (self.ui.inputVolumeSelector, self.ui.outputSegmentationSelector, self.ui.autoModelComboBox,
                       self.ui.serverUrlComboBox, self.ui.connectButton):
            widget.enabled = inputs_editable(state)

    def _showProgress(self, view) -> None:
        bar = self.ui.progressBar
        bar.maximum, bar.value, bar.format, bar.toolTip = view.maximum, view.value, view.text, view.text
        bar.repaint()  # paints now, without running the event loop

    def onApplyButton(self) -> None:
        if self.autoState.request_cancel():  # the button reads "Cancel" while a request is out
            self.runner.cancel("auto")
            return
        pn = self._parameterNode
        if not self._askUploadConsent():
            return
        try:
            job = self.logic.prepareAutoSegment(pn.inputVolume, pn.modelName, pn.outputSegmentation)
        except Exception as error:
            self._showError(_("Auto-segmentation did not start."), error)
            return
        self.autoState.start()
        self._showProgress(describe(StageProgress(Stage.ENCODING)))
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
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(pn.outputSegmentation)
        editor.setSourceVolumeNode(pn.inputVolume)
        editor.setCurrentSegmentID(self._segmentId() or pn.outputSegmentation.GetSegmentation().GetNthSegmentID(0))

    # ------------------------------------------------------------------ interactive correction
    def _selectSegmentEditorSegment(self) -> None:
        """Start from the segment the Segment Editor has selected, when it edits our segmentation."""
        editorNode = slicer.mrmlScene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
        pn = self._parameterNode
        if editorNode and pn and pn.outputSegmentation and editorNode.GetSegmentationNode() == pn.outputSegmentation \
                and editorNode.GetSelectedSegmentID():
            self.ui.segmentSelectorWidget.setCurrentSegmentID(editorNode.GetSelectedSegmentID())

    def _segmentId(self) -> str:
        return self.ui.segmentSelectorWidget.currentSegmentID() or ""

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
        """Prepare on the GUI thread, send on a worker thread, apply the answer on the GUI thread."""
        if not self._askUploadConsent():
            return
        try:
            job = prepare()
        except Exception as error:
            self._showError(what, error)
            return
        self._setStatus(describe(StageProgress(Stage.WAITING, detail=detail)).text)

        def onResult(result):
            segmentId = self.logic.apply(job)  # None: a newer click replaced this request
            if segmentId:
                self.ui.segmentSelectorWidget.setCurrentSegmentID(segmentId)
                self._setStatus(_("Segment updated."))
            self._updateInteractiveGui()

        def onError(error):
            self._setStatus("")
            self._updateInteractiveGui()
            self._showError(what, error)

        self._startJob(channel, lambda progress, cancel: job.run(progress, cancel),
                       on_progress=lambda payload: self._setStatus(describe_any(payload, detail=detail).text),
                       on_result=onResult, on_error=onError, on_cancelled=lambda: self._setStatus(_("Cancelled.")))
        self._updateInteractiveGui()

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

    def onDeepgrowPoint(self, clickedNode, event=None) -> None:
        """A click was placed on the inside or outside list: send a request at once."""
        pn = self._parameterNode
        if pn is None or interactive_blocker(self._panelInputs(pn.deepgrowModel)):
            return
        foreground, background = points_world(pn.foregroundPoints), points_world(pn.backgroundPoints)
        if not foreground:
            self._setStatus(_("Click inside the structure first."))
            return
        segmentId, clicked = self._segmentId(), points_world(clickedNode)[-1]
        # A newer click supersedes the request still running for an older one (same channel).
        self._startInteractive("deepgrow", lambda: self.logic.prepareDeepgrow(
            pn.inputVolume, pn.outputSegmentation, segmentId, pn.deepgrowModel, foreground, background, clicked),
            _("Deepgrow failed."), "deepgrow")

    def onUndo(self) -> None:
        try:
            self.logic.undo(self._parameterNode.outputSegmentation)
            self._setStatus(self.logic.lastUndoSummary or _("Last AI edit undone."))
        except Exception as error:
            self._showError(_("Undo failed."), error)
        self._updateInteractiveGui()


class ClaraAWSTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer against the reference server on 127.0.0.1 and a synthetic CT phantom."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    @staticmethod
    def _startServerAndPhantom():
        from ClaraAWSLib.synthetic.phantom import make_phantom
        from ClaraAWSLib.server import ReferenceServer

        phantom = make_phantom(size=(64, 64, 32), spacing=(4.0, 4.0, 8.0))
        volume = slicer.util.addVolumeFromArray(phantom.ct.array, phantom.ct.grid.ijk_to_ras(), "ClaraAWS phantom")
        return phantom, volume, ReferenceServer(host="127.0.0.1", port=0).start()

    @staticmethod
    def _modelOfType(models, types) -> dict:
        return next(model for model in models if model_choices.model_type(model) in types)

    @staticmethod
    def _segmentVoxels(segmentation, segmentId, volume) -> int:
        array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        return 0 if array is None else int(array.sum())

    def test_AutoSegmentAnnotateUndo(self):
        from ClaraAWSLib import ClaraAWSLogic

        phantom, volume, server = self._startServerAndPhantom()
        logic = ClaraAWSLogic(slicer.mrmlScene)
        try:
            models = logic.connect(server.url)
            autoModel = self._modelOfType(models, model_choices.AUTO_SEGMENT_TYPES)
            segmentation = logic.autoSegment(volume, autoModel["name"])
            segments = segmentation.GetSegmentation()
            ids = [segments.GetNthSegmentID(index) for index in range(segments.GetNumberOfSegments())]
            self.assertEqual(sorted(segments.GetSegment(i).GetName() for i in ids), sorted(autoModel["labels"]))
            for segmentId in ids:
                self.assertGreater(self._segmentVoxels(segmentation, segmentId, volume), 0, segmentId)
            self.delayDisplay(f"Auto-segmented with {autoModel['name']}: {len(ids)} non-empty segments")

            # The six extreme voxels of the phantom's spleen along i, j and k.
            k, j, i = (phantom.truth.array == phantom.label_value("spleen")).nonzero()
            ijk = list(zip(i, j, k))
            extremes = [pick(ijk, key=lambda voxel: voxel[axis]) for axis in range(3) for pick in (min, max)]
            ijkToRas = phantom.ct.grid.ijk_to_ras()
            pointsRAS = [list((ijkToRas @ [*voxel, 1.0])[:3]) for voxel in extremes]
            segmentId = segments.AddEmptySegment("", "annotated spleen")
            annotationModel = self._modelOfType(models, model_choices.ANNOTATION_TYPES)["name"]
            logic.annotate(volume, segmentation, segmentId, annotationModel, pointsRAS)
            self.assertGreater(self._segmentVoxels(segmentation, segmentId, volume), 0)
            self.assertTrue(logic.undo(segmentation))
            self.assertEqual(self._segmentVoxels(segmentation, segmentId, volume), 0)
            self.delayDisplay("Annotate and undo passed")
        finally:
            logic.cleanup()
            server.stop()

    def test_WidgetAutoSegment(self):
        """Drive the panel: connect and auto-segment through the background jobs and the poll timer."""
        phantom, volume, server = self._startServerAndPhantom()
        slicer.util.selectModule("ClaraAWS")
        widget = slicer.modules.claraaws.widgetRepresentation().self()
        try:
            widget.ui.serverUrlComboBox.setEditText(server.url)
            widget.onConnectButton()
            self._waitFor(lambda: widget._connectedUrl == server.url, "connect")
            widget._parameterNode.inputVolume = volume
            widget._parameterNode.outputSegmentation = None
            self.assertTrue(widget.ui.applyButton.enabled)
            widget.ui.applyButton.click()
            self._waitFor(lambda: not widget.autoState.busy, "auto-segment")
            self.assertEqual(widget.autoState.state.value, "done")
            segmentation = widget._parameterNode.outputSegmentation
            self.assertGreater(segmentation.GetSegmentation().GetNumberOfSegments(), 0)
        finally:
            server.stop()

    @staticmethod
    def _waitFor(condition, what: str, timeoutSeconds: float = 120.0):
        deadline = time.monotonic() + timeoutSeconds
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not finish within {timeoutSeconds} s")
            slicer.app.processEvents()
            time.sleep(0.02)
