"""AWS discovery of Clara servers from CloudFormation outputs.

Against moto in server mode on 127.0.0.1 with small templates shaped like the Quick Start's; a throttling
proxy (a real local HTTP server) for botocore's retries; botocore's Stubber only for what moto cannot
produce (nested-stack ParentId/RootId, ExpiredToken, JSON-style error codes). No test reaches real AWS.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

from aws_fixtures import (  # noqa: E402
    FAKE_KEY_ID,
    FAKE_SECRET,
    ThrottlingProxy,
    aws_env,  # noqa: F401  (fixture)
    closed_local_port,
    cloudformation,
    create_stack,
    describe_stacks_calls,
    enforce_iam_after,
    moto_endpoint,  # noqa: F401  (fixture)
    moto_server,  # noqa: F401  (fixture)
    template_body,
)

from ClaraAWSLib import aws  # noqa: E402
from ClaraAWSLib.core.errors import DiscoveryError, InputError  # noqa: E402

PROD_ELB = "Clara-prod-1234567890.us-east-1.elb.amazonaws.com"
LAB_ELB = "Clara-lab-222.us-east-1.elb.amazonaws.com"
OLD_ELB = "Clara-old-333.us-east-1.elb.amazonaws.com"
EU_ELB = "Clara-eu-444.eu-west-1.elb.amazonaws.com"
FILLERS = 52  # moto pages DescribeStacks at 50 stacks


# ------------------------------------------------------------------------------------------ moto account


@pytest.fixture
def account(moto_endpoint, aws_env):
    """A us-east-1 account shaped like a real one with a Quick Start deployment, and one stack in eu-west-1.

    clara-prod (root, HTTPS, output ends in '/') is created first and clara-lab (HTTP) last, with more
    than a page of unrelated stacks in between, so the two land on different DescribeStacks pages.
    """
    cfn = cloudformation(moto_endpoint)
    create_stack(cfn, "clara-prod", "clara-root", UseHTTPS="HTTPS", LoadBalancerDnsName=PROD_ELB)
    # The nested cluster stack as some endpoints list it: top level, no ParentId, same DNS name without '/'.
    create_stack(
        cfn, "clara-prod-ClaraCluster-1ABCDEF", "clara-cluster", UseHTTPS="HTTPS", LoadBalancerDnsName=PROD_ELB
    )
    for index in range(FILLERS):
        create_stack(cfn, f"unrelated-{index:02d}", "unrelated")
    create_stack(cfn, "clara-old", "clara-root", LoadBalancerDnsName=OLD_ELB)
    cfn.delete_stack(StackName="clara-old")
    create_stack(cfn, "clara-lab", "clara-root", UseHTTPS="HTTP", LoadBalancerDnsName=LAB_ELB)
    create_stack(cloudformation(moto_endpoint, "eu-west-1"), "clara-eu", "clara-root", LoadBalancerDnsName=EU_ELB)
    return moto_endpoint


def by_name(deployments):
    return {deployment.stack_name: deployment for deployment in deployments}


def test_discovery_finds_each_deployment_once_across_pages(account):
    pages = list(cloudformation(account).get_paginator("describe_stacks").paginate())
    assert len(pages) > 1, "the account must span more than one DescribeStacks page"
    first_page_names = {stack["StackName"] for stack in pages[0]["Stacks"]}
    assert "clara-prod" in first_page_names and "clara-lab" not in first_page_names

    found = by_name(aws.discover(region="us-east-1", endpoint_url=account))

    # The nested duplicate, the deleted stack, the unrelated stacks and the other region are all absent.
    assert set(found) == {"clara-prod", "clara-lab"}
    prod, lab = found["clara-prod"], found["clara-lab"]
    assert prod.url == f"https://{PROD_ELB}" and prod.protocol == "https"
    assert lab.url == f"http://{LAB_ELB}" and lab.protocol == "http"
    assert prod.elb_host == PROD_ELB and lab.elb_host == LAB_ELB
    assert prod.region == lab.region == "us-east-1"
    assert prod.stack_id.startswith("arn:aws:cloudformation:us-east-1:") and "/clara-prod/" in prod.stack_id
    assert prod.created.tzinfo is not None and prod.created.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - prod.created) < timedelta(minutes=10)


def test_https_on_load_balancer_name_carries_alias_note_and_http_does_not(account):
    found = by_name(aws.discover(region="us-east-1", endpoint_url=account))
    note = found["clara-prod"].note
    assert note is not None and PROD_ELB in note
    assert "alias" in note.lower() and "--alias clara-prod=HOST" in note
    assert note.count(". ") == 0, "the note is one sentence"
    assert found["clara-lab"].note is None and found["clara-lab"].alias is None


def test_alias_replaces_host_and_clears_note(account):
    aliases = {"clara-prod": "HTTPS://Clara.Example.org/", "clara-lab": "lab.example.org:8080"}
    found = by_name(aws.discover(region="us-east-1", endpoint_url=account, aliases=aliases))
    prod, lab = found["clara-prod"], found["clara-lab"]
    assert prod.url == "https://clara.example.org" and prod.alias == "clara.example.org" and prod.note is None
    assert prod.elb_host == PROD_ELB  # the load balancer stays known
    assert lab.url == "http://lab.example.org:8080"  # an HTTP stack keeps its scheme


def test_as_dict_is_json_ready(account):
    prod = by_name(aws.discover(region="us-east-1", endpoint_url=account))["clara-prod"]
    data = json.loads(json.dumps(prod.as_dict()))
    assert data["url"] == prod.url and data["stack_name"] == "clara-prod" and data["alias"] is None
    assert datetime.fromisoformat(data["created"]) == prod.created
    assert set(data) == {"stack_name", "stack_id", "region", "url", "protocol", "created", "elb_host", "note", "alias"}


@pytest.mark.parametrize(
    "stack_filter, expected",
    [("LAB", {"clara-lab"}), ("clara-p*", {"clara-prod"}), ("*ClaraCluster*", {"clara-prod-ClaraCluster-1ABCDEF"})],
)
def test_stack_filter(account, stack_filter, expected):
    # A filter that matches only the nested stack returns it: the user asked for it by name.
    found = aws.discover(region="us-east-1", endpoint_url=account, stack_filter=stack_filter)
    assert {deployment.stack_name for deployment in found} == expected


def test_filter_matching_nothing_names_filter_and_region(account):
    with pytest.raises(aws.NoMatchingStackError) as caught:
        aws.discover(region="us-east-1", endpoint_url=account, stack_filter="staging")
    assert "'staging'" in str(caught.value) and "us-east-1" in str(caught.value)


def test_regions_are_separate_and_default_comes_from_profile_or_environment(account, aws_env, monkeypatch):
    found = aws.discover(region="eu-west-1", endpoint_url=account)
    assert [(d.stack_name, d.region, d.url) for d in found] == [("clara-eu", "eu-west-1", f"https://{EU_ELB}")]

    aws_env.write_config("[profile europe]\nregion = eu-west-1\n")
    # botocore ignores environment keys when a profile is named, so the profile needs keys of its own.
    aws_env.write_credentials(f"[europe]\naws_access_key_id = {FAKE_KEY_ID}\naws_secret_access_key = {FAKE_SECRET}\n")
    assert [d.stack_name for d in aws.discover(profile="europe", endpoint_url=account)] == ["clara-eu"]

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert [d.region for d in aws.discover(endpoint_url=account)] == ["eu-west-1"]


def test_empty_region_gives_readable_error(moto_endpoint, aws_env):
    with pytest.raises(aws.NoMatchingStackError) as caught:
        aws.discover(region="ap-southeast-2", endpoint_url=moto_endpoint)
    assert "ap-southeast-2" in str(caught.value) and "ClaraServiceUrl" in str(caught.value)


def test_updated_stack_is_usable_and_follows_its_new_parameter(account):
    cfn = cloudformation(account)
    cfn.update_stack(
        StackName="clara-lab",
        TemplateBody=template_body("clara-root"),
        Parameters=[
            {"ParameterKey": "UseHTTPS", "ParameterValue": "HTTPS"},
            {"ParameterKey": "LoadBalancerDnsName", "ParameterValue": LAB_ELB},
        ],
    )
    assert cfn.describe_stacks(StackName="clara-lab")["Stacks"][0]["StackStatus"] == "UPDATE_COMPLETE"
    lab = by_name(aws.discover(region="us-east-1", endpoint_url=account))["clara-lab"]
    assert lab.url == f"https://{LAB_ELB}" and lab.note is not None


# ------------------------------------------------------------------------------------------ resolve


def test_resolve_by_exact_name(account):
    assert aws.resolve_stack_url("clara-prod", region="us-east-1", endpoint_url=account) == f"https://{PROD_ELB}"
    assert aws.resolve_stack_url("clara-lab", region="us-east-1", endpoint_url=account) == f"http://{LAB_ELB}"
    aliased = aws.resolve_stack_url(
        "clara-prod", region="us-east-1", endpoint_url=account, aliases={"clara-prod": "clara.example.org"}
    )
    assert aliased == "https://clara.example.org"
    # The only deployment of a region needs no name.
    assert aws.resolve_stack_url(None, region="eu-west-1", endpoint_url=account) == f"https://{EU_ELB}"


def test_resolve_wildcard_must_match_one(account):
    assert aws.resolve_stack_url("*lab*", region="us-east-1", endpoint_url=account) == f"http://{LAB_ELB}"
    with pytest.raises(aws.AmbiguousStackError) as caught:
        aws.resolve_stack_url("clara-*", region="us-east-1", endpoint_url=account)
    assert "clara-prod" in str(caught.value) and "clara-lab" in str(caught.value)


@pytest.mark.parametrize(
    "name, phrase",
    [("clara-missing", "No CloudFormation stack named 'clara-missing'"), ("clara-old", "clara-old"),
     ("unrelated-03", "no ClaraServiceUrl output")],
)
def test_resolve_unusable_names_explain_why(account, name, phrase):
    with pytest.raises(aws.NoMatchingStackError) as caught:
        aws.resolve_stack_url(name, region="us-east-1", endpoint_url=account)
    assert phrase in str(caught.value) and "us-east-1" in str(caught.value)


# ------------------------------------------------------------------------------------------ configuration errors


def test_no_region_is_one_readable_sentence(aws_env):
    with pytest.raises(aws.RegionMissingError) as caught:
        aws.discover()
    message = str(caught.value)
    assert message.startswith("No AWS region is set") and "AWS_REGION" in message and message.endswith(".")


def test_profile_not_found_names_it_and_the_known_ones(aws_env, monkeypatch):
    aws_env.write_config("[profile research]\nregion = us-east-1\n")
    with pytest.raises(aws.ProfileNotFoundError) as caught:
        aws.discover(profile="reserch", region="us-east-1")
    assert "'reserch'" in str(caught.value) and "research" in str(caught.value)

    monkeypatch.setenv("AWS_PROFILE", "gone")
    with pytest.raises(aws.ProfileNotFoundError, match="'gone'"):
        aws.resolve_stack_url("clara-prod", region="us-east-1")


def test_no_credentials(aws_env, moto_endpoint):
    aws_env.drop_keys()
    with pytest.raises(aws.AWSCredentialsError, match="No AWS credentials were found"):
        aws.discover(region="us-east-1", endpoint_url=moto_endpoint)


SSO_CONFIG = """
[profile legacy-sso]
sso_start_url = https://example.awsapps.com/start
sso_region = us-east-1
sso_account_id = 123456789012
sso_role_name = ReadOnly
region = us-east-1

