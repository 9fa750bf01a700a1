"""The panel's active-learning section (MONAI Label servers): next sample, submit the label, train.

Shown only when the connected server has a datastore and trainers. Every network step runs on a worker
thread; the scene changes on the GUI thread (``prepare…``/``apply…`` of the logic, as for segmentation).
Training status is polled every few seconds while a run is going.
"""

from typing import Callable

import qt
import slicer
from slicer.i18n import tr as _

from ..core.progress import error_text
from . import slicer_app

TRAINING_POLL_MS = 3000
#: Consecutive failed status polls after which polling stops (one modal error would be shown per poll).
TRAINING_POLL_FAILURES_TO_STOP = 3


class LearningSection:
    """Mixin of ClaraAWSPanel."""

    def _setupLearning(self) -> None:
        self._trainingTimer = qt.QTimer()
        self._trainingTimer.setInterval(TRAINING_POLL_MS)
        self._trainingPollFailures = 0
        self._trainingTimer.connect("timeout()", self._pollTraining)
        self.ui.nextSampleButton.connect("clicked(bool)", self.onNextSample)
        self.ui.submitLabelButton.connect("clicked(bool)", self.onSubmitLabel)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.stopTrainingButton.connect("clicked(bool)", self.onStopTraining)

    def _cleanupLearning(self) -> None:
        self._trainingTimer.stop()

    def _updateLearningGui(self) -> None:
        """After a connect: show the section for a MONAI Label server and fill its lists (off the GUI thread)."""
        supported = self.logic.client is not None and self.logic.supportsActiveLearning
        self.ui.activeLearningCollapsibleButton.visible = supported
        if not supported:
            self._trainingTimer.stop()
            return
        logic = self.logic
        self._startJob("learning", lambda progress, cancel: (logic.strategies(), sorted(logic.trainers()),
                                                             logic.datastoreCounts()),
                       on_result=self._fillLearning, on_error=lambda error: self._showError(
                           _("The server's datastore could not be read."), error))

    def _fillLearning(self, found) -> None:
        strategies, trainers, counts = found
        for combo, names in ((self.ui.strategyComboBox, strategies), (self.ui.trainerComboBox, trainers)):
            combo.clear()
            combo.addItems(list(names))
        self._showCounts(counts)

    def _showCounts(self, counts) -> None:
        self.ui.datastoreCountsLabel.text = _("Datastore: {done} of {total} images labeled.").format(
            done=counts.get("completed", 0), total=counts.get("total", 0))

    def _learningJob(self, channel: str, work: Callable, onResult: Callable, what: str) -> None:
        self._startJob(channel, lambda progress, cancel: work(), on_result=onResult,
                       on_error=lambda error: self._showError(what, error))

    def onNextSample(self) -> None:
        try:
            request = self.logic.prepareNextSample(self.ui.strategyComboBox.currentText or None)
        except Exception as error:
            self._showError(_("No next sample."), error)
            return
        self.ui.trainingStatusLabel.text = _("Downloading the next sample…")

        def loaded(_request):
            node = self.logic.applyNextSample(request)
            if node is None:
                self.ui.trainingStatusLabel.text = _("Every image in the datastore is labeled.")
                return
            self._parameterNode.inputVolume = node
            # The segmentation chosen before belongs to the previous volume: left as the output, Auto-segment
            # would overwrite its segments and Submit label would store them as this sample's label.
            self._parameterNode.outputSegmentation = None
            slicer.util.setSliceViewerLayers(background=node, fit=True)
            self.ui.trainingStatusLabel.text = _("Loaded sample {id}.").format(id=self.logic.datastoreId(node))

        self._startJob("next", lambda progress, cancel: request.run(progress, cancel), on_result=loaded,
                       on_error=lambda error: self._showError(_("The next sample could not be loaded."), error))

    def onSubmitLabel(self) -> None:
        pn = self._parameterNode
        consent = False
        if pn.inputVolume is not None and self.logic.datastoreId(pn.inputVolume) is None:
            # A local volume goes into the server's datastore for good: only after the user says so.
            consent, _unused = slicer_app.ask_ok_cancel(
                _("This volume did not come from the server's datastore. Store it there (under a generated id, "
                  "with no name or patient information) together with its label?"), _("Submit label"))
            if not consent:
                return
        try:
            request = self.logic.prepareSubmitLabel(pn.inputVolume, pn.outputSegmentation, uploadConsent=consent)
        except Exception as error:
            self._showError(_("The label could not be submitted."), error)
            return
        skipped = ", ".join(request.skipped)

        def submitted(_request):
            image_id = self.logic.applySubmitLabel(request)
            text = _("Label of {id} submitted.").format(id=image_id)
            if skipped:
                text += " " + _("Not sent (no server label of that name): {names}.").format(names=skipped)
            self.ui.trainingStatusLabel.text = text
            if request.counts:
                self._showCounts(request.counts)

        self._startJob("submit", lambda progress, cancel: request.run(progress, cancel), on_result=submitted,
                       on_error=lambda error: self._showError(_("The label could not be submitted."), error))

    def onTrain(self) -> None:
        name, epochs = self.ui.trainerComboBox.currentText, int(self.ui.maxEpochsSpinBox.value)
        logic = self.logic
        self._trainingPollFailures = 0
        self._learningJob("train", lambda: logic.startTraining(name, epochs), lambda _result: self._trainingTimer.start(),
                          _("Training did not start."))
        self.ui.trainingStatusLabel.text = _("Starting training of {name}…").format(name=name)

    def onStopTraining(self) -> None:
        self._trainingPollFailures = 0
        logic = self.logic
        self._learningJob("train", logic.stopTraining, lambda _result: self._pollTraining(), _("Training did not stop."))

    def _pollTraining(self) -> None:
        if self.runner.is_running("training-status") or self.logic.client is None:
            return
        logic = self.logic

        def show(status):
            self._trainingPollFailures = 0
            text = status.summary()
            if status.details:
                text += "\n" + "\n".join(list(status.details)[-3:])
            self.ui.trainingStatusLabel.text = text
            if status.finished:
                self._trainingTimer.stop()

        def failed(error):
            # A server that went away would otherwise raise a modal error every few seconds: report in the
            # section, and stop polling after a few failures in a row.
            self._trainingPollFailures += 1
            message, _details = error_text(_("Training status could not be read."), error)
            if self._trainingPollFailures >= TRAINING_POLL_FAILURES_TO_STOP:
                self._trainingTimer.stop()
                message += " " + _("Status updates stopped; click Train or Stop to try again.")
            self.ui.trainingStatusLabel.text = message

        self._startJob("training-status", lambda progress, cancel: logic.trainingStatus(), on_result=show,
                       on_error=failed)
