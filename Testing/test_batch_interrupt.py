"""Ctrl-C during `clara-aws batch`, as a user does it: the command in its own process against the reference
server on 127.0.0.1 (each inference made slow with inference_delay), SIGINT once the first case is done,
then the same command again."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time

import pytest
import SimpleITK as sitk

from conftest import running_reference_server

CASES = 6
MODEL = "phantom_abdomen_seg"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")


def read_rows(path):
    with open(path, newline="") as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


def ok_rows(path):
    try:
        return {case for case, row in read_rows(path).items() if row["status"] == "ok"}
    except FileNotFoundError:
        return set()


def write_cases(folder, phantom):
    folder.mkdir(parents=True)
    volume = phantom.ct
    for n in range(CASES):
        image = sitk.GetImageFromArray(volume.array[:, :, ::-1].copy() if n % 2 else volume.array)
        image.CopyInformation(volume.to_sitk())
        sitk.WriteImage(image, str(folder / f"case_{n}.nii.gz"))


def check_outdir(outdir):
    """Only final names, each one whole, and report.csv listing as ok exactly the cases whose file is there."""
    names = sorted(path.name for path in outdir.iterdir() if path.name not in (".clara-aws-outputs", ".clara-aws-lock"))
    assert all(not name.startswith(".") and "partial" not in name for name in names), names
    outputs = {name[: -len(".nii.gz")] for name in names if name.endswith(".nii.gz")}
    assert set(names) == {"report.csv", *(f"{case}.nii.gz" for case in outputs)}
    for case in outputs:
        assert sitk.ReadImage(str(outdir / f"{case}.nii.gz")).GetSize() == (96, 96, 40)
    assert ok_rows(outdir / "report.csv") == outputs
    return outputs


def test_ctrl_c_leaves_whole_files_and_a_rerun_sends_only_the_unfinished_cases(tmp_path, phantom_small):
    write_cases(tmp_path / "in", phantom_small)
    outdir = tmp_path / "out"
    with running_reference_server(inference_delay=1.5) as server:
        command = [sys.executable, "-m", "ClaraAWSLib.cli", "batch", "--server", server.url, str(tmp_path / "in"),
                   "-o", str(outdir), "--model", MODEL, "--jobs", "2"]
        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not ok_rows(outdir / "report.csv") and first.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert first.poll() is None, "the batch ended before it could be interrupted"
            first.send_signal(signal.SIGINT)
            _, stderr = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == 130, stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("clara-aws: interrupted;") and last.endswith(".") and ". " not in last
        assert "Traceback" not in stderr

        finished = check_outdir(outdir)
        assert 1 <= len(finished) < CASES  # it stopped part way: the rerun has work to do
        assert f"{len(finished)} case" in last and f"the other {CASES - len(finished)}" in last
        kept = {case: (outdir / f"{case}.nii.gz").stat().st_mtime_ns for case in finished}
        uploads = server.stats.image_uploads

        rerun = subprocess.run(command, capture_output=True, text=True, timeout=180)
        assert rerun.returncode == 0, rerun.stderr
        assert server.stats.image_uploads - uploads == CASES - len(finished)  # nothing for the finished cases
        assert check_outdir(outdir) == {f"case_{n}" for n in range(CASES)}
        assert {case: (outdir / f"{case}.nii.gz").stat().st_mtime_ns for case in finished} == kept
