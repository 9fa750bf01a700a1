"""How many requests `clara-aws batch` keeps in flight: --jobs, else two per running task of the --stack's
ECS service (moto on 127.0.0.1 holds a Quick Start-shaped stack), else 2 with a one-line note."""

from __future__ import annotations

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

from aws_fixtures import aws_env, moto_endpoint, moto_server  # noqa: E402,F401
from service_fixtures import deploy_quickstart  # noqa: E402

from ClaraAWSLib.cli.batch_command import requests_in_flight  # noqa: E402
from ClaraAWSLib.cli.commands import build_parser  # noqa: E402


def batch_args(*options, endpoint="http://127.0.0.1:9"):
    return build_parser().parse_args(["batch", "in", "-o", "out", "--model", "m", "--region", "us-east-1",
                                      "--aws-endpoint-url", endpoint, *options])


def jobs(args):
    notes = []
    return requests_in_flight(args, notes.append), notes


@pytest.fixture
def deployment(moto_endpoint, aws_env):
    return deploy_quickstart(moto_endpoint, ClusterSize="3")


def set_running(deployment, tasks):
    # moto's UpdateService makes runningCount the new desiredCount at once, as ECS would once tasks start.
    deployment.client("ecs").update_service(cluster=deployment.cluster, service=deployment.service_arn,
                                            desiredCount=tasks)


def test_two_requests_per_running_task_of_the_stacks_service(deployment):
    set_running(deployment, 3)
    count, notes = jobs(batch_args("--stack", deployment.stack, endpoint=deployment.endpoint))
    assert count == 6
    assert notes == [f"clara-aws: 6 requests in flight, two per running task of stack {deployment.stack}'s ECS service "
                     "(3 running)."]


def test_the_running_count_not_the_desired_one(deployment):
    # Just created: one task desired, none running yet (moto starts none).
    assert deployment.desired_count() == 1
    count, notes = jobs(batch_args("--stack", deployment.stack, endpoint=deployment.endpoint))
    assert count == 2 and len(notes) == 1 and "no running task" in notes[0] and "--jobs N" in notes[0]


def test_an_explicit_jobs_wins_without_asking_aws(deployment):
    set_running(deployment, 3)
    count, notes = jobs(batch_args("--stack", deployment.stack, "--jobs", "5", endpoint=deployment.endpoint))
    assert (count, notes) == (5, [])
    # Not even a stack that does not exist is looked up.
    assert jobs(batch_args("--stack", "no-such-stack", "--jobs", "1", endpoint=deployment.endpoint)) == (1, [])


def test_a_service_that_cannot_be_read_gives_two_and_one_line(deployment):
    count, notes = jobs(batch_args("--stack", "no-such-stack", endpoint=deployment.endpoint))
    assert count == 2 and len(notes) == 1
    note = notes[0]
    assert "\n" not in note and "no-such-stack" in note and note.endswith("give --jobs N to choose.")


def test_an_unreachable_aws_endpoint_gives_two_and_one_line(aws_env):
    count, notes = jobs(batch_args("--stack", "clara"))  # 127.0.0.1:9: nothing listens
    assert count == 2 and len(notes) == 1 and "\n" not in notes[0]


def test_without_a_stack_two(aws_env):
    assert jobs(batch_args()) == (2, [])
    assert jobs(batch_args("--jobs", "7")) == (7, [])


def test_the_command_keeps_that_many_requests_in_flight(deployment, tmp_path, phantom_small, capsys):
    """`clara-aws batch --stack`: the count reaches the runner (the server is the reference one on 127.0.0.1)."""
    import threading

    import SimpleITK as sitk

    from ClaraAWSLib.backends import connect
    from ClaraAWSLib.cli import batch_command
    from conftest import running_reference_server

    set_running(deployment, 3)
    (tmp_path / "in").mkdir()
    for n in range(6):
        sitk.WriteImage(phantom_small.ct.to_sitk(), str(tmp_path / "in" / f"case_{n}.nii.gz"))
    lock, state = threading.Lock(), {"now": 0, "most": 0}

    class Counting:
        """A backend that counts its inference requests under way across all worker threads."""

        def __init__(self, backend):
            self.backend = backend

        def run_task(self, *arguments, **options):
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            try:
                return self.backend.run_task(*arguments, **options)
            finally:
                with lock:
                    state["now"] -= 1

        def __getattr__(self, name):
            return getattr(self.backend, name)

    with running_reference_server(inference_delay=0.5) as server:
        args = batch_args("--stack", deployment.stack, endpoint=deployment.endpoint)
        args.inputs, args.out, args.model = [str(tmp_path / "in")], str(tmp_path / "out"), "phantom_abdomen_seg"
        assert batch_command.run(args, connect=lambda _: Counting(connect(server.url))) == 0
    assert state["most"] == 6
    assert "6 requests in flight" in capsys.readouterr().err
