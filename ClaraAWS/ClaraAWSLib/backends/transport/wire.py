"""The HTTP wire every backend stands on: one ``requests.Session`` per server, verified TLS, credentials for
their own origin only, same-origin redirects, an overall deadline and cancel, bounded and streamed bodies,
chunked uploads with the Content-Length fallback, and what it learnt of each server's uplink.

A session keeps the cookies its server sets, above all a load balancer's stickiness cookie (AWSALB), so that
an interactive session's clicks reach the task that holds its volume. A backend for self-contained requests
(``clara-aws batch``: one upload and inference each) keeps none (``keep_cookies=False``, or every transport
opened inside ``opening_without_cookies()``), so the balancer spreads its requests over every task, a task
that joins during the run included.

A protocol module (``aiaa.client``, ``monailabel.client``) says what to send and how to read the answer;
``HttpTransport.request`` does the rest and turns every failure into the project's typed errors
(``failures``), one sentence each.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Union
from urllib.parse import urljoin, urlsplit

import requests

from ... import __version__
from ...core.compression import BackgroundEncode, WireHistory
from ...core.errors import (
    CancelledError,
    InputError,
    MalformedResponseError,
    RedirectError,
    ResultTooLargeError,
    ServerError,
    ServerTimeoutError,
    ServerUnreachableError,
    release_frames,
)
from ...core.geometry import Volume
from ...core.imageio import EncodedImage, encode_volume, read_image_file
from ...core.server_text import one_line, secrets_of
from ...core.sizes import size_text
from ...core.multipart import CancelToken, FilePart, MultipartBody, ProgressCallback, StreamingMultipartBody
from .addresses import check_headers, origin, origin_text, split_credentials, without_userinfo
from .answers import Answer, check_framing, declared_length, parse_json
from .deadline import Deadline, DeadlineAdapter, positive_seconds
from .failures import deadline_error, status_error, transport_error

DEFAULT_CONNECT_TIMEOUT = 10.0
#: Inference on a large CT can take minutes without a byte on the wire.
DEFAULT_READ_TIMEOUT = 900.0
#: The longest a whole request may take, upload and download included, however the bytes trickle.
DEFAULT_DEADLINE = 3600.0
DOWNLOAD_CHUNK_BYTES = 1 << 20
#: JSON answers (model lists, session info) are small; a larger one is not a segmentation server's.
MAX_JSON_ANSWER_BYTES = 32 << 20
MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
#: Answers of a server that does not take a chunked body; the upload is then repeated with a Content-Length.
CHUNKED_REFUSED_STATUSES = (400, 411, 501)

ImageInput = Union[EncodedImage, BackgroundEncode, Volume, str, Path]
UploadBody = Union[MultipartBody, StreamingMultipartBody]


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



class RefuseAllCookies(http.cookiejar.DefaultCookiePolicy):
    """A cookie policy that stores no cookie a server sets and sends none."""

    def set_ok(self, cookie, request) -> bool:
        return False

    def return_ok(self, cookie, request) -> bool:
        return False

    def domain_return_ok(self, domain, request) -> bool:
        return False


_opening = threading.local()


@contextlib.contextmanager
def opening_without_cookies() -> Iterator[None]:
    """Every ``HttpTransport`` this thread opens inside the block keeps no cookies (unless told otherwise):
    for opening backends through a factory that takes no such option, as ``clara-aws batch`` does."""
    before = getattr(_opening, "keep_cookies", True)
    _opening.keep_cookies = False
    try:
        yield
    finally:
        _opening.keep_cookies = before


def keep_no_cookies(session: requests.Session) -> None:
    """Make ``session`` forget its cookies and refuse every cookie from now on."""
    session.cookies.set_policy(RefuseAllCookies())
    session.cookies.clear()


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



def upload_name(suffix: str) -> str:
    """A neutral generated upload name: never a node name, patient name or local path. (MONAI Label keeps the
    name's suffixes as its temp file's, so they are the lower-case image suffix.)"""
    return f"volume-{uuid.uuid4().hex[:12]}{suffix.lower()}"


def _is_set(cancel: Optional[CancelToken]) -> bool:
    return cancel is not None and cancel.is_set()


class BytesBody:
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


def json_body(value: Any) -> BytesBody:
    return BytesBody(json.dumps(value).encode("utf-8"), "application/json")


def check_ca_bundle(path: str) -> None:
    """InputError unless ``path`` is a file holding at least one PEM certificate (what OpenSSL loads from it)."""
    try:
        with open(path, "rb") as stream:
            start = stream.read(1 << 20)
    except OSError:
        raise InputError(f"The CA bundle {path} does not exist or cannot be read; give the path of a PEM file or "
                         "leave it empty.") from None
    if b"-----BEGIN CERTIFICATE-----" not in start and b"-----BEGIN TRUSTED CERTIFICATE-----" not in start:
        raise InputError(f"The CA bundle {path} holds no PEM certificate (a '-----BEGIN CERTIFICATE-----' block); give "
                         "the file of the certificate authority that signed the server's certificate.")


def _unusable_redirect(url: str, error: ValueError) -> RedirectError:
    return RedirectError(
        f"The server at {origin_text(url)} redirected to an address that is not a valid URL; ClaraAWS follows no such "
        "redirect, so nothing was sent there: check the server URL.",
        details=one_line(str(error)),
    )


class HttpTransport:
    """The wire to one server (base URL with an optional path prefix); ``server_kind`` names it in messages."""

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
        server_kind: str = "AIAA",
        session_expired_status: Optional[int] = None,
        keep_cookies: Optional[bool] = None,
    ) -> None:
        """``deadline`` bounds each whole request in seconds (None: no bound beyond the timeouts);
        ``stream_uploads`` sends a volume while it is being compressed (chunked; a server that refuses it gets
        a Content-Length upload from then on); ``keep_cookies`` False keeps no cookie a server (or a sticky
        load balancer) sets, for self-contained requests; None: True, or False inside ``opening_without_cookies``."""
        self.base_url, self._credentials = split_credentials(base_url)
        self.server_kind = server_kind
        self.session_expired_status = session_expired_status
        self.stream_uploads = bool(stream_uploads)
        self.record = server_wire(self.base_url)
        if isinstance(verify, str):
            check_ca_bundle(verify)
        self.verify = verify
        self.timeout = (positive_seconds(connect_timeout, "connect timeout"), positive_seconds(read_timeout, "read timeout"))
        self.deadline = None if deadline is None else positive_seconds(deadline, "deadline")
        extra_headers = check_headers(dict(headers or {}))
        self._secrets = secrets_of(self._credentials, extra_headers)
        self.http = http_session or requests.Session()
        if keep_cookies is None:
            keep_cookies = getattr(_opening, "keep_cookies", True)
        self.keeps_cookies = bool(keep_cookies)
        if not self.keeps_cookies:
            keep_no_cookies(self.http)
        adapter = DeadlineAdapter()
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)
        self.http.headers["User-Agent"] = f"ClaraAWS/{__version__}"
        self.http.headers.update(extra_headers)

    def close(self) -> None:
        self.http.close()

    @property
    def is_plain_http(self) -> bool:
        return self.base_url.startswith("http://")

    def json(self, answer: Answer, path: str) -> Any:
        return parse_json(answer.content, path, self.server_kind)

    def upload_body(
        self,
        fields: Dict[str, str],
        field_name: str,
        image: Union[EncodedImage, BackgroundEncode],
        progress: Optional[ProgressCallback],
        cancel: Optional[CancelToken],
    ) -> UploadBody:
        """A streamed body while ``image`` is still compressing (and the server takes chunked bodies), else one with a length."""
        # A neutral generated name: never a node name, patient name or local path.
        filename = upload_name(image.suffix)
        if isinstance(image, BackgroundEncode) and not image.done and self.stream_uploads and not self.record.chunked_refused:
            return StreamingMultipartBody(fields, field_name, filename, image, progress=progress, cancel=cancel)
        data = as_encoded_image(image).data
        return MultipartBody(fields, FilePart(field_name, filename, data), progress=progress, cancel=cancel)

    def _with_length(self, body: StreamingMultipartBody) -> MultipartBody:
        """The same upload as one body with a Content-Length (for a server that refused the chunked one)."""
        return MultipartBody(body.fields, FilePart(body.field_name, body.filename, as_encoded_image(body.source).data),
                             progress=body.progress, cancel=body.cancel)

    def request(
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
    ) -> Answer:
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
                    self.record.history.record(sent, seconds - waited, waited)
                if response.status_code >= 400:
                    raise status_error(response, url, what, body.size_bytes if body is not None else 0,
                                       self.session_expired_status, self._secrets)
                content = self.read_body(response, download_progress, cancel, max_bytes)
        except (requests.exceptions.RequestException, ServerError) as error:
            release_frames(error)
            if deadline.cancelled:
                raise CancelledError("The request was cancelled; nothing was changed.") from error
            if deadline.expired and not isinstance(error, ServerTimeoutError):
                raise deadline_error(url, error, self.deadline) from error
            if isinstance(error, ServerError):
                raise
            raise transport_error(url, error, self.timeout, self.server_kind) from error
        return Answer(response, content, headers_at, time.perf_counter(), body)

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
            self.record.chunked_refused = True
        fallback = self._with_length(body)
        retry = self._send(method, url, params, fallback)
        if status is None or (status == 400 and retry.status_code != 400):
            self.record.chunked_refused = True
        if self.record.chunked_refused:
            self.record.fallbacks += 1
        return retry, fallback

    def _send(self, method: str, url: str, params, body: Optional[UploadBody]) -> requests.Response:
        headers = {"Accept": "multipart/form-data, application/json;q=0.9, */*;q=0.1"}
        if body is not None:
            headers["Content-Type"] = body.content_type
        try:
            response = self.http.request(
                method, url, params=params, data=body, headers=headers, timeout=self.timeout, verify=self.verify,
                stream=True, allow_redirects=False, auth=self._credentials,
            )
        except ValueError as error:
            if isinstance(error, requests.exceptions.RequestException):
                raise
            # requests works out a redirect's next URL even when it follows none, and a Location that is no
            # URL (a port of 99999, an unclosed IPv6 bracket) fails there with a bare ValueError.
            raise _unusable_redirect(url, error) from None
        check_framing(response, url)
        return response

    def _redirect_target(
        self, response: requests.Response, method: str, url: str, body: Optional[UploadBody]
    ) -> Optional[str]:
        """Where a safe redirect points (same origin, body kept), None for no redirect; RedirectError otherwise."""
        if response.status_code not in REDIRECT_STATUSES or "Location" not in response.headers:
            return None
        response.close()
        try:
            target = urljoin(response.url or url, response.headers["Location"])
        except ValueError as error:
            raise _unusable_redirect(url, error) from None
        shown = one_line(without_userinfo(target), 200)
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

    def read_body(
        self,
        response: requests.Response,
        progress: Optional[ProgressCallback],
        cancel: Optional[CancelToken],
        max_bytes: int,
    ) -> bytes:
        """The response body, read in chunks so a progress bar can follow, a cancel can stop it and a flood ends."""
        total = declared_length(response)
        host = origin_text(response.url)
        if total is not None and total > max_bytes:
            response.close()
            raise ResultTooLargeError(
                f"The answer from {host} would be {size_text(total)}, far more than the request can need "
                f"(at most {size_text(max_bytes)}); the server is faulty: nothing was changed."
            )
        chunks, received = [], 0
        try:
            for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                chunks.append(chunk)
                received += len(chunk)
                if received > max_bytes:
                    response.close()
                    raise ResultTooLargeError(
                        f"The answer from {host} grew past {size_text(max_bytes)}, far more than the request can need; "
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
            if "InvalidChunkLength" in str(error):  # not a cut: the server's chunked framing is broken
                raise MalformedResponseError(
                    f"The answer from {host} has a chunk whose size is not a hexadecimal number, so where it ends "
                    "cannot be known (RFC 9112 §7.1); nothing was changed: check the server or the proxy in front of it.",
                    details=str(error)) from error
            raise MalformedResponseError(
                f"The answer from {host} arrived incomplete (the connection was cut off); try again.", details=str(error)
            ) from error
        if total and received < total:  # older urllib3 versions end the stream quietly
            raise MalformedResponseError(
                f"The answer from {host} arrived incomplete ({received} of {total} bytes); try again."
            )
        return b"".join(chunks)

