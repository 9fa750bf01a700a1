"""The AIAA v1 client: every HTTP call ClaraAWS makes to a Clara AIAA server.

The wire protocol is described in ``docs/aiaa-protocol.md``; this module is its only implementation
on the client side. One ``requests.Session`` carries keep-alive and cookies (load-balancer stickiness),
TLS is verified unless the caller explicitly says otherwise, and every failure becomes one of the
typed errors in ``errors.py``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote, unquote, urljoin, urlsplit

import numpy as np
import requests

from ... import __version__
from ...core.errors import (
    AuthorizationError,
    CancelledError,
    GatewayTimeoutError,
    InputError,
    MalformedResponseError,
    NotFoundError,
    PayloadTooLargeError,
    RedirectError,
    RemoteError,
    ResultTooLargeError,
    ServerError,
    ServerTimeoutError,
    ServerUnavailableError,
    ServerUnreachableError,
    SessionExpiredError,
    TLSError,
    release_frames,
)
from ...core.compression import BackgroundEncode, WireHistory, choose_level, machine_speeds
from ...core.crop import BodyCrop, body_box, crop_volume
from ...core.geometry import ImageGrid, LabelBox, Volume, place_in_grid, voxel_offset
from ...core.imageio import (
    EncodedImage,
    SliceLimit,
    as_label_volume,
    decode_image,
    decode_label_box,
    encode_volume,
    max_result_voxels,
    read_image_file,
    result_byte_limit,
)
from ...core.multipart import (
    CancelToken,
    FilePart,
    MultipartBody,
    ProgressCallback,
    StreamingMultipartBody,
    parse_multipart,
)
from ..rules import MIN_EXTREME_POINTS, POINT_KEYS, check_points_inside, require_model_type  # noqa: F401 - re-exported
from ..transport import (
    Deadline,
    DeadlineAdapter,
    answers_tls,
    origin,
    origin_text,
    positive_seconds,
    without_userinfo,
)

DEFAULT_CONNECT_TIMEOUT = 10.0
#: Inference on a large CT can take minutes without a byte on the wire.
DEFAULT_READ_TIMEOUT = 900.0
#: The longest a whole request may take, upload and download included, however the bytes trickle.
DEFAULT_DEADLINE = 3600.0
AUTO_SEGMENTATION_TYPES = ("segmentation", "others", "pipeline")
ANNOTATION_TYPES = ("annotation",)
DEEPGROW_TYPES = ("deepgrow", "pipeline")
SESSION_EXPIRED_STATUS = 440
DOWNLOAD_CHUNK_BYTES = 1 << 20
#: JSON answers (model lists, session info) are small; a larger one is not an AIAA server's.
MAX_JSON_ANSWER_BYTES = 32 << 20
ERROR_EXCERPT_BYTES = 64 << 10
MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
#: Session ids go into request paths: only these characters, and never only dots ("..").
SESSION_ID_PATTERN = re.compile(r"(?!\.+$)[A-Za-z0-9._~-]{1,256}")
HEADER_NAME_PATTERN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

ImageInput = Union[EncodedImage, BackgroundEncode, Volume, str, Path]
UploadBody = Union[MultipartBody, StreamingMultipartBody]
#: Answers of a server that does not take a chunked body; the upload is then repeated with a Content-Length.
CHUNKED_REFUSED_STATUSES = (400, 411, 501)


class ServerWire:
    """What the client learnt about uploading to one server: its throughput, and whether it takes chunked bodies."""

    def __init__(self) -> None:
        self.history = WireHistory()
        self.chunked_refused = False
        self.fallbacks = 0


_wires: Dict[str, ServerWire] = {}


def server_wire(base_url: str) -> ServerWire:
    """The process-wide record for the server at ``base_url`` (kept across reconnects)."""
    return _wires.setdefault(base_url, ServerWire())
Point = Sequence[int]


@dataclass
class ImageSession:
    """A volume held by the server, so later calls send only their parameters.

    ``image`` is what was sent (an ``EncodedImage`` once the upload is done), kept to re-create the session.
    """

    session_id: str
    image: Union[EncodedImage, BackgroundEncode]
    expiry: int = 0
    uploads: int = 1
    info: Dict[str, Any] = field(default_factory=dict)


@dataclass
class AIAAResult:
    params: Dict[str, Any]
    filename: Optional[str] = None
    image_bytes: Optional[bytes] = None
    bytes_sent: int = 0
    timings: Dict[str, float] = field(default_factory=dict)
    #: The grid of the image the result answers; it bounds how large a result may decode.
    input_grid: Optional[ImageGrid] = None
    #: With a body crop: the whole volume's grid, where the result of the box is placed back.
    full_grid: Optional[ImageGrid] = None
    #: The deflate level of the image this call compressed (None: sent as given or no image).
    upload_level: Optional[int] = None

    def labels(self, needed: Optional[SliceLimit] = None) -> Volume:
        """The result label image; ``needed`` lets an edit skip inflating slices it will not use."""
        if self.image_bytes is None:
            raise MalformedResponseError(
                "The server answered without a result image; the model may not produce label images."
            )
        limit = max_result_voxels(self.input_grid)
        labels = as_label_volume(decode_image(self.image_bytes, self.filename or "", needed=needed, max_voxels=limit))
        if self.full_grid is not None and self.input_grid is not None:
            labels = place_cropped_result(labels, self.input_grid, self.full_grid)
        return labels

    def label_box(self, needed: Optional[SliceLimit] = None) -> LabelBox:
        """Only the labelled box of the result (see ``imageio.decode_label_box``): what an interactive edit needs."""
        if self.image_bytes is None or self.full_grid is not None:
            return LabelBox.of_volume(self.labels(needed))
        return decode_label_box(self.image_bytes, self.filename or "", needed=needed,
                                max_voxels=max_result_voxels(self.input_grid))


def place_cropped_result(labels: Volume, sent: ImageGrid, full: ImageGrid) -> Volume:
    """The result for a box ``sent`` of ``full``, pasted back at its voxel offset (other grids stay as they are).

    A result without geometry but with the box's size is the box's voxels too (a server that dropped
    the header); a result on an unrelated grid is left for ``result_on_grid`` to resample.
    """
    grid = labels.grid
    if grid.size == sent.size and (grid.matches(sent) or _default_geometry(grid)):
        grid = sent
    offset = voxel_offset(grid, full)
    if offset is None:
        return labels
    return place_in_grid(Volume(labels.array, grid), full, offset)


def _default_geometry(grid: ImageGrid) -> bool:
    return bool(np.allclose(grid.spacing, 1.0) and np.allclose(grid.origin, 0.0) and np.allclose(grid.direction, np.eye(3)))


MODEL_TYPES_FOR_TASK = {"auto": AUTO_SEGMENTATION_TYPES, "annotation": ANNOTATION_TYPES, "deepgrow": DEEPGROW_TYPES}
TASK_NAMES = {"auto": "auto-segmentation", "annotation": "extreme-point annotation", "deepgrow": "deepgrow clicks"}


def check_model_task(model: Mapping[str, Any], task: str) -> Mapping[str, Any]:
    """``model`` if its type fits the task ("auto", "annotation", "deepgrow"), else one readable InputError."""
    return require_model_type(model, MODEL_TYPES_FOR_TASK[task], TASK_NAMES[task])


def as_encoded_image(image: ImageInput) -> EncodedImage:
    if isinstance(image, EncodedImage):
        return image
    if isinstance(image, BackgroundEncode):
        return image.result()
    if isinstance(image, Volume):
        return encode_volume(image)
    if isinstance(image, (str, Path)):
        return encode_volume(read_image_file(image))
    raise InputError(f"Cannot send an object of type {type(image).__name__}; give a Volume, an image file or encoded bytes.")


def normalise_base_url(url: str) -> str:
    """``scheme://host[:port][/prefix]`` without a trailing '/' or user-info; a bare host gets https://."""
    return split_credentials(url)[0]


