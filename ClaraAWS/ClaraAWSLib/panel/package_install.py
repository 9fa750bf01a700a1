"""Installing a package Slicer does not bundle, only after the user agrees, each Slicer's own way.

Slicer 5.12 and newer: ``slicer.packaging.pip_ensure`` asks, installs, raises RuntimeError when the user
declines and skips under ``--testing`` (Base/Python/slicer/packaging.py). Slicer 5.8 and 5.10 have only
``slicer.util.pip_install``, which blocks the GUI: the question comes first, then a status line and a
busy cursor. A failure of pip is one error box with pip's own words as details.
"""

from __future__ import annotations

import importlib
import logging
from typing import Callable

import qt
import slicer
from slicer.i18n import tr as _

from ..core.progress import error_text
from . import slicer_app


def install_after_asking(requirement: str, question: str, title: str, *,
                         show_status: Callable[[str], None] = lambda text: None) -> bool:
    """True when pip installed ``requirement`` (or had nothing to do); False when the user declined or pip failed."""
    failed = _("{package} could not be installed.").format(package=requirement.split(">")[0].split("=")[0])
    packaging = slicer_app.packaging_module()
    try:
        if packaging is not None:
            try:
                packaging.pip_ensure(requirement, requester="ClaraAWS")
            except RuntimeError:  # the user declined
                return False
        else:
            agreed, _unused = slicer_app.ask_ok_cancel(question, title)
            if not agreed:
                return False
            _pip_install_with_status(requirement, show_status)
    except Exception as error:  # noqa: BLE001 - pip's own failure, shown with its details
        message, details = error_text(failed, error)
        logging.error(f"ClaraAWS: {message}\n{details}")
        slicer.util.errorDisplay(message, detailedText=details)
        return False
    importlib.invalidate_caches()
    return True


def _pip_install_with_status(requirement: str, show_status: Callable[[str], None]) -> None:
    show_status(_("Installing {requirement}… (Slicer waits until pip is done)").format(requirement=requirement))
    slicer.app.processEvents()
    qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        slicer.util.pip_install(requirement)
    finally:
        qt.QApplication.restoreOverrideCursor()
        show_status("")
