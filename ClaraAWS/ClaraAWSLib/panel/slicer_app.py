"""What the panel asks of the running Slicer application: questions to the user, the Segment Editor's
undo, and telling the settings page about a changed setting. Never used headless.
"""

from __future__ import annotations

import importlib
from typing import Any, Optional, Tuple

import qt
import slicer
from slicer.i18n import tr as _


def ask_ok_cancel(text: str, title: str, check_box_text: Optional[str] = None,
                  check_box_enabled: bool = True) -> Tuple[bool, bool]:
    """Ask OK/Cancel; returns (OK pressed, check box ticked).

    Not ``slicer.util.confirmOkCancelDisplay``: under ``--testing`` that returns False (it compares the
    testing answer True with ``qt.QMessageBox.Ok``, Base/Python/slicer/util.py), so every question would
    be refused in a scripted test. Here testing mode answers OK, as Slicer's docstring promises.
    """
    if slicer.app.testingEnabled():
        return True, False
    box = qt.QMessageBox(qt.QMessageBox.Question, title, text, qt.QMessageBox.Ok | qt.QMessageBox.Cancel,
                         slicer.util.mainWindow())
    check = None
    if check_box_text:
        check = qt.QCheckBox(check_box_text)
        check.enabled = check_box_enabled
        box.setCheckBox(check)
    answer = box.exec_()
    return answer == qt.QMessageBox.Ok, bool(check is not None and check.checked)


def confirm_source_conversion(segmentation_node) -> bool:
    """Ask, as the Segment Editor does, before a closed-surface segmentation becomes a binary labelmap."""
    return ask_ok_cancel(
        _("The segmentation '{name}' is stored as closed surfaces. AI edits, like the Segment Editor, need a "
          "binary labelmap: convert it? (Undo AI edit brings the surfaces back.)").format(name=segmentation_node.GetName()),
        _("Convert to binary labelmap"))[0]


def save_segment_editor_undo_state(segmentation_node) -> None:
    """Make the coming AI edit a step of the Segment Editor module's undo when its editor has this segmentation."""
    try:
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
    except AttributeError:  # the Segment Editor module is not loaded or has no widget yet
        return
    if editor.segmentationNode() is segmentation_node:
        editor.saveStateForUndo()


def announce_setting_changed(key: str, value: Any) -> None:
    """Emit the settings dialog's settingChanged(QString,QVariant), which the settings page and the panel follow."""
    slicer.app.settingsDialog().settingChanged.emit(key, value)


def packaging_module():
    """``slicer.packaging`` (Slicer 5.12 and newer) or None. Imported by name: a function that says
    ``import slicer.packaging`` makes ``slicer`` a local name of the whole function."""
    try:
        return importlib.import_module("slicer.packaging")
    except ImportError:
        return None