[profile team]
sso_session = corp
sso_account_id = 123456789012
sso_role_name = ReadOnly
region = us-east-1

[sso-session corp]
sso_start_url = https://corp.awsapps.com/start
sso_region = us-east-1
sso_registration_scopes = sso:account:access
"""


@pytest.mark.parametrize("profile", ["legacy-sso", "team"])
def test_sso_profile_without_login(aws_env, moto_endpoint, profile):
    aws_env.drop_keys()
    aws_env.write_config(SSO_CONFIG)
    with pytest.raises(aws.SSOLoginRequiredError) as caught:
        aws.discover(profile=profile, endpoint_url=moto_endpoint)
    assert f"aws sso login --profile {profile}" in str(caught.value)


@pytest.mark.parametrize("profile, cache_key", [("legacy-sso", "https://example.awsapps.com/start"), ("team", "corp")])
def test_sso_profile_with_expired_login(aws_env, moto_endpoint, profile, cache_key):
    import hashlib

    aws_env.drop_keys()
    aws_env.write_config(SSO_CONFIG)
    # An expired cached token without refresh data: botocore gives up without any network call.
    token = {"startUrl": "https://x", "region": "us-east-1", "accessToken": "t", "expiresAt": "2020-01-01T00:00:00Z"}
    cache_file = aws_env.sso_cache / f"{hashlib.sha1(cache_key.encode()).hexdigest()}.json"
    cache_file.write_text(json.dumps(token))
    with pytest.raises(aws.SSOLoginRequiredError, match="missing or has expired"):
        aws.discover(profile=profile, endpoint_url=moto_endpoint)


def test_bad_endpoint_url_and_bad_alias_fail_before_any_request(aws_env):
    with pytest.raises(InputError, match="not an http"):
        aws.discover(region="us-east-1", endpoint_url="127.0.0.1:5000")
    for bad in ("clara example.org", "https://clara.example.org/path", "-bad-.example.org", ""):
        with pytest.raises(InputError, match="DNS host name"):
            aws.normalise_alias(bad)
    with pytest.raises(InputError):
        aws.discover(region="us-east-1", aliases={"clara-prod": "not a host"})


# ------------------------------------------------------------------------------------------ service errors (moto)


def test_access_denied_names_the_iam_action(moto_endpoint, aws_env, monkeypatch):
    import boto3

    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=moto_endpoint)
    enforce_iam_after(moto_endpoint, 3)  # the three IAM calls below run before enforcement starts
    iam.create_user(UserName="viewer")
    allow_list_only = {"Effect": "Allow", "Action": "cloudformation:ListStacks", "Resource": "*"}
    policy = {"Version": "2012-10-17", "Statement": [allow_list_only]}
    iam.put_user_policy(UserName="viewer", PolicyName="list-only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="viewer")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])

    with pytest.raises(aws.AccessDeniedError) as caught:
        aws.discover(region="us-east-1", endpoint_url=moto_endpoint)
    assert caught.value.action == "cloudformation:DescribeStacks"
    assert "cloudformation:DescribeStacks" in str(caught.value) and key["SecretAccessKey"] not in str(caught.value)


def test_unknown_access_key_is_rejected_readably(moto_endpoint, aws_env):
    enforce_iam_after(moto_endpoint, 0)
    with pytest.raises(aws.AWSCredentialsError, match="did not accept the credentials"):
        aws.discover(region="us-east-1", endpoint_url=moto_endpoint)


def test_throttling_is_retried_until_it_succeeds(account):
    with ThrottlingProxy(account, throttle=2) as proxy:
        found = aws.discover(region="us-east-1", endpoint_url=proxy.endpoint)
    assert {d.stack_name for d in found} == {"clara-prod", "clara-lab"}
    # 2 throttled attempts + 2 pages.
    assert describe_stacks_calls(proxy) == 4


def test_throttling_that_persists_gives_readable_error(moto_endpoint, aws_env, monkeypatch):
    monkeypatch.setattr(aws.discovery, "RETRY_ATTEMPTS", 2)  # one retry: shorter backoff sleep, same code path
    with ThrottlingProxy(moto_endpoint, throttle=100) as proxy:
        with pytest.raises(aws.ThrottledError) as caught:
            aws.discover(region="us-east-1", endpoint_url=proxy.endpoint)
    assert describe_stacks_calls(proxy) == 2
    assert "rate limit" in str(caught.value) and "(2 attempts)" in str(caught.value)


@pytest.mark.parametrize("status", [200, 502])
def test_answer_that_is_not_cloudformation_is_explained(moto_endpoint, aws_env, status):
    page = b"<!doctype html><html><body>Proxy sign-in required</body></html>"
    with ThrottlingProxy(moto_endpoint, throttle=100, status=status, body=page, content_type="text/html") as proxy:
        with pytest.raises(aws.EndpointUnreachableError) as caught:
            aws.discover(region="us-east-1", endpoint_url=proxy.endpoint)
    assert "not a CloudFormation response" in str(caught.value) and proxy.endpoint in str(caught.value)


def test_unreachable_endpoint(aws_env):
    endpoint = f"http://127.0.0.1:{closed_local_port()}"
    with pytest.raises(aws.EndpointUnreachableError) as caught:
        aws.discover(region="us-east-1", endpoint_url=endpoint)
    assert endpoint in str(caught.value) and "network" in str(caught.value)


# ------------------------------------------------------------------------------------------ Stubber (moto cannot)


@pytest.fixture
def stubbed(aws_env):
    """A real CloudFormation client with botocore's Stubber; its endpoint is a closed local port."""
    from botocore.stub import Stubber

    client = cloudformation(f"http://127.0.0.1:{closed_local_port()}")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _stack(name, value, *, status="CREATE_COMPLETE", use_https="HTTPS", parent=None, root=None, minutes_ago=60):
    stack = {
        "StackId": f"arn:aws:cloudformation:us-east-1:123456789012:stack/{name}/0000",
        "StackName": name,
        "CreationTime": datetime.now(timezone.utc) - timedelta(minutes=minutes_ago),
        "StackStatus": status,
        "Parameters": [{"ParameterKey": "UseHTTPS", "ParameterValue": use_https}],
        "Outputs": [{"OutputKey": "ClaraServiceUrl", "OutputValue": value}],
    }
    if parent:
        stack["ParentId"], stack["RootId"] = parent, root or parent
    return stack


