"""Differences between the Slicer versions ClaraAWS supports (5.8 and newer), in one place, without Qt."""

from __future__ import annotations

from typing import Any, Optional


def connect_gui(parameter_node: Any, gui: Any) -> Optional[Any]:
    """``parameter_node.connectGui(gui)`` and its tag, also on Slicer 5.8, whose ``connectGui`` returns None.

    Without the tag ``disconnectGui`` does nothing, and every module enter would add one more binding.
    """
    before = set(getattr(parameter_node, "_parameterGUIs", {}) or {})
    tag = parameter_node.connectGui(gui)
    if tag is None:
        added = set(getattr(parameter_node, "_parameterGUIs", {}) or {}) - before
        tag = next(iter(added), None)
    return tag
