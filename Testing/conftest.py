"""Shared fixtures: real servers on 127.0.0.1 and small synthetic volumes with awkward geometry."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import ssl
from pathlib import Path

import numpy as np
import pytest

from ClaraAWSLib.core.geometry import ImageGrid, Volume


def rotation(degrees_x: float, degrees_y: float, degrees_z: float) -> np.ndarray:
    x, y, z = np.radians([degrees_x, degrees_y, degrees_z])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.fixture(scope="session")
def oblique_grid() -> ImageGrid:
    """Oblique, anisotropic, non-zero origin: every geometry mistake shows."""
    return ImageGrid((48, 40, 24), (0.9, 1.3, 2.7), (-101.25, 57.5, -312.75), rotation(12, -7, 25))


@pytest.fixture(scope="session")
def oblique_volume(oblique_grid) -> Volume:
    rng = np.random.default_rng(7)
    k, j, i = np.indices(oblique_grid.size[::-1])
    array = (rng.normal(0, 5, size=k.shape) + 300 * (((i - 20) / 9) ** 2 + ((j - 18) / 7) ** 2 + ((k - 11) / 5) ** 2 < 1)).astype(np.int16)
    return Volume(array, oblique_grid)


@contextlib.contextmanager
def running_reference_server(**options):
    """Our reference AIAA server on 127.0.0.1 and a free port, stopped afterwards."""
    from ClaraAWSLib.server import ReferenceServer

    server = ReferenceServer(host="127.0.0.1", port=0, **options).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def reference_server():
    with running_reference_server() as server:
        yield server


@pytest.fixture(scope="session")
def phantom_small():
    from ClaraAWSLib.synthetic.phantom import make_phantom

    return make_phantom(size=(96, 96, 40), spacing=(3.2, 3.2, 6.0), seed=3)


@pytest.fixture(scope="session")
def self_signed_certificate(tmp_path_factory):
    """A CA-less self-signed certificate for 127.0.0.1 and localhost, made for this test run."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ClaraAWS test server")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = folder / "server.pem"
    key_path = folder / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="session")
def tls_reference_server(self_signed_certificate):
    cert_path, key_path = self_signed_certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_path), str(key_path))
    with running_reference_server(ssl_context=context) as server:
        yield server


@pytest.fixture
def misbehaving_server():
    from loopback_servers import MisbehavingServer

    with MisbehavingServer() as server:
        yield server


@pytest.fixture(scope="session")
def repository_root() -> Path:
    return Path(__file__).resolve().parents[1]


# --- Slicer scenes (slicer-core); each fixture skips its test when the wheel is not installed -------


@pytest.fixture
def harness():
    """A fresh headless MRML scene with the logics Slicer would set up (see slicer_scene.py)."""
    pytest.importorskip("slicer")
    import slicer_scene

    return slicer_scene.new_scene()


@pytest.fixture(scope="module")
def server():
    """A reference server of the test module's own, for tests that count its sessions and uploads."""
    with running_reference_server() as server:
        yield server


@pytest.fixture
def stub():
    """An AIAA server that answers cropped, coarser, geometry-less or broken results on purpose."""
    from scene_aiaa_stub import OddAIAAServer

    with OddAIAAServer() as odd_server:
        yield odd_server


@pytest.fixture(scope="session")
def monailabel_server(tmp_path_factory):
    """The real MONAI Label server with the test app, once per test run (skips, or fails under CI, without it)."""
    from monailabel_server import MonaiLabelServer, require_server_python

    server = MonaiLabelServer(require_server_python(), tmp_path_factory.mktemp("monailabel")).start()
    try:
        yield server
    finally:
        server.stop()
