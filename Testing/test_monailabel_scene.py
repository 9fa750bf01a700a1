"""The scene logic on the real MONAI Label server: the same calls the panel makes, and the loop's API."""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests

pytest.importorskip("slicer")
pytestmark = [pytest.mark.slicer, pytest.mark.monailabel]

import slicer_scene as ss  # noqa: E402
from ClaraAWSLib import ClaraAWSLogic  # noqa: E402
from ClaraAWSLib.core.errors import InputError  # noqa: E402
from ClaraAWSLib.core.geometry import Volume  # noqa: E402
from ClaraAWSLib.scene.export import export_volume  # noqa: E402
from ClaraAWSLib.scene.loop import DATASTORE_ID_ATTRIBUTE  # noqa: E402
from test_monailabel_client import expected, ijk, organ_volume  # noqa: E402

VOLUME_NAME = "Patient-Doe-CT-secret"


def kji(array_ijk: np.ndarray) -> np.ndarray:
    return np.asarray(array_ijk).transpose(2, 1, 0)


@pytest.fixture
def logic(harness, monailabel_server):
    logic = ClaraAWSLogic(harness.scene)
    logic.connect(monailabel_server.url)
    yield logic
    logic.cleanup()


def test_auto_segment_and_a_deepedit_click_under_a_parent_transform(harness, logic):
    assert logic.supportsActiveLearning and logic.client.kind == "monailabel"
    volume = organ_volume(seed=41)
    transform = ss.add_transform(harness, ss.linear_transform())
    node = ss.add_volume(harness, volume, VOLUME_NAME, transform_node=transform)
    segmentation = logic.autoSegment(node, "seg_threshold")
    wanted = kji(expected.seg_threshold(ijk(volume.array)))
    by_name = {segmentation.GetSegmentation().GetNthSegment(n).GetName(): segmentation.GetSegmentation().GetNthSegmentID(n)
               for n in range(segmentation.GetSegmentation().GetNumberOfSegments())}
    assert set(by_name) == {"spleen", "liver"}
    for name, value in expected.SEG_LABELS.items():
        assert np.array_equal(ss.segment_on_volume(segmentation, by_name[name], node), wanted == value)

    # A click on the liver with the deepedit model changes only the liver segment, to liver's cube.
    spleen_before = ss.segment_on_volume(segmentation, by_name["spleen"], node)
    click = [18, 15, 9]
    logic.deepgrow(node, segmentation, by_name["liver"], "deepedit_threshold", ss.world_points(node, [click]))
    cube = kji(expected.deepedit(ijk(volume.array), {"liver": [click]}) == 6)
    assert np.array_equal(ss.segment_on_volume(segmentation, by_name["liver"], node), cube)
    assert np.array_equal(ss.segment_on_volume(segmentation, by_name["spleen"], node), spleen_before & ~cube)


def test_next_sample_submit_by_name_and_train(harness, logic, monailabel_server):
    url = monailabel_server.url
    client = logic.client
    stored = organ_volume(seed=51)
    image_id = client.upload_image(stored)  # a datastore image, as a study folder would hold it
    # Label every other image, so "first" picks ours.
    for other in requests.get(f"{url}/datastore/", params={"output": "all"}).json()["objects"]:
        if other != image_id:
            grid = client.download_image(other).grid
            client.save_label(other, Volume(np.zeros(grid.size[::-1], np.uint8), grid), {"spleen": 1})
    node = logic.nextSample("first")
    assert node.GetAttribute(DATASTORE_ID_ATTRIBUTE) == image_id and logic.datastoreId(node) == image_id
    fetched = export_volume(node)  # the voxels and the grid, as the node holds them
    assert np.array_equal(fetched.array, stored.array) and fetched.grid.matches(stored.grid)
    segmentation = logic.autoSegment(node, "seg_threshold")
    # A correction the user makes, and a segment the server has no label for: it stays out of the label.
    ss.add_segment(segmentation, "my notes", np.ones(stored.array.shape, bool), node)
    before = logic.datastoreCounts()["completed"]
    request = logic.prepareSubmitLabel(node, segmentation)
    assert request.skipped == ["my notes"] and set(request.submitted) == {"spleen", "liver"}
    assert logic.applySubmitLabel(request.run()) == image_id
    assert logic.datastoreCounts()["completed"] == before + 1
    label = requests.get(f"{url}/datastore/label", params={"label": image_id, "tag": "final"}).content
    from ClaraAWSLib.core.imageio import decode_image

    assert np.array_equal(decode_image(label, "l.nii.gz").array, kji(expected.seg_threshold(ijk(stored.array))))

    # A local volume goes into the datastore only with consent, and never under its name.
    local = ss.add_volume(harness, organ_volume(seed=52), VOLUME_NAME)
    local_segmentation = logic.autoSegment(local, "seg_threshold")
    with pytest.raises(InputError, match="Agree to that first"):
        logic.prepareSubmitLabel(local, local_segmentation)
    new_id = logic.submitLabel(local, local_segmentation, uploadConsent=True)
    assert new_id.startswith("clara-") and local.GetAttribute(DATASTORE_ID_ATTRIBUTE) == new_id
    assert VOLUME_NAME not in requests.get(f"{url}/datastore/", params={"output": "all"}).text

    logic.startTraining("seg_tiny", maxEpochs=1)
    deadline = time.monotonic() + 180
    status = logic.trainingStatus()
    while status.status in ("SUBMITTED", "RUNNING") and time.monotonic() < deadline:
        time.sleep(1)
        status = logic.trainingStatus()
    assert status.status == "DONE" and status.total_epochs == 1, status.details[-3:]
    assert "seg_tiny" in {m["name"] for m in logic.refreshModels()}


