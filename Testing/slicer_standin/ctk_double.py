"""The ``ctk`` module for the parts ClaraAWS uses, modelled on commontk/CTK's source.

Citations are to commontk/CTK at HEAD (868d56c7) as fetched; the files cited are unchanged in substance
since the CTK commits Slicer 5.8.1 and main pin (see SOURCES.md).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from . import qt_double as qt


class ctkCollapsibleButton(qt.QAbstractButton):  # noqa: N801 - CTK's name
    SIGNALS = ("contentsCollapsed",)
    PROPERTIES = {"collapsed": (False, "contentsCollapsed"), "collapsedHeight": (14, None)}


class ctkCollapsibleGroupBox(qt.QGroupBox):  # noqa: N801
    PROPERTIES = {"collapsed": (False, None)}


class ctkPathLineEdit(qt.QWidget):  # noqa: N801
    """Libs/Widgets/ctkPathLineEdit.h: property currentPath, notify currentPathChanged(QString)."""

    SIGNALS = ("currentPathChanged", "validInputChanged")
    PROPERTIES = {"currentPath": ("", "currentPathChanged"), "filters": (0, None), "label": ("", None),
                  "showHistoryButton": (True, None), "nameFilters": ([], None)}
    Files, Dirs, Drives, NoDot, NoDotDot, Readable, Writable, Executable = 2, 1, 4, 0x2000, 0x4000, 0x10, 0x20, 0x40


class ctkMessageBox(qt.QMessageBox):  # noqa: N801
    PROPERTIES = {"dontShowAgainVisible": (False, None), "dontShowAgainSettingsKey": ("", None)}


class ctkSettingsPanel(qt.QWidget):  # noqa: N801
    """Libs/Widgets/ctkSettingsPanel.cpp, the parts a Python panel meets.

    - registerProperty (295-342): remembers the widget's current value as its default; when the panel
      already has settings holding the key, pushes the stored value into the widget (316-322); connects
      the widget's signal so that every change is written at once (326-336, updateSetting); and, with
      SaveToSettingsWhenRegister (true, 173), writes the widget's value (338-341), which does nothing while
      the panel has no settings yet (updateSetting 258-266 returns when d->settings(key) is null).
    - setSettings (219-228) -> reloadSettings (231-255): for every registered key, a stored value is pushed
      into the widget; a key NOT yet stored gets the widget's CURRENT value written (252, updateSetting).
    - setSetting (269-292) writes QSettings, sets the widget, emits settingChanged(key, value) when the
      stored value changed (288-291).
    """

    SIGNALS = ("settingChanged",)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        object.__setattr__(self, "_settings", None)
        object.__setattr__(self, "_properties", {})  # key -> (object, property name, default)

    def settings(self) -> Optional[qt.QSettings]:
        return self._settings

    def setSettings(self, settings: qt.QSettings) -> None:  # noqa: N802
        if self._settings is settings:
            return
        object.__setattr__(self, "_settings", settings)
        self.reloadSettings()

    def reloadSettings(self) -> None:  # noqa: N802
        for key, (obj, prop, _default) in self._properties.items():
            if self._settings is None:
                continue
            if self._settings.contains(key):
                self._set_widget(obj, prop, self._settings.value(key))
            else:
                self.updateSetting(key)

    def updateSetting(self, key: str) -> None:  # noqa: N802
        if self._settings is None or key not in self._properties:
            return
        obj, prop, _default = self._properties[key]
        self.setSetting(key, getattr(obj, prop))

    def setSetting(self, key: str, value: Any) -> None:  # noqa: N802
        if self._settings is None or key not in self._properties:
            return
        old = self._settings.value(key)
        self._settings.setValue(key, value)
        obj, prop, _default = self._properties[key]
        self._set_widget(obj, prop, value)
        if old != value:
            self.emit("settingChanged", key, value)

    @staticmethod
    def _set_widget(obj: qt.QObject, prop: str, value: Any) -> None:
        """PropertyType::setValue (83-100): QObject::setProperty converts a stored string to the property's type."""
        current = getattr(obj, prop)
        if isinstance(current, bool) and isinstance(value, str):
            value = value.strip().lower() in ("true", "1")
        if current != value:
            setattr(obj, prop, value)

    def registerProperty(self, key: str, obj: qt.QObject, prop: str, signal: str, label: str = "",  # noqa: N802
                         options: int = 0, settings: Optional[qt.QSettings] = None) -> None:
        default = getattr(obj, prop)
        stored_in = settings or self._settings
        if stored_in is not None and stored_in.contains(key):
            self._set_widget(obj, prop, stored_in.value(key))
        self._properties[key] = (obj, prop, default)
        obj.connect(signal, lambda *args, key=key: self.updateSetting(key))
        self.updateSetting(key)

    def defaultPropertyValue(self, key: str) -> Any:  # noqa: N802
        return self._properties[key][2] if key in self._properties else None


class ctkSettingsDialog(qt.QDialog):  # noqa: N801
    """Libs/Widgets/ctkSettingsDialog.cpp: addPanel (220-256) connects the panel's settingChanged to the
    dialog's own (onSettingChanged 382-390 re-emits it) and calls panel->setSettings(dialog settings)."""

    SIGNALS = ("settingChanged", "restartRequested")

    def __init__(self, settings: qt.QSettings) -> None:
        super().__init__(None)
        object.__setattr__(self, "_dialog_settings", settings)
        object.__setattr__(self, "_panels", {})

    def settings(self) -> qt.QSettings:
        return self._dialog_settings

    def addPanel(self, *args) -> None:  # noqa: N802
        label, panel = (args[0], args[1]) if isinstance(args[0], str) else (args[0].windowTitle, args[0])
        panel.windowTitle = label
        self._panels[label] = panel
        panel.connect("settingChanged(QString,QVariant)",
                      lambda key, value: self.emit("settingChanged", key, value))
        panel.setSettings(self.settings())

    def panel(self, label: str) -> Optional[ctkSettingsPanel]:
        return self._panels.get(label)

    def reloadSettings(self) -> None:  # noqa: N802 - 342-350
        for panel in self._panels.values():
            panel.reloadSettings()


WIDGET_CLASSES: Dict[str, type] = {
    "ctkCollapsibleButton": ctkCollapsibleButton,
    "ctkCollapsibleGroupBox": ctkCollapsibleGroupBox,
    "ctkPathLineEdit": ctkPathLineEdit,
}
