"""The MONAI Label client: every HTTP call ClaraAWS makes to a MONAI Label server (0.8.x REST API).

The wire protocol as ClaraAWS speaks it is described in ``docs/monailabel-protocol.md``. The transport
is the AIAA client's own (``_Wire``: one ``requests.Session``, verified TLS, same-origin redirects only,
the overall deadline, bounded answers, no secrets in messages), so both backends keep the same safety
rules; this module adds the MONAI Label paths and turns the server's bare ``500 Internal Server
Error`` answers into one sentence that says what most likely went wrong.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union
from urllib.parse import quote, urlencode

from ...core.errors import (
    AuthorizationError,
    CancelledError,
    InputError,
    MalformedResponseError,
    NotFoundError,
    RemoteError,
    ServerError,
    ServerUnreachableError,
    SessionExpiredError,
)
from ...core.geometry import ImageGrid, LabelBox, Volume
from ...core.imageio import (
    EncodedImage,
    SliceLimit,
    decode_image,
    encode_volume,
    result_byte_limit,
)
from ...core.multipart import CancelToken, FilePart, MultipartBody, ProgressCallback, parse_multipart
from ..aiaa.client import (
    AIAAClient,
    AIAAResult,
    ImageInput,
    ImageSession,
    as_encoded_image,
    check_points_inside,
    _index_points,
    _session_path,
)

#: Datastore ids go into queries; ids ClaraAWS makes are ``clara-`` and 16 hex digits, never a name.
GENERATED_ID_PREFIX = "clara-"
#: A downloaded datastore image may be a whole CT: bound it like an upload of 1024^3 voxels, not like JSON.
MAX_IMAGE_BYTES = 8 << 30
#: What the server says for most failures, with no hint of which.
BARE_500 = "Internal Server Error"
TRAIN_STATUSES = ("SUBMITTED", "RUNNING", "DONE", "ERROR", "STOPPED")
_EPOCH_LINE = re.compile(r"Epoch\[(\d+)\] Complete")
#: Ask for small results: uint8 NRRD, gzip-compressed by the server (x49 smaller on a 96x96x64 mask).
RESULT_PARAMS = {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": True}
BACKGROUND = "background"


#: A volume held by the server (``PUT /session/``): the AIAA client's session record serves as it is.
MONAILabelSession = ImageSession


class MONAILabelResult(AIAAResult):
    """An inference answer; ``only_value`` keeps one label value (as 1): a deepedit model answers every
    label, a click edits one."""

    only_value: Optional[int] = None

    def labels(self, needed: Optional[SliceLimit] = None) -> Volume:
        volume = super().labels(needed)
        if self.only_value is None:
            return volume
        return Volume((volume.array == self.only_value).astype(volume.array.dtype), volume.grid)

    def label_box(self, needed: Optional[SliceLimit] = None) -> LabelBox:
        box = super().label_box(needed)
        if self.only_value is None:
            return box
        return LabelBox(box.grid, box.start, (box.array == self.only_value).astype(box.array.dtype))


@dataclass
class TrainingStatus:
    """The latest training run: ``status`` one of TRAIN_STATUSES, or "NONE" when none was ever started."""

    status: str
    model: str = ""
    epoch: Optional[int] = None
    total_epochs: Optional[int] = None
    best_metric: Optional[float] = None
    details: List[str] = field(default_factory=list)
    task_id: str = ""

    @property
    def finished(self) -> bool:
        return self.status in ("DONE", "ERROR", "STOPPED", "NONE")

    def as_dict(self) -> Dict[str, Any]:
        return {"status": self.status, "model": self.model, "epoch": self.epoch, "total_epochs": self.total_epochs,
                "best_metric": self.best_metric, "details": list(self.details), "id": self.task_id}

    def summary(self) -> str:
        text = self.status
        if self.epoch is not None and self.total_epochs:
            text += f", epoch {self.epoch} of {self.total_epochs}"
        if self.best_metric is not None:
            text += f", best metric {self.best_metric:.4f}"
        return text


class _BytesBody:
    """A small non-multipart request body (JSON, a form) that the wire can send and resend like MultipartBody."""

    def __init__(self, data: bytes, content_type: str) -> None:
        self._data = data
        self.content_type = content_type
        self._position = 0
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.clock = None  # too small to tell anything about the link: the wire's throughput history skips it

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        return len(self._data)

    def rewind(self) -> None:
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        if self.started_at is None:
            self.started_at = time.perf_counter()
        end = len(self._data) if size is None or size < 0 else self._position + size
        chunk = self._data[self._position : end]
        self._position += len(chunk)
        if self._position == len(self._data):
            self.finished_at = time.perf_counter()
        return chunk


def _json_body(value: Any) -> _BytesBody:
    return _BytesBody(json.dumps(value).encode("utf-8"), "application/json")


class _Wire(AIAAClient):
    """The AIAA client's transport (``_request``, ``_json``), used for MONAI Label paths only."""