def _server_answer(url: str, session_id: str, model: str, params: dict) -> np.ndarray:
    """The server's own answer for a session and clicks, asked with plain requests and read with SimpleITK."""
    import json
    import tempfile
    from email.parser import BytesParser
    from pathlib import Path

    import SimpleITK as sitk

    answer = requests.post(f"{url}/infer/{model}", params={"session_id": session_id}, timeout=60,
                           files={"params": (None, json.dumps(dict(params, result_extension=".nrrd")))})
    assert answer.status_code == 200, answer.text[:300]
    message = BytesParser().parsebytes(b"Content-Type: " + answer.headers["Content-Type"].encode() + b"\r\n\r\n"
                                       + answer.content)
    data = next(part.get_payload(decode=True) for part in message.get_payload() if part.get_filename())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "answer.nrrd"
        path.write_bytes(data)
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _oblique_organ(seed: int, size, spacing, origin, angles) -> Volume:
    from conftest import rotation

    organ = organ_volume(size=size, seed=seed)
    return Volume(organ.array, type(organ.grid)(size, spacing, origin, rotation(*angles)))


PLACEMENTS = {
    # (size, spacing, origin, rotation angles, the segmentation's transform, the segment before the clicks)
    "new segment, same transform": ((40, 32, 18), (0.83, 0.71, 2.47), (-120.53, 35.27, -300.11), (10, -15, 25),
                                    "same", "empty"),
    "segment of an auto-segmentation": ((44, 36, 20), (0.61, 0.93, 3.3), (512.4, -734.9, 1211.7), (-31, 22, 48),
                                        "same", "auto"),
    "segmentation under no transform": ((40, 32, 18), (1.17, 0.52, 2.0), (-1433.3, 871.05, -20.9), (37, 8, -29),
                                        "none", "empty"),
    "segmentation under another transform": ((40, 32, 18), (0.8, 1.7, 2.9), (100.0, -50.0, 30.0), (20, -30, 10),
                                             "other", "empty"),
}


