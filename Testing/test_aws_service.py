"""The `service` engine: the Quick Start's ECS service, target group and GPU capacity, against moto.

moto (ThreadedMotoServer on 127.0.0.1) holds a Quick Start-shaped deployment made from nested test
templates. Where moto cannot play AWS it is said at the spot: container instances never report GPUs in
moto 5.2 (botocore's Stubber answers that one call), and moto's CloudFormation has no scalable targets
(registered through the API as the template would).
"""

from __future__ import annotations

import argparse
import io
import json
import logging

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

from aws_fixtures import FAKE_SECRET, aws_env, enforce_iam_after, moto_endpoint, moto_server  # noqa: E402,F401
from service_fixtures import GpuReportingEcs, deploy_quickstart, gpu_instance  # noqa: E402

from ClaraAWSLib import aws  # noqa: E402
from ClaraAWSLib.aws.service import ClaraService  # noqa: E402
from ClaraAWSLib.cli import service_command  # noqa: E402
from ClaraAWSLib.core.errors import InputError  # noqa: E402


@pytest.fixture
def deployment(moto_endpoint, aws_env):
    """Stack 'clara' with ClusterSize 2 and one desired task, nested as the Quick Start nests it."""
    return deploy_quickstart(moto_endpoint, ClusterSize="2")


def open_service(deployment) -> ClaraService:
    return ClaraService.open(deployment.stack, region="us-east-1", endpoint_url=deployment.endpoint)


def with_gpus(deployment, instances) -> ClaraService:
    """The service with an ECS client whose container instances report GPUs (moto's never do)."""
    service = open_service(deployment)
    service._clients = {**service._clients, "ecs": GpuReportingEcs(service._clients["ecs"], instances)}
    return service


def one_sentence(text: str) -> bool:
    return text.endswith(".") and ". " not in text and "\n" not in text


# --- finding the service ------------------------------------------------------------------------------


def test_status_finds_the_nested_service_cluster_and_target_group(deployment):
    status = open_service(deployment).status()
    assert status.service == deployment.service_arn.rsplit("/", 1)[-1]
    assert status.cluster == "clara-gpu"  # the ECS stack's cluster, not the ALB's DefaultTargetGroup's
    assert status.target_group == deployment.target_group_arn
    assert status.task_family == "website-service"
    assert (status.capacity.gpus_per_task, status.capacity.memory_per_task_mib) == (1, 24576)
    assert (status.desired, status.cluster_size, status.cluster_size_parameter) == (1, 2, "ClusterSize")
    assert status.sticky is False and status.scaling_range is None
    assert status.region == "us-east-1"


def test_the_service_stack_named_alone_is_found_too(deployment):
    nested = deployment.nested("ClaraService")
    status = ClaraService.open(nested, region="us-east-1", endpoint_url=deployment.endpoint).status()
    assert status.cluster == "clara-gpu"  # from the stack's Cluster parameter
    assert status.target_group == deployment.target_group_arn
    assert status.cluster_size is None  # ClusterSize belongs to the root


def test_targets_are_counted_by_state(deployment):
    instances = deployment.run_instances(3)
    deployment.register_targets(instances)
    deployment.client("ec2").stop_instances(InstanceIds=[instances[2]])
    status = open_service(deployment).status()
    assert (status.healthy, status.unhealthy) == (2, 0)
    assert status.target_states == {"healthy": 2, "unused": 1}


def test_a_stack_without_an_ecs_service_is_named(moto_endpoint, aws_env):
    from aws_fixtures import cloudformation, create_stack

    create_stack(cloudformation(moto_endpoint), "clara-lab", "clara-root")
    with pytest.raises(aws.NoMatchingStackError) as caught:
        ClaraService.open("clara-lab", region="us-east-1", endpoint_url=moto_endpoint).status()
    assert "clara-lab" in str(caught.value) and "AWS::ECS::Service" in str(caught.value)
    assert one_sentence(str(caught.value))


def test_a_missing_stack_is_named(moto_endpoint, aws_env):
    with pytest.raises(aws.NoMatchingStackError, match="'nothing-here'.*us-east-1"):
        ClaraService.open("nothing-here", region="us-east-1", endpoint_url=moto_endpoint).status()


def test_patterns_are_refused_before_any_request(aws_env):
    with pytest.raises(InputError, match="exact name"):
        ClaraService.open("clara-*", region="us-east-1", endpoint_url="http://127.0.0.1:9")


