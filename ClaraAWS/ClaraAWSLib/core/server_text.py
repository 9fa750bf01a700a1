"""Text a server wrote (error messages, model names and descriptions, redirect targets), made fit to show.

A server may put terminal escape codes, line breaks and pages of text into what ClaraAWS prints, or echo
a request's credentials back. What is shown is one line without control characters, of bounded length,
with every known secret replaced.
"""

from __future__ import annotations

import base64
import re
from typing import Iterable, List, Mapping, Optional, Tuple

#: Longest server text shown inside a sentence; the rest is cut with an ellipsis.
SHOWN_CHARACTERS = 300
REDACTED = "[redacted]"
#: C0 and C1 control characters (ESC starts terminal escape codes), DEL, and the Unicode line and paragraph
#: separators and bidirectional overrides, which can reorder what a terminal shows.
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")
#: Terminal escape sequences go whole, not just their ESC: CSI ("ESC [ 2 J") and OSC ("ESC ] 0 ; title BEL").
_ESCAPE_SEQUENCE = re.compile("\x1b\\[[0-?]*[ -/]*[@-~]|\x1b\\][^\x07\x1b]*(?:\x07|\x1b\\\\)?|\x9b[0-?]*[ -/]*[@-~]")


def one_line(text: object, limit: int = SHOWN_CHARACTERS) -> str:
    """``text`` as one line of printable characters, at most ``limit`` long."""
    line = " ".join(_UNSHOWABLE.sub(" ", _ESCAPE_SEQUENCE.sub("", str(text))).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def secrets_of(credentials: Optional[Tuple[str, str]], headers: Optional[Mapping[str, str]]) -> List[str]:
    """What must never be shown: a URL's password, its basic-auth header value, and the extra header values."""
    found = []
    if credentials is not None:
        user, password = credentials
        pair = f"{user}:{password}"
        found += [password, pair, base64.b64encode(pair.encode("utf-8")).decode("ascii")]
    for value in (headers or {}).values():
        found.append(str(value))
        _scheme, _, token = str(value).partition(" ")
        if token.strip():
            found.append(token.strip())  # "Bearer <token>": the token alone, as a server may echo it
    return sorted({secret for secret in found if len(secret) >= 3}, key=len, reverse=True)


def redacted(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text
