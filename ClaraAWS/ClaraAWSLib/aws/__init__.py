"""Ring 1: finding Clara servers in the user's CloudFormation stacks (boto3 is imported on first use).

``discovery`` does the work; ``stacks`` turns stack descriptions into deployments; ``errors`` turns
botocore failures into one readable sentence. ``service`` (with ``service_stack`` and ``capacity``) shows
and scales the Quick Start's ECS service: tasks, healthy targets, GPU capacity, stickiness. Callers use the package: ``from ClaraAWSLib import aws``.
"""

from . import discovery  # noqa: F401 - where the settings (retry attempts, timeouts) live
from .discovery import (  # noqa: F401
    AWSCredentialsError,
    AccessDeniedError,
    AmbiguousStackError,
    Boto3MissingError,
    CONNECT_TIMEOUT_S,
    DESCRIBE_STACKS_ACTION,
    Deployment,
    EndpointUnreachableError,
    ErrorContext,
    NoMatchingStackError,
    OUTPUT_KEY,
    ProfileNotFoundError,
    READ_TIMEOUT_S,
    RETRY_ATTEMPTS,
    RegionMissingError,
    SSOLoginRequiredError,
    ThrottledError,
    TokenExpiredError,
    USABLE_STATES,
    boto3_available,
    checked_aliases,
    deployments_from_stacks,
    discover,
    discover_with_client,
    name_matches,
    normalise_alias,
    open_aws_clients,
    open_cloudformation_client,
    region_missing,
    resolve_stack,
    resolve_stack_url,
    resolve_with_client,
    stack_rejection,
    translate_boto_error,
    unusable_clara_stacks,
)
from .errors import ServiceCapacityError, ServiceWaitTimeoutError  # noqa: F401,E402
from .service import ClaraService, ServiceStatus, TaskChange  # noqa: F401,E402