def test_nested_stacks_with_parent_ids_are_dropped_unless_their_root_is_unusable(stubbed):
    client, stubber = stubbed
    root = _stack("clara-a", "a-1.us-east-1.elb.amazonaws.com/")
    # Nested under a found root; a different (stale) value proves the ParentId rule, not the URL rule, drops it.
    nested = _stack("clara-a-ClaraCluster-X", "a-OLD.us-east-1.elb.amazonaws.com", parent=root["StackId"])
    broken_root = _stack("clara-b", "b-2.us-east-1.elb.amazonaws.com/", status="UPDATE_ROLLBACK_FAILED")
    orphan = _stack("clara-b-ClaraCluster-Y", "b-2.us-east-1.elb.amazonaws.com", parent=broken_root["StackId"])
    stubber.add_response("describe_stacks", {"Stacks": [root, nested], "NextToken": "page-2"}, {})
    stubber.add_response("describe_stacks", {"Stacks": [broken_root, orphan]}, {"NextToken": "page-2"})

    found = by_name(aws.discover_with_client(client))
    assert set(found) == {"clara-a", "clara-b-ClaraCluster-Y"}
    assert found["clara-a"].url == "https://a-1.us-east-1.elb.amazonaws.com"
    assert found["clara-b-ClaraCluster-Y"].url == "https://b-2.us-east-1.elb.amazonaws.com"