@pytest.mark.parametrize("case", list(PLACEMENTS))
def test_deepgrow_clicks_land_as_the_server_answers_them(harness, logic, monailabel_server, case):
    size, spacing, origin, angles, frame, before = PLACEMENTS[case]
    volume = _oblique_organ(61, size, spacing, origin, angles)
    transform = ss.add_transform(harness, ss.linear_transform())
    node = ss.add_volume(harness, volume, VOLUME_NAME, transform_node=transform)
    if before == "auto":
        segmentation = logic.autoSegment(node, "seg_threshold")
        segment = segmentation.GetSegmentation().GetSegmentIdBySegmentName("spleen")
    else:
        other = ss.add_transform(harness, ss.linear_transform((5.0, 3.0, -2.0), (0.3, 1.0, 0.1), 33.0), "Other")
        segmentation_transform = {"same": transform, "none": None, "other": other}[frame]
        segmentation = ss.new_segmentation(harness, node, transform_node=segmentation_transform)
        segment = segmentation.GetSegmentation().AddEmptySegment("", "spleen", [0.9, 0.5, 0.3])
    # Clicks at the organ's first and last columns, where the cube of a click reaches past the organ.
    first = [5, 9, 6]
    second, background = [32, 20, 12], [6, 10, 6]
    logic.deepgrow(node, segmentation, segment, "deepgrow_threshold", ss.world_points(node, [first]))
    session_id = logic._sessions.open_session(node).session_id
    answer = _server_answer(monailabel_server.url, session_id, "deepgrow_threshold",
                            {"foreground": [first], "background": [], "label": "spleen"})
    assert answer.any() and np.array_equal(answer, kji(expected.deepgrow(ijk(volume.array), [first], [])))
    assert np.array_equal(ss.segment_on_volume(segmentation, segment, node), answer > 0)

    logic.deepgrow(node, segmentation, segment, "deepgrow_threshold", ss.world_points(node, [first, second]),
                   ss.world_points(node, [background]))
    answer = _server_answer(monailabel_server.url, session_id, "deepgrow_threshold",
                            {"foreground": [first, second], "background": [background], "label": "spleen"})
    assert np.array_equal(ss.segment_on_volume(segmentation, segment, node), answer > 0)
    if before == "auto":  # the click replaced the spleen segment only; liver is as the auto-segmentation left it
        liver = segmentation.GetSegmentation().GetSegmentIdBySegmentName("liver")
        assert np.array_equal(ss.segment_on_volume(segmentation, liver, node),
                              kji(expected.seg_threshold(ijk(volume.array)) == expected.SEG_LABELS["liver"]))


SEGMENTATION_SETUPS = ["made by the click", "under the volume's transform", "under no transform", "under another transform"]


@pytest.mark.parametrize("seed", range(8))
def test_deepgrow_clicks_land_exactly_on_random_oblique_placements(harness, logic, monailabel_server, seed):
    """Random spacing, origin, rotation and transforms (some scaling), each segmentation set-up twice: the
    segment after one click and after a second equals the server's own answer for the session, voxel for voxel."""
    from conftest import rotation

    rng = np.random.default_rng(seed)
    size = (40, 32, 18)
    organ = organ_volume(size=size, seed=seed)
    volume = Volume(organ.array, type(organ.grid)(size, tuple(rng.uniform(0.3, 3.5, 3)), tuple(rng.uniform(-1500, 1500, 3)),
                                                  rotation(*rng.uniform(-60, 60, 3))))
    matrix = ss.linear_transform(tuple(rng.uniform(-300, 300, 3)), tuple(rng.uniform(-1, 1, 3)), float(rng.uniform(-90, 90)))
    if seed % 3 == 2:
        matrix[:3, :3] = matrix[:3, :3] @ np.diag(rng.uniform(0.7, 1.4, 3))
    transform = ss.add_transform(harness, matrix)
    node = ss.add_volume(harness, volume, VOLUME_NAME, transform_node=transform)
    setup = SEGMENTATION_SETUPS[seed % 4]
    segmentation = segment = None
    if setup != "made by the click":
        other = ss.add_transform(harness, ss.linear_transform((5.0, 3.0, -2.0), (0.3, 1.0, 0.1), 33.0), "Other")
        segmentation = ss.new_segmentation(harness, node, transform_node={
            "under the volume's transform": transform, "under no transform": None, "under another transform": other}[setup])
        segment = segmentation.GetSegmentation().AddEmptySegment("", "spleen", [0.9, 0.5, 0.3])
    # The organ spans columns 5-32: one click near each end, where the click's cube reaches past it.
    first = [int(rng.integers(5, 9)), int(rng.integers(6, 26)), int(rng.integers(4, 14))]
    second = [int(rng.integers(28, 33)), int(rng.integers(6, 26)), int(rng.integers(4, 14))]
    segment = logic.deepgrow(node, segmentation, segment, "deepgrow_threshold", ss.world_points(node, [first]))
    segmentation = logic.lastSegmentationNode
    session_id = logic._sessions.open_session(node).session_id
    for clicks in ([first], [first, second]):
        if len(clicks) == 2:
            logic.deepgrow(node, segmentation, segment, "deepgrow_threshold", ss.world_points(node, clicks))
        answer = _server_answer(monailabel_server.url, session_id, "deepgrow_threshold",
                                {"foreground": clicks, "background": [], "label": "spleen"})
        assert answer.any() and np.array_equal(answer, kji(expected.deepgrow(ijk(volume.array), clicks, [])))
        placed = ss.segment_on_volume(segmentation, segment, node)
        assert np.array_equal(placed, answer > 0), (setup, len(clicks), int((placed != (answer > 0)).sum()))
