"""Readable errors for AWS discovery, and the translation of botocore's exceptions into them.

Each error is one sentence saying what happened and what to do. Messages name profiles, regions and
endpoints, never credentials; the AWS service's own message goes to ``details`` only for service
errors (it names the identity's ARN at most), never for credential-provider failures, whose text can
echo a credential process's output.

botocore is imported lazily (inside :func:`translate_boto_error`) so this module imports without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

from ..core.errors import DiscoveryError, InputError

#: The IAM permission discovery needs; named in access-denied messages.
DESCRIBE_STACKS_ACTION = "cloudformation:DescribeStacks"


class Boto3MissingError(DiscoveryError):
    """boto3 is not installed in this Python."""


class AWSCredentialsError(DiscoveryError):
    """No usable credentials: none found, incomplete, or rejected by AWS."""


class ProfileNotFoundError(DiscoveryError):
    """The named AWS profile is in neither the config nor the credentials file."""


class SSOLoginRequiredError(DiscoveryError):
    """The profile uses IAM Identity Center (SSO) and has no valid login."""


class TokenExpiredError(DiscoveryError):
    """Temporary credentials (a session token) have expired."""


class AccessDeniedError(DiscoveryError):
    """The identity lacks an IAM permission; ``action`` names it."""

    def __init__(self, message: str, *, action: str, details: Optional[str] = None) -> None:
        super().__init__(message, details=details)
        self.action = action


class ThrottledError(DiscoveryError):
    """AWS kept throttling the requests after botocore's retries."""


class RegionMissingError(DiscoveryError):
    """No region was given and none is configured."""


class EndpointUnreachableError(DiscoveryError):
    """The CloudFormation endpoint could not be reached (network, proxy, TLS, timeout)."""


class NoMatchingStackError(DiscoveryError):
    """No usable stack with a ``ClaraServiceUrl`` output matched."""


class AmbiguousStackError(DiscoveryError):
    """More than one deployment matched where exactly one was needed."""


class ServiceWaitTimeoutError(DiscoveryError):
    """The ECS service's load-balancer targets did not become healthy within the time allowed; ``status`` is
    the service as last seen."""

    def __init__(self, status, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServiceCapacityError(InputError):
    """More tasks were asked of the ECS service than the cluster's GPU instances can place."""


@dataclass(frozen=True)
class ErrorContext:
    """What the user asked for, so that messages can name it."""

    profile: Optional[str] = None
    region: Optional[str] = None
    endpoint_url: Optional[str] = None
    stack_name: Optional[str] = None
    #: The AWS service the failed call went to, and the permission it needs; messages name both.
    service: str = "CloudFormation"
    action: str = DESCRIBE_STACKS_ACTION


_ACCESS_DENIED_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
_EXPIRED_TOKEN_CODES = {"ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired"}
_THROTTLING_CODES = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
}
_REJECTED_CREDENTIAL_CODES = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidSignatureException",
    "AuthFailure",
    "MissingAuthenticationToken",
}
_CLOCK_SKEW_CODES = {"RequestExpired", "RequestTimeTooSkewed", "RequestInTheFuture"}
_DENIED_ACTION = re.compile(r"perform:\s*([A-Za-z0-9-]+:[A-Za-z0-9*]+)")


def safe_endpoint(endpoint_url: Optional[str], service: str = "CloudFormation") -> str:
    """The endpoint for messages, without any user:password part."""
    if not endpoint_url:
        return f"the AWS {service} endpoint"
    parts = urlsplit(endpoint_url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _profile_phrase(profile: Optional[str]) -> str:
    return f"the AWS profile '{profile}'" if profile else "the default AWS profile"


def _login_command(profile: Optional[str]) -> str:
    return f"aws sso login --profile {profile}" if profile else "aws sso login"


def _available_profiles() -> list:
    try:
        import botocore.session

        return sorted(botocore.session.Session().available_profiles)
    except Exception:  # listing is only a hint; never let it hide the real error
        return []


def profile_not_found(profile: str) -> ProfileNotFoundError:
    names = [name for name in _available_profiles() if name != profile]
    known = f" (known profiles: {', '.join(names[:10])})" if names else ""
    return ProfileNotFoundError(
        f"The AWS profile '{profile}' is not in your AWS config or credentials file{known}: "
        f"choose an existing profile or create it with 'aws configure --profile {profile}'."
    )


def region_missing(profile: Optional[str]) -> RegionMissingError:
    where = f"in profile '{profile}'" if profile else "in your AWS config"
    return RegionMissingError(
        f"No AWS region is set: choose the region your Clara stack runs in, or set 'region' {where} "
        "or the AWS_REGION environment variable."
    )


def translate_boto_error(exc: BaseException, context: ErrorContext) -> DiscoveryError:
    """One readable :class:`DiscoveryError` for an exception raised by boto3/botocore."""
    from botocore import exceptions as bx
    from botocore.parsers import ResponseParserError

    if isinstance(exc, bx.ProfileNotFound):
        return profile_not_found(exc.kwargs.get("profile") or context.profile or "")
    if isinstance(exc, bx.NoRegionError):
        return region_missing(context.profile)
    if isinstance(exc, bx.SSOError) or (
        isinstance(exc, bx.TokenRetrievalError) and exc.kwargs.get("provider") == "sso"
    ):
        return SSOLoginRequiredError(
            f"The AWS single sign-on (IAM Identity Center) login for {_profile_phrase(context.profile)} "
            f"is missing or has expired: run '{_login_command(context.profile)}' and try again."
        )
    login_error = getattr(bx, "LoginError", None)  # botocore >= 1.40 only
    if login_error is not None and isinstance(exc, login_error):
        return AWSCredentialsError(
            f"The AWS console login session for {_profile_phrase(context.profile)} has expired or is invalid: "
            "run 'aws login' and try again."
        )
    if isinstance(exc, bx.NoCredentialsError):
        return AWSCredentialsError(
            "No AWS credentials were found: choose a profile that has credentials, run 'aws configure' "
            "or 'aws sso login', or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
        )
    if isinstance(exc, bx.PartialCredentialsError):
        return AWSCredentialsError(
            f"The AWS credentials of {_profile_phrase(context.profile)} are incomplete "
            f"({exc.kwargs.get('cred_var', 'a value')} is missing): complete them or sign in again."
        )
    if isinstance(exc, (bx.CredentialRetrievalError, bx.RefreshWithMFAUnsupportedError, bx.TokenRetrievalError)):
        return AWSCredentialsError(
            f"AWS credentials for {_profile_phrase(context.profile)} could not be obtained "
            "(role assumption, credential process or MFA failed): sign in again with the AWS CLI and retry."
        )
    if isinstance(exc, bx.SSLError):
        return EndpointUnreachableError(
            f"The TLS certificate of {safe_endpoint(context.endpoint_url, context.service)} could not be verified: "
            "check the network proxy or set AWS_CA_BUNDLE to your organisation's CA bundle."
        )
    if isinstance(exc, bx.ReadTimeoutError):
        return EndpointUnreachableError(
            f"{safe_endpoint(context.endpoint_url, context.service)} did not answer in time: check the network connection "
            "and the proxy settings, then try again."
        )
    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError)):
        return EndpointUnreachableError(
            f"AWS could not be reached at {safe_endpoint(context.endpoint_url, context.service)}: "
            "check the network connection, the proxy settings and the endpoint URL, then try again."
        )
    if isinstance(exc, bx.ClientError):
        return _translate_client_error(exc, context)
    if isinstance(exc, ResponseParserError):
        return EndpointUnreachableError(
            f"{safe_endpoint(context.endpoint_url, context.service)} answered with something that is not a {context.service} "
            "response: check the endpoint URL and the proxy settings."
        )
    if isinstance(exc, bx.BotoCoreError):
        return DiscoveryError(f"AWS discovery failed ({type(exc).__name__}): check your AWS configuration.")
    return DiscoveryError(f"AWS discovery failed unexpectedly ({type(exc).__name__}).", details=str(exc))


