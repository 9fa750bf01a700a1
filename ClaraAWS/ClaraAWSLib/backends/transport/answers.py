"""Reading an answer: its framing, its body within bounds, its JSON."""

from __future__ import annotations

import http.client
import json
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional

import requests

from ...core.errors import MalformedResponseError
from .addresses import origin_text


@dataclass
class Answer:
    response: requests.Response
    content: bytes
    headers_at: float
    finished_at: float
    body: Any = None  # the body that went out (a Content-Length one after a refused chunked upload)


_CONTENT_LENGTH = re.compile(r"[0-9]+")


def content_length_value(declared: str) -> Optional[int]:
    """The length a Content-Length value gives: one number of digits, or a list of one number repeated
    (RFC 9110 §8.6; urllib3 joins repeated headers into such a list); None for anything else."""
    values = {value.strip(" \t") for value in declared.split(",")}
    if len(values) == 1:
        value = next(iter(values))
        if _CONTENT_LENGTH.fullmatch(value):
            return int(value)
    return None


def check_framing(response: requests.Response, url: str) -> None:
    """Refuse an answer whose Content-Length is not a number (or a list of one number repeated, RFC 9110 §8.6),
    and frame a body announced with such a list by that number.

    RFC 9112 §6.3 makes invalid framing an unrecoverable error: neither side can know where the answer ends,
    so a body read "to the close" may be cut short or hold a smuggled second answer. http.client and urllib3
    would quietly read to the close instead. http.client cannot parse a list ("42, 42") either and reads such
    a body to the close too: on a kept-alive connection, that is the whole read timeout.
    """
    declared = response.headers.get("Content-Length")
    if declared is None:
        return
    length = content_length_value(declared)
    if length is None:
        response.close()
        raise framing_error(url, declared)
    _frame_by(response, length)


def _frame_by(response: requests.Response, length: int) -> None:
    """Make http.client read exactly ``length`` body bytes when it could not parse the header ("42, 42") and
    would read to the close; a transfer coding, when there is one, frames the body instead (RFC 9112 §6.3)."""
    reader = getattr(response.raw, "_fp", None)  # the http.client response under urllib3's
    if (isinstance(reader, http.client.HTTPResponse) and reader.length is None and not reader.chunked
            and "Transfer-Encoding" not in response.headers):
        reader.length = length


def framing_error(url: str, declared: str, details: str = "") -> MalformedResponseError:
    try:  # http.client decodes header bytes as Latin-1: UTF-8 text ("５", a fullwidth 5) shows as it was sent
        declared = declared.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    shown = declared if len(declared) <= 40 else declared[:40] + "..."
    return MalformedResponseError(
        f"The server at {origin_text(url)} answered with an invalid Content-Length ({shown!r}), so where its answer "
        "ends cannot be known (RFC 9112 §6.3); the answer was refused and nothing was changed: check the server "
        "or the proxy in front of it.",
        details=details,
    )


def declared_length(response: requests.Response) -> Optional[int]:
    """The Content-Length a response announces, None when it gives none or nonsense (then the body decides)."""
    declared = response.headers.get("Content-Length")
    return None if declared is None else content_length_value(declared)


def cut_off_json(text: str) -> bool:
    """Whether ``text`` reads as the start of a JSON document that was cut off (open brackets or string at its end)."""
    text = text.strip()
    if text[:1] not in ("{", "["):
        return False
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
    return in_string or depth > 0


def json_object(data: bytes, what: str) -> Dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError) as error:
        raise MalformedResponseError(f"The server's {what} are not valid JSON; the response is malformed.") from error
    if not isinstance(value, dict):
        raise MalformedResponseError(f"The server's {what} are not a JSON object; the response is malformed.")
    return value


def parse_json(content: bytes, path: str, server_kind: str) -> Any:
    """The JSON of an answer to ``path``; one sentence for a cut-off body and for one that is not JSON at all."""
    text = content.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except RecursionError:
        raise MalformedResponseError(
            f"The server's answer to {path} nests its JSON deeper than any {server_kind} answer does; check that the "
            f"URL points at the {server_kind} server.",
        ) from None
    except ValueError as error:
        if cut_off_json(text):
            raise MalformedResponseError(
                f"The server's answer to {path} ends in the middle of its JSON (the body was cut off); try again.",
                details=text[:500],
            ) from error
        raise MalformedResponseError(
            f"The server answered {path} with something that is not JSON; check that the URL points at the {server_kind} server.",
            details=text[:500],
        ) from error
