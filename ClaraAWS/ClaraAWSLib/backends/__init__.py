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

from .rules import MIN_EXTREME_POINTS, check_points_inside  # noqa: F401 - rules every backend shares

#: The tasks a backend runs; the scene logic names requests by them too.
AUTO_SEGMENT = "autoSegment"
ANNOTATE = "annotate"
DEEPGROW = "deepgrow"
#: Clicks for several labels at once (MONAI Label's deepedit models): ``clicks`` name -> points.
DEEPEDIT = "deepedit"

#: Which kind of model each task needs, in the words of ``check_model_task``.
TASK_OF_KIND = {AUTO_SEGMENT: "auto", ANNOTATE: "annotation", DEEPGROW: "deepgrow"}

BACKENDS = ("aiaa", "monailabel")


class ServerResult(Protocol):
    """A finished request: its parameters (crop box…), timings, bytes sent, and the labels on demand."""

    params: Dict[str, Any]
    timings: Dict[str, float]
    bytes_sent: int

    def labels(self, needed: Any = None) -> Any: ...


@runtime_checkable
class SegmentationBackend(Protocol):
    kind: str  # "aiaa" or "monailabel"

    def models(self) -> List[Dict[str, Any]]: ...

    def check_model_task(self, model: Mapping[str, Any], task: str) -> Mapping[str, Any]: ...

    def model_types_for(self, task: str) -> Sequence[str]: ...

    def endpoint_for(self, task: str, model: Mapping[str, Any]) -> str: ...

    def create_session(self, image: Any, *, progress: Optional[Callable] = None, cancel: Any = None) -> Any: ...

    def close_session(self, session: Any) -> bool: ...

    def run_task(self, task: str, model: Mapping[str, Any], **arguments: Any) -> ServerResult: ...

    def close(self) -> None: ...


def supports_active_learning(backend: Any) -> bool:
    return getattr(backend, "kind", "") == "monailabel"


def connect(url: str, *, backend: str = "auto", **options: Any) -> SegmentationBackend:
    """The backend for the server at ``url``: ``backend`` "aiaa" or "monailabel", or "auto" to ask the server.

    An AIAA server lists its models at ``/v1/models``, a MONAI Label server describes itself at ``/info/``.
    Options go to the backend's client (verify, headers, timeouts, deadline; MONAI Label also username,
    password, token). A failure to reach the server at all (TLS, refused, a redirect elsewhere) is raised
    as it is, not hidden behind "not a known server".
    """
    from ..core.errors import InputError

    choice = (backend or "auto").strip().lower()
    if choice == "aiaa":
        return _aiaa(url, options)
    if choice == "monailabel":
        from .monailabel import MONAILabelBackend

        return MONAILabelBackend(url, **options)
    if choice != "auto":
        raise InputError(f"The backend {backend!r} is not one ClaraAWS speaks; give aiaa, monailabel or auto.")
    return _detect(url, options)


def opening_without_cookies():
    """Backends opened in this thread inside the block keep no cookies (a sticky load balancer's included), for
    self-contained requests such as a batch's, which should spread over every task (transport.wire)."""
    from .transport.wire import opening_without_cookies as without_cookies

    return without_cookies()


def _aiaa(url: str, options: Mapping[str, Any]) -> SegmentationBackend:
    from .aiaa import AIAABackend

    aiaa_options = {key: value for key, value in options.items() if key not in ("username", "password", "token")}
    return AIAABackend(url, **aiaa_options)


def _detect(url: str, options: Mapping[str, Any]) -> SegmentationBackend:
    from ..core.errors import MalformedResponseError, NotFoundError, RemoteError, ServerError
    from .monailabel import MONAILabelBackend

    not_this = (NotFoundError, MalformedResponseError, RemoteError)
    monai = MONAILabelBackend(url, **options)
    try:
        monai.info()
        return monai
    except not_this:
        monai.close()
    except ServerError:
        monai.close()
        raise
    aiaa = _aiaa(url, options)
    try:
        aiaa.models()
        return aiaa
    except NotFoundError as error:  # neither path exists; a malformed AIAA answer keeps its own sentence
        aiaa.close()
        raise MalformedResponseError(
            f"The server at {aiaa.base_url} answers neither as a MONAI Label server (/info/) nor as an AIAA server "
            "(/v1/models); check the URL and its path prefix, or name the backend (aiaa or monailabel).",
            status=getattr(error, "status", None), details=str(error),
        ) from error
    except BaseException:
        aiaa.close()
        raise