def _translate_client_error(exc: BaseException, context: ErrorContext) -> DiscoveryError:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    code = str(error.get("Code", ""))
    service_message = str(error.get("Message", ""))
    region = context.region or "this region"

    # A JSON-protocol call (ECS) answered with an XML error body, as moto does, leaves botocore only the
    # HTTP status as code; IAM's "not authorized to perform: ACTION" still says what happened.
    if code in _ACCESS_DENIED_CODES or (code == "403" and _DENIED_ACTION.search(service_message)):
        named = _DENIED_ACTION.search(service_message)
        action = named.group(1) if named else context.action
        doing = "read CloudFormation stacks" if context.service == "CloudFormation" else f"use {context.service}"
        return AccessDeniedError(
            f"Your AWS identity may not {doing} in {region}: it needs the IAM permission "
            f"{action}, which your AWS administrator can grant.",
            action=action,
            details=service_message or None,
        )
    if code in _EXPIRED_TOKEN_CODES:
        return TokenExpiredError(
            f"The temporary AWS credentials of {_profile_phrase(context.profile)} have expired: sign in again "
            "(for example 'aws sso login') or get a new session token, then try again.",
            details=service_message or None,
        )
    if code in _THROTTLING_CODES:
        attempts = int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) + 1
        return ThrottledError(
            f"AWS {context.service} in {region} kept rejecting requests for exceeding its rate limit "
            f"({attempts} attempts): wait a minute and try again.",
            details=service_message or None,
        )
    if code in _REJECTED_CREDENTIAL_CODES:
        return AWSCredentialsError(
            f"AWS did not accept the credentials of {_profile_phrase(context.profile)} (unknown access key or "
            "wrong secret): check the profile's keys or sign in again.",
            details=service_message or None,
        )
    if code in _CLOCK_SKEW_CODES:
        return AWSCredentialsError(
            "AWS rejected the request because this computer's clock is wrong: set the clock "
            "(automatic time) and try again.",
            details=service_message or None,
        )
    if code == "ValidationError" and "does not exist" in service_message:
        name = context.stack_name or "the requested stack"
        return NoMatchingStackError(
            f"No CloudFormation stack named '{name}' exists in {region}: check the stack name and the region.",
            details=service_message or None,
        )
    return DiscoveryError(
        f"AWS {context.service} in {region} refused the request with error {code or 'unknown'}: "
        "see the details, then try again.",
        details=service_message or None,
    )


def call_aws(context: ErrorContext, service: str, action: str, function, /, **parameters):
    """``function(**parameters)`` (a boto3 client method) with its failure as one readable DiscoveryError
    that names ``service`` and the IAM permission ``action``."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    try:
        return function(**parameters)
    except (BotoCoreError, ClientError, ResponseParserError) as exc:
        raise translate_boto_error(exc, replace(context, service=service, action=action)) from None


def paginate_aws(context: ErrorContext, service: str, action: str, client, operation: str, key: str, /,
                 **parameters):
    """Every item under ``key`` of every page of ``operation``, fetched page by page as they are used."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    try:
        for page in client.get_paginator(operation).paginate(**parameters):
            yield from page.get(key) or ()
    except (BotoCoreError, ClientError, ResponseParserError) as exc:
        raise translate_boto_error(exc, replace(context, service=service, action=action)) from None
