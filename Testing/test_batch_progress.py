"""What `clara-aws batch` shows: the text from counts and times (expected strings worked out by hand), a
redrawn bar on a terminal and one plain line per finished case on anything else."""

from __future__ import annotations

import io
import re

import pytest
import SimpleITK as sitk

from ClaraAWSLib.cli.batch_progress import BatchCounts, BatchProgress, bar_text, duration_text, eta_seconds, status_text
from ClaraAWSLib.datasets.report import CaseRow


def test_status_with_a_total_an_earlier_run_and_a_failure():
    # 9 cases in 180 s is 3 a minute; 40 - 3 earlier - 9 now leaves 28, 28/3 min = 560 s.
    counts = BatchCounts(done=9, failed=1, skipped=3, total=40, elapsed_s=180.0)
    assert status_text(counts) == "12/40 cases (3 from an earlier run), 1 failed, 3.0 cases/min, ETA 9 min 20 s"
    assert eta_seconds(counts) == pytest.approx(560.0)
    assert bar_text(counts) == "[######..............] " + status_text(counts)  # 12/40 of 20 is 6


def test_no_pace_before_the_first_case_and_no_eta_without_a_total():
    assert status_text(BatchCounts(total=10, elapsed_s=30.0)) == "0/10 cases, 0 failed"
    assert bar_text(BatchCounts(total=10)) == "[....................] 0/10 cases, 0 failed"
    assert status_text(BatchCounts(done=5, elapsed_s=120.0)) == "5 cases so far, 0 failed, 2.5 cases/min"
    assert bar_text(BatchCounts(done=5, elapsed_s=120.0)) == "5 cases so far, 0 failed, 2.5 cases/min"
    assert bar_text(BatchCounts(done=4, total=4, elapsed_s=60.0)) == \
        "[####################] 4/4 cases, 0 failed, 4.0 cases/min, ETA 0 s"


@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (42.4, "42 s"), (59.6, "1 min 00 s"), (545, "9 min 05 s"),
                                           (3725, "1 h 02 min")])
def test_durations(seconds, text):
    assert duration_text(seconds) == text


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_stream_that_is_no_terminal_gets_one_plain_line_per_finished_case():
    stream, clock = io.StringIO(), Clock()
    display = BatchProgress(stream, tty=False, total=4, clock=clock)
    display.skipped()
    clock.now += 60
    display.finished(CaseRow("liver_3", "ok", 20.04))
    clock.now += 60
    display.finished(CaseRow("liver_7", "failed", 3.0, message="The model refused this image."))
    display.close()
    assert stream.getvalue().rstrip("\n").split("\n") == [
        "[2/4 cases (1 from an earlier run), 0 failed, 1.0 cases/min, ETA 2 min 00 s] liver_3: ok (20.0 s)",
        "[3/4 cases (1 from an earlier run), 1 failed, 1.0 cases/min, ETA 1 min 00 s] liver_7: failed (3.0 s): The "
        "model refused this image.",
    ]
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_a_terminal_gets_a_bar_redrawn_in_place_with_failures_kept_above_it():
    stream, clock = io.StringIO(), Clock()
    display = BatchProgress(stream, tty=True, total=2, columns=40, clock=clock)
    clock.now += 30
    display.finished(CaseRow("a", "ok", 30.0))
    clock.now += 30
    display.finished(CaseRow("b", "failed", 1.0, message="HTTP 400."))
    display.close()
    text = stream.getvalue()
    first_bar = "[##########..........] 1/2 cases, 0 failed, 2.0 cases/min, ETA 30 s"[:39]
    assert text.startswith("\r" + first_bar + "\x1b[K")  # cut to the terminal's 40 columns
    assert "\r\x1b[Kb: failed (1.0 s): HTTP 400.\n" in text  # the bar cleared, the failure on its own line
    assert text.endswith("\r" + "[####################] 2/2 cases, 1 failed, 2.0 cases/min, ETA 0 s"[:39]
                         + "\x1b[K\n")
    assert "a: ok" not in text


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("tty", [False, True])
def test_the_command_chooses_by_whether_stderr_is_a_terminal(tmp_path, reference_server, phantom_small, monkeypatch,
                                                              tty):
    from ClaraAWSLib.cli import main

    (tmp_path / "in").mkdir()
    for n in range(3):
        sitk.WriteImage(phantom_small.ct.to_sitk(), str(tmp_path / "in" / f"case_{n}.nii.gz"))
    stderr = Terminal() if tty else io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    assert main(["batch", "--server", reference_server.url, str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                 "--model", "phantom_abdomen_seg"]) == 0
    lines = stderr.getvalue().rstrip("\n").split("\n")  # not splitlines(): it splits at the bar's \r too
    if tty:
        assert "\r" in stderr.getvalue() and "3/3 cases" in lines[0].rsplit("\r", 1)[-1]
        assert len(lines) == 2  # the bar's line, then the summary
    else:
        assert "\r" not in stderr.getvalue() and len(lines) == 4
        assert sorted(re.search(r"\] (case_\d): ok \(", line).group(1) for line in lines[:3]) == ["case_0", "case_1",
                                                                                                  "case_2"]
        assert [line[1:].split(",")[0] for line in lines[:3]] == ["1/3 cases", "2/3 cases", "3/3 cases"]
    assert lines[-1].startswith("3 cases segmented, 0 failed.")


def test_the_interrupted_sentence_counts_this_runs_cases_only(tmp_path):
    """report.csv holds 10 rows of another dataset; this run of 3 cases finished 1 before Ctrl-C."""
    from ClaraAWSLib.cli.batch_command import interrupted_text
    from ClaraAWSLib.datasets.report import Report

    report = Report(["liver"])
    for n in range(10):
        report.add(CaseRow(f"other_{n}", "ok", 1.0))
    report.this_run = {"a", "b", "c"}
    report.add(CaseRow("a", "ok", 1.0))
    text = interrupted_text(report, 3, tmp_path)
    assert text == (f"clara-aws: interrupted; 1 case done in {tmp_path / 'report.csv'}, and the same command again "
                    "segments the other 2.")
    text = interrupted_text(report, 3, tmp_path, resume=False)
    assert "the other" not in text and "without --no-resume segments only the cases not done" in text
