"""The reference server's limits: what one request and all sessions together may make it hold.

Bytes on the wire say little about memory: 130 KB of gzip can inflate to a 512^3 volume. So besides
the body size there is a bound on decoded voxels per image, and sessions are bounded in count and in
the bytes their images take (the oldest expire first).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Optional

from ..core.errors import InputError

MEGABYTE = 1 << 20
#: The smallest image the built-in models work on: smoothing and region growing need a neighbourhood.
MIN_IMAGE_EDGE_VOXELS = 4
OPTION_NAMES = {
    "session_expiry": "--session-expiry",
    "max_upload_bytes": "--max-upload-mb",
    "max_image_voxels": "--max-image-mvoxels",
    "max_sessions": "--max-sessions",
    "max_session_bytes": "--max-session-mb",
}


@dataclass(frozen=True)
class ServerLimits:
    session_expiry: int = 3600
    #: Request body bytes (None: no limit); larger bodies get HTTP 413.
    max_upload_bytes: Optional[int] = None
    #: Voxels of one uploaded image once decoded (a 512 x 512 x 380 CT fits).
    max_image_voxels: int = 100_000_000
    max_sessions: int = 32
    #: Bytes all sessions' images may take together.
    max_session_bytes: int = 2048 * MEGABYTE

    @classmethod
    def checked(cls, **values) -> "ServerLimits":
        """Limits from user input; InputError names a limit that is not a positive number."""
        clean = {}
        for name, value in values.items():
            if value is None and name == "max_upload_bytes":
                clean[name] = None
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
                raise InputError(f"The server limit {OPTION_NAMES[name]} must be a positive number, not {value!r}.")
            clean[name] = int(value)
        return cls(**clean)


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The limits as command-line options, shared by ``clara-aws serve`` and ``python -m ClaraAWSLib.server``."""
    defaults = ServerLimits()
    parser.add_argument("--session-expiry", type=float, default=defaults.session_expiry, metavar="S",
                        help=f"longest session life in seconds (default {defaults.session_expiry})")
    parser.add_argument("--max-upload-mb", type=float, default=None, metavar="MB",
                        help="refuse larger request bodies with HTTP 413 (default: no limit)")
    parser.add_argument("--max-image-mvoxels", type=float, default=defaults.max_image_voxels / 1e6, metavar="N",
                        help=f"refuse images of more than N million voxels, however small the upload (default {defaults.max_image_voxels / 1e6:g})")
    parser.add_argument("--max-sessions", type=float, default=defaults.max_sessions, metavar="N",
                        help=f"sessions kept at once; the oldest expire first (default {defaults.max_sessions})")
    parser.add_argument("--max-session-mb", type=float, default=defaults.max_session_bytes / MEGABYTE, metavar="MB",
                        help=f"memory all sessions' images may take; the oldest expire first (default {defaults.max_session_bytes // MEGABYTE})")


def limits_from_arguments(args: argparse.Namespace) -> ServerLimits:
    return ServerLimits.checked(
        session_expiry=args.session_expiry,
        max_upload_bytes=None if args.max_upload_mb is None else args.max_upload_mb * MEGABYTE,
        max_image_voxels=args.max_image_mvoxels * 1e6,
        max_sessions=args.max_sessions,
        max_session_bytes=args.max_session_mb * MEGABYTE,
    )