def split_credentials(url: str) -> Tuple[str, Optional[Tuple[str, str]]]:
    """(normalised base URL without ``user:password@``, (user, password) or None).

    The credentials travel as basic auth to this origin only; messages and logs see the URL without them.
    """
    url = (url or "").strip()
    if not url:
        raise InputError("No server URL was given; enter the AIAA server's address, e.g. https://clara.example.org.")
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


class AIAAClient:
    """A connection to one AIAA server (base URL with an optional path prefix)."""

    def __init__(
        self,
        base_url: str,
        *,
        verify: Union[bool, str] = True,
        headers: Optional[Mapping[str, str]] = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        http_session: Optional[requests.Session] = None,
        deadline: Optional[float] = DEFAULT_DEADLINE,
        stream_uploads: bool = True,
        adaptive_level: bool = True,
    ) -> None:
        """``deadline`` bounds each whole request in seconds (None: no bound beyond the timeouts).

        ``stream_uploads`` sends a volume while it is being compressed (chunked transfer; a server that
        refuses it gets a Content-Length upload from then on); ``adaptive_level`` compresses harder when
        earlier uploads to this server showed the link, not the CPU, to be the bottleneck.
        ``body_crop`` maps model names to a ``BodyCrop``: auto-segmentation with such a model sends only
        the body's box, and the result is placed back at its offset (off for every model by default).
        """
        self.base_url, self._credentials = split_credentials(base_url)
        self.stream_uploads = bool(stream_uploads)
        self.adaptive_level = bool(adaptive_level)
        self.body_crop: Dict[str, BodyCrop] = {}
        self.wire = server_wire(self.base_url)
        if isinstance(verify, str) and not Path(verify).exists():
            raise InputError(f"The CA bundle {verify} does not exist; give the path of a PEM file or leave it empty.")
        self.verify = verify
        self.timeout = (positive_seconds(connect_timeout, "connect timeout"), positive_seconds(read_timeout, "read timeout"))
        self.deadline = None if deadline is None else positive_seconds(deadline, "deadline")
        extra_headers = check_headers(dict(headers or {}))
        self.http = http_session or requests.Session()
        adapter = DeadlineAdapter()
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)
        self.http.headers["User-Agent"] = f"ClaraAWS/{__version__}"
        self.http.headers.update(extra_headers)

    # --- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "AIAAClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_plain_http(self) -> bool:
        return self.base_url.startswith("http://")

    # --- models --------------------------------------------------------------------------
    def models(self, label: Optional[str] = None, type: Optional[str] = None) -> List[Dict[str, Any]]:
        query = {key: value for key, value in (("label", label), ("type", type)) if value}
        answer = self._json(self._request("GET", "/v1/models", params=query), "/v1/models")
        if isinstance(answer, dict):  # some servers answer a single model as an object
            answer = [answer]
        if not isinstance(answer, list) or not all(isinstance(m, dict) and "name" in m for m in answer):
            raise MalformedResponseError(
                f"The server at {self.base_url} did not list models in AIAA form; is it an AIAA server?"
            )
        return [_normalise_model(m) for m in answer]

    def model(self, name: str) -> Dict[str, Any]:
        answer = self._json(self._request("GET", "/v1/models", params={"model": name}, what=f"model '{name}'"), "/v1/models")
        if isinstance(answer, list) and len(answer) == 1:
            answer = answer[0]
        if not isinstance(answer, dict) or "name" not in answer:
            raise NotFoundError(f"The server has no model named '{name}'; list the models to see what it offers.")
        return _normalise_model(answer)

    # --- work calls ----------------------------------------------------------------------
    def segmentation(self, model: str, image: Optional[ImageInput] = None, **options: Any) -> AIAAResult:
        return self.run("segmentation", model, image, **options)

    def inference(self, model: str, image: Optional[ImageInput] = None, **options: Any) -> AIAAResult:
        return self.run("inference", model, image, **options)

    def auto_segment(self, model: Mapping[str, Any], image: Optional[ImageInput] = None, **options: Any) -> AIAAResult:
        """Auto-segmentation with a listed model: /v1/segmentation for type segmentation, else /v1/inference."""
        check_model_task(model, "auto")
        endpoint = "segmentation" if model.get("type") == "segmentation" else "inference"
        crop = self.body_crop.get(str(model["name"]))
        if crop is None or image is None or isinstance(image, (EncodedImage, BackgroundEncode)):
            return self.run(endpoint, model["name"], image, **options)
        volume = read_image_file(image) if isinstance(image, (str, Path)) else image
        if not isinstance(volume, Volume):
            raise InputError(f"Cannot send an object of type {type(image).__name__}; give a Volume, an image file or encoded bytes.")
        box = body_box(volume, crop)
        if box is None or box[1] == volume.grid.size:
            return self.run(endpoint, model["name"], volume, **options)
        result = self.run(endpoint, model["name"], crop_volume(volume, box), **options)
        result.full_grid = volume.grid
        return result

    # --- encoding ------------------------------------------------------------------------
    def start_encode(self, volume: Volume) -> BackgroundEncode:
        """Start compressing ``volume`` for this server on worker threads and return at once.

        Pass the result as the image of a later call (or to ``create_session``): a volume that
        finished compressing goes up with a Content-Length at once, one still compressing is streamed
        as its blocks finish. The level follows this server's measured uplink (``choose_level``).
        """
        level = 1
        throughput = self.wire.history.throughput()
        if self.adaptive_level and throughput:
            speeds = machine_speeds(volume)  # None until measured: level 1 meanwhile
            level = choose_level(throughput, speeds) if speeds is not None else 1
        return BackgroundEncode(volume, level=level)

    def upload_source(self, image: ImageInput) -> Union[EncodedImage, BackgroundEncode]:
        """What an upload sends: encoded bytes as they are, a volume or image file compressed from now on."""
        if isinstance(image, (EncodedImage, BackgroundEncode)):
            return image
        if isinstance(image, (str, Path)):
            image = read_image_file(image)
        if isinstance(image, Volume):
            return self.start_encode(image)
        raise InputError(f"Cannot send an object of type {type(image).__name__}; give a Volume, an image file or encoded bytes.")

    def dextr3d(self, model: str, points: Sequence[Point], image: Optional[ImageInput] = None, **options: Any) -> AIAAResult:
        points = _index_points(points, "extreme point")
        if len(points) < MIN_EXTREME_POINTS:
            raise InputError(
                f"Annotation needs at least {MIN_EXTREME_POINTS} extreme points (one at each end of the object "
                f"along every axis); {len(points)} {'was' if len(points) == 1 else 'were'} given."
            )
        params = dict(options.pop("params", None) or {}, points=points)
        return self.run("dextr3d", model, image, params=params, **options)

    def deepgrow(
        self,
        model: str,
        foreground: Sequence[Point],
        background: Sequence[Point] = (),
        image: Optional[ImageInput] = None,
        *,
        current_point: Optional[Point] = None,
        spatial_size: Optional[Sequence[int]] = None,
        endpoint: str = "deepgrow",
        **options: Any,
    ) -> AIAAResult:
        foreground = _index_points(foreground, "foreground point")
        background = _index_points(background, "background point")
        if not foreground:
            raise InputError("Deepgrow needs at least one foreground point inside the structure; place one and try again.")
        params = dict(options.pop("params", None) or {}, foreground=foreground, background=background)
        if current_point is not None:
            params["current_point"] = _index_points([current_point], "current point")[0]
        if spatial_size is not None:
            params["spatial_size"] = [int(v) for v in spatial_size]
        return self.run(endpoint, model, image, params=params, **options)

    def run(
        self,
        endpoint: str,
        model: str,
        image: Optional[ImageInput] = None,
        *,
        session: Optional[ImageSession] = None,
        params: Optional[Mapping[str, Any]] = None,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelToken] = None,
        download_progress: Optional[ProgressCallback] = None,
    ) -> AIAAResult:
        """POST /v1/<endpoint>; with ``session`` only params travel, and a 440 re-creates the session once.

        ``progress(sent, total)`` follows the upload, ``download_progress(received, total)`` the result's
        download (total 0 when the server does not say); both are called on the calling thread.
        """
        if (image is None) == (session is None):
            raise InputError("Give either an image or an open session for a work call, not both or neither.")
        payload = dict(params or {})
        encoded = None
        encode_seconds = 0.0
        if image is not None:
            started = time.perf_counter()
            encoded = self.upload_source(image)
            encode_seconds = time.perf_counter() - started
        grid = encoded.grid if encoded is not None else session.image.grid
        check_points_inside(payload, grid)
        try:
            result = self._work_call(endpoint, model, payload, encoded, session, progress, cancel, download_progress)
        except SessionExpiredError:
            if session is None:
                raise
            self._recreate_session(session, progress, cancel)
            try:
                result = self._work_call(endpoint, model, payload, None, session, progress, cancel, download_progress)
            except SessionExpiredError as error:
                raise SessionExpiredError(
                    "The server dropped the volume again right after it was sent anew (session rejected twice); "
                    "it may be short of memory or limit its sessions: try again later or ask its operator.",
                    status=error.status,
                    details=error.details,
                ) from error
        result.timings["encode"] = encode_seconds
        result.input_grid = grid
        result.upload_level = getattr(encoded, "level", None)
        return result

    # --- sessions ------------------------------------------------------------------------
    def create_session(
        self,
        image: ImageInput,
        expiry: int = 0,
        *,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelToken] = None,
    ) -> ImageSession:
        session = ImageSession(session_id="", image=self.upload_source(image), expiry=int(expiry), uploads=0)
        self._recreate_session(session, progress, cancel)
        return session

    def session_info(self, session: Union[ImageSession, str]) -> Dict[str, Any]:
        path = _session_path(session.session_id if isinstance(session, ImageSession) else session)
        answer = self._json(self._request("GET", path, what="the session"), "/session/")
        if not isinstance(answer, dict):
            raise MalformedResponseError("The server's session information is not a JSON object; the response is malformed.")
        return answer

    def close_session(self, session: Union[ImageSession, str]) -> bool:
        path = _session_path(session.session_id if isinstance(session, ImageSession) else session)
        try:
            self._request("DELETE", path, what="the session")
        except SessionExpiredError:
            return False
        return True

    def _recreate_session(
        self, session: ImageSession, progress: Optional[ProgressCallback], cancel: Optional[CancelToken]
    ) -> None:
        body = self._upload_body({"params": "{}"}, "image", session.image, progress, cancel)
        response = self._request("PUT", "/session/", params={"expiry": session.expiry}, body=body, cancel=cancel)
        session.image = as_encoded_image(session.image)  # all sent, so all compressed: keep it for a re-upload
        answer = self._json(response, "/session/")
        if not isinstance(answer, dict) or not answer.get("session_id"):
            raise MalformedResponseError("The server created a session but sent no session_id; the response is malformed.")
        session_id = str(answer["session_id"])
        _session_path(session_id)  # refuses an id that could change the request path
        session.session_id = session_id
        session.info = answer
        session.uploads += 1

    # --- HTTP ----------------------------------------------------------------------------
    def _work_call(
        self,
        endpoint: str,
        model: str,
        params: Dict[str, Any],
        encoded: Optional[Union[EncodedImage, BackgroundEncode]],
        session: Optional[ImageSession],
        progress: Optional[ProgressCallback],
        cancel: Optional[CancelToken],
        download_progress: Optional[ProgressCallback] = None,
    ) -> AIAAResult:
        query = {"model": model}
        if session is not None:
            query["session_id"] = session.session_id
        fields = {"params": json.dumps(params)}
        if encoded is not None:
            body = self._upload_body(fields, "datapoint", encoded, progress, cancel)
        else:
            body = MultipartBody(fields, None, progress=progress, cancel=cancel)
        grid = encoded.grid if encoded is not None else session.image.grid
        started = time.perf_counter()
        answer = self._request(
            "POST", f"/v1/{endpoint}", params=query, body=body, cancel=cancel, what=f"model '{model}'",
            download_progress=download_progress, max_bytes=result_byte_limit(grid),
        )
        body = answer.body or body
        upload_end = body.finished_at or started
        result = _parse_work_response(answer.response.headers.get("Content-Type", ""), answer.content, endpoint)
        result.bytes_sent = body.size_bytes
        result.timings.update(
            upload=upload_end - (body.started_at or started),
            wait=answer.headers_at - upload_end,
            download=answer.finished_at - answer.headers_at,
            compressor_wait=getattr(body, "compressor_wait", 0.0),
        )
        if cancel is not None and cancel.is_set():
            raise CancelledError("The request was cancelled; nothing was changed.")
        return result

    def _upload_body(
        self,
        fields: Dict[str, str],
        field_name: str,
        image: Union[EncodedImage, BackgroundEncode],
        progress: Optional[ProgressCallback],
        cancel: Optional[CancelToken],
    ) -> UploadBody:
        """A streamed body while ``image`` is still compressing (and the server takes chunked bodies), else one with a length."""
        # A neutral generated name: never a node name, patient name or local path.
        filename = f"volume-{uuid.uuid4().hex[:12]}{image.suffix}"
        if isinstance(image, BackgroundEncode) and not image.done and self.stream_uploads and not self.wire.chunked_refused:
            return StreamingMultipartBody(fields, field_name, filename, image, progress=progress, cancel=cancel)
        data = as_encoded_image(image).data
        return MultipartBody(fields, FilePart(field_name, filename, data), progress=progress, cancel=cancel)

    def _with_length(self, body: StreamingMultipartBody) -> MultipartBody:
        """The same upload as one body with a Content-Length (for a server that refused the chunked one)."""
        return MultipartBody(body.fields, FilePart(body.field_name, body.filename, as_encoded_image(body.source).data),
                             progress=body.progress, cancel=body.cancel)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Mapping[str, Any]] = None,
        body: Optional[UploadBody] = None,
        cancel: Optional[CancelToken] = None,
        what: str = "",
        download_progress: Optional[ProgressCallback] = None,
        max_bytes: int = MAX_JSON_ANSWER_BYTES,
    ) -> "_Answer":
        """One request, its same-origin redirects and its whole answer, all within the overall deadline."""
        if cancel is not None and cancel.is_set():
            raise CancelledError("The request was cancelled before it was sent; nothing was changed.")
        url = self.base_url + path
        deadline = Deadline(self.deadline, cancel)
        try:
            with deadline:
                for _ in range(MAX_REDIRECTS + 1):
                    try:
                        response = self._send(method, url, params, body)
                    except requests.exceptions.ConnectionError:
                        # A server that cannot read chunked bodies may just drop the connection (after
                        # some of the body went out: a refused or unreachable server took none of it).
                        if (not isinstance(body, StreamingMultipartBody) or body.sent == 0 or deadline.expired
                                or _is_set(cancel)):
                            raise
                        response, body = self._resend_with_length(None, method, url, params, body)
                    else:
                        if isinstance(body, StreamingMultipartBody) and response.status_code in CHUNKED_REFUSED_STATUSES:
                            response, body = self._resend_with_length(response, method, url, params, body)
                    target = self._redirect_target(response, method, url, body)
                    if target is None:
                        break
                    url, params = target, None
                    if body is not None:
                        body.rewind()
                else:
                    raise RedirectError(
                        f"The server at {origin_text(url)} redirected more than {MAX_REDIRECTS} times; check the server URL.",
                        status=response.status_code,
                    )
                headers_at = time.perf_counter()
                if body is not None and body.finished_at is not None and body.clock is not None:
                    sent, seconds, waited = body.clock.window(body.size_bytes)
                    self.wire.history.record(sent, seconds - waited, waited)
                if response.status_code >= 400:
                    raise _status_error(response, url, what, body.size_bytes if body is not None else 0)
                content = self._read_body(response, download_progress, cancel, max_bytes)
        except (requests.exceptions.RequestException, ServerError) as error:
            release_frames(error)
            if deadline.cancelled:
                raise CancelledError("The request was cancelled; nothing was changed.") from error
            if deadline.expired and not isinstance(error, ServerTimeoutError):
                raise self._deadline_error(url, error) from error
            if isinstance(error, ServerError):
                raise
            raise self._transport_error(url, error) from error
        return _Answer(response, content, headers_at, time.perf_counter(), body)

    def _resend_with_length(self, response, method: str, url: str, params, body: StreamingMultipartBody):
        """Repeat a refused chunked upload with a Content-Length; remember it when that is what the server wanted.

        411 and 501 say so outright; a 400 counts only when the same bytes with a length are accepted
        (a 400 about the image itself comes back again and changes nothing); a dropped connection
        (``response`` None) counts when the upload with a length gets an answer.
        """
        status = None if response is None else response.status_code
        if response is not None:
            response.close()
        if status in (411, 501):
            self.wire.chunked_refused = True
        fallback = self._with_length(body)
        retry = self._send(method, url, params, fallback)
        if status is None or (status == 400 and retry.status_code != 400):
            self.wire.chunked_refused = True
        if self.wire.chunked_refused:
            self.wire.fallbacks += 1
        return retry, fallback

    def _send(self, method: str, url: str, params, body: Optional[UploadBody]) -> requests.Response:
        headers = {"Accept": "multipart/form-data, application/json;q=0.9, */*;q=0.1"}
        if body is not None:
            headers["Content-Type"] = body.content_type
        response = self.http.request(
            method, url, params=params, data=body, headers=headers, timeout=self.timeout, verify=self.verify,
            stream=True, allow_redirects=False, auth=self._credentials,
        )
        _check_framing(response, url)
        return response

    def _redirect_target(
        self, response: requests.Response, method: str, url: str, body: Optional[UploadBody]
    ) -> Optional[str]:
        """Where a safe redirect points (same origin, body kept), None for no redirect; RedirectError otherwise."""
        if response.status_code not in REDIRECT_STATUSES or "Location" not in response.headers:
            return None
        target = urljoin(response.url or url, response.headers["Location"])
        shown = without_userinfo(target)
        response.close()
        try:
            same_origin = origin(target) == origin(url)
        except ValueError:  # a Location with a port that is not one
            same_origin = False
        if not same_origin:
            downgrade = urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https"
            raise RedirectError(
                f"The server at {origin_text(url)} redirected to {shown}"
                + (", from https to plain http" if downgrade else ", another address")
                + "; ClaraAWS follows no such redirect, so nothing was sent there: use that address as the server URL only if you trust it.",
                status=response.status_code,
            )
        if body is not None and response.status_code not in (307, 308):
            raise RedirectError(
                f"The server at {origin_text(url)} answered the upload with a redirect (HTTP {response.status_code}) to {shown}, "
                "which would drop the upload; check the server URL and its path prefix.",
                status=response.status_code,
            )
        return target

    def _transport_error(self, url: str, error: requests.exceptions.RequestException) -> ServerError:
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
                f"Could not connect to {host} within {self.timeout[0]:g} s; check the URL, your network, and that "
                "the load balancer allows your IP address.",
                details=text,
            )
        if isinstance(error, requests.exceptions.ReadTimeout):
            return ServerTimeoutError(
                f"The server at {host} did not answer within {self.timeout[1]:g} s; it may still be working: "
                "raise the read timeout or try a smaller volume.",
                details=text,
            )
        if isinstance(error, requests.exceptions.ConnectionError):
            return ServerUnreachableError(_unreachable_message(url, error), details=text)
        disagreeing = re.search(r"Content-Length contained multiple unmatching values \(([^)]*)\)", text)
        if isinstance(error, requests.exceptions.InvalidHeader) and disagreeing:  # urllib3 refuses these itself
            return _framing_error(url, disagreeing.group(1), text)
        return ServerUnreachableError(
            f"The request to {host} failed before an answer arrived ({type(error).__name__}); try again.", details=text
        )

    def _deadline_error(self, url: str, error: Exception) -> ServerTimeoutError:
        return ServerTimeoutError(
            f"The request to {origin_text(url)} did not finish within the overall deadline of {self.deadline:g} s "
            "(the server or a proxy sends too slowly); try again, or raise the deadline for very large volumes.",
            details=str(error),
        )

    def _read_body(
        self,
        response: requests.Response,
        progress: Optional[ProgressCallback],
        cancel: Optional[CancelToken],
        max_bytes: int,
    ) -> bytes:
        """The response body, read in chunks so a progress bar can follow, a cancel can stop it and a flood ends."""
        total = _declared_length(response)
        host = origin_text(response.url)
        if total is not None and total > max_bytes:
            response.close()
            raise ResultTooLargeError(
                f"The answer from {host} would be {total / 1e6:.1f} MB, far more than the request can need "
                f"(at most {max_bytes / 1e6:.1f} MB); the server is faulty: nothing was changed."
            )
        chunks, received = [], 0
        try:
            for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                chunks.append(chunk)
                received += len(chunk)
                if received > max_bytes:
                    response.close()
                    raise ResultTooLargeError(
                        f"The answer from {host} grew past {max_bytes / 1e6:.1f} MB, far more than the request can need; "
                        "the server is faulty: nothing was changed."
                    )
                if progress is not None:
                    progress(received, total or 0)
                if cancel is not None and cancel.is_set():
                    response.close()
                    raise CancelledError("The download was cancelled; nothing was changed.")
        except requests.exceptions.ConnectionError as error:
            if "timed out" in str(error).lower():
                raise ServerTimeoutError(
                    f"The result from {host} stopped arriving for {self.timeout[1]:g} s; try again.", details=str(error)
                ) from error
            raise ServerUnreachableError(
                f"The connection to {host} broke while the answer was downloading; try again.", details=str(error)
            ) from error
        except requests.exceptions.RequestException as error:  # e.g. a body shorter than announced
            raise MalformedResponseError(
                f"The answer from {host} arrived incomplete (the connection was cut off); try again.", details=str(error)
            ) from error
        if total and received < total:  # older urllib3 versions end the stream quietly
            raise MalformedResponseError(
                f"The answer from {host} arrived incomplete ({received} of {total} bytes); try again."
            )
        return b"".join(chunks)

    def _json(self, answer: "_Answer", path: str) -> Any:
        text = answer.content.decode("utf-8", errors="replace")
        try:
            return json.loads(text)
        except ValueError as error:
            if _cut_off_json(text):
                raise MalformedResponseError(
                    f"The server's answer to {path} ends in the middle of its JSON (the body was cut off); try again.",
                    details=text[:500],
                ) from error
            raise MalformedResponseError(
                f"The server answered {path} with something that is not JSON; check that the URL points at an AIAA server.",
                details=text[:500],
            ) from error


