"""Find Clara AIAA servers deployed by the AWS Quick Start, from CloudFormation stack outputs.

Public API (the CLI and the Slicer panel use these)::

    deployments = discover(profile=None, region=None, stack_filter=None, endpoint_url=None, aliases=None)
    url = resolve_stack_url(stack_name, profile=None, region=None, endpoint_url=None, aliases=None)
    boto3_available() -> bool

Every failure is a :class:`~ClaraAWSLib.errors.DiscoveryError` (subclasses in ``aws_errors``) or, for
bad input, an :class:`~ClaraAWSLib.errors.InputError`, each one readable sentence.

Pure core ring: no Slicer, no Qt, no storage (aliases are passed in by the caller, who stores them).
boto3 is imported lazily so that this module imports without it.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any, Mapping, Optional, Sequence
from urllib.parse import urlsplit

from .errors import (  # noqa: F401  (re-exported: callers catch them as aws.XxxError)
    DESCRIBE_STACKS_ACTION,
    AccessDeniedError,
    AmbiguousStackError,
    AWSCredentialsError,
    Boto3MissingError,
    EndpointUnreachableError,
    ErrorContext,
    NoMatchingStackError,
    ProfileNotFoundError,
    RegionMissingError,
    SSOLoginRequiredError,
    ThrottledError,
    TokenExpiredError,
    region_missing,
    translate_boto_error,
)
from .stacks import (  # noqa: F401  (re-exported)
    OUTPUT_KEY,
    USABLE_STATES,
    Deployment,
    checked_aliases,
    checked_output_keys,
    deployments_from_stacks,
    name_matches,
    normalise_alias,
    stack_rejection,
    unusable_clara_stacks,
)
from ..core.errors import DiscoveryError, InputError

log = logging.getLogger(__name__)

#: Total DescribeStacks attempts per page (first try + retries), with botocore's standard backoff.
RETRY_ATTEMPTS = 4
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0


def boto3_available() -> bool:
    """True when boto3 (and botocore) can be imported, without importing them."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("boto3", "botocore"))
    except (ImportError, ValueError):
        return False


