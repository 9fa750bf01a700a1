"""Bad input to `clara-aws`: each row is the input, the exit code and a fragment of the one sentence.

Every row must fail before anything is uploaded (the reference server counts uploads), print exactly
one line on stderr (no traceback, no ITK or NIfTI library noise) and leave OUTPUT as it was.
"""

from __future__ import annotations

import os
import resource
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from test_cli import assert_one_line_failure, clara_aws

SIZE = (24, 20, 12)  # i, j, k


def _ct(dtype=np.int16) -> sitk.Image:
    k, j, i = np.indices(SIZE[::-1])
    noise = np.random.default_rng(5).normal(0, 20, size=k.shape)  # so that half of the file is half of the voxels
    array = (noise + 1000 * (((i - 12) / 6) ** 2 + ((j - 10) / 5) ** 2 + ((k - 6) / 4) ** 2 < 1)).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.5, 3.0))
    image.SetOrigin((-20.0, 10.0, 5.0))
    return image


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Good and broken input files, each made with SimpleITK or by editing bytes, not with ClaraAWSLib."""
    folder = tmp_path_factory.mktemp("inputs")
    paths = {}
    paths["good"] = folder / "ct.nii.gz"
    sitk.WriteImage(_ct(), str(paths["good"]), True)
    data = paths["good"].read_bytes()
    paths["half"] = folder / "half.nii.gz"
    paths["half"].write_bytes(data[: len(data) // 2])
    paths["stub"] = folder / "stub.nii.gz"
    paths["stub"].write_bytes(data[:60])  # not even the whole header
    sitk.WriteImage(_ct(), str(folder / "plain.nii"), False)
    plain = (folder / "plain.nii").read_bytes()
    paths["header-only"] = folder / "header-only.nii"
    paths["header-only"].write_bytes(plain[:352])
    zero = bytearray(plain)
    struct.pack_into("<h", zero, 46, 0)  # dim[3] = 0
    paths["dim3-zero"] = folder / "dim3-zero.nii"
    paths["dim3-zero"].write_bytes(bytes(zero))
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        array = sitk.GetArrayFromImage(_ct(np.float32))
        array[3, 4, 5] = value
        image = sitk.GetImageFromArray(array)
        paths[name] = folder / f"{name}.nrrd"  # ITK's NIfTI reader turns NaN into 0; NRRD keeps it
        sitk.WriteImage(image, str(paths[name]), True)
        # The same voxels as NIfTI: SimpleITK writes the NaN, but reads it back as 0.
        paths[f"{name}-nifti"] = folder / f"{name}.nii.gz"
        sitk.WriteImage(image, str(paths[f"{name}-nifti"]), True)
    array = sitk.GetArrayFromImage(_ct(np.float32))
    array[::2] = np.nan  # every other slice, as a broken reconstruction leaves it
    paths["nan-slices"] = folder / "nan-slices.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(paths["nan-slices"]), True)
    array = sitk.GetArrayFromImage(_ct(np.float64))
    array[11, 19, 23] = -np.inf  # the very last voxel of a plain file
    paths["minus-inf"] = folder / "minus-inf.nii"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(paths["minus-inf"]), False)
    paths["empty"] = folder / "empty.nii.gz"
    paths["empty"].write_bytes(b"")
    paths["text"] = folder / "notes.nii.gz"
    paths["text"].write_text("not an image\n")
    paths["folder"] = folder / "a-folder.nii.gz"
    paths["folder"].mkdir()
    paths["file"] = folder / "plain-file"
    paths["file"].write_text("x")
    return paths


def _segment(server, input_path, output, *extra):
    return clara_aws("segment", "--server", server, "--model", "phantom_abdomen_seg", input_path, "-o", output, *extra)


def _annotate(server, input_path, output, *points, extra=()):
    arguments = [a for p in points for a in ("--point", p)]
    return clara_aws("annotate", "--server", server, "--model", "region_grow_annotation", input_path, "-o", output, *arguments, *extra)


INSIDE = ["0,0,0", "23,19,11", "5,5,5", "6,6,6", "7,7,7", "8,8,8"]

# (name, how to run it, exit code, fragment of the sentence)
ROWS = [
    ("truncated .nii.gz", lambda s, p, o: _segment(s, p["half"], o), 2, "incomplete"),
    ("empty .nii.gz (0 bytes)", lambda s, p, o: _segment(s, p["empty"], o), 2, "empty.nii.gz is empty (0 bytes)"),
    ("gzip cut inside the header", lambda s, p, o: _segment(s, p["stub"], o), 2, "incomplete"),
    ("header without voxels", lambda s, p, o: _segment(s, p["header-only"], o), 2, "incomplete"),
    ("dim[3] = 0", lambda s, p, o: _segment(s, p["dim3-zero"], o), 2, "size 0 along axis 3"),
    ("NaN voxel", lambda s, p, o: _segment(s, p["nan"], o), 2, "1 NaN or infinite voxel"),
    ("Inf voxel", lambda s, p, o: _segment(s, p["inf"], o), 2, "1 NaN or infinite voxel"),
    ("NaN voxel in NIfTI", lambda s, p, o: _segment(s, p["nan-nifti"], o), 2,
     "nan.nii.gz holds 1 NaN or infinite voxel (1 NaN) in slice k = 3, the first at voxel I,J,K = 5,4,3"),
    ("Inf voxel in NIfTI", lambda s, p, o: _segment(s, p["inf-nifti"], o), 2, "1 NaN or infinite voxel (1 infinite) in slice k = 3"),
    ("NaN in every other slice", lambda s, p, o: _segment(s, p["nan-slices"], o), 2,
     f"holds {SIZE[0] * SIZE[1] * 6} NaN or infinite voxels ({SIZE[0] * SIZE[1] * 6} NaN) in 6 of its 12 slices (k = 0 to 10)"),
    ("-inf in the last voxel of a plain float64 NIfTI", lambda s, p, o: _segment(s, p["minus-inf"], o), 2,
     "1 NaN or infinite voxel (1 infinite) in slice k = 11, the first at voxel I,J,K = 23,19,11"),
    ("NaN voxel, session deepgrow", lambda s, p, o: clara_aws("deepgrow", "--server", s, "--model", "region_grow_deepgrow",
                                                              p["nan-nifti"], "-o", o, "--fg", "12,10,6", "--session"), 2,
     "1 NaN or infinite voxel"),
    ("input not an image", lambda s, p, o: _segment(s, p["text"], o), 2, "not an image SimpleITK can read"),
    ("input a folder", lambda s, p, o: _segment(s, p["folder"], o), 2, "holds no DICOM series"),
    ("OUTPUT a folder", lambda s, p, o: _segment(s, p["good"], p["folder"]), 2, "is a folder"),
    ("OUTPUT unknown extension", lambda s, p, o: _segment(s, p["good"], o.with_name("labels.xyz")), 2, "extension"),
    ("OUTPUT parent a file", lambda s, p, o: _segment(s, p["good"], p["file"] / "labels.nii.gz"), 2, "is a file, not a folder"),
    ("OUTPUT is INPUT", lambda s, p, o: _segment(s, p["good"], p["good"]), 2, "is the INPUT"),
    ("OUTPUT /dev/full", lambda s, p, o: _segment(s, p["good"], "/dev/full"), 2, "not a regular file"),
    ("point outside", lambda s, p, o: _annotate(s, p["good"], o, *INSIDE[:5], "24,0,0"), 2, "Point 6 at voxel [24, 0, 0] lies outside"),
    ("negative point", lambda s, p, o: clara_aws("deepgrow", "--server", s, "--model", "region_grow_deepgrow", p["good"], "-o", o,
                                                 "--fg", "1,1,1", "--bg", "1,-1,1"), 2, "Background point 1"),
    ("malformed IPv6 URL", lambda s, p, o: _segment("http://[::1", p["good"], o), 2, "not a valid server address"),
    ("port out of range in URL", lambda s, p, o: _segment("http://127.0.0.1:99999", p["good"], o), 2, "not a valid server address"),
    ("non-ASCII header", lambda s, p, o: _segment(s, p["good"], o, "--header", "X-Api-Key: schlüssel"), 2, "non-ASCII"),
    ("negative read timeout", lambda s, p, o: _segment(s, p["good"], o, "--read-timeout", "-1"), 2, "read timeout must be a positive"),
    ("NaN connect timeout", lambda s, p, o: _segment(s, p["good"], o, "--connect-timeout", "nan"), 2, "connect timeout must be a positive"),
    ("infinite read timeout", lambda s, p, o: _segment(s, p["good"], o, "--read-timeout", "inf"), 2, "read timeout must be a positive"),
    ("zero deadline", lambda s, p, o: _segment(s, p["good"], o, "--deadline", "0"), 2, "deadline must be a positive"),
]


@pytest.mark.parametrize("name, run, code, words", ROWS, ids=[row[0] for row in ROWS])
def test_bad_input_fails_in_one_sentence_before_any_upload(tmp_path, reference_server, inputs, name, run, code, words):
    output = tmp_path / "labels.nii.gz"
    uploads = reference_server.stats.image_uploads
    result = run(reference_server.url, inputs, output)
    assert_one_line_failure(result, code)
    assert words in result.stderr
    assert reference_server.stats.image_uploads == uploads
    assert not output.exists()


def test_the_good_input_of_the_table_does_segment(tmp_path, reference_server, inputs):
    output = tmp_path / "labels.nii.gz"
    run = _annotate(reference_server.url, inputs["good"], output, *INSIDE)
    assert run.returncode == 0, run.stderr
    assert sitk.ReadImage(str(output)).GetSize() == SIZE


def test_a_truncated_file_is_refused_although_itk_would_read_it(inputs):
    """The row above is not vacuous: ITK reads the cut file without complaint, with voxels missing."""
    with_missing_voxels = sitk.GetArrayFromImage(sitk.ReadImage(str(inputs["half"])))
    complete = sitk.GetArrayFromImage(sitk.ReadImage(str(inputs["good"])))
    assert with_missing_voxels.shape == complete.shape and np.count_nonzero(with_missing_voxels) < np.count_nonzero(complete)


def test_unreadable_input_says_permission_denied(tmp_path, reference_server, inputs):
    if os.geteuid() == 0:
        pytest.skip("root reads every file, so permission denied cannot happen here")
    locked = tmp_path / "locked.nii.gz"
    locked.write_bytes(inputs["good"].read_bytes())
    locked.chmod(0)
    run = _segment(reference_server.url, locked, tmp_path / "labels.nii.gz")
    assert_one_line_failure(run, 2)
    assert "permission denied" in run.stderr


def _unwritable_folder(tmp_path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    # root writes anywhere on disk; sysfs refuses new files even to root.
    try:
        import tempfile

        os.unlink(tempfile.mkstemp(dir="/sys")[1])
    except OSError:
        return Path("/sys")
    pytest.skip("no folder here refuses writing to root")


def test_an_unwritable_output_folder_is_found_before_the_upload(tmp_path, reference_server, inputs):
    uploads = reference_server.stats.image_uploads
    run = _segment(reference_server.url, inputs["good"], _unwritable_folder(tmp_path) / "labels.nii.gz")
    assert_one_line_failure(run, 2)
    assert "not writable" in run.stderr and reference_server.stats.image_uploads == uploads


def test_points_outside_are_found_before_even_the_model_is_asked(tmp_path, misbehaving_server, inputs):
    run = _annotate(misbehaving_server.url + "/status-502", inputs["good"], tmp_path / "x.nii.gz", *INSIDE[:5], "0,20,0")
    assert_one_line_failure(run, 2)
    assert misbehaving_server.paths == []


# --- a failed write keeps the previous OUTPUT -------------------------------------------------


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_write_that_hits_a_file_size_limit_keeps_the_previous_output(tmp_path, reference_server, inputs):
    output = tmp_path / "labels.nii.gz"
    script = Path(sys.executable).with_name("clara-aws")
    command = [str(script), "annotate", "--server", reference_server.url, "--model", "region_grow_annotation",
               str(inputs["good"]), "-o", str(output)] + [a for p in INSIDE for a in ("--point", p)]
    unlimited = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert unlimited.returncode == 0, unlimited.stderr
    limit = output.stat().st_size // 2  # the new labels cannot fit; nothing else the command writes is that large
    previous = b"the previous labels, which must survive"
    output.write_bytes(previous)
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, preexec_fn=_limit_file_size(limit))
    assert_one_line_failure(run, 2)
    assert "Could not write" in run.stderr and "previous file is unchanged" in run.stderr
    assert output.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii.gz"]  # no partial file left behind


def test_a_successful_write_replaces_the_output_whole(tmp_path, reference_server, inputs):
    output = tmp_path / "labels.nrrd"
    output.write_bytes(b"old")
    run = _segment(reference_server.url, inputs["good"], output)
    assert run.returncode == 0, run.stderr
    assert sitk.ReadImage(str(output)).GetSize() == SIZE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nrrd"]


# --- serve and demo -------------------------------------------------------------------------


def test_serve_with_a_port_out_of_range_is_one_sentence():
    run = clara_aws("serve", "--port", "99999", timeout=30)
    assert_one_line_failure(run, 2)
    assert "not a port number" in run.stderr


def test_serve_on_a_taken_port_exits_non_zero_with_one_sentence():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        run = clara_aws("serve", "--port", taken.getsockname()[1], timeout=30)
    assert_one_line_failure(run, 1)
    assert "Cannot listen on 127.0.0.1" in run.stderr and "in use" in run.stderr


@pytest.mark.parametrize("host", ["999.1.1.1", "bad host", "::1::2"])
def test_serve_on_a_host_that_is_not_an_address_exits_with_2(host):
    run = clara_aws("serve", "--host", host, "--port", "0", timeout=60)
    assert_one_line_failure(run, 2)
    assert "--host" in run.stderr


@pytest.mark.parametrize("option, value", [("--max-sessions", "0"), ("--max-image-mvoxels", "-5"), ("--max-session-mb", "nan"),
                                           ("--inference-slots", "0"), ("--inference-delay", "-1")])
def test_serve_refuses_limits_that_are_not_positive(option, value):
    run = clara_aws("serve", "--port", "0", option, value, timeout=30)
    assert_one_line_failure(run, 2)
    assert option in run.stderr


def test_demo_out_naming_an_existing_file_is_one_sentence(tmp_path):
    existing = tmp_path / "not-a-folder"
    existing.write_text("keep me")
    run = clara_aws("demo", "--out", existing, timeout=60)
    assert_one_line_failure(run, 2)
    assert "is a file, not a folder" in run.stderr and existing.read_text() == "keep me"


# --- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_no_secret_reaches_the_terminal_even_with_debug(debug):
    from hostile_servers import HostileServer

    password, key = "pw-Zq81x", "key-7Hc2v"
    with HostileServer() as here, HostileServer() as elsewhere:
        here.elsewhere = elsewhere.url
        server = f"http://user:{password}@{here.url.split('://')[1]}/redirect-away"
        run = clara_aws("models", "--server", server, "--header", f"X-Api-Key: {key}", *debug)
        assert run.returncode == 1
        assert password not in run.stderr + run.stdout and key not in run.stderr + run.stdout
        assert elsewhere.url in run.stderr and "another address" in run.stderr
        assert elsewhere.seen == []
        if not debug:
            assert_one_line_failure(run, 1)


@pytest.mark.parametrize("behaviour, code, words", [
    ("labels-5", 1, "labels of model 'm'"),
    ("name-123", 1, "name is 123"),
    ("cut-json", 1, "middle of its JSON"),
])
def test_a_hostile_model_list_is_one_sentence_on_the_command_line(behaviour, code, words):
    from hostile_servers import HostileServer

    with HostileServer() as here:
        run = clara_aws("models", "--server", f"{here.url}/{behaviour}")
    assert_one_line_failure(run, code)
    assert words in run.stderr


@pytest.mark.parametrize("backend", ["auto", "aiaa"])
def test_an_invalid_content_length_ends_the_command_in_one_line(backend):
    from hostile_servers import HostileServer

    with HostileServer() as here:
        run = clara_aws("models", "--server", f"{here.url}/content-length/abc", "--json", "--backend", backend)
    assert_one_line_failure(run, 1)
    assert "invalid Content-Length ('abc')" in run.stderr and run.stdout == ""


@pytest.mark.parametrize("behaviour", ["bomb-inflates", "bomb-claims-huge"])
def test_a_bomb_result_is_refused_and_the_previous_output_kept(tmp_path, inputs, behaviour):
    from hostile_servers import HostileServer

    output = tmp_path / "labels.nii.gz"
    output.write_bytes(b"previous")
    with HostileServer() as here:
        here.claimed_size = SIZE
        run = _segment(f"{here.url}/{behaviour}", inputs["good"], output)
    assert_one_line_failure(run, 1)
    assert "nothing was changed" in run.stderr and output.read_bytes() == b"previous"


def test_itk_warnings_stay_off_the_terminal(tmp_path, reference_server, inputs):
    """ITK warns on stderr when it reads a NIfTI file without the NIfTI magic (as Analyze); the CLI keeps quiet."""
    analyze = tmp_path / "analyze.nii"
    data = bytearray((inputs["good"].parent / "plain.nii").read_bytes())
    data[344:348] = b"\x00\x00\x00\x00"
    analyze.write_bytes(bytes(data))
    noisy = subprocess.run([sys.executable, "-c", f"import SimpleITK as s; s.ReadImage({str(analyze)!r})"],
                           capture_output=True, text=True, timeout=60)
    assert "WARNING" in noisy.stderr  # the noise is real
    run = _segment(reference_server.url, analyze, tmp_path / "labels.nii.gz")
    assert run.returncode == 0, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Wrote "), run.stderr
