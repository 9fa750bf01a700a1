"""The local reference AIAA server and its built-in models, over real sockets on 127.0.0.1.

Requests are made with plain ``requests``/``http.client``/raw sockets, never with ClaraAWS's client.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk

from ClaraAWSLib.synthetic.phantom import make_phantom, oblique_direction
from ClaraAWSLib.server import (
    ModelInput,
    PhantomOrganSegmenter,
    ReferenceServer,
    RegionGrowAnnotation,
    RegionGrowDeepgrow,
    RegionGrowDeepgrow2D,
)
from ClaraAWSLib.server.bodies import BodyReader
from ClaraAWSLib.server.problems import BadRequest, PayloadTooLarge
from ClaraAWSLib.server.upload import parse_multipart
from server_fixtures import (
    Result,
    create_session,
    deepest_voxel,
    dice,
    error_of,
    extreme_points,
    multipart_body,
    post_work,
    same_geometry,
    write_volume,
)

OBLIQUE = dict(
    size=(96, 88, 44),
    spacing=(1.3, 1.7, 3.2),
    origin=(-40.0, 25.0, -300.0),
    direction=oblique_direction((10, 0, 20)),
    seed=2,
)
SEG = "phantom_abdomen_seg"
ANNOTATION = "region_grow_annotation"
DEEPGROW = "region_grow_deepgrow"
DEEPGROW_2D = "region_grow_deepgrow_2d"


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def axial():
    return make_phantom(size=(96, 96, 40))


@pytest.fixture(scope="module")
def oblique():
    return make_phantom(**OBLIQUE)


@pytest.fixture(scope="module")
def files(tmp_path_factory, axial, oblique):
    folder = tmp_path_factory.mktemp("phantoms")
    tiny = make_phantom(size=(24, 24, 8))
    return {
        "axial": write_volume(axial.ct, folder / "axial.nii.gz"),
        "oblique": write_volume(oblique.ct, folder / "oblique.nii.gz"),
        "oblique_nrrd": _write_nrrd(oblique.ct.to_sitk(), folder / "oblique.nrrd"),
        "tiny": write_volume(tiny.ct, folder / "tiny.nii.gz"),
    }


def _write_nrrd(image, path: Path) -> Path:
    sitk.WriteImage(image, str(path), True)
    return path


@pytest.fixture(scope="module")
def server():
    with ReferenceServer() as running:
        yield running


@pytest.fixture(scope="module")
def oblique_image(files):
    return sitk.ReadImage(str(files["oblique"]))


# --- the models, called directly --------------------------------------------------------------
@pytest.mark.parametrize("which", ["axial", "oblique"])
def test_segmenter_finds_every_organ_with_dice_over_0_9(which, request):
    phantom = request.getfixturevalue(which)
    output = PhantomOrganSegmenter().run(ModelInput(phantom.ct.to_sitk(), {}))
    assert output.labels.shape == phantom.truth.array.shape
    for value, name in enumerate(phantom.labels, start=1):
        score = dice(output.labels == value, phantom.truth.array == value)
        assert score >= 0.9, f"{name}: Dice {score:.3f}"
    assert output.params["label_names"] == {name: v for v, name in enumerate(phantom.labels, start=1)}
    assert len(output.params["points"]) == 6


def test_segmenter_finds_nothing_in_air():
    air = sitk.Image([32, 32, 8], sitk.sitkInt16) - 1000
    assert not PhantomOrganSegmenter().run(ModelInput(air, {})).labels.any()


@pytest.mark.parametrize("organ", ["liver", "spleen", "left kidney", "right kidney"])
def test_annotation_grows_the_organ_inside_its_extreme_points(oblique, organ):
    truth = oblique.truth.array == oblique.label_value(organ)
    output = RegionGrowAnnotation().run(ModelInput(oblique.ct.to_sitk(), {"points": extreme_points(truth)}))
    found = output.labels == 1
    assert dice(found, truth) >= 0.8
    (i0, i1), (j0, j1), (k0, k1) = output.params["bbox"]
    outside_box = found.copy()
    outside_box[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1] = False
    assert not outside_box.any()


@pytest.mark.parametrize("organ", ["liver", "spleen", "left kidney", "right kidney"])
def test_deepgrow_grows_the_clicked_organ(oblique, organ):
    truth = oblique.truth.array == oblique.label_value(organ)
    output = RegionGrowDeepgrow().run(ModelInput(oblique.ct.to_sitk(), {"foreground": [deepest_voxel(truth)]}))
    found = output.labels == 1
    assert dice(found, truth) >= 0.8
    (i0, i1), (j0, j1), (k0, k1) = output.params["crop"]
    assert found[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1].sum() == found.sum()


def test_deepgrow_background_click_stops_the_region(axial):
    liver = axial.truth.array == axial.label_value("liver")
    image = axial.ct.to_sitk()
    coordinates = np.argwhere(liver)
    far_right = coordinates[coordinates[:, 2].argmin()]  # lowest i: the liver's lateral edge
    k, j, i = (int(v) for v in far_right)
    background = [i + 3, j, k]
    assert liver[k, j, i + 3]
    foreground = deepest_voxel(liver)
    alone = RegionGrowDeepgrow().run(ModelInput(image, {"foreground": [foreground]})).labels
    stopped = RegionGrowDeepgrow().run(ModelInput(image, {"foreground": [foreground], "background": [background]})).labels
    assert alone[k, j, i + 3] == 1 and stopped[k, j, i + 3] == 0
    assert stopped[tuple(reversed(foreground))] == 1
    assert 0.5 * alone.sum() < stopped.sum() < alone.sum()


def test_deepgrow_with_only_background_clicks_returns_nothing(axial):
    output = RegionGrowDeepgrow().run(ModelInput(axial.ct.to_sitk(), {"foreground": [], "background": [[5, 5, 5]]}))
    assert not output.labels.any()


def test_deepgrow_2d_works_on_the_current_slice_only(oblique):
    spleen = oblique.truth.array == oblique.label_value("spleen")
    i, j, k = deepest_voxel(spleen)
    liver_click = deepest_voxel(oblique.truth.array == oblique.label_value("liver"))
    assert liver_click[2] != k
    params = {"foreground": [[i, j, k], liver_click], "current_point": [[i, j, k]]}  # Slicer wraps the point
    output = RegionGrowDeepgrow2D().run(ModelInput(oblique.ct.to_sitk(), params))
    labels = output.labels
    assert labels[k].any() and not np.delete(labels, k, axis=0).any()
    assert dice(labels[k] == 1, spleen[k]) >= 0.8
    assert output.params["slice"] == k and output.params["crop"][2] == [k, k]


def test_model_descriptions_are_honest(server):
    for info in server.models.infos():
        assert "not a trained" in info["description"] and "Classical" in info["description"]
        assert info["version"]
    assert server.models.get(SEG).info()["labels"] == make_phantom(size=(8, 8, 4)).labels


# --- HTTP: health check and model listing -----------------------------------------------------
@pytest.mark.parametrize("path", ["/docs/", "/docs", "/"])
def test_docs_page_is_the_health_check(server, path):
    response = requests.get(server.url + path, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    for name in (SEG, ANNOTATION, DEEPGROW, DEEPGROW_2D, "/v1/models", "/session/"):
        assert name in response.text
    head = requests.head(server.url + path, timeout=10)
    assert head.status_code == 200 and head.content == b""


def test_models_are_listed_and_filtered(server):
    models = requests.get(f"{server.url}/v1/models", timeout=10).json()
    assert {m["name"] for m in models} == {SEG, ANNOTATION, DEEPGROW, DEEPGROW_2D}
    assert all({"name", "type", "labels", "description"} <= set(m) for m in models)
    by_type = requests.get(f"{server.url}/v1/models?type=deepgrow", timeout=10).json()
    assert {m["name"]: m["deepgrow"] for m in by_type} == {DEEPGROW: "3D", DEEPGROW_2D: "2D"}
    by_label = requests.get(f"{server.url}/v1/models", params={"label": "spleen"}, timeout=10).json()
    assert [m["name"] for m in by_label] == [SEG]
    both = requests.get(f"{server.url}/v1/models?label=region&type=annotation", timeout=10).json()
    assert [m["name"] for m in both] == [ANNOTATION] and "padding" in both[0]
    one = requests.get(f"{server.url}/v1/models?model={SEG}", timeout=10).json()
    assert isinstance(one, dict) and one["name"] == SEG and one["type"] == "segmentation"
    missing = error_of(requests.get(f"{server.url}/v1/models?model=nope", timeout=10), 404)
    assert missing["type"] == "ModelNotFound" and SEG in missing["message"][0]


def test_unknown_paths_and_methods_get_error_json(server):
    assert error_of(requests.get(f"{server.url}/v2/whatever", timeout=10), 404)["type"] == "NotFound"
    assert error_of(requests.delete(f"{server.url}/v1/models", timeout=10), 405)["type"] == "MethodNotAllowed"
    assert error_of(requests.get(f"{server.url}/v1/segmentation?model={SEG}", timeout=10), 405)


# --- HTTP: work calls ---------------------------------------------------------------------------
def test_segmentation_over_http_keeps_the_oblique_geometry(server, files, oblique, oblique_image):
    before_uploads, before_bytes = server.stats.image_uploads, server.stats.bytes_received
    before_requests = server.stats.requests.get("/v1/segmentation", 0)
    body, content_type = multipart_body({}, files["oblique"], field="datapoint")
    response = requests.post(
        f"{server.url}/v1/segmentation?model={SEG}", data=body, headers={"Content-Type": content_type}, timeout=60
    )
    result = Result(response)
    assert re.fullmatch(r"result-[0-9a-f]{32}\.nii\.gz", result.filename)
    image = result.image()
    assert same_geometry(image, oblique_image) and image.GetPixelID() == sitk.sitkUInt8
    labels = sitk.GetArrayFromImage(image)
    for value, name in enumerate(oblique.labels, start=1):
        assert dice(labels == value, oblique.truth.array == value) >= 0.9, name
    assert result.params["label_names"]["liver"] == 1 and result.params["model"] == SEG
    assert server.stats.image_uploads == before_uploads + 1
    assert server.stats.bytes_received == before_bytes + len(body)
    assert server.stats.requests["/v1/segmentation"] == before_requests + 1


@pytest.mark.parametrize(
    "endpoint, model, field",
    [
        ("segmentation", SEG, "image"),
        ("inference", SEG, "datapoint"),
        ("dextr3d", ANNOTATION, "datapoint"),
        ("inference", ANNOTATION, "image"),
        ("deepgrow", DEEPGROW, "datapoint"),
        ("inference", DEEPGROW, "datapoint"),  # what Slicer does for deepgrow
        ("deepgrow", DEEPGROW_2D, "image"),
    ],
)
def test_every_work_endpoint_answers_on_the_input_grid(server, files, oblique, oblique_image, endpoint, model, field):
    spleen = oblique.truth.array == oblique.label_value("spleen")
    click = deepest_voxel(spleen)
    params = {
        SEG: {},
        ANNOTATION: {"points": extreme_points(spleen)},
        DEEPGROW: {"foreground": [click], "background": []},
        DEEPGROW_2D: {"foreground": [click], "current_point": click},
    }[model]
    result = Result(post_work(server.url, endpoint, model, files["oblique"], params, field=field))
    assert same_geometry(result.image(), oblique_image)
    labels = result.labels()
    i, j, k = click
    assert labels[k, j, i] == (oblique.label_value("spleen") if model == SEG else 1)


def test_nrrd_uploads_are_read_too(server, files, oblique_image):
    result = Result(post_work(server.url, "segmentation", SEG, files["oblique_nrrd"]))
    assert same_geometry(result.image(), oblique_image) and result.labels().max() == 4


@pytest.mark.parametrize(
    "hints, suffix, pixel",
    [
        ({"result_extension": ".nrrd", "result_dtype": "uint16"}, ".nrrd", sitk.sitkUInt16),
        ({"result_extension": ".nii"}, ".nii", sitk.sitkUInt8),
        ({"result_compress": False}, ".nii", sitk.sitkUInt8),
        ({"result_dtype": "uint16"}, ".nii.gz", sitk.sitkUInt16),
    ],
)
def test_result_format_hints_are_honoured(server, files, oblique_image, hints, suffix, pixel):
    result = Result(post_work(server.url, "segmentation", SEG, files["oblique"], hints))
    assert result.filename.endswith(suffix) and not (suffix == ".nii" and result.filename.endswith(".gz"))
    image = result.image()
    assert image.GetPixelID() == pixel and same_geometry(image, oblique_image)


@pytest.mark.parametrize(
    "endpoint, model",
    [("segmentation", ANNOTATION), ("dextr3d", SEG), ("deepgrow", ANNOTATION), ("dextr3d", DEEPGROW)],
)
def test_endpoints_refuse_other_model_types(server, files, endpoint, model):
    error = error_of(post_work(server.url, endpoint, model, files["tiny"], {"points": [[1, 1, 1]] * 6}), 400)
    assert error["type"] == "WrongModelType" and "/v1/inference" in error["message"][0]


SIX_POINTS = [[2, 2, 1], [20, 2, 1], [2, 20, 1], [2, 2, 6], [10, 10, 3], [12, 12, 4]]


@pytest.mark.parametrize(
    "endpoint, model, options, status, error_type, words",
    [
        ("dextr3d", ANNOTATION, {"params": {"points": json.dumps(SIX_POINTS)}}, 400, "InvalidParams", "string"),
        ("dextr3d", ANNOTATION, {"params": {"points": SIX_POINTS[:5]}}, 400, "InvalidParams", "at least 6"),
        ("dextr3d", ANNOTATION, {"params": {"points": SIX_POINTS + [[24, 0, 0]]}}, 400, "InvalidParams", "outside"),
        ("dextr3d", ANNOTATION, {"params": {"points": [[2.5, 2, 1]] * 6}}, 400, "InvalidParams", "whole number"),
        ("dextr3d", ANNOTATION, {"params": {"points": [["2", 2, 1]] * 6}}, 400, "InvalidParams", "integer"),
        ("deepgrow", DEEPGROW, {"params": {"foreground": [[1, 2]]}}, 400, "InvalidParams", "three integers"),
        ("deepgrow", DEEPGROW, {"params": {}}, 400, "InvalidParams", "foreground"),
        ("segmentation", SEG, {"params_text": "{not json"}, 400, "InvalidParams", "not valid JSON"),
        ("segmentation", SEG, {"params_text": "[1, 2]"}, 400, "InvalidParams", "JSON object"),
        ("segmentation", SEG, {"params": {"result_extension": ".png"}}, 400, "InvalidParams", "result_extension"),
        ("segmentation", SEG, {"params": {"result_dtype": "float32"}}, 400, "InvalidParams", "result_dtype"),
        ("segmentation", SEG, {"no_file": True}, 400, "BadRequest", "datapoint"),
        ("segmentation", SEG, {"filename": "volume.png"}, 400, "InvalidImage", "suffix"),
        ("segmentation", "no_such_model", {}, 404, "ModelNotFound", SEG),
        ("segmentation", "", {}, 400, "BadRequest", "?model="),
    ],
)
def test_strict_params_give_aiaa_errors(server, files, endpoint, model, options, status, error_type, words):
    options = dict(options)
    file_path = None if options.pop("no_file", False) else files["tiny"]
    params = options.pop("params", {})
    error = error_of(post_work(server.url, endpoint, model, file_path, params, **options), status)
    assert error["type"] == error_type
    assert words in error["message"][0]


def test_unreadable_images_and_bodies_give_aiaa_errors(server, tmp_path):
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not a NIfTI file" * 100)
    assert error_of(post_work(server.url, "segmentation", SEG, garbage), 400)["type"] == "InvalidImage"
    plain = requests.post(f"{server.url}/v1/segmentation?model={SEG}", data=b"x=1", timeout=10,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert "multipart/form-data" in error_of(plain, 400)["message"][0]
    body, content_type = multipart_body({}, garbage)
    cut = requests.post(f"{server.url}/v1/segmentation?model={SEG}", data=body[: len(body) // 2],
                        headers={"Content-Type": content_type}, timeout=10)
    assert "cut short" in error_of(cut, 400)["message"][0]
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    assert "is empty (0 bytes)" in error_of(post_work(server.url, "segmentation", SEG, empty), 400)["message"][0]


@pytest.mark.parametrize("compressed", [True, False], ids=["nii.gz", "nii"])
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_a_cut_nifti_upload_gets_400_with_a_sentence(server, files, tmp_path, compressed, keep):
    # A whole multipart body carrying a cut file: ITK would read the missing end as zeros and answer 200.
    image = sitk.ReadImage(str(files["tiny"]))
    whole = tmp_path / ("tiny.nii.gz" if compressed else "tiny.nii")
    sitk.WriteImage(image, str(whole), compressed)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{whole.name[4:]}"
    cut.write_bytes(data[: int(len(data) * keep)])
    body, content_type = multipart_body(None, cut, field="image")
    for answer in (post_work(server.url, "segmentation", SEG, cut),
                   requests.put(f"{server.url}/session/", data=body, headers={"Content-Type": content_type}, timeout=30)):
        error = error_of(answer, 400)
        assert error["type"] == "InvalidImage"
        message = error["message"][0]
        assert message.startswith(f"The uploaded {whole.name[4:]} image is incomplete")
        assert "cut short" in message and str(tmp_path) not in message and "upload-" not in message
    assert Result(post_work(server.url, "segmentation", SEG, whole)).labels().shape == image.GetSize()[::-1]


# --- HTTP: sessions -------------------------------------------------------------------------------
def test_session_lifecycle(server, files, oblique, oblique_image):
    created = create_session(server.url, files["oblique"], expiry=60)
    session_id = created["session_id"]
    assert created["expiry"] == 60 and created["size"] == list(OBLIQUE["size"])
    assert np.allclose(created["origin"], oblique_image.GetOrigin())
    info = requests.get(f"{server.url}/session/{session_id}", timeout=10)
    assert info.status_code == 200 and info.json()["session_id"] == session_id and 0 < info.json()["expires_in"] <= 60

    uploads = server.stats.image_uploads
    spleen = oblique.truth.array == oblique.label_value("spleen")
    for endpoint, model, params in [
        ("dextr3d", ANNOTATION, {"points": extreme_points(spleen)}),
        ("inference", DEEPGROW, {"foreground": [deepest_voxel(spleen)]}),
        ("segmentation", SEG, {}),
    ]:
        result = Result(post_work(server.url, endpoint, model, None, params, session_id=session_id))
        assert same_geometry(result.image(), oblique_image)
    assert server.stats.image_uploads == uploads  # the image came from the session

    deleted = requests.delete(f"{server.url}/session/{session_id}", timeout=10)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert error_of(requests.get(f"{server.url}/session/{session_id}", timeout=10), 440)["type"] == "SessionExpired"
    assert error_of(requests.delete(f"{server.url}/session/{session_id}", timeout=10), 440)
    gone = post_work(server.url, "segmentation", SEG, files["tiny"], session_id=session_id)
    assert "create a new session" in error_of(gone, 440)["message"][0]


def test_session_expiry_is_capped_by_the_server(server, files):
    assert create_session(server.url, files["tiny"], expiry=0)["expiry"] == 3600
    assert create_session(server.url, files["tiny"], expiry=10**7)["expiry"] == 3600
    assert create_session(server.url, files["tiny"], field="datapoint")["expiry"] == 3600
    body, content_type = multipart_body(None, files["tiny"], field="image")
    negative = requests.put(f"{server.url}/session/?expiry=-5", data=body, headers={"Content-Type": content_type}, timeout=10)
    assert error_of(negative, 400)["type"] == "InvalidParams"
    params_only, content_type = multipart_body({}, None)
    empty = requests.put(f"{server.url}/session/", data=params_only, headers={"Content-Type": content_type}, timeout=10)
    assert "image" in error_of(empty, 400)["message"][0]


def test_unknown_and_expired_sessions_get_440(server, files):
    assert error_of(requests.get(f"{server.url}/session/does-not-exist", timeout=10), 440)
    session_id = create_session(server.url, files["tiny"])["session_id"]
    assert session_id in server.sessions.ids()
    server.sessions.expire_all()
    error = error_of(post_work(server.url, "segmentation", SEG, None, session_id=session_id), 440)
    assert error["type"] == "SessionExpired"


def test_sessions_expire_with_time(files):
    with ReferenceServer(session_expiry=1) as short:
        session_id = create_session(short.url, files["tiny"], expiry=30)["session_id"]
        assert requests.get(f"{short.url}/session/{session_id}", timeout=10).json()["expiry"] == 1
        time.sleep(1.2)
        assert error_of(post_work(short.url, "segmentation", SEG, None, session_id=session_id), 440)
        assert len(short.sessions) == 0  # purged lazily


# --- HTTP: bodies, limits, streaming ---------------------------------------------------------
def test_chunked_uploads_are_accepted(server, files, oblique_image):
    reference = Result(post_work(server.url, "segmentation", SEG, files["oblique"])).labels()
    before = server.stats.bytes_received
    body, _ = multipart_body({}, files["oblique"])
    chunked = Result(post_work(server.url, "segmentation", SEG, files["oblique"], chunked=True))
    assert np.array_equal(chunked.labels(), reference) and same_geometry(chunked.image(), oblique_image)
    assert server.stats.bytes_received - before == len(body)


def test_oversized_bodies_get_413_and_the_server_carries_on(files):
    limit = 64 * 1024
    assert files["tiny"].stat().st_size < limit < files["oblique"].stat().st_size
    with ReferenceServer(max_upload_bytes=limit) as limited:
        declared = error_of(post_work(limited.url, "segmentation", SEG, files["oblique"]), 413)
        assert declared["type"] == "PayloadTooLarge" and str(limit) in declared["message"][0]
        streamed = error_of(post_work(limited.url, "segmentation", SEG, files["oblique"], chunked=True), 413)
        assert streamed["type"] == "PayloadTooLarge"
        with pytest.raises(AssertionError):
            create_session(limited.url, files["oblique"])
        assert Result(post_work(limited.url, "segmentation", SEG, files["tiny"])).labels().shape == (8, 24, 24)
        # A client that announces its body (Expect: 100-continue) is refused before sending it.
        with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as raw:
            raw.sendall(
                f"POST /v1/segmentation?model={SEG} HTTP/1.1\r\nHost: x\r\nContent-Length: {limit + 1}\r\n"
                "Expect: 100-continue\r\nContent-Type: multipart/form-data; boundary=abc\r\n\r\n".encode()
            )
            answer = raw.makefile("rb").read()
        assert answer.startswith(b"HTTP/1.1 413") and b'"PayloadTooLarge"' in answer


def test_keep_alive_connection_serves_several_requests(server, files):
    body, content_type = multipart_body({}, files["tiny"])
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for _ in range(3):
            connection.request("POST", f"/v1/segmentation?model={SEG}", body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            payload = response.read()
            assert response.status == 200 and len(payload) == int(response.getheader("Content-Length"))
            assert (response.getheader("Connection") or "").lower() != "close"
            connection.request("GET", "/v1/models")
            assert connection.getresponse().read().startswith(b"[")
        # A failed request with a body still leaves the answer readable.
        connection.request("POST", "/v1/segmentation?model=nope", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        assert response.status == 404 and json.loads(response.read())["success"] is False
    finally:
        connection.close()


def test_uploads_stream_to_disk_and_temp_files_are_removed(server):
    size = 24 * 1024 * 1024
    boundary = "streamtest0123456789"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{{}}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="datapoint"; filename="big.nii.gz"\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    block = bytes(range(256)) * 4096  # 1 MiB, never contains the boundary

    def body():
        yield head
        for _ in range(size // len(block)):
            yield block
        yield tail

    tracemalloc.start()
    try:
        response = requests.post(f"{server.url}/v1/segmentation?model={SEG}", data=body(), timeout=60,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error_of(response, 400)["type"] == "InvalidImage"  # parsed in full, then found not to be NIfTI
    assert peak < size / 3, f"peak traced memory {peak} bytes for a {size}-byte upload"
    assert list(server.temp_root.iterdir()) == []  # removed before the error was sent
    Result(post_work(server.url, "segmentation", SEG, _write_tiny(server.temp_root.parent)))
    deadline = time.monotonic() + 5  # a result is streamed from disk, so its file goes just after
    while list(server.temp_root.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(server.temp_root.iterdir()) == []


def _write_tiny(folder: Path) -> Path:
    return write_volume(make_phantom(size=(24, 24, 8)).ct, Path(folder) / f"tiny-{os.getpid()}.nii.gz")


def test_several_clients_are_served_at_once(server, files):
    # A client that stalls in the middle of its upload must not block the others.
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        stalled.sendall(
            f"POST /v1/segmentation?model={SEG} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            "Content-Type: multipart/form-data; boundary=abc\r\n\r\n--abc\r\n".encode()
        )
        results, failures = {}, []

        def work(n: int) -> None:
            try:
                results[n] = Result(post_work(server.url, "segmentation", SEG, files["axial"])).labels()
            except Exception as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not failures and len(results) == 4
        assert all(np.array_equal(results[0], labels) for labels in results.values())
    finally:
        stalled.close()


def test_https_with_a_self_signed_certificate(tls_reference_server, self_signed_certificate, files):
    cert_path, _ = self_signed_certificate
    url = tls_reference_server.url
    assert url.startswith("https://127.0.0.1:")
    assert requests.get(f"{url}/docs/", verify=str(cert_path), timeout=10).status_code == 200
    body, content_type = multipart_body({}, files["tiny"])
    response = requests.post(f"{url}/v1/segmentation?model={SEG}", data=body, verify=str(cert_path), timeout=30,
                             headers={"Content-Type": content_type})
    assert Result(response).labels().shape == (8, 24, 24)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{url}/docs/", timeout=10)  # verified against the system CAs: refused


def test_server_stops_cleanly_and_frees_its_port(files):
    server = ReferenceServer().start()
    port, temp_root = server.port, server.temp_root
    idle = requests.Session()
    assert idle.get(f"{server.url}/docs/", timeout=10).status_code == 200  # leaves a keep-alive connection
    server.stop()
    server.stop()  # twice is harmless
    assert not temp_root.exists()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/docs/", timeout=5)
    idle.close()


def test_command_line_server_prints_its_url_and_stops_on_ctrl_c():
    process = subprocess.Popen(
        [sys.executable, "-m", "ClaraAWSLib.server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        first = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", first)
        assert match, first
        assert requests.get(match.group(1) + "/docs/", timeout=10).status_code == 200
        listing = "".join(process.stdout.readline() for _ in range(6))
        assert SEG in listing and DEEPGROW_2D in listing
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "Stopping" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


# --- the streaming parsers, unit level ---------------------------------------------------------
def _form(boundary: str, file_bytes: bytes) -> bytes:
    return (
        b"preamble to ignore\r\n"
        + f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{{"a": [1, 2]}}\r\n'.encode()
        + f'--{boundary}\r\nContent-Disposition: form-data; name="datapoint"; filename="../../etc/x.NII.GZ"\r\n'.encode()
        + b"Content-Type: application/gzip\r\n\r\n"
        + file_bytes
        + f"\r\n--{boundary}--\r\nepilogue".encode()
    )


@pytest.mark.parametrize("chunk_size", [1, 3, 17, 64, 1 << 20])
def test_multipart_parser_finds_boundaries_across_chunk_edges(tmp_path, chunk_size):
    boundary = "XyZ-boundary-42"
    tricky = b"\r\n--XyZ-boundar" + b"\r\n--" + b"\r\n" * 5 + os.urandom(3000) + b"\r\n--XyZ-boundary-4"
    stream = io.BytesIO(_form(boundary, tricky))
    form = parse_multipart(stream.read, boundary.encode(), tmp_path, chunk_size=chunk_size)
    assert json.loads(form.fields["params"]) == {"a": [1, 2]}
    upload = form.file("datapoint", "image")
    assert upload.filename == "../../etc/x.NII.GZ" and upload.suffix == ".nii.gz"
    assert upload.path.parent == tmp_path and upload.path.read_bytes() == tricky and upload.size == len(tricky)
    assert stream.read() == b""  # the epilogue was consumed


def test_multipart_parser_rejects_broken_bodies(tmp_path):
    with pytest.raises(BadRequest):
        parse_multipart(io.BytesIO(b"no boundary at all").read, b"abc", tmp_path)
    truncated = _form("abc", b"data")[:-20]
    with pytest.raises(BadRequest):
        parse_multipart(io.BytesIO(truncated).read, b"abc", tmp_path)


def test_chunked_body_reader_decodes_and_enforces_the_limit():
    raw = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    stream = io.BytesIO(raw)
    reader = BodyReader(stream, content_length=None, chunked=True)
    data = b""
    while True:
        piece = reader.read(4)
        if not piece:
            break
        data += piece
    assert data == b"hello world" and reader.finished and stream.read() == b"NEXT"
    limited = BodyReader(io.BytesIO(raw), content_length=None, chunked=True, max_bytes=8)
    with pytest.raises(PayloadTooLarge):
        while limited.read(4):
            pass
    with pytest.raises(PayloadTooLarge):
        BodyReader(io.BytesIO(b""), content_length=100, chunked=False, max_bytes=10).check_declared_size()
