"""What goes wrong on the wire, as the project's typed errors: one sentence each, never a credential."""

from __future__ import annotations

import json
import re
from typing import Optional, Sequence, Tuple
from urllib.parse import urlsplit

import requests

from ...core.errors import (
    AuthorizationError,
    GatewayTimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    RemoteError,
    ServerError,
    ServerUnavailableError,
    ServerTimeoutError,
    ServerUnreachableError,
    SessionExpiredError,
    TLSError,
)
from ...core.server_text import one_line, redacted
from ...core.sizes import size_text
from .addresses import answers_tls, origin_text
from .answers import framing_error

ERROR_EXCERPT_BYTES = 64 << 10
#: How much of an error answer's body goes into an error's details.
DETAILS_CHARACTERS = 2000



def unreachable_message(url: str, error: Exception, server_kind: str) -> str:
    text = str(error)
    if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo failed" in text or "NameResolution" in text:
        return f"The host name of {origin_text(url)} could not be resolved; check the spelling of the server URL."
    if "refused" in text.lower():
        return f"Nothing is listening at {origin_text(url)} (connection refused); check the URL and port, and that the server is running."
    if "BadStatusLine" in text:
        return (f"{origin_text(url)} does not answer in HTTP (its first line was no HTTP status line); check that the "
                "URL's port is the segmentation server's, not another service's.")
    if "LineTooLong" in text or "more than 100 headers" in text:
        return (f"The answer from {origin_text(url)} has a header line longer than 64 KiB or more than 100 header "
                "lines, more than a client reads; the server or a proxy in front of it is faulty (trying again will "
                "not help).")
    if "reset" in text.lower() or "aborted" in text.lower() or "RemoteDisconnected" in text:
        if url.startswith("http://") and answers_tls(url):
            https = origin_text(url).replace("http://", "https://", 1)
            return f"{origin_text(url)} speaks HTTPS, not plain HTTP; use {https} as the server URL."
        return f"The connection to {origin_text(url)} was closed before the server answered; the server may have restarted: try again."
    return f"Could not reach the {server_kind} server at {origin_text(url)}; check the URL and that the server is running."



def error_text(response: requests.Response) -> str:
    """The start of an error answer's body; a hostile server cannot make the client read all of it."""
    data = b""
    try:
        for chunk in response.iter_content(ERROR_EXCERPT_BYTES):
            data += chunk
            if len(data) >= ERROR_EXCERPT_BYTES:
                break
    except requests.exceptions.RequestException:
        pass  # what arrived is enough for the message
    finally:
        response.close()
    return data[:ERROR_EXCERPT_BYTES].decode("utf-8", errors="replace")



def server_message(text: str) -> Optional[str]:
    """The message of an error JSON (AIAA's ``{"error": {"message": [...]}}``, FastAPI's ``{"detail": ...}``), if the body is one."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, list):
            message = " ".join(str(m) for m in message)
        return str(message).strip() if message else error.get("type")
    if isinstance(error, str):
        return error
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return body["detail"]
    return None



def status_error(response: requests.Response, url: str, what: str, body_bytes: int,
                 session_expired_status: Optional[int] = None, secrets: Sequence[str] = ()) -> ServerError:
    """The typed error for an HTTP error answer; ``session_expired_status`` is the protocol's "session gone" code.

    The server's words go into the sentence as one bounded line, without a credential it may echo back.
    """
    status = response.status_code
    text = redacted(error_text(response), secrets)
    message = server_message(text)
    message = one_line(message) if message else None
    details = message or one_line(text, DETAILS_CHARACTERS)
    host = origin_text(url)
    path = urlsplit(url).path
    if session_expired_status is not None and status == session_expired_status:
        return SessionExpiredError("The server no longer holds this volume (session expired); it will be sent again.", status=status, details=details)
    if status in (401, 403):
        return AuthorizationError(
            f"The server at {host} refused access (HTTP {status}); a proxy in front of it wants credentials: add them as a request header.",
            status=status,
            details=details,
        )
    if status == 404:
        if message:
            return NotFoundError(f"The server could not find {what or path}: {message}", status=status, details=details)
        return NotFoundError(
            f"{host} has no {path} (HTTP 404); check the server URL and its path prefix (e.g. https://host/aiaa).",
            status=status,
            details=details,
        )
    if status == 413:
        return PayloadTooLargeError(
            f"The upload of {size_text(body_bytes)} was refused as too large (HTTP 413) by a proxy in front of the server; "
            "raise its body size limit (e.g. nginx client_max_body_size).",
            status=status,
            details=details,
        )
    if status in (502, 503):
        return ServerUnavailableError(
            f"The server behind {host} is not available (HTTP {status}); it may be restarting or replacing its GPU host: try again in a few minutes.",
            status=status,
            details=details,
        )
    if status == 504:
        return GatewayTimeoutError(
            f"The load balancer at {host} stopped waiting for the server (HTTP 504); inference took longer than its idle "
            "timeout: raise the load balancer's idle timeout (60 s by default on AWS).",
            status=status,
            details=details,
        )
    if message:
        subject = f"run {what}" if what.startswith("model") else f"answer {path}"
        return RemoteError(f"The server could not {subject}: {message} (HTTP {status}).", status=status, details=details)
    reason = one_line(redacted(response.reason or "", secrets), 60)
    return RemoteError(f"The server answered {path} with HTTP {status} {reason}".rstrip() + "; see the details or the server log.",
                       status=status, details=details)


def transport_error(url: str, error: requests.exceptions.RequestException, timeout: Tuple[float, float],
                    server_kind: str) -> ServerError:
    """The typed error for a request that got no HTTP answer: TLS, timeouts, refused or dropped connections."""
    host = origin_text(url)
    text = str(error)
    if isinstance(error, requests.exceptions.SSLError):
        if "wrong version number" in text.lower() or "WRONG_VERSION_NUMBER" in text:
            return TLSError(
                f"{host} does not answer HTTPS; if it is a plain-HTTP server, use "
                f"{host.replace('https://', 'http://', 1)} (plain HTTP only for anonymised data).",
                details=text,
            )
        return TLSError(
            f"The TLS certificate of {host} could not be verified; use the host name the certificate names "
            "(your DNS alias for the load balancer), give a CA bundle, or turn verification off only for a server you trust.",
            details=text,
        )
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return ServerTimeoutError(
            f"Could not connect to {host} within {timeout[0]:g} s; check the URL, your network, and that "
            "the load balancer allows your IP address.",
            details=text,
        )
    if isinstance(error, requests.exceptions.ReadTimeout):
        return ServerTimeoutError(
            f"The server at {host} did not answer within {timeout[1]:g} s; it may still be working: "
            "raise the read timeout or try a smaller volume.",
            details=text,
        )
    if isinstance(error, requests.exceptions.ConnectionError):
        return ServerUnreachableError(unreachable_message(url, error, server_kind), details=text)
    disagreeing = re.search(r"Content-Length contained multiple unmatching values \(([^)]*)\)", text)
    if isinstance(error, requests.exceptions.InvalidHeader) and disagreeing:  # urllib3 refuses these itself
        return framing_error(url, disagreeing.group(1), text)
    return ServerUnreachableError(
        f"The request to {host} failed before an answer arrived ({type(error).__name__}); try again.", details=text
    )


def deadline_error(url: str, error: Exception, deadline: float) -> ServerTimeoutError:
    return ServerTimeoutError(
        f"The request to {origin_text(url)} did not finish within the overall deadline of {deadline:g} s "
        "(the server or a proxy sends too slowly); try again, or raise the deadline for very large volumes.",
        details=str(error),
    )
