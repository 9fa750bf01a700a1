"""The panel's server section: address history, TLS options, connect, the models table, AWS discovery."""

from typing import List

import qt
import slicer
from slicer.i18n import tr as _

from ..backends import ANNOTATE, AUTO_SEGMENT, DEEPGROW
from ..core.errors import ClaraError
from . import model_choices, settings_store, slicer_app

BOTO3_REQUIREMENT = "boto3>=1.26"


class ServerSection:
    """Mixin of ClaraAWSPanel: everything about which server the panel talks to."""

    def _loadSettingsIntoGui(self) -> None:
        self._showTlsOptions()
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

    def _showTlsOptions(self) -> None:
        """Show the stored TLS options (the settings page edits them too); writes nothing."""
        tls = settings_store.load_tls_options(self.settings)
        for widget, prop, value in ((self.ui.verifyTlsCheckBox, "checked", tls.verify),
                                    (self.ui.caBundlePathLineEdit, "currentPath", tls.ca_bundle)):
            wasBlocked = widget.blockSignals(True)
            setattr(widget, prop, value)
            widget.blockSignals(wasBlocked)
        self.ui.tlsWarningLabel.visible = not tls.verify
        self.ui.caBundlePathLineEdit.enabled = tls.verify

    def onVerifyTlsToggled(self, checked: bool) -> None:
        self._saveSetting(settings_store.KEY_TLS_VERIFY, bool(checked))
        self._showTlsOptions()

    def onCaBundleChanged(self, path: str) -> None:
        self._saveSetting(settings_store.KEY_CA_BUNDLE, path.strip())

    def _saveSetting(self, key: str, value) -> None:
        """Write one key (never another key from a widget that may be stale) and tell the settings page."""
        self.settings.setValue(key, value)
        slicer_app.announce_setting_changed(key, value)

    def onApplicationSettingChanged(self, key: str, value) -> None:
        if key in (settings_store.KEY_TLS_VERIFY, settings_store.KEY_CA_BUNDLE):
            self._showTlsOptions()

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
        ticket = self.connectTickets.begin()  # Enter and Connect: only the newest attempt counts
        self._startJob("connect", lambda progress, cancel: self.logic.openServer(url, verify=verify),
                       on_result=lambda opened: self._onConnected(ticket, url, *opened),
                       on_error=lambda error: self._onConnectFailed(ticket, error))

    def _onConnected(self, ticket: int, url: str, client, models: List[dict]) -> None:
        if not self.connectTickets.is_current(ticket):
            client.close()  # a newer connect started since: this server is not the one the panel shows
            return
        self.logic.useServer(client, models)
        self._preEncodedVolumeId = None  # a new server: encode for it (its measured link may choose a level)
        self.ui.connectButton.enabled = True
        self._connectedUrl = url
        history = settings_store.remember_url(self.settings, url)
        slicer_app.announce_setting_changed(settings_store.KEY_URL_HISTORY, history)
        self._fillServerCombo(url)
        self._models = list(models)
        self.ui.connectionStatusLabel.text = _("Connected: {count} models.").format(count=len(self._models))
        self._fillModels()
        self._updateLearningGui()

    def _onConnectFailed(self, ticket: int, error: BaseException) -> None:
        if not self.connectTickets.is_current(ticket):
            return
        self.logic.disconnect()  # the previous server is no longer the one shown: nothing may still use it
        self.ui.connectButton.enabled = True
        self._models = []
        self._fillModels()
        self._updateLearningGui()
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
        for combo, task, field in ((self.ui.autoModelComboBox, AUTO_SEGMENT, "modelName"),
                                   (self.ui.annotationModelComboBox, ANNOTATE, "annotationModel"),
                                   (self.ui.deepgrowModelComboBox, DEEPGROW, "deepgrowModel")):
            names = self.modelNamesFor(task)  # the backend says which model types serve each tool
            chosen = model_choices.choose(names, getattr(pn, field) if pn else "",
                                          settings_store.default_model(self.settings, task), combo.currentText)
            wasBlocked = combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            combo.setCurrentIndex(names.index(chosen) if chosen else -1)
            combo.blockSignals(wasBlocked)
        self.onModelSelectionChanged()

    def connectedUrl(self) -> str:
        return self._connectedUrl

    def modelNamesFor(self, task: str) -> List[str]:
        """The connected server's models for a task (the Segment Editor effect offers the same ones)."""
        client = self.logic.client
        return model_choices.models_of_types(self._models, client.model_types_for(task)) if client else []

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
        """boto3 is not bundled with Slicer: install it on first use, after asking (each Slicer's own way)."""
        from .. import aws
        from .package_install import install_after_asking

        if aws.boto3_available():
            return True
        question = _("Finding Clara servers on AWS needs the boto3 package, which Slicer does not include. "
                     "Install it now from the Python Package Index?")

        def show_status(text: str) -> None:
            self.ui.connectionStatusLabel.text = text

        if not install_after_asking(BOTO3_REQUIREMENT, question, _("Install boto3"), show_status=show_status):
            return False
        if not aws.boto3_available():
            slicer.util.errorDisplay(_("boto3 is not installed, so AWS discovery cannot run; install boto3 and try again."))
            return False
        return True

    def onFindDeployments(self) -> None:
        from .. import aws

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

