"""The seam between ClaraAWS and the segmentation servers it talks to.

The scene logic and the command line see "a segmentation server" through ``SegmentationBackend``: list
its models, check that a model fits a task, run a task on an image or on a server-side session of an
image, open and close such sessions. Which protocol stands behind it (AIAA today, MONAI Label next) is
known only inside its package here; ``connect`` picks it.
"""

from __future__ import annotations

from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    runtime_checkable,
)

#: The tasks a backend runs; the scene logic names requests by them too.
AUTO_SEGMENT = "autoSegment"
ANNOTATE = "annotate"
DEEPGROW = "deepgrow"

#: Which kind of model each task needs, in the words of ``check_model_task``.
TASK_OF_KIND = {AUTO_SEGMENT: "auto", ANNOTATE: "annotation", DEEPGROW: "deepgrow"}


class ServerResult(Protocol):
    """A finished request: its parameters (crop box…), timings, bytes sent, and the labels on demand."""

    params: Dict[str, Any]
    timings: Dict[str, float]
    bytes_sent: int

    def labels(self, needed: Any = None) -> Any: ...


@runtime_checkable
class SegmentationBackend(Protocol):
    kind: str  # "aiaa", later "monailabel"

    def models(self) -> List[Dict[str, Any]]: ...

    def check_model_task(self, model: Mapping[str, Any], task: str) -> Mapping[str, Any]: ...

    def model_types_for(self, task: str) -> Sequence[str]: ...

    def endpoint_for(self, task: str, model: Mapping[str, Any]) -> str: ...

    def create_session(self, image: Any, *, progress: Optional[Callable] = None, cancel: Any = None) -> Any: ...

    def close_session(self, session: Any) -> bool: ...

    def run_task(self, task: str, model: Mapping[str, Any], **arguments: Any) -> ServerResult: ...

    def close(self) -> None: ...


def connect(url: str, **options: Any) -> SegmentationBackend:
    """The backend for the server at ``url`` (an AIAA server for now; options go to its client)."""
    from .aiaa import AIAABackend

    return AIAABackend(url, **options)
