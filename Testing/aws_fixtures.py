"""Fixtures for AWS discovery tests: a moto server on 127.0.0.1, an isolated AWS environment, stack helpers,
and a throttling proxy (a real HTTP server in front of moto that answers like a rate-limited CloudFormation).

Nothing here reaches the internet: the moto server and the proxy listen on 127.0.0.1, and the environment
points every AWS client without an explicit endpoint at a closed local port.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

TEMPLATE_DIR = Path(__file__).parent / "data" / "cfn"
FAKE_KEY_ID = "testing"
#: Distinctive, so tests can assert it never appears in messages or logs.
FAKE_SECRET = "fake-secret-never-shown-7f3a"


def template_body(name: str) -> str:
    """The text of Testing/data/cfn/<name>.yaml."""
    return (TEMPLATE_DIR / f"{name}.yaml").read_text(encoding="utf-8")


def closed_local_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(endpoint: str, path: str, body: bytes = b"") -> bytes:
    parts = urlsplit(endpoint)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("POST", path, body=body)
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"moto {path} answered {response.status}")
        return data
    finally:
        connection.close()


def reset_moto(endpoint: str) -> None:
    """Forget every resource and turn IAM enforcement off again."""
    _post(endpoint, "/moto-api/reset")
    _post(endpoint, "/moto-api/reset-auth", b"inf")


def enforce_iam_after(endpoint: str, unauthenticated_requests: int) -> None:
    """moto checks IAM permissions for every request after the next ``unauthenticated_requests``."""
    _post(endpoint, "/moto-api/reset-auth", str(unauthenticated_requests).encode())


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One moto server for the whole session, on 127.0.0.1 and a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_endpoint(moto_server: str) -> Iterator[str]:
    """The moto server's endpoint, emptied before the test and again after it (IAM enforcement off)."""
    reset_moto(moto_server)
    yield moto_server
    reset_moto(moto_server)


@dataclass
class AwsEnv:
    """An AWS configuration that lives in a temporary directory."""

    home: Path
    config_file: Path
    credentials_file: Path
    monkeypatch: pytest.MonkeyPatch

    def write_config(self, text: str) -> None:
        self.config_file.write_text(text, encoding="utf-8")

    def write_credentials(self, text: str) -> None:
        self.credentials_file.write_text(text, encoding="utf-8")

    def drop_keys(self) -> None:
        """Remove the fake keys from the environment (for no-credentials and profile tests)."""
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            self.monkeypatch.delenv(name, raising=False)

    @property
    def sso_cache(self) -> Path:
        path = self.home / ".aws" / "sso" / "cache"
        path.mkdir(parents=True, exist_ok=True)
        return path


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AwsEnv:
    """Fake credentials in the environment, empty config files in tmp, no region, no IMDS probe.

    Every AWS_* variable of the developer is removed first, HOME moves to tmp (the SSO token cache
    lives under ~/.aws), and AWS_ENDPOINT_URL sends any client without an explicit endpoint to a closed
    local port, so that a forgotten endpoint_url can never reach real AWS.
    """
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    env = AwsEnv(home, tmp_path / "aws-config", tmp_path / "aws-credentials", monkeypatch)
    env.write_config("")
    env.write_credentials("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(env.config_file))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(env.credentials_file))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_local_port()}")
    return env


def cloudformation(endpoint: str, region: str = "us-east-1"):
    """A boto3 CloudFormation client for setting up test stacks in moto."""
    import boto3

    return boto3.client(
        "cloudformation",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=FAKE_KEY_ID,
        aws_secret_access_key=FAKE_SECRET,
    )


def create_stack(client, name: str, template: str, **parameters: str) -> str:
    """Create a stack from Testing/data/cfn/<template>.yaml; returns its stack id."""
    response = client.create_stack(
        StackName=name,
        TemplateBody=template_body(template),
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
    )
    return response["StackId"]


_THROTTLING_BODY = (
    '<ErrorResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">'
    "<Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
    "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
).encode()


class ThrottlingProxy:
    """Answers the first ``throttle`` CloudFormation requests with HTTP 400 ``Throttling`` (as the real
    service does when rate-limited) and forwards the rest to ``target``. Counts requests per Action.

    ``status``/``body``/``content_type`` replace the throttling answer (e.g. a proxy's HTML error page)."""

    def __init__(
        self,
        target: str,
        throttle: int,
        *,
        status: int = 400,
        body: bytes = _THROTTLING_BODY,
        content_type: str = "text/xml",
    ) -> None:
        self.target = urlsplit(target)
        self.remaining_throttles = throttle
        fault = (status, [("Content-Type", content_type)], body)
        self.actions: list = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                proxy._record(body)
                if proxy._take_throttle():
                    self._answer(*fault)
                else:
                    self._answer(*proxy._forward(self.command, self.path, dict(self.headers), body))

            def _answer(self, status: int, headers: list, body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _record(self, body: bytes) -> None:
        action = parse_qs(body.decode("utf-8", "replace")).get("Action", ["?"])[0]
        with self._lock:
            self.actions.append(action)

    def _take_throttle(self) -> bool:
        with self._lock:
            if self.remaining_throttles > 0:
                self.remaining_throttles -= 1
                return True
            return False

    def _forward(self, method: str, path: str, headers: dict, body: bytes) -> tuple:
        connection = http.client.HTTPConnection(self.target.hostname, self.target.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def __enter__(self) -> "ThrottlingProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def describe_stacks_calls(proxy: ThrottlingProxy) -> int:
    return sum(1 for action in proxy.actions if action == "DescribeStacks")
