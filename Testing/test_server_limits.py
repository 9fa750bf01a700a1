"""The reference server's bounds: decoded voxels, sessions (count and bytes), tiny images, its own paths.

Requests are made with plain ``requests`` and multipart bodies built in server_fixtures, so the server
is checked independently of the ClaraAWS client.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from ClaraAWSLib.core.geometry import ImageGrid, Volume
from conftest import running_reference_server
from hostile_servers import gzip_of_zeros, nifti_header
from server_fixtures import create_session, error_of, multipart_body, post_work, write_volume

SEG = "phantom_abdomen_seg"


def _volume(size, seed: int = 0) -> Volume:
    array = np.random.default_rng(seed).integers(-100, 300, size[::-1]).astype(np.int16)
    return Volume(array, ImageGrid(size, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))


def _session_gone(url: str, session_id: str) -> bool:
    return requests.get(f"{url}/session/{session_id}", timeout=30).status_code == 440


def test_a_small_upload_that_decodes_to_512_cubed_is_refused_by_default(reference_server, tmp_path):
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip_of_zeros(nifti_header((512, 512, 512)), 512 ** 3))
    assert bomb.stat().st_size < 1 << 20  # a few hundred KB on the wire
    error = error_of(post_work(reference_server.url, "segmentation", SEG, bomb), 413)
    assert "134217728 voxels" in error["message"][0] and "--max-image-mvoxels" in error["message"][0]


def test_the_voxel_limit_is_configurable_and_counts_decoded_voxels(tmp_path):
    image = write_volume(_volume((40, 40, 20)), tmp_path / "ct.nii.gz")  # 32,000 voxels
    with running_reference_server(max_image_voxels=30_000) as small:
        error_of(post_work(small.url, "segmentation", SEG, image), 413)
        body, content_type = multipart_body(None, image, field="image")
        error_of(requests.put(f"{small.url}/session/", data=body, headers={"Content-Type": content_type}, timeout=30), 413)
    with running_reference_server(max_image_voxels=32_000) as enough:
        assert post_work(enough.url, "segmentation", SEG, image).status_code == 200


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize(
    "endpoint, model, params",
    [
        ("segmentation", SEG, {}),
        ("dextr3d", "region_grow_annotation", {"points": [[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 0], [0, 3, 1], [3, 0, 2]]}),
        ("deepgrow", "region_grow_deepgrow", {"foreground": [[1, 1, 1]], "background": []}),
        ("inference", "region_grow_deepgrow_2d", {"foreground": [[1, 1, 1]], "background": [], "current_point": [1, 1, 1]}),
    ],
)
def test_an_image_too_thin_for_the_models_gets_400_and_four_voxels_work(reference_server, tmp_path, axis, endpoint, model, params):
    size = [8, 8, 8]
    size[axis] = 3
    thin = write_volume(_volume(tuple(size)), tmp_path / "thin.nii.gz")
    error = error_of(post_work(reference_server.url, endpoint, model, thin, params), 400)
    assert "at least 4 voxels along every axis" in error["message"][0]
    size[axis] = 4
    enough = write_volume(_volume(tuple(size)), tmp_path / "enough.nii.gz")
    assert post_work(reference_server.url, endpoint, model, enough, params).status_code == 200


def test_sessions_are_bounded_in_count_and_the_oldest_expire_first(tmp_path):
    image = write_volume(_volume((16, 16, 8)), tmp_path / "ct.nii.gz")
    with running_reference_server(max_sessions=3) as server:
        ids = [create_session(server.url, image)["session_id"] for _ in range(5)]
        assert [_session_gone(server.url, sid) for sid in ids] == [True, True, False, False, False]
        assert len(server.sessions) == 3


def test_sessions_are_bounded_in_bytes_and_the_oldest_expire_first(tmp_path):
    image = write_volume(_volume((32, 32, 16)), tmp_path / "ct.nii.gz")
    image_bytes = 32 * 32 * 16 * 2  # int16 voxels, as the server holds them
    with running_reference_server(max_session_bytes=int(2.5 * image_bytes), max_sessions=100) as server:
        ids = [create_session(server.url, image)["session_id"] for _ in range(4)]
        assert [_session_gone(server.url, sid) for sid in ids] == [True, True, False, False]
        assert server.sessions.image_bytes == 2 * image_bytes
        bigger = write_volume(_volume((64, 64, 16)), tmp_path / "big.nii.gz")
        body, content_type = multipart_body(None, bigger, field="image")
        response = requests.put(f"{server.url}/session/", data=body, headers={"Content-Type": content_type}, timeout=30)
        assert "--max-session-mb" in error_of(response, 413)["message"][0]
        assert [_session_gone(server.url, sid) for sid in ids[2:]] == [False, False]  # a refused session evicts nothing


def test_error_messages_never_show_the_servers_paths(reference_server, tmp_path):
    damaged = tmp_path / "damaged.nii.gz"
    damaged.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(2000))
    nrrd = tmp_path / "damaged.nrrd"
    nrrd.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 9 9 9\nencoding: raw\n\n" + bytes(10))
    temp_root = str(reference_server.temp_root)
    for upload in (damaged, nrrd):
        error = error_of(post_work(reference_server.url, "segmentation", SEG, upload), 400)
        text = " ".join(error["message"])
        assert temp_root not in text and not re.search(r"/(tmp|var|home|root)/", text), text
        assert "could not be read" in text


@pytest.mark.parametrize("session_id", ["a%2Fb", "bad$id", "x" * 300, "%2E%2E"])
def test_the_server_refuses_session_ids_outside_the_safe_characters(reference_server, session_id):
    error = error_of(requests.get(f"{reference_server.url}/session/{session_id}", timeout=30), 400)
    assert "letters, digits" in error["message"][0]


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_serve_removes_its_temp_folder_when_stopped_by_a_signal(tmp_path, signal_number):
    script = Path(sys.executable).with_name("clara-aws")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ClaraAWSLib.cli"]
    environment = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(command + ["serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=environment)
    try:
        url = None
        for _ in range(50):
            match = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline())
            if match:
                url = match.group(0)
                break
        assert url, "the server did not print its URL"
        image = write_volume(_volume((16, 16, 8)), tmp_path / "ct.nii.gz")
        create_session(url, image)  # the server now holds uploaded voxels
        folders = [p for p in tmp_path.iterdir() if p.name.startswith("clara-aws-server-")]
        assert len(folders) == 1 and folders[0].is_dir()
    finally:
        process.send_signal(signal_number)
        code = process.wait(timeout=30)
    assert code == 0
    assert not folders[0].exists()


def test_many_sessions_keep_the_server_within_its_byte_budget(tmp_path):
    image = write_volume(_volume((32, 32, 16)), tmp_path / "ct.nii.gz")
    budget = 5 * 32 * 32 * 16 * 2
    with running_reference_server(max_session_bytes=budget, max_sessions=1000) as server:
        for _ in range(40):
            create_session(server.url, image)
        assert server.sessions.image_bytes <= budget and len(server.sessions) == 5
        assert server.sessions.evicted == 35


class _CountingModel:
    """Records how many of its runs overlap; each run takes 0.5 s."""

    name, type = "counting", "segmentation"

    def __init__(self):
        import threading

        self.lock, self.now, self.most = threading.Lock(), 0, 0

    def info(self):
        return {"name": self.name, "type": self.type, "labels": ["bright"], "description": "counts overlapping runs"}

    def run(self, request):
        import time

        from ClaraAWSLib.server.models import ModelOutput

        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.5)  # long enough for the other requests to arrive while this one runs
        with self.lock:
            self.now -= 1
        array = np.zeros(tuple(reversed(request.size)), np.uint8)
        return ModelOutput(array, {})


@pytest.mark.parametrize("slots, most", [(None, 3), (1, 1), (2, 2)])
def test_inference_slots_bound_the_model_runs_at_once(tmp_path, slots, most):
    """``--inference-slots N`` plays one task's GPU: three requests at once, at most N models running."""
    from concurrent.futures import ThreadPoolExecutor

    model = _CountingModel()
    path = write_volume(Volume(np.zeros((6, 6, 6), np.int16), ImageGrid((6, 6, 6), (1, 1, 1), (0, 0, 0), np.eye(3))),
                        tmp_path / "ct.nii.gz")
    with running_reference_server(models=[model], inference_slots=slots) as server:
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: post_work(server.url, "segmentation", "counting", path), range(3)))
    assert [answer.status_code for answer in answers] == [200] * 3
    assert model.most == most
