"""The ClaraAWS reference AIAA server: a local, CPU-only stand-in for an NVIDIA Clara AIAA server.

It speaks the AIAA v1 protocol (see docs/aiaa-protocol.md) strictly, streams uploads to disk, serves
several clients at once and offers classical models that work on the ClaraAWS synthetic phantom:

>>> with ReferenceServer() as server:          # doctest: +SKIP
...     print(server.url)                      # http://127.0.0.1:<free port>

Built only on the standard library's http.server, NumPy and SimpleITK.
"""

from __future__ import annotations

import importlib

# Loaded on first use, so ``clara-aws`` can read the server's limits for its options without
# importing SimpleITK for every command.
_EXPORTS = {
    "ImageCache": "models",
    "Model": "models",
    "ModelInput": "models",
    "ModelOutput": "models",
    "ModelRegistry": "models",
    "PhantomOrganSegmenter": "models",
    "RegionGrowAnnotation": "models",
    "RegionGrowDeepgrow": "models",
    "RegionGrowDeepgrow2D": "models",
    "builtin_models": "models",
    "ReferenceServer": "reference",
    "serve_forever_cli": "reference",
    "SessionStore": "sessions",
    "ServerStats": "stats",
    "ServerLimits": "limits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