@dataclass
class _Answer:
    response: requests.Response
    content: bytes
    headers_at: float
    finished_at: float
    body: Optional[UploadBody] = None  # the body that went out (a Content-Length one after a refused chunked upload)


# --- helpers --------------------------------------------------------------------------------


def _is_set(cancel: Optional[CancelToken]) -> bool:
    return cancel is not None and cancel.is_set()


def _index_points(points: Sequence[Point], what: str) -> List[List[int]]:
    result = []
    for number, point in enumerate(points or (), start=1):
        values = list(point)
        if len(values) != 3:
            raise InputError(f"The {what} {number} has {len(values)} coordinates; points are voxel indices [i, j, k].")
        try:
            result.append([int(round(float(v))) for v in values])
        except (TypeError, ValueError) as error:
            raise InputError(f"The {what} {number} ({values}) is not numeric; points are voxel indices [i, j, k].") from error
    return result


def _normalise_model(model: Dict[str, Any]) -> Dict[str, Any]:
    model = dict(model)
    name = model.get("name")
    if not isinstance(name, str) or not name.strip():
        raise MalformedResponseError(
            f"The server lists a model whose name is {json.dumps(name)[:40]}, not a text; the server's model list is malformed."
        )
    # Servers differ in case ("DeepGrow"); the protocol's types are lower case.
    model["type"] = str(model.get("type") or "others").strip().lower()
    description = model.get("description")
    model["description"] = description if isinstance(description, str) else ""
    labels = model.get("labels") or []
    if isinstance(labels, dict):  # some servers map label values to names
        labels = [name for _, name in sorted(labels.items(), key=lambda item: int(item[1]) if str(item[1]).isdigit() else 0)]
    if not isinstance(labels, (list, tuple)) or not all(isinstance(label, (str, int, float)) for label in labels):
        raise MalformedResponseError(
            f"The server lists the labels of model '{name}' as {json.dumps(labels)[:40]}, not a list of names; "
            "the server's model list is malformed."
        )
    model["labels"] = [str(label) for label in labels]
    return model