def test_missing_ecs_permission_names_it_and_never_the_secret(deployment, aws_env, monkeypatch, caplog):
    import boto3

    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=deployment.endpoint)
    enforce_iam_after(deployment.endpoint, 3)  # the three IAM calls below run before enforcement starts
    iam.create_user(UserName="viewer")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "cloudformation:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="viewer", PolicyName="cfn-only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="viewer")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])

    caplog.set_level(logging.DEBUG, logger="ClaraAWSLib")
    with pytest.raises(aws.AccessDeniedError) as caught:
        open_service(deployment).status()
    assert caught.value.action == "ecs:DescribeServices"
    message = str(caught.value)
    assert "use ECS in us-east-1" in message and "ecs:DescribeServices" in message and one_sentence(message)
    for secret in (key["SecretAccessKey"], FAKE_SECRET):
        assert secret not in message and secret not in caplog.text


# --- capacity and the desired count ------------------------------------------------------------------


def test_moto_hosts_report_no_gpus_so_a_second_task_is_refused_and_nothing_changes(deployment):
    # moto's container instances register no GPU resource: for this task definition they hold no task.
    deployment.register_container_instances(2)
    with pytest.raises(aws.ServiceCapacityError) as caught:
        open_service(deployment).set_tasks(2)
    message = str(caught.value)
    assert one_sentence(message)
    assert "ClusterSize (now 2)" in message and "at most 1 task" in message and "not 2" in message
    assert deployment.desired_count() == 1
    assert deployment.stickiness()["stickiness.enabled"] == "false"


def test_scaling_up_within_gpu_capacity_sets_count_stickiness_and_scaling_range(deployment):
    arns = deployment.register_container_instances(2)
    # Two p3.2xlarge hosts (1 GPU each); the one running task holds the first host's GPU.
    instances = [gpu_instance(arns[0], gpus=1, free_gpus=0), gpu_instance(arns[1], gpus=1, free_gpus=1)]
    deployment.register_scalable_target(1, 1)  # the Quick Start's MinCapacity DesiredCount, MaxCapacity MaxCount
    service = with_gpus(deployment, instances)

    before = service.status()
    assert (before.capacity.gpus, before.capacity.free_gpus, before.capacity.task_slots) == (2, 1, 2)
    assert before.max_tasks == 2  # one placed (moto counts it pending) + one free GPU

    change = service.set_tasks(2)
    assert deployment.desired_count() == 2
    stickiness = deployment.stickiness()
    assert (stickiness["stickiness.enabled"], stickiness["stickiness.type"]) == ("true", "lb_cookie")
    assert deployment.scaling_range() == (2, 2)
    assert (change.previous, change.desired, change.stickiness_turned_on, change.scaling_range) == (1, 2, True, (2, 2))
    assert any("stickiness" in note and "session" in note for note in change.notes)
    assert all(one_sentence(note) for note in change.notes)
    assert service._clients["ecs"].calls >= 1

    after = service.status()
    assert after.sticky and after.desired == 2 and after.scaling_range == (2, 2)


def test_more_tasks_than_gpus_are_refused_but_scaling_down_is_always_allowed(deployment):
    arns = deployment.register_container_instances(2)
    instances = [gpu_instance(arns[0], gpus=1, free_gpus=0), gpu_instance(arns[1], gpus=1, free_gpus=1)]
    service = with_gpus(deployment, instances)
    with pytest.raises(aws.ServiceCapacityError, match="at most 2 tasks of website-service, not 3"):
        service.set_tasks(3)
    assert deployment.desired_count() == 1

    # Nothing free at all: going down (here to 0, to stop paying for the GPU) needs no capacity.
    service = with_gpus(deployment, [gpu_instance(a, gpus=1, free_gpus=0) for a in arns])
    change = service.set_tasks(0)
    assert deployment.desired_count() == 0 and change.stickiness_turned_on is False


def test_memory_limits_tasks_on_a_host_with_many_gpus(deployment):
    # A 4-GPU host whose memory holds only two 24576 MiB tasks: memory, not GPUs, is the limit.
    (arn,) = deployment.register_container_instances(1)
    service = with_gpus(deployment, [gpu_instance(arn, gpus=4, free_gpus=4, memory=2 * 24576 + 100)])
    assert service.status().max_tasks == 2
    with pytest.raises(aws.ServiceCapacityError):
        service.set_tasks(3)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_set_tasks_refuses_what_is_not_a_count(deployment, bad):
    with pytest.raises(InputError):
        open_service(deployment).set_tasks(bad)
    assert deployment.desired_count() == 1


