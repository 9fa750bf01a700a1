"""Arguments the reference server and the commands around it must refuse in one sentence, not crash on.

The server is the real one on 127.0.0.1, asked with plain ``requests`` (see server_fixtures); the CLI runs
as a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from server_fixtures import error_of, post_work
from test_cli import assert_one_line_failure, clara_aws

SIZE = (24, 20, 12)  # i, j, k of the small test volume
#: The smallest edge the reference server's models accept; the server refuses thinner uploads with HTTP 400.
SMALLEST_EDGE = 4
#: The reference server's default limit of decoded voxels per image (HTTP 413 above it).
MOST_VOXELS = 100_000_000


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory):
    """A small CT made with SimpleITK, not ClaraAWSLib: a bright ball in noise."""
    k, j, i = np.indices(SIZE[::-1])
    noise = np.random.default_rng(11).normal(0, 20, size=k.shape)
    array = (noise + 1000 * (((i - 12) / 6) ** 2 + ((j - 10) / 5) ** 2 + ((k - 6) / 4) ** 2 < 1)).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.5, 3.0))
    path = tmp_path_factory.mktemp("arguments") / "ct.nii.gz"
    sitk.WriteImage(image, str(path), True)
    return path


def _one_sentence(text: str) -> bool:
    return "\n" not in text.strip() and text.strip().endswith(".") and "Traceback" not in text


# --- A: params the server cannot convert get HTTP 400, not 500 ------------------------------------

INSIDE = [1, 1, 1]
DEEPLY_NESTED = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit
NESTED_INSIDE_AN_OBJECT = '{"points": ' + "[" * 900 + "]" * 900 + "}"  # loads, but too deep to quote back


@pytest.mark.parametrize(
    "endpoint, model, params_text, words",
    [
        ("dextr3d", "region_grow_annotation", '{"points": [[NaN, 1, 1]' + ", [1, 1, 1]" * 5 + "]}", "points[0]"),
        ("deepgrow", "region_grow_deepgrow", '{"foreground": [[Infinity, 1, 1]]}', "foreground[0]"),
        ("deepgrow", "region_grow_deepgrow", '{"foreground": [[1, -Infinity, 1]]}', "foreground[0]"),
        ("deepgrow", "region_grow_deepgrow", '{"foreground": [[1e400, 1, 1]]}', "foreground[0]"),
        ("deepgrow", "region_grow_deepgrow", json.dumps({"foreground": [INSIDE]})[:-1] + ', "current_point": [NaN, 1, 1]}',
         "current_point"),
        ("segmentation", "phantom_abdomen_seg", DEEPLY_NESTED, "nests arrays or objects"),
        ("dextr3d", "region_grow_annotation", NESTED_INSIDE_AN_OBJECT, "nests arrays or objects"),
    ],
    ids=["NaN point", "Infinity point", "-Infinity coordinate", "1e400 coordinate", "NaN current_point",
         "nested 100000 deep", "nested 900 deep in an object"],
)
def test_params_the_server_cannot_convert_get_400_in_one_sentence(reference_server, small_ct, endpoint, model,
                                                                   params_text, words):
    response = post_work(reference_server.url, endpoint, model, small_ct, params_text=params_text)
    error = error_of(response, 400)
    assert error["type"] == "InvalidParams"
    assert words in error["message"][0] and _one_sentence(error["message"][0])


def test_the_server_still_answers_after_refusing_deeply_nested_params(reference_server, small_ct):
    error_of(post_work(reference_server.url, "segmentation", "phantom_abdomen_seg", small_ct, params_text=DEEPLY_NESTED), 400)
    after = post_work(reference_server.url, "deepgrow", "region_grow_deepgrow", small_ct, {"foreground": [[12, 10, 6]]})
    assert after.status_code == 200, after.text[:300]


# --- B: clara-aws demo --size is bounded while the arguments are parsed ---------------------------


@pytest.mark.parametrize(
    "size, words",
    [
        ("5000,5000,5000", "at most"),
        (f"{SMALLEST_EDGE - 3},{SMALLEST_EDGE - 3},{SMALLEST_EDGE - 3}", f"at least {SMALLEST_EDGE}"),
        (f"64,64,{SMALLEST_EDGE - 1}", f"at least {SMALLEST_EDGE}"),
        ("-1,64,64", f"at least {SMALLEST_EDGE}"),
        ("1000,1000,101", f"{1000 * 1000 * 101:,} voxels"),
    ],
)
def test_a_demo_size_out_of_bounds_exits_2_before_making_a_folder(tmp_path, size, words):
    out = tmp_path / "demo"
    run = clara_aws("demo", "--size", size, "--out", out, timeout=60)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clara-aws demo: error: argument --size: ") and "Traceback" not in run.stderr
    assert words in run.stderr and "expected one argument" not in run.stderr
    assert not out.exists() and run.stdout == ""


def test_the_smallest_demo_size_runs_the_whole_demo(tmp_path):
    out = tmp_path / "demo"
    run = clara_aws("demo", "--size", f"{SMALLEST_EDGE},{SMALLEST_EDGE},{SMALLEST_EDGE}", "--out", out, timeout=120)
    assert run.returncode == 0, run.stderr
    assert sitk.ReadImage(str(out / "segmentation.nii.gz")).GetSize() == (SMALLEST_EDGE,) * 3


def test_the_largest_demo_size_the_server_takes_is_accepted_by_the_parser():
    """Running it takes a minute and 2 GB, so only the parsing is checked: exactly the server's limit passes."""
    from ClaraAWSLib.cli.commands import build_parser

    parser = build_parser()
    edge_i, edge_j = 1000, 1000
    edge_k = MOST_VOXELS // (edge_i * edge_j)
    assert parser.parse_args(["demo", "--size", f"{edge_i},{edge_j},{edge_k}"]).size == [edge_i, edge_j, edge_k]