def _cut_off_json(text: str) -> bool:
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


def _session_path(session_id: str) -> str:
    """``/session/<id>``, for an id of safe characters only (a server's id could otherwise rewrite the path)."""
    if not isinstance(session_id, str) or not SESSION_ID_PATTERN.fullmatch(session_id):
        raise MalformedResponseError(
            f"The server sent the session id {json.dumps(session_id)[:60]}, which holds characters a session id "
            "may not (letters, digits and . _ ~ - only); the server is faulty or hostile."
        )
    return "/session/" + quote(session_id, safe="")


_CONTENT_LENGTH = re.compile(r"[0-9]+")


def _check_framing(response: requests.Response, url: str) -> None:
    """Refuse an answer whose Content-Length is not a number (or a list of one number repeated, RFC 9110 §8.6).

    RFC 9112 §6.3 makes such framing an unrecoverable error: neither side can know where the answer ends,
    so a body read "to the close" may be cut short or hold a smuggled second answer. http.client and urllib3
    would quietly read to the close instead.
    """
    declared = response.headers.get("Content-Length")
    if declared is None:
        return
    values = {value.strip() for value in declared.split(",")}
    if len(values) == 1 and _CONTENT_LENGTH.fullmatch(next(iter(values))):
        return
    response.close()
    raise _framing_error(url, declared)