# --- waiting until healthy ----------------------------------------------------------------------------


class FakeTime:
    """A clock that advances only when the code under test sleeps; ``on_sleep`` plays what AWS does meanwhile."""

    def __init__(self, on_sleep=None):
        self.now = 0.0
        self.sleeps = []
        self.on_sleep = on_sleep

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))

    def clock(self) -> float:
        return self.now


def test_wait_returns_once_every_desired_task_has_a_healthy_target(deployment):
    deployment.client("ecs").update_service(cluster=deployment.cluster, service=deployment.service_arn, desiredCount=2)
    instances = deployment.run_instances(2)
    deployment.register_targets(instances)
    deployment.client("ec2").stop_instances(InstanceIds=[instances[1]])  # its task is still starting

    def second_task_passes_health_checks(sleeps: int) -> None:
        if sleeps == 2:
            deployment.client("ec2").start_instances(InstanceIds=[instances[1]])

    time = FakeTime(second_task_passes_health_checks)
    seen = []
    status = open_service(deployment).wait_healthy(timeout=300, interval=15, progress=seen.append,
                                                   sleep=time.sleep, clock=time.clock)
    assert status.healthy == 2 and status.running == 2
    assert time.sleeps == [15, 15] and [s.healthy for s in seen] == [1, 1, 2]


def test_wait_gives_up_after_the_timeout_with_one_sentence(deployment):
    deployment.client("ecs").update_service(cluster=deployment.cluster, service=deployment.service_arn, desiredCount=2)
    time = FakeTime()
    with pytest.raises(aws.ServiceWaitTimeoutError) as caught:
        open_service(deployment).wait_healthy(timeout=100, interval=30, sleep=time.sleep, clock=time.clock)
    assert time.sleeps == [30, 30, 30, 10] and time.now == 100  # never sleeps past the deadline
    message = str(caught.value)
    assert one_sentence(message) and "After 100 s" in message and "0 healthy" in message and "2 desired" in message


# --- the command --------------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clara-aws service")
    service_command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_command_prints_json_status(deployment):
    out = io.StringIO()
    args = parse("--stack", "clara", "--region", "us-east-1", "--aws-endpoint-url", deployment.endpoint, "--json")
    assert service_command.run(args, out=out) == 0
    data = json.loads(out.getvalue())
    assert data["change"] is None
    status = data["status"]
    assert status["desired"] == 1 and status["target_group"] == deployment.target_group_arn
    assert status["capacity"]["gpus_per_task"] == 1 and status["cluster_size"] == 2


def test_command_json_after_a_wait_that_timed_out_still_prints_the_service(deployment):
    """A script reads stdout: it gets the service as last seen and "wait": "timed out", then the exit code."""
    out = io.StringIO()
    args = parse("--stack", "clara", "--wait", "--timeout", "0.3", "--interval", "0.1", "--region", "us-east-1",
                 "--aws-endpoint-url", deployment.endpoint, "--json")
    with pytest.raises(aws.ServiceWaitTimeoutError):
        service_command.run(args, out=out)
    data = json.loads(out.getvalue())
    assert data["wait"] == "timed out" and data["status"]["desired"] == 1 and data["status"]["healthy"] == 0


def test_command_text_output_and_refusal(deployment):
    deployment.register_container_instances(1)
    out = io.StringIO()
    args = parse("--stack", "clara", "--region", "us-east-1", "--aws-endpoint-url", deployment.endpoint)
    assert service_command.run(args, out=out) == 0
    text = out.getvalue()
    assert "1 desired" in text and "ClusterSize = 2" in text and "stickiness:    off" in text

    args = parse("--stack", "clara", "--tasks", "3", "--region", "us-east-1", "--aws-endpoint-url", deployment.endpoint)
    with pytest.raises(aws.ServiceCapacityError):
        service_command.run(args, out=io.StringIO())
    assert deployment.desired_count() == 1


@pytest.mark.parametrize("argv", [["--tasks", "-1"], ["--tasks", "two"], ["--timeout", "0"], []])
def test_command_refuses_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit):
        parse(*(["--stack", "clara"] if argv else []), *argv)
