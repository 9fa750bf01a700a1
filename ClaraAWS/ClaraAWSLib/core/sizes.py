"""Byte counts as people read them in a sentence, whatever a hostile header claims (``1e30`` bytes included)."""

from __future__ import annotations

_UNITS = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6))


def size_text(count: float) -> str:
    """E.g. ``0.4 MB``, ``12.5 MB``, ``3.2 GB``; beyond a petabyte, ``more than 1000 TB``."""
    if count >= 1e15:
        return "more than 1000 TB"
    for unit, scale in _UNITS:
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count / 1e6:.1f} MB"
