"""The errors ClaraAWS raises, as a small typed hierarchy.

Every error carries one readable sentence (``str(error)``) that says what happened and what to do,
so the command line and the Slicer panel can show it as it is.
"""

from __future__ import annotations

import traceback
from typing import Optional


class ClaraError(Exception):
    """Base class of every error ClaraAWS raises on purpose."""

    def __init__(self, message: str, *, details: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        #: Longer technical text (a server's own message, a response excerpt) for a "details" box.
        self.details = details


class InputError(ClaraError):
    """The user's input cannot be used: wrong volume kind, too few points, unreadable file."""


class OutputError(InputError):
    """OUTPUT cannot be written: a directory, an unknown format, an unwritable folder, the INPUT itself, a full disk."""


class DeclinedError(InputError):
    """The user answered no to a question the request needs (convert closed surfaces); nothing was changed.

    The panel shows no error box for it: the user has just given the answer.
    """


class PointOutsideError(InputError):
    """A placed point lies outside the image that would be sent."""


class CancelledError(ClaraError):
    """The user cancelled the request; nothing was changed."""


class ServerError(ClaraError):
    """Base class of every failure talking to an AIAA server."""

    def __init__(self, message: str, *, status: Optional[int] = None, details: Optional[str] = None) -> None:
        super().__init__(message, details=details)
        self.status = status


class ServerUnreachableError(ServerError):
    """No connection could be made (DNS, refused, reset before any answer)."""


class ServerTimeoutError(ServerError):
    """The server took longer than the configured timeout."""


class TLSError(ServerError):
    """The server's certificate could not be verified."""


class NotFoundError(ServerError):
    """HTTP 404: wrong URL, wrong path prefix, or unknown model."""


class UnknownModelError(NotFoundError, InputError):
    """The server has no model of the name given: a wrong argument (exit code 2), found out by asking the server."""


class PayloadTooLargeError(ServerError):
    """HTTP 413: a proxy in front of the server limits the request body size."""


class SessionExpiredError(ServerError):
    """HTTP 440: the server no longer knows the session."""


class ServerUnavailableError(ServerError):
    """HTTP 502/503: the server or the load balancer's target is restarting."""


class GatewayTimeoutError(ServerError):
    """HTTP 504: inference outlasted the load balancer's idle timeout."""


class AuthorizationError(ServerError):
    """HTTP 401/403: a proxy in front of the server wants credentials."""


class RemoteError(ServerError):
    """The server reported an error of its own (AIAA error JSON, other 4xx/5xx)."""


class MalformedResponseError(ServerError):
    """The server answered, but not in a form the AIAA protocol allows."""


class ResultTooLargeError(MalformedResponseError):
    """A result would decode to far more than the input justifies (a compression bomb or a broken header)."""


class RedirectError(ServerError):
    """The server redirected to another origin or from https to http; ClaraAWS does not follow."""


class ListenError(ClaraError):
    """The reference server cannot listen on the address it was given (port taken, host not local)."""


class GeometryError(ClaraError):
    """An image's geometry cannot be used (4D, empty, mismatched result grid)."""


class DiscoveryError(ClaraError):
    """AWS discovery of ``ClaraServiceUrl`` failed."""


def release_frames(error: Optional[BaseException]) -> None:
    """Drop the local variables of the finished frames in ``error``'s tracebacks, along its cause and context.

    Libraries keep a caught exception in a local of the frame it passes through (urllib3's
    create_connection does), so exception, traceback and frame form a cycle; every caller frame above
    it (``f_back``: the scene logic, its volume and segmentation nodes, the MRML scene) then lives on
    until the cyclic garbage collector runs, in whatever thread that happens to be. A scene destroyed
    there closes (StartCloseEvent) off the thread that owns it. Cleared frames keep their line numbers,
    so a traceback still prints.
    """
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)  # frames still executing are skipped
        pending += [current.__cause__, current.__context__]
