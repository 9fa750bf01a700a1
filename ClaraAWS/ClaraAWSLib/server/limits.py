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
#: Each limit's command-line option: argparse dest -> (flag, ServerLimits field, the field's unit, how many of
#: those units one unit of the option is). Users type megabytes and million voxels; the server counts bytes and voxels.
LIMIT_OPTIONS = {
    "session_expiry": ("--session-expiry", "session_expiry", "second", 1),
    "max_upload_mb": ("--max-upload-mb", "max_upload_bytes", "byte", MEGABYTE),
    "max_image_mvoxels": ("--max-image-mvoxels", "max_image_voxels", "voxel", 1_000_000),
    "max_sessions": ("--max-sessions", "max_sessions", "session", 1),
    "max_session_mb": ("--max-session-mb", "max_session_bytes", "byte", MEGABYTE),
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
    def from_options(cls, **typed) -> "ServerLimits":
        """Limits from the numbers typed for the options (keyed by argparse dest, in the options' units).

        InputError names the option and quotes the number as typed, not as converted to bytes or voxels.
        ``max_upload_mb=None`` means no upload limit.
        """
        clean = {}
        for dest, value in typed.items():
            option, field_name, unit_name, units_per_option_unit = LIMIT_OPTIONS[dest]
            if value is None and field_name == "max_upload_bytes":
                clean[field_name] = None
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InputError(f"The server limit {option} must be a positive number, not {_as_typed(value)}.")
            amount = int(value * units_per_option_unit)
            if amount < 1:  # positive, but it would let through nothing at all
                raise InputError(f"The server limit {option} {_as_typed(value)} is less than one {unit_name}; give a larger number.")
            clean[field_name] = amount
        return cls(**clean)


def _as_typed(value) -> str:
    """A number as a user would have typed it: -5, not -5.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


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
    return ServerLimits.from_options(**{dest: getattr(args, dest) for dest in LIMIT_OPTIONS})
