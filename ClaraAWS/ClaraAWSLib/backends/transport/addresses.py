"""Server addresses: parsing a base URL, credentials kept apart from it, and the forms a message may show.

A URL a message names never carries ``user:password@``; credentials travel as basic auth to their own
origin only (``wire``), never in a log or an error.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from typing import Dict, Mapping, Optional, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

from ...core.errors import InputError

HEADER_NAME_PATTERN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def normalise_base_url(url: str) -> str:
    """``scheme://host[:port][/prefix]`` without a trailing '/' or user-info; a bare host gets https://."""
    return split_credentials(url)[0]


def split_credentials(url: str) -> Tuple[str, Optional[Tuple[str, str]]]:
    """(normalised base URL without ``user:password@``, (user, password) or None).

    The credentials travel as basic auth to this origin only; messages and logs see the URL without them.
    """
    url = (url or "").strip()
    if not url:
        raise InputError("No server URL was given; enter the server's address, e.g. https://clara.example.org.")
    if "://" not in url:
        url = "https://" + url
    shown = without_userinfo(url)
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a port that is not a number in 0-65535
        if parts.netloc.rpartition("@")[2].startswith("["):
            ipaddress.IPv6Address(parts.hostname or "")  # Python 3.9's urlsplit accepts any text in brackets
    except ValueError:
        raise InputError(
            f"'{shown}' is not a valid server address (check the brackets of an IPv6 address and the port number); "
            "enter e.g. https://clara.example.org or http://[::1]:5000."
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"'{shown}' is not an http(s) server address; enter e.g. https://clara.example.org or http://127.0.0.1:5000.")
    if parts.query or parts.fragment:
        raise InputError(f"The server address '{shown}' carries a query or fragment; give only scheme, host, port and path prefix.")
    netloc = parts.netloc.rpartition("@")[2]
    path = parts.path.rstrip("/")
    for endpoint in ("/v1/models", "/v1", "/docs"):
        if path.endswith(endpoint):
            raise InputError(
                f"The server address should not include '{endpoint}'; use {parts.scheme}://{netloc}{path[: -len(endpoint)]}."
            )
    credentials = None
    if "@" in parts.netloc:
        credentials = (unquote(parts.username or ""), unquote(parts.password or ""))
    return f"{parts.scheme}://{netloc}{path}", credentials


def check_headers(headers: Mapping[str, str]) -> Dict[str, str]:
    """Extra request headers as they can go on the wire; an InputError names a bad one, never its value."""
    checked = {}
    for name, value in headers.items():
        name, value = str(name), str(value)
        if not HEADER_NAME_PATTERN.fullmatch(name):
            raise InputError(f"The header name {name!r} is not a valid HTTP header name; use e.g. Authorization.")
        if not all(32 <= ord(char) < 127 or char == "\t" for char in value):
            raise InputError(
                f"The value of the header {name!r} holds non-ASCII characters or line breaks, which HTTP headers cannot carry; "
                "re-enter it (the value is not shown here on purpose)."
            )
        checked[name] = value
    return checked



def without_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` removed (a malformed URL is returned with it cut off roughly)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        scheme, sep, rest = url.partition("://")
        return scheme + sep + rest.rpartition("@")[2] if sep else url.rpartition("@")[2]
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def origin(url: str) -> tuple:
    """(scheme, host, port) with default ports filled in: what decides whether credentials may go."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def origin_text(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, never with user-info: the form every message uses."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def answers_tls(url: str, timeout: float = 3.0) -> bool:
    """Whether the host and port of a plain-http ``url`` complete a TLS handshake (no request is sent)."""
    parts = urlsplit(url)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only asking whether TLS is spoken; nothing is sent over it
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=parts.hostname):
                return True
    except (OSError, ValueError):
        return False
