"""Turns progress reports of a request into what the panel's progress bar shows.

A request goes through stages: compress the volume, upload it, wait while the server infers,
download the result, import it into the scene. The upload and, when the server gives its size, a
download of 0.1 MB or more show a percentage; the other stages show a busy bar (maximum 0).
"""

from __future__ import annotations

import enum
import traceback
from dataclasses import dataclass
from typing import Any, Mapping, Tuple

from .errors import ClaraError

MEGABYTE = 1_000_000


class Stage(enum.Enum):
    CONNECTING = "connecting"
    ENCODING = "encoding"
    UPLOADING = "uploading"
    WAITING = "waiting"
    DOWNLOADING = "downloading"
    IMPORTING = "importing"


@dataclass(frozen=True)
class StageProgress:
    stage: Stage
    done: float = 0
    total: float = 0
    #: What the server is doing while we wait, e.g. "inference", "deepgrow".
    detail: str = ""


@dataclass(frozen=True)
class ProgressView:
    text: str
    value: int = 0
    #: 0 means "unknown length": the bar shows a busy animation.
    maximum: int = 0


def _megabytes(count: float) -> str:
    return f"{count / MEGABYTE:.1f}"


def describe(progress: StageProgress) -> ProgressView:
    stage = progress.stage
    if stage is Stage.CONNECTING:
        return ProgressView("Connecting to the server…")
    if stage is Stage.ENCODING:
        return ProgressView("Compressing the volume…")
    if stage is Stage.UPLOADING:
        if progress.total > 0:
            done = min(max(progress.done, 0), progress.total)
            if done >= progress.total:
                return waiting_view(progress.detail)
            percent = int(round(100 * done / progress.total))
            return ProgressView(f"Uploading {_megabytes(done)} of {_megabytes(progress.total)} MB", percent, 100)
        return ProgressView("Uploading…")
    if stage is Stage.WAITING:
        return waiting_view(progress.detail)
    if stage is Stage.DOWNLOADING:
        if progress.total >= MEGABYTE / 10:  # worth a bar; smaller results arrive in a blink
            done = min(max(progress.done, 0), progress.total)
            percent = int(round(100 * done / progress.total))
            return ProgressView(f"Downloading {_megabytes(done)} of {_megabytes(progress.total)} MB", percent, 100)
        if progress.done >= MEGABYTE / 10:
            return ProgressView(f"Downloading ({_megabytes(progress.done)} MB)")
        return ProgressView("Downloading")
    return ProgressView("Importing")


def waiting_view(detail: str = "") -> ProgressView:
    what = detail.strip() or "inference"
    return ProgressView(f"Waiting for the server ({what})…")


def describe_any(payload: Any, *, detail: str = "") -> ProgressView:
    """Accept the shapes progress arrives in and describe it.

    - a :class:`StageProgress`;
    - ``(sent_bytes, total_bytes)``, as the client's upload callback reports it;
    - a mapping with ``stage`` and optional ``done``/``total``/``detail``;
    - a plain string, shown as it is.
    """
    if isinstance(payload, StageProgress):
        return describe(payload)
    if isinstance(payload, str):
        return ProgressView(payload)
    if isinstance(payload, Mapping):
        try:
            stage = Stage(str(payload.get("stage", "")).lower())
        except ValueError:
            return ProgressView(str(payload.get("text", "Working…")))
        return describe(
            StageProgress(
                stage,
                float(payload.get("done", 0) or 0),
                float(payload.get("total", 0) or 0),
                str(payload.get("detail", detail) or detail),
            )
        )
    if isinstance(payload, (tuple, list)) and len(payload) == 2:
        sent, total = payload
        return describe(StageProgress(Stage.UPLOADING, float(sent), float(total), detail))
    return ProgressView("Working…")


def error_text(what: str, error: BaseException) -> Tuple[str, str]:
    """``(message, details)`` for an error dialog: what failed and the error's one sentence, and the
    technical part (the server's own text, or a traceback for an unexpected error) for "details"."""
    if isinstance(error, ClaraError):
        return f"{what}\n\n{error.message}", error.details or ""
    sentence = str(error) or type(error).__name__
    details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return f"{what}\n\n{sentence}", details
