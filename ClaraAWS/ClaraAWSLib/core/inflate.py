"""Inflating gzip streams: with zlib-ng when it is installed, else with Python's own zlib.

A deepgrow click's answer from MONAI Label is the whole grid, tens of MB of zeros in a few KB of gzip.
Classic zlib, which Python and Slicer are built with, inflates those runs a byte at a time; zlib-ng
copies them in wide blocks, three to four times faster (``Testing/benchmarks/bench_inflate.py``). Both
read the same streams into the same bytes and fail on the same damage, so callers only choose speed.
zlib-ng comes with the pip package; inside Slicer it is there once the user has agreed to install it.
"""

from __future__ import annotations

import zlib
from typing import Tuple, Type

try:
    from zlib_ng import zlib_ng as _zlib_ng
except ImportError:  # not installed (Slicer's own Python): zlib it is
    _zlib_ng = None

GZIP_WBITS = 16 + zlib.MAX_WBITS
#: What a damaged stream raises, whichever inflater read it.
InflateError: Tuple[Type[BaseException], ...] = (zlib.error,) + ((_zlib_ng.error,) if _zlib_ng is not None else ())


def engine() -> str:
    return "zlib-ng" if _zlib_ng is not None else "zlib"


def gzip_inflater():
    """A ``decompressobj`` for a gzip member (``decompress(data, max_length)``, ``unconsumed_tail``, ``eof``...)."""
    return (_zlib_ng or zlib).decompressobj(GZIP_WBITS)