@pytest.mark.parametrize("code", ["ExpiredToken", "ExpiredTokenException"])
def test_expired_session_token(stubbed, code):
    client, stubber = stubbed
    stubber.add_client_error("describe_stacks", code, "The security token included in the request is expired", 403)
    with pytest.raises(aws.TokenExpiredError, match="have expired"):
        aws.discover_with_client(client, profile="work")


def test_json_style_error_codes_are_recognised(stubbed):
    client, stubber = stubbed
    stubber.add_client_error("describe_stacks", "AccessDeniedException", "not allowed", 403)
    stubber.add_client_error("describe_stacks", "ThrottlingException", "Rate exceeded", 400)
    with pytest.raises(aws.AccessDeniedError, match="cloudformation:DescribeStacks"):
        aws.discover_with_client(client)
    with pytest.raises(aws.ThrottledError):
        aws.discover_with_client(client)


# ------------------------------------------------------------------------------------------ pure rules


@pytest.mark.parametrize(
    "value, use_https, url",
    [
        ("h.elb.amazonaws.com/", "HTTPS", "https://h.elb.amazonaws.com"),
        ("h.elb.amazonaws.com", None, "https://h.elb.amazonaws.com"),  # the template's default is HTTPS
        ("h.elb.amazonaws.com//", "HTTP", "http://h.elb.amazonaws.com"),
        (" h.example.org:8443/ ", "http", "http://h.example.org:8443"),
        ("https://h.example.org/", "HTTP", "https://h.example.org"),  # a scheme in the output wins
    ],
)
def test_url_normalisation(value, use_https, url):
    stack = _stack("s", value, use_https=use_https) if use_https else {**_stack("s", value), "Parameters": []}
    (deployment,) = aws.deployments_from_stacks([stack], region="us-east-1")
    assert deployment.url == url and deployment.protocol == url.split(":")[0]