def _generated_name(suffix: str) -> str:
    # A neutral generated upload name: never a node name, patient name or local path. MONAI Label keeps
    # the name's suffixes as the temp file's, so they must be the lower-case image suffix.
    return f"volume-{uuid.uuid4().hex[:12]}{suffix.lower()}"


def generated_image_id() -> str:
    return GENERATED_ID_PREFIX + uuid.uuid4().hex[:16]


def label_map(labels: Any) -> Dict[str, int]:
    """name -> value of a model's labels (a dict name->value, or a list whose value is position + 1); no background."""
    values: Dict[str, int] = {}
    if isinstance(labels, Mapping):
        for name, value in labels.items():
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise MalformedResponseError(
                    f"The server gives the label '{name}' the value {json.dumps(value)[:20]}, not a whole number; "
                    "its model list is malformed."
                ) from None
            if str(name).lower() != BACKGROUND and number != 0:
                values[str(name)] = number
    elif isinstance(labels, (list, tuple)):
        for position, name in enumerate(labels):
            if str(name).lower() != BACKGROUND:
                values[str(name)] = position + 1
    elif labels not in (None, ""):
        raise MalformedResponseError(
            f"The server lists labels as {json.dumps(labels)[:40]}, neither names nor a name-to-value map; "
            "its model list is malformed."
        )
    return values


def normalise_model(name: str, info: Mapping[str, Any]) -> Dict[str, Any]:
    """One ``/info/`` model as the seam lists models: name, type, labels in value order, label_values, description."""
    if not isinstance(info, Mapping):
        raise MalformedResponseError(f"The server describes model '{name}' as {json.dumps(info)[:40]}; its model list is malformed.")
    values = label_map(info.get("labels"))
    description = info.get("description")
    return {
        "name": str(name),
        "type": str(info.get("type") or "others").strip().lower(),
        "labels": [label for label, _ in sorted(values.items(), key=lambda item: item[1])],
        "label_values": values,
        "description": description if isinstance(description, str) else "",
        "dimension": info.get("dimension", 3),
        "config": info.get("config") if isinstance(info.get("config"), Mapping) else {},
    }


