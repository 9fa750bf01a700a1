"""Helpers for testing the reference server over real sockets with plain ``requests`` (not our client).

Requests are built and responses parsed here independently of ClaraAWSLib.core.multipart/client, so the
server's tests do not depend on the code they are meant to check.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import secrets
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import requests
import SimpleITK as sitk

from ClaraAWSLib.core.geometry import Volume


def write_volume(volume: Volume, path: Path) -> Path:
    sitk.WriteImage(volume.to_sitk(), str(path), True)
    return path


def multipart_body(
    params: Optional[dict] = None,
    file_path: Optional[Path] = None,
    *,
    field: str = "datapoint",
    filename: Optional[str] = None,
    params_text: Optional[str] = None,
) -> Tuple[bytes, str]:
    """(body, content type) of a form with a ``params`` field and optionally one file part."""
    boundary = "test" + secrets.token_hex(12)
    pieces: List[bytes] = []
    text = params_text if params_text is not None else (json.dumps(params) if params is not None else None)
    if text is not None:
        pieces.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{text}\r\n'.encode("utf-8")
        )
    if file_path is not None:
        name = filename or Path(file_path).name
        pieces.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode("utf-8")
        )
        pieces.append(Path(file_path).read_bytes())
        pieces.append(b"\r\n")
    pieces.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(pieces), f"multipart/form-data; boundary={boundary}"


def in_pieces(data: bytes, size: int) -> Iterator[bytes]:
    """A generator body: requests sends it with Transfer-Encoding: chunked."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def post_work(
    base_url: str,
    endpoint: str,
    model: str,
    file_path: Optional[Path] = None,
    params: Optional[dict] = None,
    *,
    session_id: Optional[str] = None,
    field: str = "datapoint",
    http: Optional[requests.Session] = None,
    chunked: bool = False,
    **body_options,
) -> requests.Response:
    url = f"{base_url}/v1/{endpoint}?model={model}"
    if session_id:
        url += f"&session_id={session_id}"
    body, content_type = multipart_body(params if params is not None else {}, file_path, field=field, **body_options)
    data = in_pieces(body, 7777) if chunked else body
    return (http or requests).post(url, data=data, headers={"Content-Type": content_type}, timeout=60)


def create_session(base_url: str, file_path: Path, *, expiry: Optional[int] = None, field: str = "image") -> dict:
    url = f"{base_url}/session/" + (f"?expiry={expiry}" if expiry is not None else "")
    body, content_type = multipart_body(None, file_path, field=field)
    response = requests.put(url, data=body, headers={"Content-Type": content_type}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


class Result:
    """A parsed multipart result: the params JSON and the one part that carries a filename."""

    def __init__(self, response: requests.Response) -> None:
        assert response.status_code == 200, response.text
        content_type = response.headers["Content-Type"]
        assert content_type.startswith("multipart/form-data; boundary=")
        assert "chunked" not in response.headers.get("Transfer-Encoding", "")
        assert int(response.headers["Content-Length"]) == len(response.content)
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode("ascii") + response.content
        )
        self.params: Dict = {}
        self.files: List[Tuple[str, bytes]] = []
        for part in message.iter_parts():
            filename = part.get_filename()
            payload = part.get_payload(decode=True)
            if filename:
                self.files.append((filename, payload))
            elif part.get_param("name", header="content-disposition") == "params":
                self.params = json.loads(payload.decode("utf-8"))
        assert len(self.files) == 1, f"expected exactly one file part, got {len(self.files)}"
        self.filename, self.data = self.files[0]

    def image(self) -> sitk.Image:
        suffix = ".nii.gz" if self.filename.endswith(".nii.gz") else Path(self.filename).suffix
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"result{suffix}"
            path.write_bytes(self.data)
            return sitk.ReadImage(str(path))

    def labels(self) -> np.ndarray:
        return sitk.GetArrayFromImage(self.image())


def error_of(response: requests.Response, status: int) -> dict:
    """The AIAA error JSON of ``response``, after checking its status and shape."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    payload = response.json()
    assert payload["success"] is False
    assert isinstance(payload["error"]["message"], list) and payload["error"]["message"][0]
    assert isinstance(payload["error"]["type"], str)
    return payload["error"]


def same_geometry(image: sitk.Image, reference: sitk.Image) -> bool:
    # NIfTI stores geometry as float32, so a round trip moves values by ~1e-5 mm.
    return (
        image.GetSize() == reference.GetSize()
        and np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-4)
        and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3)
        and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-5)
    )


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.count_nonzero(a & b)) / total if total else 1.0


def extreme_points(mask: np.ndarray) -> List[List[int]]:
    """Six [i, j, k] points: the lowest and highest voxel of ``mask`` along i, j and k."""
    coordinates = np.argwhere(mask)  # [k, j, i]
    points = []
    for axis in (2, 1, 0):
        for pick in (coordinates[:, axis].argmin(), coordinates[:, axis].argmax()):
            k, j, i = coordinates[pick]
            points.append([int(i), int(j), int(k)])
    return points


def deepest_voxel(mask: np.ndarray) -> List[int]:
    """[i, j, k] of the voxel farthest from the mask's edge: a good click."""
    distance = sitk.GetArrayFromImage(
        sitk.SignedMaurerDistanceMap(sitk.GetImageFromArray(mask.astype(np.uint8)), insideIsPositive=True)
    )
    k, j, i = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return [int(i), int(j), int(k)]
