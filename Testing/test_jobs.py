"""JobRunner with real worker threads: delivery on the polling thread, cancel, supersede."""

from __future__ import annotations

import threading
import time

import pytest

from ClaraAWSLib.core.errors import CancelledError
from ClaraAWSLib.panel.jobs import JobOutcome, JobRunner

WAIT_SECONDS = 10.0


def poll_until(runner: JobRunner, condition, timeout: float = WAIT_SECONDS) -> None:
    """Poll like the panel's QTimer does until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runner.poll()
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached while polling")


@pytest.fixture
def runner():
    jobs = JobRunner()
    yield jobs
    jobs.shutdown(timeout=5)


def test_start_returns_while_work_is_still_blocked_and_result_arrives_on_the_polling_thread(runner):
    gate = threading.Event()
    seen = {}

    def work(progress, cancel):
        seen["worker_thread"] = threading.get_ident()
        assert gate.wait(WAIT_SECONDS)
        return 42

    def on_result(value):
        seen["result"] = value
        seen["result_thread"] = threading.get_ident()

    job = runner.start("auto", work, on_result=on_result)
    # start() came back although the work cannot finish before the gate opens
    assert runner.is_running("auto") and runner.busy
    assert runner.poll() == 0 and "result" not in seen
    gate.set()
    poll_until(runner, lambda: "result" in seen)
    assert seen["result"] == 42
    assert seen["result_thread"] == threading.get_ident()
    assert seen["worker_thread"] != threading.get_ident()
    assert job.outcome is JobOutcome.SUCCEEDED
    assert not runner.is_running("auto") and not runner.busy


def test_result_waits_in_the_queue_until_poll_is_called(runner):
    results = []
    job = runner.start("auto", lambda progress, cancel: "done", on_result=results.append)
    deadline = time.monotonic() + WAIT_SECONDS
    while runner._events.empty() and time.monotonic() < deadline:  # the worker has finished ...
        time.sleep(0.005)
    assert results == [] and not job.finished  # ... but nothing is delivered without poll()
    assert runner.poll() == 1
    assert results == ["done"]


def test_progress_is_coalesced_to_the_newest_payload_per_poll(runner):
    reported = threading.Event()
    release = threading.Event()
    progress_seen = []

    def work(progress, cancel):
        for sent in range(1, 101):
            progress(sent, 100)  # the client's upload callback passes two values
        reported.set()
        assert release.wait(WAIT_SECONDS)
        progress("waiting")
        return None

    done = []
    runner.start("auto", work, on_progress=progress_seen.append, on_result=done.append)
    assert reported.wait(WAIT_SECONDS)
    runner.poll()
    assert progress_seen == [(100, 100)]
    release.set()
    poll_until(runner, lambda: done == [None])
    assert progress_seen == [(100, 100), "waiting"]


def test_an_exception_in_the_work_reaches_the_error_handler_unchanged(runner):
    boom = ValueError("the server said no")
    errors, results = [], []

    def work(progress, cancel):
        raise boom

    job = runner.start("auto", work, on_result=results.append, on_error=errors.append)
    poll_until(runner, lambda: job.finished)
    assert errors == [boom] and results == []
    assert job.outcome is JobOutcome.FAILED


def test_an_exception_in_the_result_handler_goes_to_the_error_handler(runner):
    errors = []

    def failing_import(value):
        raise RuntimeError(f"import of {value} failed")

    job = runner.start("auto", lambda p, c: "seg", on_result=failing_import, on_error=errors.append)
    poll_until(runner, lambda: job.finished)
    assert [str(e) for e in errors] == ["import of seg failed"]
    assert job.outcome is JobOutcome.FAILED


def test_cancel_stops_the_worker_and_reports_cancelled_instead_of_the_error(runner):
    started = threading.Event()
    outcome = {"cancelled": 0, "errors": [], "results": []}

    def work(progress, cancel):
        started.set()
        while not cancel.is_set():
            time.sleep(0.002)
        raise CancelledError("The request was cancelled; nothing was changed.")

    def on_cancelled():
        outcome["cancelled"] += 1

    job = runner.start(
        "auto", work, on_result=outcome["results"].append, on_error=outcome["errors"].append, on_cancelled=on_cancelled
    )
    assert started.wait(WAIT_SECONDS)
    assert runner.cancel("auto") is True
    assert runner.cancel("auto") is False  # already asked
    poll_until(runner, lambda: job.finished)
    assert outcome == {"cancelled": 1, "errors": [], "results": []}
    assert job.outcome is JobOutcome.CANCELLED


def test_a_result_that_arrives_after_cancel_is_dropped(runner):
    gate = threading.Event()
    results, cancelled = [], []
    job = runner.start(
        "auto", lambda p, c: gate.wait(WAIT_SECONDS) and "late", on_result=results.append,
        on_cancelled=lambda: cancelled.append(True),
    )
    runner.cancel("auto")
    gate.set()  # the work ignores cancel and returns a result anyway
    poll_until(runner, lambda: job.finished)
    assert results == [] and cancelled == [True]


def test_cancel_with_nothing_running_changes_nothing(runner):
    assert runner.cancel("auto") is False
    job = runner.start("auto", lambda p, c: 1)
    poll_until(runner, lambda: job.finished)
    assert runner.cancel("auto") is False
    assert job.outcome is JobOutcome.SUCCEEDED


def test_a_new_job_supersedes_the_running_one_of_its_channel_and_its_late_result_is_dropped(runner):
    first_gate, second_gate = threading.Event(), threading.Event()
    first_saw_cancel = threading.Event()
    results, progress_seen, cancelled = [], [], []

    def first(progress, cancel):
        assert first_gate.wait(WAIT_SECONDS)
        if cancel.is_set():
            first_saw_cancel.set()
        progress("first progress")
        return "first click"

    def second(progress, cancel):
        assert second_gate.wait(WAIT_SECONDS)
        return "second click"

    handlers = dict(on_result=results.append, on_progress=progress_seen.append,
                    on_cancelled=lambda: cancelled.append(True))
    job1 = runner.start("deepgrow", first, **handlers)
    job2 = runner.start("deepgrow", second, **handlers)
    assert job1.superseded and job1.cancel_event.is_set()
    assert not job2.cancel_event.is_set()

    # the newer job finishes first, then the older one answers late
    second_gate.set()
    poll_until(runner, lambda: job2.finished)
    first_gate.set()
    poll_until(runner, lambda: job1.finished)

    assert results == ["second click"]
    assert progress_seen == [] and cancelled == []  # a superseded job is silent
    assert first_saw_cancel.is_set()
    assert job1.outcome is JobOutcome.SUPERSEDED and job2.outcome is JobOutcome.SUCCEEDED
    assert not runner.busy


def test_a_superseded_job_finishing_first_does_not_end_the_newer_one(runner):
    second_gate = threading.Event()
    results = []
    job1 = runner.start("deepgrow", lambda p, c: "old", on_result=results.append)
    job2 = runner.start("deepgrow", lambda p, c: second_gate.wait(WAIT_SECONDS) and "new", on_result=results.append)
    poll_until(runner, lambda: job1.finished)
    assert runner.is_running("deepgrow") and results == []
    second_gate.set()
    poll_until(runner, lambda: job2.finished)
    assert results == ["new"]


def test_jobs_on_different_channels_do_not_supersede_each_other(runner):
    gate = threading.Event()
    results = []
    discover = runner.start("discover", lambda p, c: gate.wait(WAIT_SECONDS) and "stacks", on_result=results.append)
    segment = runner.start("auto", lambda p, c: gate.wait(WAIT_SECONDS) and "segments", on_result=results.append)
    assert not discover.superseded and not discover.cancel_event.is_set()
    gate.set()
    poll_until(runner, lambda: discover.finished and segment.finished)
    assert sorted(results) == ["segments", "stacks"]


def test_shutdown_cancels_and_joins_workers_and_nothing_is_delivered_afterwards(runner):
    results, cancelled = [], []

    def work(progress, cancel):
        while not cancel.is_set():
            time.sleep(0.002)
        return "after shutdown"

    jobs = [runner.start(f"c{i}", work, on_result=results.append, on_cancelled=lambda: cancelled.append(1))
            for i in range(3)]
    assert runner.shutdown(timeout=WAIT_SECONDS) is True
    assert all(job.cancel_event.is_set() for job in jobs)
    assert runner.poll() == 0
    assert results == [] and cancelled == []
    assert not runner.busy


def test_callbacks_never_nest_when_a_handler_polls_again(runner):
    order = []
    gate, second_done = threading.Event(), threading.Event()

    def second_work(progress, cancel):
        assert gate.wait(WAIT_SECONDS)
        second_done.set()
        return "second"

    def first_result(value):
        order.append(("start", value))
        gate.set()
        assert second_done.wait(WAIT_SECONDS)
        time.sleep(0.02)  # let the second worker queue its result
        assert runner.poll() == 0  # e.g. a handler that runs the Qt event loop, whose timer polls
        order.append(("end", value))

    second = runner.start("b", second_work, on_result=lambda value: order.append(("start", value)))
    first = runner.start("a", lambda p, c: "first", on_result=first_result)
    poll_until(runner, lambda: first.finished and second.finished)
    assert order == [("start", "first"), ("end", "first"), ("start", "second")]