def _framing_error(url: str, declared: str, details: str = "") -> MalformedResponseError:
    shown = declared if len(declared) <= 40 else declared[:40] + "..."
    return MalformedResponseError(
        f"The server at {origin_text(url)} answered with an invalid Content-Length ({shown!r}), so where its answer "
        "ends cannot be known (RFC 9112 §6.3); the answer was refused and nothing was changed: check the server "
        "or the proxy in front of it.",
        details=details,
    )


def _declared_length(response: requests.Response) -> Optional[int]:
    """The Content-Length a response announces, None when it gives none or nonsense (then the body decides)."""
    try:
        length = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None


def _parse_work_response(content_type: str, content: bytes, endpoint: str) -> AIAAResult:
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith("multipart/"):
        parts = parse_multipart(content_type, content)
        files = [p for p in parts if p.filename]
        if len(files) > 1:
            raise MalformedResponseError(
                f"The server sent {len(files)} result files where the protocol allows one; the response is malformed."
            )
        params: Dict[str, Any] = {}
        for part in parts:
            if not part.filename and part.name in ("params", "result", "results"):
                params = _json_object(part.data, "result parameters")
        file = files[0] if files else None
        return AIAAResult(params, file.filename if file else None, file.data if file else None)
    if kind in ("application/json", "text/json") or kind.endswith("+json"):
        return AIAAResult(_json_object(content, "answer"))
    if content[:2] == b"\x1f\x8b" or content[:4] == b"NRRD" or content[344:347] == b"n+1":
        return AIAAResult({}, f"result{'.nrrd' if content[:4] == b'NRRD' else '.nii.gz'}", content)
    raise MalformedResponseError(
        f"The server answered /v1/{endpoint} with '{kind or 'no content type'}' instead of a result image; "
        "the response is malformed.",
        details=content[:300].decode("utf-8", errors="replace"),
    )


