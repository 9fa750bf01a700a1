"""ClaraAWS's page of Application Settings (Edit → Application Settings → ClaraAWS), as Slicer's own pages.

Simple values are ``registerProperty`` bindings to the same QSettings keys the panel reads
(``settings_store``); the server history and the per-server upload consent are lists with a Forget
button. Credentials are never stored here.
"""

import ctk
import qt
from slicer.i18n import tr as _

from . import settings_store
from .consent import ConsentBook

TASKS = (("autoSegment", "Auto-segmentation"), ("annotate", "Extreme points"), ("deepgrow", "Deepgrow"))


class ClaraAWSSettingsPanel(ctk.ctkSettingsPanel):
    def __init__(self, *args, **kwargs):
        ctk.ctkSettingsPanel.__init__(self, *args, **kwargs)
        self.settings = qt.QSettings()
        layout = qt.QVBoxLayout(self)

        servers = ctk.ctkCollapsibleGroupBox()
        servers.title = _("Servers")
        form = qt.QFormLayout(servers)
        self.historyList = qt.QListWidget()
        form.addRow(_("Recent servers:"), self.historyList)
        self.forgetServerButton = qt.QPushButton(_("Forget the selected server"))
        self.forgetServerButton.connect("clicked()", self.onForgetServer)
        form.addRow("", self.forgetServerButton)
        self.consentList = qt.QListWidget()
        form.addRow(_("Uploads allowed without asking:"), self.consentList)
        self.forgetConsentButton = qt.QPushButton(_("Ask again before uploading to the selected server"))
        self.forgetConsentButton.connect("clicked()", self.onForgetConsent)
        form.addRow("", self.forgetConsentButton)
        layout.addWidget(servers)

        tls = ctk.ctkCollapsibleGroupBox()
        tls.title = _("TLS")
        form = qt.QFormLayout(tls)
        self.verifyCheckBox = qt.QCheckBox(_("Verify server certificates (turn off only for servers you trust)"))
        form.addRow(self.verifyCheckBox)
        self.registerProperty(settings_store.KEY_TLS_VERIFY, self.verifyCheckBox, "checked",
                              str(qt.SIGNAL("toggled(bool)")))
        self.caBundleEdit = ctk.ctkPathLineEdit()
        self.caBundleEdit.filters = ctk.ctkPathLineEdit.Files
        form.addRow(_("CA bundle (PEM):"), self.caBundleEdit)
        self.registerProperty(settings_store.KEY_CA_BUNDLE, self.caBundleEdit, "currentPath",
                              str(qt.SIGNAL("currentPathChanged(QString)")))
        layout.addWidget(tls)

        results = ctk.ctkCollapsibleGroupBox()
        results.title = _("Models and results")
        form = qt.QFormLayout(results)
        self.defaultModelEdits = {}
        for task, label in TASKS:
            edit = qt.QLineEdit()
            edit.placeholderText = _("first model of the server")
            form.addRow(_("Default model, {tool}:").format(tool=label), edit)
            self.registerProperty(settings_store.KEY_DEFAULT_MODEL + task, edit, "text",
                                  str(qt.SIGNAL("textChanged(QString)")))
            self.defaultModelEdits[task] = edit
        self.surfaceCheckBox = qt.QCheckBox(_("Show results in 3D (build the surface after import)"))
        form.addRow(self.surfaceCheckBox)
        self.registerProperty(settings_store.KEY_SURFACE_AFTER_IMPORT, self.surfaceCheckBox, "checked",
                              str(qt.SIGNAL("toggled(bool)")))
        self.everyClickCheckBox = qt.QCheckBox(_("Deepgrow: update the segment on every click"))
        form.addRow(self.everyClickCheckBox)
        self.registerProperty(settings_store.KEY_UPDATE_ON_EVERY_CLICK, self.everyClickCheckBox, "checked",
                              str(qt.SIGNAL("toggled(bool)")))
        layout.addWidget(results)
        layout.addStretch(1)
        self.refreshLists()

    def refreshLists(self):
        self.historyList.clear()
        self.historyList.addItems(settings_store.url_history(self.settings))
        self.consentList.clear()
        self.consentList.addItems(ConsentBook(self.settings).remembered())

    def onForgetServer(self):
        item = self.historyList.currentItem()
        if item is not None:
            settings_store.forget_url(self.settings, item.text())
            self.refreshLists()

    def onForgetConsent(self):
        item = self.consentList.currentItem()
        if item is not None:
            ConsentBook(self.settings).forget(item.text())
            self.refreshLists()
