"""What each route of the reference server does, apart from HTTP plumbing (that is in app.py)."""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .bodies import BodyReader
from .gpu_play import GpuPlay
from .imagefiles import read_upload, write_labels
from .models import ImageCache, ModelInput, ModelRegistry
from .problems import BadRequest, InvalidImage, InvalidParams, ModelNotFound, WrongModelType
from .responses import Response, docs_page, json_response, multipart_result
from .sessions import SessionStore
from .stats import ServerStats
from .upload import FormData, boundary_of, parse_multipart
from .validation import parse_params, result_options

log = logging.getLogger("ClaraAWSLib.server")

#: Which model types each work endpoint runs; /v1/inference runs any (Slicer calls deepgrow through it).
ENDPOINT_MODEL_TYPES: Dict[str, Optional[Tuple[str, ...]]] = {
    "segmentation": ("segmentation",),
    "inference": None,
    "dextr3d": ("annotation",),
    "deepgrow": ("deepgrow",),
}
IMAGE_FIELD_NAMES = ("datapoint", "image")
SESSION_ID_CHARACTERS = re.compile(r"(?!\.+$)[A-Za-z0-9._~-]{1,256}")  # never only dots: ".." is a path step
MAX_JSON_BODY_BYTES = 16 * 1024 * 1024

ENDPOINT_SUMMARY = [
    "GET /docs/ - this page (health check)",
    "GET /v1/models[?label=NAME][&type=TYPE] - list models; ?model=NAME returns one",
    "POST /v1/segmentation?model=NAME[&session_id=ID] - multipart: params (JSON) + datapoint (image)",
    "POST /v1/inference?model=NAME[&session_id=ID] - any model type",
    "POST /v1/dextr3d?model=NAME[&session_id=ID] - params {\"points\": [[i,j,k], ...]} (6 or more)",
    "POST /v1/deepgrow?model=NAME[&session_id=ID] - params {\"foreground\": [...], \"background\": [...]}",
    "PUT /session/?expiry=SECONDS - multipart: image -> {\"session_id\": ...}",
    "GET /session/ID, DELETE /session/ID - session info, close",
]


@dataclass
class ServerContext:
    models: ModelRegistry
    sessions: SessionStore
    stats: ServerStats
    temp_root: Path
    max_upload_bytes: Optional[int] = None
    log_requests: bool = False
    max_image_voxels: Optional[int] = None
    #: A GPU task's latency and one-at-a-time model runs, played on the CPU (see gpu_play).
    gpu: GpuPlay = field(default_factory=GpuPlay)


