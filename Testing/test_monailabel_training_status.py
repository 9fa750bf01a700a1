"""The active-learning answers MONAI Label gives in more than one situation: ``{}`` from a strategy (all labeled, or
no image at all), ``/info/`` train_stats of an earlier run, ``GET /train/``'s 404 after a restart or from another
server behind a load balancer, and the login of a server with auth off.

A fresh real server (its own, so its datastore starts empty) serves what it can produce on demand; a loopback
server answering MONAI Label's shapes (docs/monailabel-protocol.md) serves the NONE answers of a restart or of a
load balancer's other target.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests

from ClaraAWSLib.backends.monailabel import MONAILabelClient
from ClaraAWSLib.backends.monailabel.answers import NO_TASK_KNOWN, TrainingStatus, stats_belong_to_task
from ClaraAWSLib.core import errors
from ClaraAWSLib.core.geometry import ImageGrid, Volume
from ClaraAWSLib.core.imageio import write_image_file
from loopback_servers import LoopbackServer, _QuietHandler
from test_cli import assert_one_line_failure, clara_aws
from test_monailabel_client import organ_volume

pytestmark = pytest.mark.monailabel

TRAIN_SECONDS = 240


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory):
    """A real server of its own: the session's shared one may already hold images and runs of other tests."""
    from monailabel_server import MonaiLabelServer, require_server_python

    server = MonaiLabelServer(require_server_python(), tmp_path_factory.mktemp("monailabel-fresh")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fresh_client(fresh_server):
    client = MONAILabelClient(fresh_server.url)
    yield client
    client.close()


def put_image(url, image_id, volume, folder):
    path = folder / f"{image_id}.nii.gz"
    write_image_file(volume, path)
    answer = requests.put(f"{url}/datastore/image", params={"image": image_id},
                          files={"file": (path.name, path.read_bytes())}, data={"params": "{}"})
    answer.raise_for_status()


def put_final_label(url, image_id, labels, folder):
    path = folder / f"{image_id}-label.nii.gz"
    write_image_file(labels, path)
    answer = requests.put(f"{url}/datastore/label", params={"image": image_id, "tag": "final"},
                          files={"label": (path.name, path.read_bytes())}, data={"params": "{}"})
    answer.raise_for_status()


def organ_labels(volume):
    array = np.zeros(volume.array.shape, np.uint8)
    array[(volume.array >= 100) & (volume.array < 200)] = 1
    array[volume.array >= 200] = 2
    return Volume(array, volume.grid)


# --- D1: next on an empty datastore --------------------------------------------------------------------------

def test_next_on_an_empty_datastore_says_it_holds_no_images_and_all_labeled_stays_none(fresh_server, fresh_client,
                                                                                      tmp_path):
    with pytest.raises(errors.InputError) as caught:
        fresh_client.next_sample("first")
    assert "holds no images" in str(caught.value) and "\n" not in str(caught.value)
    assert_one_line_failure(clara_aws("next", "--server", fresh_server.url, "-o", tmp_path / "n.nii.gz"), 2)

    for seed in (41, 42):
        volume = organ_volume(seed=seed)
        put_image(fresh_server.url, f"case{seed}", volume, tmp_path)
        put_final_label(fresh_server.url, f"case{seed}", organ_labels(volume), tmp_path)
    assert fresh_client.next_sample("first") is None  # every image has a final label: still "nothing to fetch"


# --- D8: a run that fails at once is not shown with the previous run's stats ----------------------------------

def test_a_run_failing_at_once_is_not_reported_with_the_previous_runs_epoch_and_metric(fresh_server, fresh_client,
                                                                                       tmp_path):
    for seed in (41, 42):  # the test before stored the same; stored again, this test runs alone too
        volume = organ_volume(seed=seed)
        put_image(fresh_server.url, f"case{seed}", volume, tmp_path)
        put_final_label(fresh_server.url, f"case{seed}", organ_labels(volume), tmp_path)
    fresh_client.start_training("seg_tiny", 2)
    first = fresh_client.wait_for_training(poll_seconds=0.5, timeout=TRAIN_SECONDS)
    assert first.status == "DONE" and first.epoch == 2 and first.best_metric is not None

    # A label on another grid than its image: the next run fails while loading data, before any epoch.
    volume = organ_volume(seed=41)
    small = organ_labels(volume).array[:, :8, :8].copy()
    put_final_label(fresh_server.url, "case41", Volume(small, ImageGrid((8, 8, small.shape[0]), volume.grid.spacing,
                                                                        volume.grid.origin, volume.grid.direction)),
                    tmp_path)
    fresh_client.start_training("seg_tiny", 2)  # the same epochs: only the start times tell the runs apart
    second = fresh_client.wait_for_training(poll_seconds=0.5, timeout=TRAIN_SECONDS)
    assert second.status == "ERROR", second.details
    assert second.epoch is None and second.best_metric is None, second.summary()
    assert second.summary() == "ERROR"
    stats = fresh_client.info()["train_stats"]["seg_tiny"]
    assert stats.get("epoch") == 2  # the server still holds the first run's stats
    run = clara_aws("train", "status", "--server", fresh_server.url, "--json")
    payload = json.loads(run.stdout)
    assert payload["status"] == "ERROR" and payload["epoch"] is None and payload["best_metric"] is None


@pytest.mark.parametrize("utc_offset_hours", [0, -5, 5.5, 5.75, 13])
def test_train_stats_are_told_apart_by_start_time_in_any_server_time_zone(utc_offset_hours):
    task_start_utc = 1_700_000_000
    local = int(task_start_utc + utc_offset_hours * 3600)
    import datetime

    def clock(seconds):
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    task = {"request": {"model": "seg_tiny", "max_epochs": 2}, "start_ts": clock(local), "end_ts": clock(local + 9)}
    this_run = {"start_ts": task_start_utc + 5, "epoch": 2, "total_epochs": 2, "best_metric": 0.5}
    earlier_run = {"start_ts": task_start_utc - 120, "epoch": 2, "total_epochs": 2, "best_metric": 0.5}
    assert stats_belong_to_task(this_run, task)
    assert not stats_belong_to_task(earlier_run, task)
    assert not stats_belong_to_task(dict(this_run, start_ts=task_start_utc - 2), task)  # a run just before


# --- D11: --username on a server with auth off ----------------------------------------------------------------

def test_login_on_a_server_with_auth_off_says_to_drop_the_user_name(fresh_server):
    with pytest.raises(errors.InputError) as caught:
        MONAILabelClient(fresh_server.url, username="alice", password="pw")
    assert "authentication turned off" in str(caught.value) and "--username" in str(caught.value)
    run = clara_aws("train", "status", "--server", fresh_server.url, "--username", "alice", env={"CLARA_PASSWORD": "pw"})
    assert_one_line_failure(run, 2)
    assert "authentication turned off" in run.stderr


# --- D9: NONE after a run was started ---------------------------------------------------------------------------

RUN_STATS = {"epoch": 2, "total_epochs": 2, "start_ts": 1_700_000_000, "best_metric": 0.25}


class _TrainingHandler(_QuietHandler):
    """MONAI Label's /info/ and /train/ in its shapes; GET /train/ answers the next of ``owner.train_answers``
    (a task status, or None for the 404 "No Train Tasks Found"), the last one again once they run out."""

    def _route(self) -> None:
        owner: TrainingServer = self.server.owner
        self.read_body()
        path = urlsplit(self.path).path
        if path == "/info/":
            info = {"name": "fake", "version": "0.8.5", "labels": ["spleen"], "models": {},
                    "trainers": {"seg_tiny": {"description": "", "config": {"max_epochs": 2}, "labels": {"spleen": 1}}},
                    "strategies": {}, "datastore": {"total": 1, "completed": 1},
                    "train_stats": {"seg_tiny": dict(RUN_STATS) if owner.stats_kept else {}}}
            self.answer(200, json.dumps(info).encode(), "application/json")
        elif path == "/train/seg_tiny" and self.command == "POST":
            self.answer(200, json.dumps(self.task("SUBMITTED")).encode(), "application/json")
        elif path == "/train/" and self.command == "GET":
            with owner.lock:
                status = owner.train_answers[min(owner.polls, len(owner.train_answers) - 1)]
                owner.polls += 1
            if status is None:
                self.answer(404, b'{"detail":"No Train Tasks Found"}', "application/json")
            else:
                self.answer(200, json.dumps(self.task(status)).encode(), "application/json")
        else:
            self.answer(404, b'{"detail":"Not Found"}', "application/json")

    @staticmethod
    def task(status):
        return {"id": "5b1c", "status": status, "request": {"model": "seg_tiny", "max_epochs": 2, "gpus": "all"},
                "start_ts": "2024-05-01 10:00:00", "details": []}

    do_GET = do_POST = do_DELETE = _route


class TrainingServer(LoopbackServer):
    def __init__(self, train_answers, stats_kept=False) -> None:
        super().__init__(_TrainingHandler)
        self.train_answers = list(train_answers)
        self.stats_kept = stats_kept
        self.polls = 0
        self.lock = threading.Lock()


def test_waiting_through_a_balancer_without_stickiness_sits_out_the_other_servers_none_answers():
    # Round robin over two servers: the one running the task, and one that never had it.
    answers = ["RUNNING", None, "RUNNING", None, "RUNNING", None, "DONE"]
    with TrainingServer(answers) as server, MONAILabelClient(server.url) as client:
        client.start_training("seg_tiny", 2)
        seen = []
        final = client.wait_for_training(poll_seconds=0.01, timeout=30, report=seen.append)
    assert final.status == "DONE"
    assert [status.status for status in seen] == ["RUNNING", "RUNNING", "RUNNING", "DONE"]


def test_waiting_gives_up_with_a_sentence_when_the_server_keeps_knowing_no_task():
    with TrainingServer(["RUNNING", None]) as server, MONAILabelClient(server.url) as client:
        client.start_training("seg_tiny", 2)
        with pytest.raises(errors.ServerError) as caught:
            client.wait_for_training(poll_seconds=0.01, timeout=30)
    assert str(caught.value) == NO_TASK_KNOWN
    assert "clara-aws service --tasks N" in NO_TASK_KNOWN and "\n" not in NO_TASK_KNOWN


def test_status_none_after_a_restart_is_not_finished_when_info_holds_a_run():
    with TrainingServer([None], stats_kept=True) as server, MONAILabelClient(server.url) as client:
        status = client.training_status()  # a client that started nothing: the stats show a run happened
    assert status.status == "NONE" and not status.finished
    assert status.summary() == NO_TASK_KNOWN


def test_status_none_of_a_server_that_never_trained_is_finished_and_says_so():
    with TrainingServer([None]) as server, MONAILabelClient(server.url) as client:
        status = client.training_status()
    assert status.status == "NONE" and status.finished
    assert status.summary() == "No training has run on this server."
    assert TrainingStatus("NONE", run_started=True).finished is False


def test_ctrl_c_while_waiting_for_training_says_the_run_goes_on_and_how_to_stop_it():
    """A server whose run never ends (it answers RUNNING), so Ctrl-C always reaches the waiting loop."""
    from test_monailabel_submit_checks import _read_until

    with TrainingServer(["RUNNING"]) as server:
        waiting = subprocess.Popen([sys.executable, "-m", "ClaraAWSLib.cli", "train", "start", "--server", server.url,
                                    "--backend", "monailabel", "--model", "seg_tiny", "--max-epochs", "2", "--wait"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   # As in a terminal: a runner started in the background (CI) ignores SIGINT,
                                   # its children inherit that, and Python then installs no KeyboardInterrupt.
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            shown = _read_until(waiting.stderr, b"training: ", timeout=60)
            assert b"training: " in shown, shown
            waiting.send_signal(signal.SIGINT)
            _, rest = waiting.communicate(timeout=60)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
    output = (shown + rest).decode()
    assert waiting.returncode == 130, output
    last = output.strip().splitlines()[-1]
    assert "nothing was written" not in last
    assert "stopped waiting" in last and "goes on on the server" in last and "clara-aws train stop" in last
