"""Label maps in an AIAA model list are named by value, deepedit on an AIAA server is refused in one sentence,
and credentials in a stack output are never shown: against real servers on 127.0.0.1 (a small AIAA server
of another make, the reference server, moto)."""

from __future__ import annotations

import csv
import importlib.util
import json
import threading
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import SimpleITK as sitk

import aws_fixtures
from aws_fixtures import cloudformation, create_stack
from loopback_servers import LoopbackServer, _QuietHandler
from test_cli import assert_one_line_failure, clara_aws

# pytest finds fixtures by their names in the module: the moto ones are those of the other discovery tests.
moto_server, moto_endpoint, aws_env = aws_fixtures.moto_server, aws_fixtures.moto_endpoint, aws_fixtures.aws_env

# The input image of every work call here; the server answers labels on the same grid.
SIZE_XYZ = (20, 16, 12)
SPACING = (1.5, 2.0, 2.5)
ORIGIN = (-12.0, 30.0, 7.5)
VOXEL_ML = SPACING[0] * SPACING[1] * SPACING[2] / 1000.0
#: label value -> the box (z, y, x slices) the server fills with it; the boxes do not overlap.
RESULT_BOXES = {
    1: (slice(1, 4), slice(2, 6), slice(3, 8)),      # 3 * 4 * 5 = 60 voxels
    2: (slice(6, 8), slice(8, 11), slice(10, 14)),   # 2 * 3 * 4 = 24 voxels
    10: (slice(9, 11), slice(12, 14), slice(15, 18)),  # 2 * 2 * 3 = 12 voxels
}


