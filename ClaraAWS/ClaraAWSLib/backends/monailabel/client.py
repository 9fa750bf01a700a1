"""The MONAI Label protocol (0.8.x REST API): what ClaraAWS sends to a MONAI Label server and how it reads
the answers.

The protocol as ClaraAWS speaks it is described in ``docs/monailabel-protocol.md``. The wire is every
backend's (``backends.transport``: verified TLS, same-origin redirects only, the overall deadline, bounded
answers, no secrets in messages); this module adds the MONAI Label paths and turns the server's bare
``500 Internal Server Error`` answers into one sentence that says what most likely went wrong.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Mapping, Optional, Union
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
    UnknownModelError,
)
from ...core.imageio import result_byte_limit
from ...core.multipart import CancelToken, FilePart, MultipartBody, ProgressCallback
from ..results import ImageSession
from ..rules import session_path
from ..transport import BytesBody, HttpTransport, ImageInput, as_encoded_image, origin_text, upload_name
from .answers import (
    RESULT_PARAMS,
    MONAILabelResult,
    bare_500,
    check_clicks_inside,
    is_bare_500,
    label_map,
    normalise_model,
    parse_infer_response,
    validation_text,
)
from .learning import ActiveLearningCalls

#: A volume held by the server (``PUT /session/``): the shared session record serves as it is.
MONAILabelSession = ImageSession


class MONAILabelClient(ActiveLearningCalls):
    """A connection to one MONAI Label server (base URL with an optional path prefix, e.g. behind a proxy)."""

    def __init__(self, base_url: str, *, username: Optional[str] = None, password: Optional[str] = None,
                 token: Optional[str] = None, **transport: Any) -> None:
        """``transport``: the wire's options (verify, headers, connect_timeout, read_timeout, http_session,
        deadline; ``backends.transport.HttpTransport``); ``username``/``password`` log in, ``token`` is a
        bearer token already held."""
        transport.pop("adaptive_level", None)  # an AIAA upload option: MONAI Label uploads are not streamed
        self.transport = HttpTransport(base_url, server_kind="MONAI Label", **transport)
        self.base_url = self.transport.base_url
        self._info: Optional[Dict[str, Any]] = None
        if token:
            self._set_token(token)
        elif username:
            self.login(username, password or "")

    # --- lifecycle -----------------------------------------------------------------------------------
    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "MONAILabelClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_plain_http(self) -> bool:
        return self.transport.is_plain_http

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
        body = BytesBody(form, "application/x-www-form-urlencoded")
        try:
            answer = self.transport.json(self._call("POST", "/auth/token", body=body, what="the login"), "/auth/token")
        except NotFoundError as error:
            # MONAI Label has its /auth/ routes only with auth on; a wrong URL fails to describe itself here.
            self.info()
            raise InputError(f"The MONAI Label server at {self._host} has authentication turned off; drop --username.",
                             details=error.details) from error
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
        self.transport.http.headers["Authorization"] = f"Bearer {token}"

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
        raise UnknownModelError(f"The server has no model named '{name}'; list the models to see what it offers.")

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
        check_clicks_inside(payload, grid)
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
        file = FilePart("file", upload_name(encoded.suffix), encoded.data) if encoded is not None else None
        body = MultipartBody({"params": json.dumps(params)}, file, progress=progress, cancel=cancel)
        grid = encoded.grid if encoded is not None else session.image.grid
        started = time.perf_counter()
        path = "/infer/" + quote(model, safe="")
        try:
            answer = self._call("POST", path, params=query, body=body, cancel=cancel, what=f"model '{model}'",
                                download_progress=download_progress, max_bytes=result_byte_limit(grid))
        except RemoteError as error:
            if not is_bare_500(error):
                raise
            if session is not None and not self._session_exists(session):
                raise SessionExpiredError("The server no longer holds this volume (session gone); it will be sent again.",
                                          status=500, details=error.details) from error
            raise bare_500(
                error,
                f"The MONAI Label server failed to run model '{model}' (a bare HTTP 500): the model may not exist any "
                "more, or it could not read the volume or the clicks; see the server's log (GET /logs/).",
            ) from error
        upload_end = body.finished_at or started
        result = parse_infer_response(answer.response.headers.get("Content-Type", ""), answer.content, model)
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
        path = session_path(session.session_id if isinstance(session, MONAILabelSession) else session)
        try:
            self._call("DELETE", path, what="the session")
        except NotFoundError:
            return False
        return True

    def _session_exists(self, session: MONAILabelSession) -> bool:
        try:
            self._call("GET", session_path(session.session_id), what="the session")
        except NotFoundError:
            return False
        except ServerError:
            return True  # cannot tell: report the original failure rather than upload again
        return True

    def _recreate_session(self, session: MONAILabelSession, progress, cancel) -> None:
        file = FilePart("files", upload_name(session.image.suffix), session.image.data)
        body = MultipartBody({}, file, progress=progress, cancel=cancel)
        query = {"expiry": session.expiry} if session.expiry else None
        try:
            answer = self.transport.json(self._call("PUT", "/session/", params=query, body=body, cancel=cancel,
                                                what="a session"), "/session/")
        except RemoteError as error:
            if is_bare_500(error):
                raise bare_500(error, "The MONAI Label server could not store the volume in a session (a bare HTTP 500); "
                                "it may be out of disk space: see its log (GET /logs/).") from error
            raise
        if not isinstance(answer, dict) or not answer.get("session_id"):
            raise MalformedResponseError("The server created a session but sent no session_id; the response is malformed.")
        session_id = str(answer["session_id"])
        session_path(session_id)  # refuses an id that could change a request path
        session.session_id, session.info = session_id, answer
        session.uploads += 1

    # --- datastore and active learning ------------------------------------------------------------------


    # --- training --------------------------------------------------------------------------------------


    # --- HTTP --------------------------------------------------------------------------------------------
    @property
    def _host(self) -> str:
        return origin_text(self.base_url)

    def _get_json(self, path: str, what: str, params: Optional[Mapping[str, Any]] = None) -> Any:
        return self.transport.json(self._call("GET", path, params=params, what=what), path)

    def _drop_kept_connections(self) -> None:
        # uvicorn closes the connection after a bare 500 without saying so; a kept-alive connection reused
        # before its close arrives fails the next request (a POST cannot be resent), so none is kept.
        for adapter in self.transport.http.adapters.values():
            adapter.close()

    def _call(self, method: str, path: str, **options: Any):
        """One request through the shared transport; MONAI Label's 401/403 and 422 get their own sentences."""
        try:
            try:
                return self.transport.request(method, path, **options)
            except ServerUnreachableError:
                # uvicorn drops the kept-alive connection after a bare 500; a read may simply be sent again.
                if method not in ("GET", "HEAD"):
                    raise
                return self.transport.request(method, path, **options)
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
                    f"The MONAI Label server refused the request to {path} as malformed (HTTP 422: {validation_text(error)}); "
                    "this server version may expect other fields: please report it.",
                    status=422, details=error.details,
                ) from error
            raise
