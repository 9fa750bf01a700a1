"""What the panel asks of the running Slicer application on the logic's behalf (never used headless)."""

from __future__ import annotations

import slicer
from slicer.i18n import tr as _


def confirm_source_conversion(segmentation_node) -> bool:
    """Ask, as the Segment Editor does, before a closed-surface segmentation becomes a binary labelmap."""
    return bool(slicer.util.confirmOkCancelDisplay(
        _("The segmentation '{name}' is stored as closed surfaces. AI edits, like the Segment Editor, need a "
          "binary labelmap: convert it? (Undo AI edit brings the surfaces back.)").format(name=segmentation_node.GetName()),
        windowTitle=_("Convert to binary labelmap")))


def save_segment_editor_undo_state(segmentation_node) -> None:
    """Make the coming AI edit a step of the Segment Editor's own undo when it has this segmentation open."""
    try:
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
    except AttributeError:  # the Segment Editor module is not loaded or has no widget yet
        return
    if editor.segmentationNode() is segmentation_node:
        editor.saveStateForUndo()