def _json_object(data: bytes, what: str) -> Dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError) as error:
        raise MalformedResponseError(f"The server's {what} are not valid JSON; the response is malformed.") from error
    if not isinstance(value, dict):
        raise MalformedResponseError(f"The server's {what} are not a JSON object; the response is malformed.")
    return value


def _unreachable_message(url: str, error: Exception) -> str:
    text = str(error)
    if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo failed" in text or "NameResolution" in text:
        return f"The host name of {origin_text(url)} could not be resolved; check the spelling of the server URL."
    if "refused" in text.lower():
        return f"Nothing is listening at {origin_text(url)} (connection refused); check the URL and port, and that the server is running."
    if "reset" in text.lower() or "aborted" in text.lower() or "RemoteDisconnected" in text:
        if url.startswith("http://") and answers_tls(url):
            https = origin_text(url).replace("http://", "https://", 1)
            return f"{origin_text(url)} speaks HTTPS, not plain HTTP; use {https} as the server URL."
        return f"The connection to {origin_text(url)} was closed before the server answered; the server may have restarted: try again."
    return f"Could not reach the AIAA server at {origin_text(url)}; check the URL and that the server is running."


def _error_text(response: requests.Response) -> str:
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


def _server_message(text: str) -> Optional[str]:
    """The message of an AIAA error JSON (``{"error": {"message": [...]}}``), if the body is one."""
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


def _status_error(response: requests.Response, url: str, what: str, body_bytes: int) -> ServerError:
    status = response.status_code
    text = _error_text(response)
    message = _server_message(text)
    details = message or text[:500]
    host = origin_text(url)
    path = urlsplit(url).path
    if status == SESSION_EXPIRED_STATUS:
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
            f"The upload of {body_bytes / 1e6:.1f} MB was refused as too large (HTTP 413) by a proxy in front of the server; "
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
    return RemoteError(f"The server answered {path} with HTTP {status} {response.reason or ''}".rstrip() + "; see the details or the server log.", status=status, details=details)