# --- C: serve quotes a bad limit as typed ---------------------------------------------------------


@pytest.mark.parametrize(
    "option, typed, megabytes",
    [("--max-upload-mb", "-5", True), ("--max-session-mb", "-2.5", True), ("--max-image-mvoxels", "-3", False),
     ("--max-sessions", "0", False), ("--session-expiry", "-60", False)],
)
def test_serve_quotes_a_limit_that_is_not_positive_as_typed(option, typed, megabytes):
    run = clara_aws("serve", "--host", "127.0.0.1", "--port", "0", option, typed, timeout=30)
    assert_one_line_failure(run, 2)
    assert run.stderr.strip().endswith(f"{option} must be a positive number, not {typed}.")  # not {typed}.0
    if megabytes:
        assert str(int(float(typed) * 1024 * 1024)) not in run.stderr  # not the bytes it converts to


def test_the_server_module_quotes_a_limit_as_typed_too():
    run = subprocess.run([sys.executable, "-m", "ClaraAWSLib.server", "--host", "127.0.0.1", "--port", "0",
                          "--max-upload-mb", "-5"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().endswith("--max-upload-mb must be a positive number, not -5.") and "5242880" not in run.stderr


def test_serve_refuses_a_positive_limit_below_one_unit_in_words():
    run = clara_aws("serve", "--host", "127.0.0.1", "--port", "0", "--max-sessions", "0.5", timeout=30)
    assert_one_line_failure(run, 2)
    assert "--max-sessions 0.5 is less than one session" in run.stderr


# --- D: a negative I,J,K after a separate flag is a value -----------------------------------------

FIVE_INSIDE = ["0,0,0", "23,19,11", "5,5,5", "6,6,6", "7,7,7"]


def _annotate(server_url, ct, output, points):
    return clara_aws("annotate", "--server", server_url, "--model", "region_grow_annotation", ct, "-o", output, *points)


@pytest.mark.parametrize("negative", ["-1,2,3", "-1,-2,-3"])
def test_a_separate_negative_point_gets_the_outside_sentence_as_with_equals(tmp_path, reference_server, small_ct, negative):
    output = tmp_path / "labels.nii.gz"
    uploads = reference_server.stats.image_uploads
    inside = [a for p in FIVE_INSIDE for a in ("--point", p)]
    separate = _annotate(reference_server.url, small_ct, output, inside + ["--point", negative])
    joined = _annotate(reference_server.url, small_ct, output, inside + [f"--point={negative}"])
    assert_one_line_failure(separate, 2)
    expected = f"Point 6 at voxel [{negative.replace(',', ', ')}] lies outside"
    assert expected in separate.stderr and separate.stderr == joined.stderr
    assert reference_server.stats.image_uploads == uploads and not output.exists()


@pytest.mark.parametrize("option, which", [("--fg", "Foreground point 1"), ("--bg", "Background point 1")])
def test_separate_negative_deepgrow_clicks_get_the_outside_sentence(tmp_path, reference_server, small_ct, option, which):
    output = tmp_path / "labels.nii.gz"
    clicks = ["--fg", "12,10,6"] if option == "--bg" else []
    run = clara_aws("deepgrow", "--server", reference_server.url, "--model", "region_grow_deepgrow", small_ct, "-o", output,
                    *clicks, option, "-4,10,6")
    assert_one_line_failure(run, 2)
    assert f"{which} at voxel [-4, 10, 6] lies outside" in run.stderr and not output.exists()


def test_an_option_flag_after_point_is_still_missing_its_value(tmp_path, reference_server, small_ct):
    """Only I,J,K values are taken for values: a flag in their place still means the value is missing."""
    run = _annotate(reference_server.url, small_ct, tmp_path / "labels.nii.gz", ["--point", "--debug"])
    assert run.returncode == 2 and "argument --point: expected one argument" in run.stderr
