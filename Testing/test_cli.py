"""The `clara-aws` command line, run as a user runs it: a real process talking to real servers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ClaraAWSLib.core.imageio import write_image_file


def clara_aws(*args, env=None, timeout=120):
    script = Path(sys.executable).with_name("clara-aws")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ClaraAWSLib.cli"]
    environment = {**os.environ, **(env or {})}
    environment.pop("CLARA_AIAA_URL", None) if env is None or "CLARA_AIAA_URL" not in env else None
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=environment)


def assert_one_line_failure(run, code):
    assert run.returncode == code, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clara-aws: error: ") and "Traceback" not in run.stderr


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory, phantom_small):
    path = tmp_path_factory.mktemp("cli") / "ct.nrrd"
    write_image_file(phantom_small.ct, path)
    return path


def _same_grid(a: Path, b: Path) -> None:
    x, y = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
    assert x.GetSize() == y.GetSize()
    assert np.allclose(x.GetOrigin(), y.GetOrigin(), atol=1e-5)
    assert np.allclose(x.GetSpacing(), y.GetSpacing(), atol=1e-6)
    assert np.allclose(x.GetDirection(), y.GetDirection(), atol=1e-6)


def test_models_json_and_table(reference_server):
    run = clara_aws("models", "--server", reference_server.url, "--json")
    assert run.returncode == 0, run.stderr
    models = json.loads(run.stdout)
    assert isinstance(models, list) and all({"name", "type", "labels", "description"} <= set(m) for m in models)
    table = clara_aws("models", env={"CLARA_AIAA_URL": reference_server.url})
    assert table.returncode == 0 and all(m["name"] in table.stdout for m in models)


def test_segment_writes_labels_on_the_input_grid(tmp_path, reference_server, ct_file, phantom_small):
    output = tmp_path / "labels.nii.gz"
    run = clara_aws("segment", "--server", reference_server.url, "--model", "phantom_abdomen_seg", ct_file, "-o", output)
    assert run.returncode == 0, run.stderr
    _same_grid(ct_file, output)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(output)))
    assert set(np.unique(labels)) == set(range(len(phantom_small.labels) + 1))


@pytest.mark.parametrize("session", [False, True])
def test_annotate_and_deepgrow(tmp_path, reference_server, ct_file, phantom_small, session):
    spleen = np.argwhere(phantom_small.truth.array == phantom_small.labels.index("spleen") + 1)
    k, j, i = spleen.mean(axis=0).round().astype(int)
    points = []
    for axis in range(3):
        for pick in (spleen[:, axis].argmin(), spleen[:, axis].argmax()):
            kk, jj, ii = spleen[pick]
            points += ["--point", f"{ii},{jj},{kk}"]
    flag = ["--session"] if session else []
    before = reference_server.stats.image_uploads
    out = tmp_path / "annotation.nii.gz"
    run = clara_aws("annotate", "--server", reference_server.url, "--model", "region_grow_annotation", ct_file, "-o", out, *points, *flag)
    assert run.returncode == 0, run.stderr
    _same_grid(ct_file, out)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out)))[k, j, i] == 1
    assert reference_server.stats.image_uploads == before + 1
    out = tmp_path / "deepgrow.nii.gz"
    run = clara_aws("deepgrow", "--server", reference_server.url, "--model", "region_grow_deepgrow", ct_file, "-o", out,
                    "--fg", f"{i},{j},{k}", "--bg", "1,1,1", *flag)
    assert run.returncode == 0, run.stderr
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out)))[k, j, i] == 1


def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, reference_server, ct_file):
    out = tmp_path / "never.nii.gz"
    five = [arg for n in range(5) for arg in ("--point", f"{n},{n},{n}")]
    assert_one_line_failure(clara_aws("annotate", "--server", reference_server.url, "--model", "region_grow_annotation", ct_file, "-o", out, *five), 2)
    assert_one_line_failure(clara_aws("segment", "--server", reference_server.url, "--model", "m", tmp_path / "missing.nii", "-o", out), 2)
    four_d = tmp_path / "four_d.nii.gz"
    sitk.WriteImage(sitk.Image([4, 4, 4, 2], sitk.sitkInt16), str(four_d))
    assert_one_line_failure(clara_aws("segment", "--server", reference_server.url, "--model", "m", four_d, "-o", out), 2)
    assert_one_line_failure(clara_aws("segment", "--model", "m", ct_file, "-o", out), 2)  # no server at all
    uploads = reference_server.stats.image_uploads
    wrong_type = clara_aws("segment", "--server", reference_server.url, "--model", "region_grow_annotation", ct_file, "-o", out)
    assert_one_line_failure(wrong_type, 2)
    assert "type annotation" in wrong_type.stderr and reference_server.stats.image_uploads == uploads
    unknown = clara_aws("segment", "--server", reference_server.url, "--model", "no_such_model", ct_file, "-o", out)
    assert_one_line_failure(unknown, 2)  # a wrong argument, found out by asking the server
    assert "no_such_model" in unknown.stderr and reference_server.stats.image_uploads == uploads
    assert not out.exists()


def test_server_failures_give_one_line_and_debug_gives_the_traceback(tmp_path, misbehaving_server, ct_file):
    out = tmp_path / "never.nii.gz"
    run = clara_aws("segment", "--server", misbehaving_server.url + "/status-504", "--model", "m", ct_file, "-o", out)
    assert_one_line_failure(run, 1)
    assert "idle timeout" in run.stderr
    run = clara_aws("segment", "--server", misbehaving_server.url + "/far-away-result", "--model", "m", ct_file, "-o", out)
    assert_one_line_failure(run, 2)
    assert "does not overlap" in run.stderr
    run = clara_aws("models", "--server", "http://127.0.0.1:9", "--debug")
    assert run.returncode == 1 and "Traceback" in run.stderr and "clara-aws: error:" in run.stderr
    assert not out.exists()


def test_tls_options(tls_reference_server, self_signed_certificate):
    cert, _ = self_signed_certificate
    url = tls_reference_server.url.replace("http://", "https://")
    assert_one_line_failure(clara_aws("models", "--server", url), 1)
    assert clara_aws("models", "--server", url, "--ca-bundle", cert).returncode == 0
    insecure = clara_aws("models", "--server", url, "--insecure")
    assert insecure.returncode == 0 and "verification is OFF" in insecure.stderr


def test_serve_prints_its_url_answers_and_stops_on_interrupt():
    script = Path(sys.executable).with_name("clara-aws")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ClaraAWSLib.cli"]
    process = subprocess.Popen(command + ["serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        for _ in range(50):
            line = process.stdout.readline()
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            if match:
                url = match.group(0)
                break
        assert url, "the server did not print its URL"
        import requests

        assert requests.get(url + "/docs/", timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0


def test_demo_writes_files_and_reports_dice(tmp_path):
    run = clara_aws("demo", "--out", tmp_path / "demo", "--size", "96,96,40", timeout=300)
    assert run.returncode == 0, run.stderr
    for name in ("ct.nii.gz", "segmentation.nii.gz", "truth.nii.gz", "preview.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 0
    scores = [float(v) for v in re.findall(r"Dice .*? ([01]\.\d{3})", run.stdout)]
    assert len(scores) == 4 and min(scores) > 0.8
    for stage in ("encode", "upload", "download", "decode"):
        assert f"{stage} " in run.stdout
