"""The AIAA v1 protocol: what ClaraAWS sends to a Clara AIAA server and how it reads the answers.

The protocol is described in ``docs/aiaa-protocol.md``; this module is its only implementation on the
client side. Everything of the wire (the session, TLS, redirects, deadlines, bodies, error sentences) is
``backends.transport``'s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import requests

from ...core.compression import BackgroundEncode, choose_level, machine_speeds
from ...core.crop import BodyCrop, body_box, crop_volume
from ...core.errors import (
    CancelledError,
    InputError,
    MalformedResponseError,
    NotFoundError,
    SessionExpiredError,
    UnknownModelError,
)
from ...core.geometry import Volume
from ...core.imageio import EncodedImage, read_image_file, result_byte_limit
from ...core.multipart import CancelToken, MultipartBody, ProgressCallback
from ...core.server_text import one_line
from ..results import ImageSession, LabelResult, multipart_result
from ..rules import MIN_EXTREME_POINTS, check_points_inside, index_points, require_model_type, session_path
from ..transport import HttpTransport, ImageInput, as_encoded_image, json_object

AUTO_SEGMENTATION_TYPES = ("segmentation", "others", "pipeline")
ANNOTATION_TYPES = ("annotation",)
DEEPGROW_TYPES = ("deepgrow", "pipeline")
#: The AIAA server's answer for a session it no longer holds.
SESSION_EXPIRED_STATUS = 440
Point = Sequence[int]
#: An AIAA result: the shared result record (``backends.results``).
AIAAResult = LabelResult


MODEL_TYPES_FOR_TASK = {"auto": AUTO_SEGMENTATION_TYPES, "annotation": ANNOTATION_TYPES, "deepgrow": DEEPGROW_TYPES}
TASK_NAMES = {"auto": "auto-segmentation", "annotation": "extreme-point annotation", "deepgrow": "deepgrow clicks"}


#: Tasks of the seam that only MONAI Label serves: no AIAA model type takes them.
MONAI_LABEL_TASK_NAMES = {"deepedit": "deepedit (clicks for several labels at once)"}


def check_model_task(model: Mapping[str, Any], task: str) -> Mapping[str, Any]:
    """``model`` if its type fits the task ("auto", "annotation", "deepgrow"), else one readable InputError."""
    if task not in MODEL_TYPES_FOR_TASK:
        # No AIAA model type takes this task, whatever the model: say whose task it is.
        what = MONAI_LABEL_TASK_NAMES.get(task, task)
        raise InputError(f"{what[:1].upper()}{what[1:]} needs a MONAI Label server; an AIAA server has no model for it.")
    return require_model_type(model, MODEL_TYPES_FOR_TASK[task], TASK_NAMES[task])


class AIAAClient:
    """A connection to one AIAA server (base URL with an optional path prefix)."""

    def __init__(self, base_url: str, *, adaptive_level: bool = True, **transport: Any) -> None:
        """``transport``: the wire's options (verify, headers, connect_timeout, read_timeout, http_session,
        deadline, stream_uploads; ``backends.transport.HttpTransport``, with its defaults).

        ``adaptive_level`` compresses harder when earlier uploads to this server showed the link, not the
        CPU, to be the bottleneck. ``body_crop`` maps model names to a ``BodyCrop``: auto-segmentation with
        such a model sends only the body's box, and the result is placed back at its offset (off for every
        model by default).
        """
        self.transport = HttpTransport(base_url, server_kind="AIAA", session_expired_status=SESSION_EXPIRED_STATUS,
                                       **transport)
        self.base_url = self.transport.base_url
        self.adaptive_level = bool(adaptive_level)
        self.body_crop: Dict[str, BodyCrop] = {}

    # What the wire knows, under the names scripts and tests use.
    @property
    def wire(self):
        """This server's upload record: its measured throughput, whether it takes chunked bodies."""
        return self.transport.record

    @property
    def http(self) -> requests.Session:
        return self.transport.http

    @property
    def verify(self) -> Union[bool, str]:
        return self.transport.verify

    @property
    def timeout(self):
        return self.transport.timeout

    @property
    def deadline(self) -> Optional[float]:
        return self.transport.deadline

    @property
    def stream_uploads(self) -> bool:
        return self.transport.stream_uploads

    @property
    def is_plain_http(self) -> bool:
        return self.transport.is_plain_http

    # --- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "AIAAClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


    # --- models --------------------------------------------------------------------------
    def models(self, label: Optional[str] = None, type: Optional[str] = None) -> List[Dict[str, Any]]:
        query = {key: value for key, value in (("label", label), ("type", type)) if value}
        answer = self.transport.json(self.transport.request("GET", "/v1/models", params=query), "/v1/models")
        if isinstance(answer, dict):  # some servers answer a single model as an object
            answer = [answer]
        if not isinstance(answer, list) or not all(isinstance(m, dict) and "name" in m for m in answer):
            raise MalformedResponseError(
                f"The server at {self.base_url} did not list models in AIAA form; is it an AIAA server?"
            )
        return [_normalise_model(m) for m in answer]

    def model(self, name: str) -> Dict[str, Any]:
        try:
            answer = self.transport.json(self.transport.request("GET", "/v1/models", params={"model": name},
                                                                what=f"model '{name}'"), "/v1/models")
        except NotFoundError as error:
            # AIAA answers an unknown model 404, as it would a wrong address: the model list tells them apart.
            self.models()
            raise UnknownModelError(str(error), status=error.status, details=error.details) from None
        if isinstance(answer, list):
            # A server that ignores ?model= lists every model: the one asked for is among them.
            answer = next((m for m in answer if isinstance(m, dict) and m.get("name") == name), None)
        if not isinstance(answer, dict) or "name" not in answer:
            raise UnknownModelError(f"The server has no model named '{name}'; list the models to see what it offers.")
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
        points = index_points(points, "extreme point")
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
        foreground = index_points(foreground, "foreground point")
        background = index_points(background, "background point")
        if not foreground:
            raise InputError("Deepgrow needs at least one foreground point inside the structure; place one and try again.")
        params = dict(options.pop("params", None) or {}, foreground=foreground, background=background)
        if current_point is not None:
            params["current_point"] = index_points([current_point], "current point")[0]
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
        path = session_path(session.session_id if isinstance(session, ImageSession) else session)
        answer = self.transport.json(self.transport.request("GET", path, what="the session"), "/session/")
        if not isinstance(answer, dict):
            raise MalformedResponseError("The server's session information is not a JSON object; the response is malformed.")
        return answer

    def close_session(self, session: Union[ImageSession, str]) -> bool:
        path = session_path(session.session_id if isinstance(session, ImageSession) else session)
        try:
            self.transport.request("DELETE", path, what="the session")
        except SessionExpiredError:
            return False
        return True

    def _recreate_session(
        self, session: ImageSession, progress: Optional[ProgressCallback], cancel: Optional[CancelToken]
    ) -> None:
        body = self.transport.upload_body({"params": "{}"}, "image", session.image, progress, cancel)
        response = self.transport.request("PUT", "/session/", params={"expiry": session.expiry}, body=body, cancel=cancel)
        session.image = as_encoded_image(session.image)  # all sent, so all compressed: keep it for a re-upload
        answer = self.transport.json(response, "/session/")
        if not isinstance(answer, dict) or not answer.get("session_id"):
            raise MalformedResponseError("The server created a session but sent no session_id; the response is malformed.")
        session_id = str(answer["session_id"])
        session_path(session_id)  # refuses an id that could change the request path
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
            body = self.transport.upload_body(fields, "datapoint", encoded, progress, cancel)
        else:
            body = MultipartBody(fields, None, progress=progress, cancel=cancel)
        grid = encoded.grid if encoded is not None else session.image.grid
        started = time.perf_counter()
        answer = self.transport.request(
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


# --- helpers --------------------------------------------------------------------------------


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
    if isinstance(labels, dict):
        label_values = _label_values_of_map(name, labels)
        model["labels"] = list(label_values)  # in value order
        model["label_values"] = label_values
        return model
    if not isinstance(labels, (list, tuple)) or not all(isinstance(label, (str, int, float)) for label in labels):
        raise MalformedResponseError(
            f"The server lists the labels of model '{name}' as {json.dumps(labels)[:40]}, not a list of names; "
            "the server's model list is malformed."
        )
    model["labels"] = [str(label) for label in labels]
    # The protocol's own form: value v is labels[v-1].
    model["label_values"] = {label: position + 1 for position, label in enumerate(model["labels"])}
    return model


def _whole_number(value: Any) -> Optional[int]:
    """``value`` as a label value when it is a whole number (3, 3.0 or the text "3"), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value.strip())
    return None


def _label_values_of_map(model_name: str, labels: Mapping[Any, Any]) -> Dict[str, int]:
    """name -> value, in value order, of a model's labels given as a map rather than the protocol's list.

    Servers write such a map either way round: MONAI Label-style name -> value (``{"spleen": 1}``), some
    AIAA-era servers value -> name (``{"1": "spleen"}``). The numbers are the values in the result image,
    kept as given (they need not run 1..N). A map whose keys and values are all numbers could be read
    both ways, and one that mixes the forms neither, so both are refused rather than guessed.
    Background (value 0 or the name "background") names no segment and is left out, as for MONAI Label.
    """
    model_name = one_line(model_name, 60)  # names the server wrote go into messages as one clean line
    keys_as_values = {key: _whole_number(key) for key in labels}
    values = {key: _whole_number(value) for key, value in labels.items()}
    keys_are_values = all(number is not None for number in keys_as_values.values())
    values_are_values = all(number is not None for number in values.values())
    shown = json.dumps(labels)[:60]
    if keys_are_values and values_are_values:
        raise MalformedResponseError(
            f"The server lists the labels of model '{model_name}' as {shown}, numbers on both sides, so which "
            "are label values and which are names cannot be told; ask its operator to name the labels in text."
        )
    if values_are_values and not any(number is not None for number in keys_as_values.values()):
        pairs = [(str(key), values[key]) for key in labels]
    elif keys_are_values and all(isinstance(value, str) for value in labels.values()):
        pairs = [(str(value), keys_as_values[key]) for key, value in labels.items()]
    else:
        raise MalformedResponseError(
            f"The server lists the labels of model '{model_name}' as {shown}, neither names mapped to whole "
            "numbers nor whole numbers mapped to names; the server's model list is malformed."
        )
    named: Dict[str, int] = {}
    name_of_value: Dict[int, str] = {}
    for label, value in pairs:
        if value == 0 or label.strip().lower() == "background":
            continue
        shown_label = one_line(label, 40)
        if value < 0:
            raise MalformedResponseError(
                f"The server gives label '{shown_label}' of model '{model_name}' the value {value}, below zero, "
                "which no label image holds; the server's model list is malformed."
            )
        if label in named or value in name_of_value:
            other = f"'{shown_label}' both {named[label]} and {value}" if label in named else \
                f"{value} to both '{one_line(name_of_value[value], 40)}' and '{shown_label}'"
            raise MalformedResponseError(
                f"The server's labels of model '{model_name}' give {other}, so a result cannot be named "
                "without guessing; the server's model list is malformed."
            )
        named[label] = value
        name_of_value[value] = label
    return dict(sorted(named.items(), key=lambda item: item[1]))


def _parse_work_response(content_type: str, content: bytes, endpoint: str) -> AIAAResult:
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith("multipart/"):
        return multipart_result(AIAAResult, content_type, content, ("params", "result", "results"), f"/v1/{endpoint}")
    if kind in ("application/json", "text/json") or kind.endswith("+json"):
        return AIAAResult(json_object(content, "answer"))
    if content[:2] == b"\x1f\x8b" or content[:4] == b"NRRD" or content[344:347] == b"n+1":
        return AIAAResult({}, f"result{'.nrrd' if content[:4] == b'NRRD' else '.nii.gz'}", content)
    raise MalformedResponseError(
        f"The server answered /v1/{endpoint} with '{kind or 'no content type'}' instead of a result image; "
        "the response is malformed.",
        details=content[:300].decode("utf-8", errors="replace"),
    )