@pytest.mark.parametrize(
    "status, usable",
    [("CREATE_COMPLETE", True), ("UPDATE_COMPLETE", True), ("UPDATE_ROLLBACK_COMPLETE", True),
     ("IMPORT_COMPLETE", True),
     ("CREATE_IN_PROGRESS", False), ("ROLLBACK_COMPLETE", False), ("DELETE_COMPLETE", False),
     ("UPDATE_ROLLBACK_FAILED", False), ("DELETE_IN_PROGRESS", False)],
)
def test_usable_states(status, usable):
    found = aws.deployments_from_stacks([_stack("s", "h.elb.amazonaws.com/", status=status)], region="us-east-1")
    assert bool(found) is usable


def test_same_address_keeps_the_root_shaped_stack_and_newest_comes_first():
    nested_first = _stack("a-ClaraCluster-Z", "A.elb.amazonaws.com", minutes_ago=90)
    root = _stack("a", "a.elb.amazonaws.com/", minutes_ago=80)
    newer = _stack("b", "b.elb.amazonaws.com/", minutes_ago=5)
    naive = {**_stack("c", "c.elb.amazonaws.com/"), "CreationTime": datetime(2024, 1, 2, 3, 4, 5)}
    found = aws.deployments_from_stacks([nested_first, root, newer, naive], region="us-east-1")
    assert [d.stack_name for d in found] == ["b", "a", "c"]
    assert found[2].created == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


