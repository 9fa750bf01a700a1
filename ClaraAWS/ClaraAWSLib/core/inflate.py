"""Inflating gzip streams: with zlib-ng when it is installed, else with Python's own zlib.

A deepgrow click's answer from MONAI Label is the whole grid, tens of MB of zeros in a few KB of gzip.
Classic zlib inflates those runs a byte at a time; zlib-ng copies them in wide blocks, several times
faster (``Testing/benchmarks/bench_inflate.py``). Both read the same streams into the same bytes, and
damage raises ``zlib.error`` from either, so callers only choose speed. zlib-ng comes with the pip
package. Slicer 5.10 and newer build Python's own zlib on zlib-ng (in its zlib-compatible mode, which
names itself "1.3.1.zlib-ng"), so nothing is needed there; Slicer 5.8 builds it on zlib 1.2.3, and its
settings page offers to install the package.
"""

from __future__ import annotations

import importlib
import zlib

GZIP_WBITS = 16 + zlib.MAX_WBITS
#: What the settings page installs inside Slicer; the pip package depends on the same (pyproject.toml).
ZLIB_NG_REQUIREMENT = "zlib-ng>=0.5"
#: What a damaged stream raises, whichever inflater read it.
InflateError = zlib.error
_zlib_ng = None


def use_zlib_ng_if_installed() -> str:
    """Look for zlib-ng again (after an install, say); returns the engine now in use."""
    global _zlib_ng
    importlib.invalidate_caches()
    try:
        _zlib_ng = importlib.import_module("zlib_ng.zlib_ng")
    except ImportError:  # not installed (Slicer's own Python): zlib it is
        _zlib_ng = None
    return engine()


def engine() -> str:
    """The module that inflates: "zlib-ng" (the package) or "zlib" (Python's own)."""
    return "zlib-ng" if _zlib_ng is not None else "zlib"


def python_zlib_is_zlib_ng() -> bool:
    """Python's own zlib runs on zlib-ng, as in Slicer 5.10 and newer and on some Linux distributions."""
    return "zlib-ng" in zlib.ZLIB_RUNTIME_VERSION


def is_fast() -> bool:
    """Whole-grid answers inflate at zlib-ng's speed, whichever module does it."""
    return _zlib_ng is not None or python_zlib_is_zlib_ng()


class _ZlibNgInflater:
    """zlib-ng's decompressobj with zlib's errors."""

    __slots__ = ("_inner", "_error")

    def __init__(self, module) -> None:
        self._inner, self._error = module.decompressobj(GZIP_WBITS), module.error

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        try:
            return self._inner.decompress(data, max_length)
        except self._error as error:
            raise zlib.error(str(error)) from None

    @property
    def unconsumed_tail(self) -> bytes:
        return self._inner.unconsumed_tail

    @property
    def unused_data(self) -> bytes:
        return self._inner.unused_data

    @property
    def eof(self) -> bool:
        return self._inner.eof


def gzip_inflater():
    """A ``decompressobj`` for a gzip member (``decompress(data, max_length)``, ``unconsumed_tail``, ``eof``...)."""
    module = _zlib_ng
    return _ZlibNgInflater(module) if module is not None else zlib.decompressobj(GZIP_WBITS)


use_zlib_ng_if_installed()
