"""The ClaraAWS reference AIAA server: a local, CPU-only stand-in for an NVIDIA Clara AIAA server.

It speaks the AIAA v1 protocol (see docs/aiaa-protocol.md) strictly, streams uploads to disk, serves
several clients at once and offers classical models that work on the ClaraAWS synthetic phantom:

>>> with ReferenceServer() as server:          # doctest: +SKIP
...     print(server.url)                      # http://127.0.0.1:<free port>

Built only on the standard library's http.server, NumPy and SimpleITK.
"""

from __future__ import annotations

from .models import (
    ImageCache,
    Model,
    ModelInput,
    ModelOutput,
    ModelRegistry,
    PhantomOrganSegmenter,
    RegionGrowAnnotation,
    RegionGrowDeepgrow,
    RegionGrowDeepgrow2D,
    builtin_models,
)
from .reference import ReferenceServer, serve_forever_cli
from .sessions import SessionStore
from .stats import ServerStats

__all__ = [
    "ImageCache",
    "Model",
    "ModelInput",
    "ModelOutput",
    "ModelRegistry",
    "PhantomOrganSegmenter",
    "RegionGrowAnnotation",
    "RegionGrowDeepgrow",
    "RegionGrowDeepgrow2D",
    "ReferenceServer",
    "ServerStats",
    "SessionStore",
    "builtin_models",
    "serve_forever_cli",
]
