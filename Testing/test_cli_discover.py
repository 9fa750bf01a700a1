"""`clara-aws discover` and `--stack` on the work commands, against moto on 127.0.0.1."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

from aws_fixtures import aws_env, cloudformation, create_stack, moto_endpoint, moto_server  # noqa: E402,F401
from test_cli import assert_one_line_failure, clara_aws  # noqa: E402

ELB = "Clara-prod-1234567890.us-east-1.elb.amazonaws.com"


@pytest.fixture
def deployments(moto_endpoint, aws_env, reference_server):
    cfn = cloudformation(moto_endpoint)
    create_stack(cfn, "clara-prod", "clara-root", UseHTTPS="HTTPS", LoadBalancerDnsName=ELB)
    create_stack(cfn, "clara-prod-ClaraCluster-1ABC", "clara-cluster", UseHTTPS="HTTPS", LoadBalancerDnsName=ELB)
    # A deployment whose load balancer is, for this test, the reference server on loopback over HTTP.
    create_stack(cfn, "clara-local", "clara-root", UseHTTPS="HTTP", LoadBalancerDnsName=urlsplit(reference_server.url).netloc)
    create_stack(cfn, "unrelated", "unrelated")
    return moto_endpoint


def test_discover_json_gives_one_url_per_deployment(deployments):
    run = clara_aws("discover", "--json", "--region", "us-east-1", "--aws-endpoint-url", deployments)
    assert run.returncode == 0, run.stderr
    found = {d["stack_name"]: d for d in json.loads(run.stdout)}
    assert set(found) == {"clara-prod", "clara-local"}
    assert found["clara-prod"]["url"] == f"https://{ELB}" and found["clara-prod"]["protocol"] == "https"
    assert "alias" in found["clara-prod"]["note"]
    assert found["clara-local"]["url"].startswith("http://127.0.0.1:") and not found["clara-local"]["url"].endswith("/")
    aliased = clara_aws("discover", "--json", "--region", "us-east-1", "--aws-endpoint-url", deployments, "--stack", "prod",
                        "--alias", "clara-prod=clara.example.org")
    [prod] = json.loads(aliased.stdout)
    assert prod["url"] == "https://clara.example.org" and prod["note"] is None


def test_stack_option_resolves_the_server_for_work_commands(deployments, reference_server):
    run = clara_aws("models", "--json", "--stack", "clara-local", "--region", "us-east-1", "--aws-endpoint-url", deployments)
    assert run.returncode == 0, run.stderr
    assert any(m["type"] == "segmentation" for m in json.loads(run.stdout))


def test_discovery_failures_are_one_line_with_exit_3(deployments):
    assert_one_line_failure(clara_aws("discover", "--aws-endpoint-url", deployments), 3)  # no region
    run = clara_aws("discover", "--region", "us-east-1", "--aws-endpoint-url", deployments, "--stack", "nothing-like-this")
    assert_one_line_failure(run, 3)
    run = clara_aws("models", "--stack", "clara-prod", "--server", "http://x", "--region", "us-east-1")
    assert_one_line_failure(run, 2)