def _check_endpoint_url(endpoint_url: Optional[str]) -> Optional[str]:
    if not endpoint_url:
        return None
    parts = urlsplit(endpoint_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(
            f"The endpoint URL '{endpoint_url}' is not an http:// or https:// URL: enter a URL such as "
            "https://cloudformation.us-east-1.amazonaws.com, or leave it empty."
        )
    return endpoint_url.strip()


def open_aws_clients(
    services: Sequence[str], profile: Optional[str] = None, region: Optional[str] = None,
    endpoint_url: Optional[str] = None, *, default_region: Optional[str] = None,
) -> tuple[dict, ErrorContext]:
    """``({service: client}, ErrorContext)`` from one boto3 session, with retries and timeouts set explicitly.

    ``endpoint_url`` goes to every client (a local test server, or a proxy that serves them all);
    ``default_region`` is used when neither ``region`` nor the profile names one (S3 finds a bucket's
    region itself, so listing a bucket needs no region of the user's).
    """
    endpoint_url = _check_endpoint_url(endpoint_url)
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError
    except ImportError as exc:
        raise Boto3MissingError(
            "boto3 (the AWS SDK for Python) is not installed: install it (in Slicer's Python console: "
            "slicer.util.pip_install('boto3'); elsewhere: pip install boto3), or enter the server URL by hand."
        ) from exc

    context = ErrorContext(profile=profile or None, region=region or None, endpoint_url=endpoint_url)
    try:
        session = boto3.Session(profile_name=profile or None)
        # The profile may come from AWS_PROFILE; name it in messages ("aws sso login --profile X").
        profile = profile or (session.profile_name if session.profile_name != "default" else None)
        region_name = (region or "").strip() or session.region_name or default_region
        if not region_name:
            raise region_missing(profile)
        context = ErrorContext(profile=profile, region=region_name, endpoint_url=endpoint_url)
        # Set retry mode explicitly: older botocore (as Slicer users may have) defaults to 'legacy'.
        config = Config(
            retries={"mode": "standard", "total_max_attempts": RETRY_ATTEMPTS},
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            user_agent_extra="ClaraAWS",
        )
        clients = {
            service: session.client(service, region_name=region_name, endpoint_url=endpoint_url, config=config)
            for service in services
        }
    except BotoCoreError as exc:
        raise translate_boto_error(exc, context) from None
    return clients, context


def _open(profile: Optional[str], region: Optional[str], endpoint_url: Optional[str]) -> tuple[Any, ErrorContext]:
    """``(client, ErrorContext)`` for CloudFormation."""
    clients, context = open_aws_clients(("cloudformation",), profile, region, endpoint_url)
    return clients["cloudformation"], context


def open_cloudformation_client(
    profile: Optional[str] = None, region: Optional[str] = None, endpoint_url: Optional[str] = None
) -> Any:
    """A boto3 CloudFormation client configured as discovery uses it."""
    return _open(profile, region, endpoint_url)[0]


def _context_of(client, profile: Optional[str], stack_name: Optional[str] = None) -> ErrorContext:
    return ErrorContext(
        profile=profile, region=client.meta.region_name, endpoint_url=client.meta.endpoint_url, stack_name=stack_name
    )


def _describe_stacks(client, context: ErrorContext, **parameters: Any) -> list:
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    stacks: list = []
    try:
        for page in client.get_paginator("describe_stacks").paginate(**parameters):
            stacks.extend(page.get("Stacks") or ())
    except (BotoCoreError, ClientError, ResponseParserError) as exc:
        raise translate_boto_error(exc, context) from None
    return stacks


def discover_with_client(
    client,
    *,
    stack_filter: Optional[str] = None,
    aliases: Optional[Mapping[str, str]] = None,
    profile: Optional[str] = None,
    output_keys: Optional[Sequence[str]] = None,
) -> list[Deployment]:
    """Like :func:`discover`, with a CloudFormation client made by the caller (tests, custom sessions)."""
    alias_hosts = checked_aliases(aliases)
    keys = checked_output_keys(output_keys)
    context = _context_of(client, profile)
    stacks = _describe_stacks(client, context)
    deployments = deployments_from_stacks(stacks, region=context.region, stack_filter=stack_filter, aliases=alias_hosts,
                                          output_keys=keys)
    log.info("CloudFormation in %s: %d stacks, %d Clara deployments", context.region, len(stacks), len(deployments))
    if not deployments:
        raise _nothing_found(stacks, context.region, stack_filter, keys)
    return deployments


def _nothing_found(stacks: list, region: str, stack_filter: Optional[str],
                   output_keys: Sequence[str] = (OUTPUT_KEY,)) -> NoMatchingStackError:
    matching = f" matching '{stack_filter}'" if stack_filter else ""
    unusable = unusable_clara_stacks(stacks, stack_filter, output_keys)
    hint = f", only stacks in unusable states: {', '.join(unusable[:5])}" if unusable else ""
    outputs = f"the output {output_keys[0]}" if len(output_keys) == 1 else f"one of the outputs {', '.join(output_keys)}"
    return NoMatchingStackError(
        f"No Clara deployment (a CloudFormation stack with {outputs}){matching} was found in "
        f"{region}{hint}: check the region (stacks are regional) and the stack name."
    )


def discover(
    profile: Optional[str] = None,
    region: Optional[str] = None,
    stack_filter: Optional[str] = None,
    endpoint_url: Optional[str] = None,
    aliases: Optional[Mapping[str, str]] = None,
    output_keys: Optional[Sequence[str]] = None,
) -> list[Deployment]:
    """Every Clara deployment in one region, newest first; NoMatchingStackError when there is none.

    ``stack_filter``: case-insensitive substring, or a wildcard pattern when it contains * ? [.
    ``aliases``: stack name -> DNS alias host; the alias replaces the load balancer's name in ``url``.
    ``output_keys``: the stack outputs holding the server address (default ClaraServiceUrl; a MONAI Label
    deployment's own key, e.g.), the first one a stack has wins.
    """
    alias_hosts = checked_aliases(aliases)  # bad input fails before any network traffic
    keys = checked_output_keys(output_keys)
    client, context = _open(profile, region, endpoint_url)
    return discover_with_client(client, stack_filter=stack_filter, aliases=alias_hosts, profile=context.profile,
                                output_keys=keys)


def resolve_with_client(
    client,
    stack_name: Optional[str],
    *,
    aliases: Optional[Mapping[str, str]] = None,
    profile: Optional[str] = None,
    output_keys: Optional[Sequence[str]] = None,
) -> Deployment:
    """Like :func:`resolve_stack`, with a CloudFormation client made by the caller."""
    alias_hosts = checked_aliases(aliases)
    keys = checked_output_keys(output_keys)
    name = (stack_name or "").strip()
    if not name or any(char in name for char in "*?["):
        deployments = discover_with_client(client, stack_filter=name or None, aliases=alias_hosts, profile=profile,
                                           output_keys=keys)
        if len(deployments) > 1:
            names = ", ".join(d.stack_name for d in deployments[:8])
            raise AmbiguousStackError(
                f"{len(deployments)} Clara deployments match in {deployments[0].region} ({names}): "
                "give the exact stack name."
            )
        return deployments[0]

    context = _context_of(client, profile, stack_name=name)
    stacks = _describe_stacks(client, context, StackName=name)
    if not stacks:
        raise NoMatchingStackError(
            f"No CloudFormation stack named '{name}' exists in {context.region}: check the name and the region."
        )
    reason = stack_rejection(stacks[0], keys)
    if reason is not None:
        raise NoMatchingStackError(f"Stack '{name}' in {context.region} {reason}: choose another stack.")
    return deployments_from_stacks(stacks[:1], region=context.region, aliases=alias_hosts, output_keys=keys)[0]


def resolve_stack(
    stack_name: Optional[str],
    profile: Optional[str] = None,
    region: Optional[str] = None,
    endpoint_url: Optional[str] = None,
    aliases: Optional[Mapping[str, str]] = None,
    output_keys: Optional[Sequence[str]] = None,
) -> Deployment:
    """The one deployment of ``stack_name`` (exact name or stack id; a wildcard pattern, or empty for
    "the only one in the region", must match exactly one). Raises a DiscoveryError otherwise."""
    alias_hosts = checked_aliases(aliases)
    keys = checked_output_keys(output_keys)
    client, context = _open(profile, region, endpoint_url)
    return resolve_with_client(client, stack_name, aliases=alias_hosts, profile=context.profile, output_keys=keys)


def resolve_stack_url(
    stack_name: Optional[str],
    profile: Optional[str] = None,
    region: Optional[str] = None,
    endpoint_url: Optional[str] = None,
    aliases: Optional[Mapping[str, str]] = None,
    output_keys: Optional[Sequence[str]] = None,
) -> str:
    """The server URL of ``stack_name``; see :func:`resolve_stack`."""
    return resolve_stack(stack_name, profile=profile, region=region, endpoint_url=endpoint_url, aliases=aliases,
                         output_keys=output_keys).url


__all__ = [
    "Deployment",
    "DiscoveryError",
    "boto3_available",
    "discover",
    "discover_with_client",
    "resolve_stack",
    "resolve_stack_url",
    "resolve_with_client",
    "deployments_from_stacks",
    "normalise_alias",
    "open_aws_clients",
    "open_cloudformation_client",
]