@dataclass
class Request:
    method: str
    path: str
    query: Dict[str, List[str]]
    content_type: Optional[str]
    body: BodyReader
    temp_root: Path
    _temp_dir: Optional[Path] = field(default=None, repr=False)

    def temp_dir(self) -> Path:
        """A private directory for this request's files; app.py removes it after answering."""
        if self._temp_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="request-", dir=self.temp_root))
        return self._temp_dir

    def remove_temp_dir(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def query_value(self, name: str) -> Optional[str]:
        values = self.query.get(name)
        return values[0] if values else None


def read_form(request: Request) -> FormData:
    """The request's form: multipart parsed to disk, or a JSON body taken as params."""
    main_type = (request.content_type or "").split(";", 1)[0].strip().lower()
    if main_type == "application/json":
        data = bytearray()
        while True:
            piece = request.body.read(1 << 20)
            if not piece:
                break
            data += piece
            if len(data) > MAX_JSON_BODY_BYTES:
                raise BadRequest("The JSON request body is too large; send images as multipart file parts.")
        return FormData(fields={"params": data.decode("utf-8", errors="replace")})
    if not main_type and request.body.finished:
        return FormData()
    return parse_multipart(request.body.read, boundary_of(request.content_type), request.temp_dir())


# --- routes -----------------------------------------------------------------------------------
def docs(context: ServerContext, request: Request) -> Response:
    return docs_page(ENDPOINT_SUMMARY, context.models.infos())


def list_models(context: ServerContext, request: Request) -> Response:
    name = request.query_value("model")
    if name is not None:
        model = context.models.get(name)
        if model is None:
            raise ModelNotFound(_unknown_model(name, context))
        return json_response(model.info())
    return json_response(context.models.infos(label=request.query_value("label"), type_=request.query_value("type")))


def run_model(endpoint: str) -> Callable[[ServerContext, Request], Response]:
    allowed_types = ENDPOINT_MODEL_TYPES[endpoint]

    def handle(context: ServerContext, request: Request) -> Response:
        name = request.query_value("model")
        if not name:
            raise BadRequest(f"Add ?model=NAME to /v1/{endpoint}; GET /v1/models lists the models.")
        model = context.models.get(name)
        if model is None:
            raise ModelNotFound(_unknown_model(name, context))
        if allowed_types is not None and model.type not in allowed_types:
            raise WrongModelType(
                f"Model {name!r} is of type {model.type!r}; /v1/{endpoint} runs only {' or '.join(allowed_types)} "
                "models (use /v1/inference for any type)."
            )
        session_id = request.query_value("session_id")
        session = context.sessions.get(session_id) if session_id else None

        form = read_form(request)
        context.stats.add_image_uploads(len(form.files))
        params = parse_params(form.fields.get("params"))
        extension, dtype, compress = result_options(params)
        if session is not None:
            image, cache = session.image, session.cache
        else:
            upload = form.file(*IMAGE_FIELD_NAMES) or (form.files[0] if form.files else None)
            if upload is None:
                raise BadRequest(
                    "The request has no image: send a file part named 'datapoint' (or 'image'), or add "
                    "&session_id=ID of a session created with PUT /session/."
                )
            image, cache = read_upload(upload, context.max_image_voxels), ImageCache()

        with context.gpu.slot():
            started = time.perf_counter()
            context.gpu.latency()
            output = model.run(ModelInput(image, params, cache))
            elapsed = time.perf_counter() - started
        _check_labels(output.labels, image.GetSize(), dtype, name)

        result_path = request.temp_dir() / f"result{extension}"
        write_labels(output.labels, image, result_path, dtype, compress)
        result_params = dict(output.params)
        result_params.setdefault("model", name)
        result_params.setdefault("elapsed", round(elapsed, 4))
        return multipart_result(_json_safe(result_params), result_path, f"result-{uuid.uuid4().hex}{extension}")

    return handle


def create_session(context: ServerContext, request: Request) -> Response:
    raw_expiry = request.query_value("expiry")
    try:
        requested = int(raw_expiry) if raw_expiry not in (None, "") else None
    except ValueError:
        raise InvalidParams(f"expiry={raw_expiry!r} is not a whole number of seconds.") from None
    context.sessions.applied_expiry(requested)  # reject a bad expiry before reading the upload
    form = read_form(request)
    context.stats.add_image_uploads(len(form.files))
    upload = form.file("image", "datapoint") or (form.files[0] if form.files else None)
    if upload is None:
        raise BadRequest("PUT /session/ needs the volume as a file part named 'image'.")
    image = read_upload(upload, context.max_image_voxels)
    session = context.sessions.create(image, requested_expiry=requested, upload_bytes=upload.size)
    context.stats.add_session()
    return json_response(context.sessions.info(session))


def session_info(context: ServerContext, request: Request) -> Response:
    session = context.sessions.get(_session_id(request))
    return json_response(context.sessions.info(session))


def delete_session(context: ServerContext, request: Request) -> Response:
    session_id = _session_id(request)
    context.sessions.delete(session_id)
    return json_response({"session_id": session_id, "deleted": True})


# --- helpers ----------------------------------------------------------------------------------
def _session_id(request: Request) -> str:
    session_id = request.path[len("/session/"):].strip("/")
    if not session_id:
        raise BadRequest("Put the session id in the path: /session/ID.")
    if not SESSION_ID_CHARACTERS.fullmatch(session_id):
        raise BadRequest("A session id holds only letters, digits, '.', '_', '~' and '-' (not only dots); use the id PUT /session/ returned.")
    return session_id


def _unknown_model(name: str, context: ServerContext) -> str:
    known = ", ".join(context.models.names()) or "none"
    return f"Model {name!r} is not loaded on this server; available models: {known}."


def _check_labels(labels: np.ndarray, size, dtype: str, name: str) -> None:
    if labels.shape != tuple(reversed(size)):
        raise RuntimeError(f"model {name} returned labels of shape {labels.shape} for an image of size {size}")
    if dtype == "uint8" and labels.size and int(labels.max()) > 255:
        raise InvalidImage("The result has label values above 255; ask for result_dtype \"uint16\".")


def _json_safe(value):
    """Params as plain JSON types (NumPy scalars and tuples become numbers and lists)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else list(v)))