class MONAILabelClient:
    """A connection to one MONAI Label server (base URL with an optional path prefix, e.g. behind a proxy)."""

    def __init__(self, base_url: str, *, username: Optional[str] = None, password: Optional[str] = None,
                 token: Optional[str] = None, **transport: Any) -> None:
        """``transport``: the AIAA client's options (verify, headers, connect_timeout, read_timeout,
        http_session, deadline), with the same defaults; ``username``/``password`` log in, ``token`` is a
        bearer token already held."""
        self.wire = _Wire(base_url, **transport)
        self.base_url = self.wire.base_url
        self._info: Optional[Dict[str, Any]] = None
        if token:
            self._set_token(token)
        elif username:
            self.login(username, password or "")

    # --- lifecycle -----------------------------------------------------------------------------------
    def close(self) -> None:
        self.wire.close()

    def __enter__(self) -> "MONAILabelClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_plain_http(self) -> bool:
        return self.wire.is_plain_http

    # --- auth ----------------------------------------------------------------------------------------
    def auth_enabled(self) -> bool:
        """Whether the server has auth on (its /auth/ router exists only then)."""
        try:
            answer = self._get_json("/auth/", "the auth settings")
        except NotFoundError:
            return False
        return bool(isinstance(answer, dict) and answer.get("enabled"))

    def login(self, username: str, password: str) -> None:
        """Trade a user name and password for a bearer token (``POST /auth/token``); only the token is kept."""
        form = urlencode({"username": username, "password": password, "grant_type": "password"}).encode("ascii")
        body = _BytesBody(form, "application/x-www-form-urlencoded")
        try:
            answer = self.wire._json(self._call("POST", "/auth/token", body=body, what="the login"), "/auth/token")
        except (AuthorizationError, RemoteError) as error:
            raise AuthorizationError(
                f"The MONAI Label server at {self._host} refused the login of '{username}' (HTTP {error.status}); "
                "check the user name and password.", status=error.status, details=error.details,
            ) from error
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise MalformedResponseError("The server's login answer carries no access_token; the response is malformed.")
        self._set_token(token)

    def _set_token(self, token: str) -> None:
        self.wire.http.headers["Authorization"] = f"Bearer {token}"

    # --- info and models -------------------------------------------------------------------------------
    def info(self, refresh: bool = True) -> Dict[str, Any]:
        """``GET /info/``: models, trainers, strategies, train stats and datastore counts."""
        if self._info is None or refresh:
            answer = self._get_json("/info/", "the server information")
            if not isinstance(answer, dict) or not isinstance(answer.get("models"), dict):
                raise MalformedResponseError(
                    f"The server at {self._host} did not describe itself in MONAI Label form; is it a MONAI Label server?"
                )
            self._info = answer
        return self._info

    def models(self, label: Optional[str] = None, type: Optional[str] = None) -> List[Dict[str, Any]]:
        models = [normalise_model(name, model) for name, model in (self.info().get("models") or {}).items()]
        return [m for m in models if (not type or m["type"] == type.lower()) and (not label or label in m["labels"])]

    def model(self, name: str) -> Dict[str, Any]:
        for model in self.models():
            if model["name"] == name:
                return model
        raise NotFoundError(f"The server has no model named '{name}'; list the models to see what it offers.")

    def trainers(self) -> Dict[str, Dict[str, Any]]:
        """Trainer name -> {description, config, label_values}."""
        trainers = {}
        for name, trainer in (self.info().get("trainers") or {}).items():
            trainer = dict(trainer) if isinstance(trainer, Mapping) else {}
            trainer["label_values"] = label_map(trainer.get("labels"))
            trainers[str(name)] = trainer
        return trainers

    def label_values(self, name: Optional[str] = None) -> Dict[str, int]:
        """name -> value a submitted label uses: the named trainer's or model's, else the first trainer's
        (what training reads), else the first model's."""
        trainers = self.trainers()
        if name:
            if name in trainers:
                return dict(trainers[name]["label_values"])
            return dict(self.model(name)["label_values"])
        for values in [t["label_values"] for t in trainers.values()] + [m["label_values"] for m in self.models()]:
            if values:
                return dict(values)
        raise InputError("The server names no labels for its models or trainers; name a model whose labels to use.")

    def strategies(self) -> List[str]:
        return [str(name) for name in (self.info().get("strategies") or {})]

    # --- inference -------------------------------------------------------------------------------------
    def infer(
        self,
        model: str,
        image: Optional[ImageInput] = None,
        *,
        session: Optional[MONAILabelSession] = None,
        params: Optional[Mapping[str, Any]] = None,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelToken] = None,
        download_progress: Optional[ProgressCallback] = None,
        only_value: Optional[int] = None,
    ) -> MONAILabelResult:
        """``POST /infer/{model}`` with the image or a session; a session the server lost is sent again once."""
        if (image is None) == (session is None):
            raise InputError("Give either an image or an open session for a work call, not both or neither.")
        payload = dict(RESULT_PARAMS, **dict(params or {}))
        encoded, encode_seconds = None, 0.0
        if image is not None:
            started = time.perf_counter()
            encoded = as_encoded_image(image)
            encode_seconds = time.perf_counter() - started
        grid = encoded.grid if encoded is not None else session.image.grid
        _check_clicks_inside(payload, grid)
        try:
            result = self._infer_call(model, payload, encoded, session, progress, cancel, download_progress)
        except SessionExpiredError:
            self._recreate_session(session, progress, cancel)
            try:
                result = self._infer_call(model, payload, None, session, progress, cancel, download_progress)
            except SessionExpiredError as error:
                raise SessionExpiredError(
                    "The server dropped the volume again right after it was sent anew (session lost twice); "
                    "it may be short of disk or memory: try again later or ask its operator.",
                    status=error.status, details=error.details,
                ) from error
        result.timings["encode"] = encode_seconds
        result.input_grid = grid
        result.only_value = only_value
        return result

    def _infer_call(self, model, params, encoded, session, progress, cancel, download_progress) -> MONAILabelResult:
        query = {"session_id": session.session_id} if session is not None else None
        file = FilePart("file", _generated_name(encoded.suffix), encoded.data) if encoded is not None else None
        body = MultipartBody({"params": json.dumps(params)}, file, progress=progress, cancel=cancel)
        grid = encoded.grid if encoded is not None else session.image.grid
        started = time.perf_counter()
        path = "/infer/" + quote(model, safe="")
        try:
            answer = self._call("POST", path, params=query, body=body, cancel=cancel, what=f"model '{model}'",
                                download_progress=download_progress, max_bytes=result_byte_limit(grid))
        except RemoteError as error:
            if not _is_bare_500(error):
                raise
            if session is not None and not self._session_exists(session):
                raise SessionExpiredError("The server no longer holds this volume (session gone); it will be sent again.",
                                          status=500, details=error.details) from error
            raise _bare_500(
                error,
                f"The MONAI Label server failed to run model '{model}' (a bare HTTP 500): the model may not exist any "
                "more, or it could not read the volume or the clicks; see the server's log (GET /logs/).",
            ) from error
        upload_end = body.finished_at or started
        result = _parse_infer_response(answer.response.headers.get("Content-Type", ""), answer.content, model)
        result.bytes_sent = len(body)
        result.timings.update(upload=upload_end - (body.started_at or started),
                              wait=answer.headers_at - upload_end, download=answer.finished_at - answer.headers_at)
        if cancel is not None and cancel.is_set():
            raise CancelledError("The request was cancelled; nothing was changed.")
        return result

    # --- sessions --------------------------------------------------------------------------------------
    def create_session(self, image: ImageInput, expiry: int = 0, *, progress: Optional[ProgressCallback] = None,
                       cancel: Optional[CancelToken] = None) -> MONAILabelSession:
        session = MONAILabelSession(session_id="", image=as_encoded_image(image), expiry=int(expiry), uploads=0)
        self._recreate_session(session, progress, cancel)
        return session

    def close_session(self, session: Union[MONAILabelSession, str]) -> bool:
        path = _session_path(session.session_id if isinstance(session, MONAILabelSession) else session)
        try:
            self._call("DELETE", path, what="the session")
        except NotFoundError:
            return False
        return True

    def _session_exists(self, session: MONAILabelSession) -> bool:
        try:
            self._call("GET", _session_path(session.session_id), what="the session")
        except NotFoundError:
            return False
        except ServerError:
            return True  # cannot tell: report the original failure rather than upload again
        return True

    def _recreate_session(self, session: MONAILabelSession, progress, cancel) -> None:
        file = FilePart("files", _generated_name(session.image.suffix), session.image.data)
        body = MultipartBody({}, file, progress=progress, cancel=cancel)
        query = {"expiry": session.expiry} if session.expiry else None
        try:
            answer = self.wire._json(self._call("PUT", "/session/", params=query, body=body, cancel=cancel,
                                                what="a session"), "/session/")
        except RemoteError as error:
            if _is_bare_500(error):
                raise _bare_500(error, "The MONAI Label server could not store the volume in a session (a bare HTTP 500); "
                                "it may be out of disk space: see its log (GET /logs/).") from error
            raise
        if not isinstance(answer, dict) or not answer.get("session_id"):
            raise MalformedResponseError("The server created a session but sent no session_id; the response is malformed.")
        session_id = str(answer["session_id"])
        _session_path(session_id)  # refuses an id that could change a request path
        session.session_id, session.info = session_id, answer
        session.uploads += 1

    # --- datastore and active learning ------------------------------------------------------------------
    def next_sample(self, strategy: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """``POST /activelearning/{strategy}``: the next image to label ({id, name, ...}), None when all are labeled."""
        strategies = self.strategies()
        if strategy is None:
            if not strategies:
                raise InputError("The MONAI Label server offers no active-learning strategy; it cannot pick a next sample.")
            strategy = "random" if "random" in strategies else strategies[0]
        elif strategies and strategy not in strategies:
            raise InputError(f"The server has no strategy '{strategy}'; it offers {', '.join(strategies)}.")
        try:
            answer = self.wire._json(self._call("POST", "/activelearning/" + quote(strategy, safe=""),
                                                body=_json_body({"client_id": "clara-aws"}), what=f"strategy '{strategy}'"),
                                     "/activelearning/")
        except RemoteError as error:
            if _is_bare_500(error):
                raise _bare_500(error, f"The MONAI Label server failed to pick a sample with strategy '{strategy}' "
                                "(a bare HTTP 500); see its log (GET /logs/).") from error
            raise
        if not isinstance(answer, dict):
            raise MalformedResponseError("The server's next sample is not a JSON object; the response is malformed.")
        if not answer.get("id"):
            return None
        answer["id"] = str(answer["id"])
        return answer

    def download_image(self, image_id: str, *, progress: Optional[ProgressCallback] = None,
                       cancel: Optional[CancelToken] = None) -> Volume:
        """``GET /datastore/image?image=ID``: the datastore image as a Volume (its file's grid, exactly)."""
        answer = self._call("GET", "/datastore/image", params={"image": image_id}, cancel=cancel,
                            what=f"the datastore image '{image_id}'", download_progress=progress, max_bytes=MAX_IMAGE_BYTES)
        filename = _disposition_filename(answer.response.headers.get("Content-Disposition", "")) or ".nii.gz"
        return decode_image(answer.content, filename, max_voxels=MAX_IMAGE_BYTES)

    def upload_image(self, image: ImageInput, image_id: Optional[str] = None, *,
                     progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> str:
        """``PUT /datastore/image``: store an image permanently under a generated id (never a name); returns the id."""
        image_id = image_id or generated_image_id()
        encoded = as_encoded_image(image)
        body = MultipartBody({"params": json.dumps({"client_id": "clara-aws"})},
                             FilePart("file", _generated_name(encoded.suffix), encoded.data), progress=progress, cancel=cancel)
        try:
            answer = self.wire._json(self._call("PUT", "/datastore/image", params={"image": image_id}, body=body,
                                                cancel=cancel, what="the datastore"), "/datastore/image")
        except RemoteError as error:
            if _is_bare_500(error):
                raise _bare_500(error, "The MONAI Label server could not store the image in its datastore (a bare HTTP "
                                "500); it may be out of disk space or could not read the image: see its log.") from error
            raise
        return str(answer.get("image") or image_id) if isinstance(answer, dict) else image_id

    def save_label(self, image_id: str, labels: Union[Volume, EncodedImage], label_values: Mapping[str, int], *,
                   tag: str = "final", progress: Optional[ProgressCallback] = None,
                   cancel: Optional[CancelToken] = None) -> Dict[str, Any]:
        """``PUT /datastore/label?image=ID&tag=TAG``: a label image whose values are ``label_values`` (name -> value)."""
        encoded = labels if isinstance(labels, EncodedImage) else encode_volume(labels)
        params = {"label_info": [{"name": name, "idx": int(value)} for name, value in label_values.items()],
                  "client_id": "clara-aws"}
        body = MultipartBody({"params": json.dumps(params)},
                             FilePart("label", _generated_name(encoded.suffix), encoded.data), progress=progress, cancel=cancel)
        try:
            answer = self.wire._json(self._call("PUT", "/datastore/label", params={"image": image_id, "tag": tag},
                                                body=body, cancel=cancel, what="the datastore"), "/datastore/label")
        except RemoteError as error:
            if _is_bare_500(error):
                raise _bare_500(error, f"The MONAI Label server could not save the label of image '{image_id}' (a bare "
                                "HTTP 500): its datastore may have no image of that id; fetch a sample again.") from error
            raise
        return answer if isinstance(answer, dict) else {}

    def datastore_counts(self) -> Dict[str, Any]:
        """``GET /datastore/?output=stats``: {total, completed, label_tags}."""
        answer = self._get_json("/datastore/", "the datastore", params={"output": "stats"})
        if not isinstance(answer, dict):
            raise MalformedResponseError("The server's datastore counts are not a JSON object; the response is malformed.")
        return answer

    # --- training --------------------------------------------------------------------------------------
    def start_training(self, model: str, max_epochs: Optional[int] = None, **params: Any) -> Dict[str, Any]:
        """``POST /train/{model}`` with trainer params (e.g. max_epochs); the run goes on in the server's background."""
        trainers = self.trainers()
        if trainers and model not in trainers:
            raise InputError(f"The server has no trainer '{model}'; it trains {', '.join(trainers)}.")
        if max_epochs is not None:
            if int(max_epochs) < 1:
                raise InputError(f"--max-epochs must be at least 1, not {max_epochs}.")
            params["max_epochs"] = int(max_epochs)
        try:
            answer = self.wire._json(self._call("POST", "/train/" + quote(model, safe=""), body=_json_body(params),
                                                what=f"trainer '{model}'"), "/train/")
        except RemoteError as error:
            if error.status == 429:
                raise RemoteError("A training run is already going on the server; wait for it to end or stop it first.",
                                  status=429, details=error.details) from error
            if _is_bare_500(error):
                raise _bare_500(error, f"The MONAI Label server failed to start training '{model}' (a bare HTTP 500); "
                                "see its log.") from error
            raise
        return answer if isinstance(answer, dict) else {}

    def training_status(self) -> TrainingStatus:
        """The latest run (``GET /train/``) with its epoch and best metric (``/info/`` train_stats)."""
        try:
            task = self._get_json("/train/", "the training status")
        except NotFoundError:
            return TrainingStatus("NONE")
        if not isinstance(task, dict):
            raise MalformedResponseError("The server's training status is not a JSON object; the response is malformed.")
        status = str(task.get("status") or "").upper()
        request = task.get("request") if isinstance(task.get("request"), dict) else {}
        model = str(request.get("model") or "")
        details = [str(line) for line in (task.get("details") or [])][-20:]
        result = TrainingStatus(status, model=model, details=details, task_id=str(task.get("id") or ""))
        result.total_epochs = _int_or_none(request.get("max_epochs"))
        stats = (self.info().get("train_stats") or {}).get(model) or {}
        if result.finished and isinstance(stats, dict) and stats:
            result.epoch = _int_or_none(stats.get("epoch"))
            result.total_epochs = _int_or_none(stats.get("total_epochs")) or result.total_epochs
            result.best_metric = _float_or_none(stats.get("best_metric"))
        else:
            # While a run goes on, /info/'s train_stats may still be the previous run's: the epoch comes from
            # this run's own log lines (ignite's "Epoch[n] Complete"), the best metric once it ends.
            epochs = [int(m) for line in details for m in _EPOCH_LINE.findall(line)]
            result.epoch = max(epochs) if epochs else None
        if status not in TRAIN_STATUSES:
            raise MalformedResponseError(f"The server reports the training status {status!r}, which MONAI Label does not use.")
        return result

    def stop_training(self) -> bool:
        """``DELETE /train/``: True if a run was stopped, False if none was going."""
        answer = self.wire._json(self._call("DELETE", "/train/", what="the training"), "/train/")
        return isinstance(answer, dict) and bool(answer)

    def wait_for_training(self, *, poll_seconds: float = 2.0, timeout: Optional[float] = None,
                          report: Optional[Callable[[TrainingStatus], None]] = None, cancel: Optional[CancelToken] = None
                          ) -> TrainingStatus:
        """Poll the status until the run ends; ``report`` sees every status. A status poll answers late while the
        server runs an inference (it serves one request at a time), which is not an error."""
        started = time.monotonic()
        while True:
            status = self.training_status()
            if report is not None:
                report(status)
            if status.finished:
                return status
            if cancel is not None and cancel.is_set():
                raise CancelledError("Stopped waiting for the training; it goes on on the server.")
            if timeout is not None and time.monotonic() - started > timeout:
                raise ServerError(f"The training did not end within {timeout:g} s; it goes on on the server.")
            time.sleep(poll_seconds)

    # --- HTTP --------------------------------------------------------------------------------------------
    @property
    def _host(self) -> str:
        from ..transport import origin_text

        return origin_text(self.base_url)

    def _get_json(self, path: str, what: str, params: Optional[Mapping[str, Any]] = None) -> Any:
        return self.wire._json(self._call("GET", path, params=params, what=what), path)

    def _drop_kept_connections(self) -> None:
        # uvicorn closes the connection after a bare 500 without saying so; a kept-alive connection reused
        # before its close arrives fails the next request (a POST cannot be resent), so none is kept.
        for adapter in self.wire.http.adapters.values():
            adapter.close()

    def _call(self, method: str, path: str, **options: Any):
        """One request through the shared transport; MONAI Label's 401/403 and 422 get their own sentences."""
        try:
            try:
                return self.wire._request(method, path, **options)
            except ServerUnreachableError:
                # uvicorn drops the kept-alive connection after a bare 500; a read may simply be sent again.
                if method not in ("GET", "HEAD"):
                    raise
                return self.wire._request(method, path, **options)
        except AuthorizationError as error:
            raise AuthorizationError(
                f"The MONAI Label server at {self._host} refused access (HTTP {error.status}); it has auth on: "
                "log in with a user name and password (or give a token) that has the needed role.",
                status=error.status, details=error.details,
            ) from error
        except RemoteError as error:
            if (error.status or 0) >= 500:
                self._drop_kept_connections()
            if error.status == 422:
                raise RemoteError(
                    f"The MONAI Label server refused the request to {path} as malformed (HTTP 422: {_validation_text(error)}); "
                    "this server version may expect other fields: please report it.",
                    status=422, details=error.details,
                ) from error
            raise


# --- helpers --------------------------------------------------------------------------------------------


def _is_bare_500(error: ServerError) -> bool:
    return error.status == 500 and (error.details or "").strip() in ("", BARE_500)


def _bare_500(error: ServerError, sentence: str) -> RemoteError:
    return RemoteError(sentence, status=error.status, details=error.details)


def _validation_text(error: ServerError) -> str:
    """``field: message`` of FastAPI's validation answer, from the error's details when they are JSON."""
    try:
        detail = json.loads(error.details or "").get("detail")
    except (ValueError, AttributeError):
        return "no details"
    if isinstance(detail, list) and detail:
        first = detail[0] if isinstance(detail[0], dict) else {}
        where = ".".join(str(part) for part in first.get("loc", []) if part != "body")
        return f"{where or 'request'}: {first.get('msg', 'invalid')}"
    return str(detail)[:200] if detail else "no details"


def _check_clicks_inside(params: Mapping[str, Any], grid: ImageGrid) -> None:
    """Clicks must be voxels of the image as sent (MONAI Label silently ignores clicks outside it)."""
    check_points_inside(params, grid)
    for name, points in params.items():
        if name in ("foreground", "background") or not isinstance(points, list) or not points:
            continue
        if all(isinstance(p, list) and len(p) == 3 for p in points):  # a deepedit label's clicks
            check_points_inside({"foreground": points}, grid)


def click_params(clicks: Mapping[str, Sequence[Sequence[int]]], label_names: Sequence[str]) -> Dict[str, Any]:
    """DeepEdit's params: one click list per label name (empty for labels without clicks), background's too."""
    unknown = [name for name in clicks if name != BACKGROUND and name not in label_names]
    if unknown:
        raise InputError(
            f"The model has no label {', '.join(repr(n) for n in unknown)}; its labels are {', '.join(label_names)} "
            "(and 'background' for background clicks)."
        )
    params: Dict[str, Any] = {name: _index_points(clicks.get(name) or [], f"'{name}' click") for name in label_names}
    params[BACKGROUND] = _index_points(clicks.get(BACKGROUND) or [], "background click")
    if not any(params[name] for name in label_names):
        raise InputError("DeepEdit needs at least one click on a label (not only background clicks).")
    return params


def _disposition_filename(value: str) -> Optional[str]:
    if not value:
        return None
    message = Message()
    message["content-disposition"] = value
    name = message.get_filename()
    return name.rsplit("/", 1)[-1] if name else None


def _int_or_none(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float_or_none(value: Any) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _parse_infer_response(content_type: str, content: bytes, model: str) -> MONAILabelResult:
    """The result JSON and the mask file: a multipart answer's part with a filename is the mask, wherever it is."""
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith("multipart/"):
        parts = parse_multipart(content_type, content)
        files = [part for part in parts if part.filename]
        if len(files) > 1:
            raise MalformedResponseError(f"The server sent {len(files)} result files for model '{model}' where one is expected.")
        params: Dict[str, Any] = {}
        for part in parts:
            if not part.filename and part.name == "params":
                params = _json_object(part.data)
        file = files[0] if files else None
        return MONAILabelResult(params, file.filename if file else None, file.data if file else None)
    if kind == "application/json":
        return MONAILabelResult(_json_object(content))
    if kind == "application/octet-stream":
        return MONAILabelResult({}, "result.nrrd" if content[:4] == b"NRRD" else "result.nii.gz", content)
    raise MalformedResponseError(
        f"The server answered /infer/{model} with '{kind or 'no content type'}' instead of a result; the response is malformed.",
        details=content[:300].decode("utf-8", errors="replace"),
    )


def _json_object(data: bytes) -> Dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError) as error:
        raise MalformedResponseError("The server's result parameters are not valid JSON; the response is malformed.") from error
    if not isinstance(value, dict):
        raise MalformedResponseError("The server's result parameters are not a JSON object; the response is malformed.")
    return value
