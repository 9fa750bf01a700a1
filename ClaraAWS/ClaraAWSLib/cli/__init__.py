"""Beside the scene ring: the ``clara-aws`` command line (``commands`` and its command groups) and its demo; never imports ``scene``."""

from .commands import main

__all__ = ["main"]
