"""What ClaraAWS adds to Slicer besides its module: the Segment Editor effect and the settings page.

Both run at ``startupCompleted()``, which Slicer emits once per run (Base/QTApp/qSlicerApplicationHelper.txx
v5.8.1:312-319); a module loaded later (Extension Wizard, drag and drop) never sees it, so the module
widget's setup calls them again. Each is idempotent.
"""

from __future__ import annotations

import logging
import os

import slicer

EFFECT_NAME = "ClaraAWS"
SETTINGS_PAGE = "ClaraAWS"
#: Slicer takes the effect's Python module name from this folder and its class name from the file name
#: (qSlicerSegmentEditorScriptedEffect::setPythonSource): folder and file must keep these names.
EFFECT_FILE = os.path.join("SegmentEditorClaraAWSLib", "SegmentEditorEffect.py")


def module_folder() -> str:
    """The folder of ClaraAWS.py (the parent of ClaraAWSLib)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def register_segment_editor_effect() -> bool:
    """Effects → ClaraAWS in every Segment Editor; True when it is registered (now or before)."""
    import qSlicerSegmentationsEditorEffectsPythonQt as effects

    factory = slicer.qSlicerSegmentEditorEffectFactory.instance()
    if any(effect.name == EFFECT_NAME for effect in factory.registeredEffects()):
        return True
    effect = effects.qSlicerSegmentEditorScriptedEffect(None)
    path = os.path.join(module_folder(), EFFECT_FILE).replace("\\", "/")
    if not effect.setPythonSource(path):
        logging.error("ClaraAWS: the Segment Editor effect could not be loaded from %s", path)
        return False
    effect.self().register()
    return True


def register_settings_page() -> bool:
    """Edit → Application Settings → ClaraAWS (not with --no-main-window); True when the page is there."""
    if slicer.app.commandOptions().noMainWindow:
        return False
    dialog = slicer.app.settingsDialog()
    if dialog.panel(SETTINGS_PAGE) is None:
        from .settings_page import ClaraAWSSettingsPanel

        dialog.addPanel(SETTINGS_PAGE, ClaraAWSSettingsPanel())
    return True
