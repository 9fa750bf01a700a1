"""ClaraAWS's page of Application Settings (Edit → Application Settings → ClaraAWS), as Slicer's own pages.

Simple values are ``registerProperty`` bindings to the same QSettings keys the panel reads
(``settings_store``); the server history and the per-server upload consent are lists with a Forget
button. Credentials are never stored here.

A ctkSettingsPanel stores each registered widget's *current* value for a key not stored yet, when the
settings dialog adds the page (CTK Libs/Widgets/ctkSettingsPanel.cpp reloadSettings): so every widget
shows the code's default before it is registered. Changes travel through the settings dialog's
``settingChanged(QString,QVariant)``: CTK emits it for the registered widgets, this page and the module
panel emit it for the lists, and both listen to it.
"""

import ctk
import qt
import slicer
from slicer.i18n import tr as _

from . import settings_store
from .consent import KEY_CONSENTED_SERVERS, ConsentBook

#: Settings shown as lists here and written by the module panel too.
LIST_KEYS = (settings_store.KEY_URL_HISTORY, KEY_CONSENTED_SERVERS)

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
        self.verifyCheckBox.checked = settings_store.DEFAULT_TLS_VERIFY
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
        self.surfaceCheckBox.checked = settings_store.DEFAULT_SURFACE_AFTER_IMPORT
        form.addRow(self.surfaceCheckBox)
        self.registerProperty(settings_store.KEY_SURFACE_AFTER_IMPORT, self.surfaceCheckBox, "checked",
                              str(qt.SIGNAL("toggled(bool)")))
        self.everyClickCheckBox = qt.QCheckBox(_("Deepgrow: update the segment on every click"))
        self.everyClickCheckBox.checked = settings_store.DEFAULT_UPDATE_ON_EVERY_CLICK
        form.addRow(self.everyClickCheckBox)
        self.registerProperty(settings_store.KEY_UPDATE_ON_EVERY_CLICK, self.everyClickCheckBox, "checked",
                              str(qt.SIGNAL("toggled(bool)")))
        self.decodingLabel = qt.QLabel()
        form.addRow(_("Decoding answers:"), self.decodingLabel)
        self.installZlibNgButton = qt.QPushButton(_("Install zlib-ng for faster deepgrow clicks"))
        self.installZlibNgButton.toolTip = _("A click's answer that covers the whole volume (as MONAI Label sends "
                                             "it) decodes several times faster with zlib-ng, which Slicer 5.8 does "
                                             "not include.")
        self.installZlibNgButton.connect("clicked()", self.onInstallZlibNg)
        form.addRow("", self.installZlibNgButton)
        layout.addWidget(results)
        layout.addStretch(1)
        self.refreshLists()
        self.refreshDecoding()
        slicer.app.settingsDialog().connect("settingChanged(QString,QVariant)", self.onSettingChanged)

    def onSettingChanged(self, key, value):
        if key in LIST_KEYS:
            self.refreshLists()

    def refreshLists(self):
        self.historyList.clear()
        self.historyList.addItems(settings_store.url_history(self.settings))
        self.consentList.clear()
        self.consentList.addItems(ConsentBook(self.settings).remembered())

    def refreshDecoding(self):
        from ..core import inflate

        if inflate.engine() == "zlib-ng":
            self.decodingLabel.text = _("zlib-ng")
        elif inflate.python_zlib_is_zlib_ng():
            self.decodingLabel.text = _("zlib-ng, Slicer's own")
        else:
            self.decodingLabel.text = _("zlib, Slicer's own (slower on whole-volume answers)")
        self.installZlibNgButton.visible = not inflate.is_fast()

    def onInstallZlibNg(self):
        from ..core import inflate
        from .package_install import install_after_asking

        question = _("Deepgrow answers that cover the whole volume decode several times faster with the zlib-ng "
                     "package, which Slicer 5.8 does not include. Install it now from the Python Package Index?")
        if install_after_asking(inflate.ZLIB_NG_REQUIREMENT, question, _("Install zlib-ng")):
            inflate.use_zlib_ng_if_installed()
        self.refreshDecoding()

    def onForgetServer(self):
        item = self.historyList.currentItem()
        if item is not None:
            settings_store.forget_url(self.settings, item.text())
            self.settingChanged.emit(settings_store.KEY_URL_HISTORY, self.settings.value(settings_store.KEY_URL_HISTORY))

    def onForgetConsent(self):
        item = self.consentList.currentItem()
        if item is not None:
            ConsentBook(self.settings).forget(item.text())
            self.settingChanged.emit(KEY_CONSENTED_SERVERS, self.settings.value(KEY_CONSENTED_SERVERS))