def _image_bytes(array: np.ndarray, folder: Path, name: str) -> bytes:
    """``array`` (z, y, x) on the test grid as a .nii.gz, written by SimpleITK, not by ClaraAWS."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    path = folder / name
    sitk.WriteImage(image, str(path))
    return path.read_bytes()


class _LabelMapHandler(_QuietHandler):
    """An AIAA server that lists one model, "seg", with the labels the test chose, and answers every work call
    with the same label image."""

    def do_GET(self) -> None:
        owner = self.server.owner
        url = urlsplit(self.path)
        if url.path.rstrip("/") != "/v1/models":
            return self.answer(404, b'{"error": "not found"}', "application/json")
        model = {"name": "seg", "type": "segmentation", "labels": owner.labels, "description": "label map"}
        single = "model=" in url.query  # like real AIAA: one object for ?model=, a list otherwise
        self.answer(200, json.dumps(model if single else [model]).encode(), "application/json")

    def do_POST(self) -> None:
        self.read_body()
        owner = self.server.owner
        with owner.lock:
            owner.work_calls += 1
        boundary = "labelmapboundary"
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{{}}\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="result"; filename="result.nii.gz"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode() + owner.result + f"\r\n--{boundary}--\r\n".encode()
        self.answer(200, body, f"multipart/form-data; boundary={boundary}")


class LabelMapServer(LoopbackServer):
    def __init__(self, labels, result: bytes = b"") -> None:
        super().__init__(_LabelMapHandler)
        self.labels = labels
        self.result = result
        self.work_calls = 0
        self.lock = threading.Lock()


@pytest.fixture
def ct_and_result(tmp_path):
    """(input CT file, the server's result bytes, the result's voxel count per label value)."""
    shape = SIZE_XYZ[::-1]
    ct = np.zeros(shape, np.int16)
    ct[2:10, 2:14, 2:18] = 200
    ct_path = tmp_path / "ct.nii.gz"
    ct_path.write_bytes(_image_bytes(ct, tmp_path, "ct.nii.gz"))
    labels = np.zeros(shape, np.uint8)
    for value, box in RESULT_BOXES.items():
        labels[box] = value
    counts = {value: int(np.count_nonzero(labels == value)) for value in RESULT_BOXES}
    return ct_path, _image_bytes(labels, tmp_path, "result.nii.gz"), counts


# --- A: a labels map is named by value ----------------------------------------------------------------------


@pytest.mark.parametrize("labels", [
    {"2": "spleen", "1": "liver", "10": "tumour"},  # value -> name (AIAA-era servers)
    {"tumour": 10, "spleen": 2, "liver": 1, "background": 0},  # name -> value (MONAI Label's form)
], ids=["value-to-name", "name-to-value"])
def test_a_labels_map_either_way_round_names_each_value_as_the_server_does(labels):
    from ClaraAWSLib.backends import connect

    with LabelMapServer(labels) as server, connect(server.url, backend="aiaa") as client:
        listed, asked = client.models()[0], client.model("seg")
    for model in (listed, asked):
        # Background names no segment; the other values are the server's own, 10 included.
        assert model["label_values"] == {"liver": 1, "spleen": 2, "tumour": 10}
        assert model["labels"] == ["liver", "spleen", "tumour"]  # in value order


def test_models_json_carries_the_values_of_a_labels_map():
    with LabelMapServer({"spleen": 2, "liver": 1}) as server:
        run = clara_aws("models", "--server", server.url, "--backend", "aiaa", "--json")
    assert run.returncode == 0, run.stderr
    [model] = json.loads(run.stdout)
    assert model["labels"] == ["liver", "spleen"] and model["label_values"] == {"liver": 1, "spleen": 2}


def test_the_protocol_s_list_of_labels_still_gives_value_position_plus_one():
    from ClaraAWSLib.backends import connect

    with LabelMapServer(["liver", "spleen"]) as server, connect(server.url, backend="aiaa") as client:
        model = client.model("seg")
    assert model["labels"] == ["liver", "spleen"] and model["label_values"] == {"liver": 1, "spleen": 2}


@pytest.mark.parametrize("labels, said", [
    ({"1": "2", "2": "1"}, "numbers on both sides"),  # names or values? either reading is a guess
    ({"1": 2}, "numbers on both sides"),
    ({"1": "liver", "spleen": 2}, "neither names mapped"),  # both forms in one map
    ({"liver": 1, "spleen": 1}, "give 1 to both"),  # one value, two names
    ({"1": "liver", "2": "liver"}, "give 'liver' both 1 and 2"),  # one name, two values
    ({"liver": -3}, "below zero"),
], ids=["both-numeric", "both-numeric-int", "mixed", "shared-value", "shared-name", "negative"])
def test_a_labels_map_that_cannot_be_read_without_guessing_is_refused_in_one_sentence(labels, said):
    with LabelMapServer(labels) as server:
        run = clara_aws("models", "--server", server.url, "--backend", "aiaa")
    assert_one_line_failure(run, 1)  # a server's fault: exit 1, with the sentence saying what is wrong
    assert "unexpected" not in run.stderr and said in run.stderr and "model 'seg'" in run.stderr


def test_batch_report_puts_each_value_s_volume_under_the_name_the_server_gives_it(tmp_path, ct_and_result):
    ct_path, result, counts = ct_and_result
    # The server calls value 1 liver and value 2 spleen; listed in the other order, as the repro had it.
    with LabelMapServer({"2": "spleen", "1": "liver"}, result) as server:
        run = clara_aws("batch", "--server", server.url, "--backend", "aiaa", "--model", "seg", str(ct_path),
                        "-o", str(tmp_path / "out"))
        assert server.work_calls == 1
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "out" / "report.csv", newline="", encoding="utf-8") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["status"] == "ok"
    assert float(row["liver_ml"]) == pytest.approx(counts[1] * VOXEL_ML, abs=6e-4)  # 60 voxels
    assert float(row["spleen_ml"]) == pytest.approx(counts[2] * VOXEL_ML, abs=6e-4)  # 24 voxels


def test_batch_counts_and_scores_labels_by_their_values_when_the_values_skip_numbers(tmp_path, ct_and_result):
    ct_path, result, counts = ct_and_result
    truth = tmp_path / "truth"
    truth.mkdir()
    (truth / "ct.nii.gz").write_bytes(result)  # the server's own answer as the truth: every Dice is 1
    with LabelMapServer({"2": "spleen", "1": "liver", "10": "tumour"}, result) as server:
        run = clara_aws("batch", "--server", server.url, "--backend", "aiaa", "--model", "seg", str(ct_path),
                        "-o", str(tmp_path / "out"), "--truth", str(truth))
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "out" / "report.csv", newline="", encoding="utf-8-sig") as handle:
        [row] = list(csv.DictReader(handle))
    assert float(row["tumour_ml"]) == pytest.approx(counts[10] * VOXEL_ML, abs=6e-4)
    assert [float(row[f"dice_{name}"]) for name in ("liver", "spleen", "tumour")] == [1.0, 1.0, 1.0]


def test_segment_result_values_are_the_ones_label_values_names(tmp_path, ct_and_result):
    """The result keeps the server's values (10 stays 10), so label_values names every labelled voxel."""
    from ClaraAWSLib.backends import connect

    ct_path, result, counts = ct_and_result
    labels = {"2": "spleen", "1": "liver", "10": "tumour"}
    with LabelMapServer(labels, result) as server:
        run = clara_aws("segment", "--server", server.url, "--backend", "aiaa", "--model", "seg", str(ct_path),
                        "-o", str(tmp_path / "seg.nii.gz"))
        with connect(server.url, backend="aiaa") as client:
            label_values = client.model("seg")["label_values"]
    assert run.returncode == 0, run.stderr
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "seg.nii.gz")))
    name_of_value = {value: name for name, value in label_values.items()}
    found = {int(v): int(n) for v, n in zip(*np.unique(written, return_counts=True)) if v != 0}
    assert {name_of_value[value]: voxels for value, voxels in found.items()} == {
        labels[str(value)]: voxels for value, voxels in counts.items()}