# ------------------------------------------------------------------------------------------ safety


def test_credentials_never_appear_in_messages_or_logs(moto_endpoint, aws_env, caplog):
    caplog.set_level(logging.DEBUG, logger="ClaraAWSLib")
    texts = []
    for call in (
        lambda: aws.discover(region="us-east-1", endpoint_url=f"http://u:{FAKE_SECRET}@127.0.0.1:{closed_local_port()}"),
        lambda: aws.discover(region="us-east-1", endpoint_url=moto_endpoint),
        lambda: (enforce_iam_after(moto_endpoint, 0), aws.discover(region="us-east-1", endpoint_url=moto_endpoint)),
    ):
        with pytest.raises(DiscoveryError) as caught:
            call()
        texts += [str(caught.value), caught.value.details or ""]
    texts += [record.getMessage() for record in caplog.records if record.name.startswith("ClaraAWSLib")]
    assert all(FAKE_SECRET not in text for text in texts)
    assert any("127.0.0.1" in text for text in texts)  # the endpoint is named, only its password is not
    assert not any(FAKE_KEY_ID + ":" in text for text in texts)


def test_module_imports_and_reports_without_boto3():
    library = Path(aws.__file__).resolve().parent.parent
    script = (
        "import sys; sys.modules['boto3'] = None; sys.modules['botocore'] = None\n"
        "from ClaraAWSLib import aws\n"
        "assert not aws.boto3_available()\n"
        "assert aws.normalise_alias('clara.example.org') == 'clara.example.org'\n"
        "try:\n    aws.discover(region='us-east-1')\n"
        "except aws.Boto3MissingError as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=library, capture_output=True, text=True, timeout=60, check=True
    )
    assert "boto3" in result.stdout and "pip install boto3" in result.stdout


def test_output_keys_are_a_setting_with_the_same_scheme_and_duplicate_rules(moto_endpoint, aws_env):
    cfn = cloudformation(moto_endpoint)
    create_stack(cfn, "clara-prod", "clara-root", UseHTTPS="HTTPS", LoadBalancerDnsName=PROD_ELB)
    create_stack(cfn, "monai", "monailabel", UseHTTPS="HTTP", LoadBalancerDnsName="monai-9.us-east-1.elb.amazonaws.com")
    create_stack(cfn, "monai-copy", "monailabel", UseHTTPS="HTTP", LoadBalancerDnsName="monai-9.us-east-1.elb.amazonaws.com")
    assert set(by_name(aws.discover(region="us-east-1", endpoint_url=moto_endpoint))) == {"clara-prod"}
    found = by_name(aws.discover(region="us-east-1", endpoint_url=moto_endpoint, output_keys=["MonaiLabelUrl"]))
    assert list(found) == ["monai"]  # the same address twice is one deployment, the older stack
    assert found["monai"].url == "http://monai-9.us-east-1.elb.amazonaws.com"
    both = aws.discover(region="us-east-1", endpoint_url=moto_endpoint, output_keys=["ClaraServiceUrl", "MonaiLabelUrl"])
    assert {d.stack_name for d in both} == {"clara-prod", "monai"}
    assert aws.resolve_stack_url("monai", region="us-east-1", endpoint_url=moto_endpoint, output_keys=["MonaiLabelUrl"]).startswith("http://monai-9")
    with pytest.raises(DiscoveryError, match="none of the outputs NoSuchKey"):
        aws.resolve_stack_url("monai", region="us-east-1", endpoint_url=moto_endpoint, output_keys=["NoSuchKey"])
    with pytest.raises(InputError, match="not a CloudFormation output key"):
        aws.discover(region="us-east-1", endpoint_url=moto_endpoint, output_keys=["bad key!"])