# --- B: deepedit is MONAI Label's ---------------------------------------------------------------------------


def test_deepedit_against_an_aiaa_server_says_it_needs_monai_label(tmp_path, ct_and_result, reference_server):
    ct_path, _, _ = ct_and_result
    address = urlsplit(reference_server.url)
    with_credentials = f"{address.scheme}://admin:S3cretPw@{address.netloc}"
    for server in (reference_server.url, with_credentials):
        run = clara_aws("deepedit", "--server", server, "--model", "region_grow_deepgrow", str(ct_path),
                        "-o", str(tmp_path / "de.nii.gz"), "--click", "region=5,5,5")
        assert_one_line_failure(run, 2)
        assert "needs a MONAI Label server" in run.stderr and reference_server.url in run.stderr
        assert "S3cretPw" not in run.stderr and "admin" not in run.stderr
    assert not (tmp_path / "de.nii.gz").exists()


@pytest.mark.parametrize("command", [["next", "-o", "never-written.nii.gz"], ["train", "status"]])
def test_monai_label_commands_against_an_aiaa_server_never_show_its_password(reference_server, command):
    address = urlsplit(reference_server.url)
    run = clara_aws(*command, "--server", f"{address.scheme}://bob:Pw0rd-9@{address.netloc}")
    assert run.returncode == 2 and "needs a MONAI Label server" in run.stderr, run.stderr
    assert "Pw0rd-9" not in run.stdout + run.stderr


def test_an_aiaa_backend_refuses_the_deepedit_task_in_one_sentence(reference_server):
    from ClaraAWSLib.backends import DEEPEDIT, connect
    from ClaraAWSLib.core.errors import InputError

    with connect(reference_server.url, backend="aiaa") as client:
        model = client.model("region_grow_deepgrow")
        with pytest.raises(InputError, match="needs a MONAI Label server"):
            client.check_model_task(model, DEEPEDIT)
        assert tuple(client.model_types_for(DEEPEDIT)) == ()  # no AIAA model serves it, as the panel lists


# --- C: credentials in a stack output are never shown --------------------------------------------------------


@pytest.mark.skipif(not all(importlib.util.find_spec(name) for name in ("boto3", "moto")), reason="needs boto3 and moto")
def test_discover_never_shows_credentials_held_in_a_stack_output(moto_endpoint, aws_env):
    create_stack(cloudformation(moto_endpoint), "clara-creds", "clara-root", UseHTTPS="HTTPS",
                 LoadBalancerDnsName="admin:S3cretPw@clara.example.org")
    text = clara_aws("discover", "--region", "us-east-1", "--aws-endpoint-url", moto_endpoint)
    as_json = clara_aws("discover", "--json", "--region", "us-east-1", "--aws-endpoint-url", moto_endpoint)
    for run in (text, as_json):
        assert run.returncode == 0, run.stderr
        assert "S3cretPw" not in run.stdout + run.stderr and "admin:" not in run.stdout + run.stderr
    assert text.stdout.splitlines()[0] == "clara-creds (us-east-1): https://clara.example.org"
    [found] = json.loads(as_json.stdout)
    assert found["url"] == "https://clara.example.org" and found["elb_host"] == "clara.example.org"
    assert "credentials" in found["note"]  # why a server behind a login may now refuse
