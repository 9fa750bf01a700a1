"""Find the Quick Start's ECS cluster, ECS service and target group among a stack's resources.

The Quick Start builds them in nested stacks (root -> ClaraCluster -> ECS, ALB, ClaraService), so the
walk follows ``AWS::CloudFormation::Stack`` resources down from the stack the user names. Resources are
matched by the Quick Start's logical ids first (``Service``, ``ECSCluster``, ``TargetGroup``: the
load-balancer stack's ``DefaultTargetGroup`` receives no traffic) and by type otherwise, so a copy of the
templates with other names still works when it holds one of each.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional

from .errors import AmbiguousStackError, ErrorContext, NoMatchingStackError, call_aws, paginate_aws

NESTED_STACK = "AWS::CloudFormation::Stack"
ECS_SERVICE = "AWS::ECS::Service"
ECS_CLUSTER = "AWS::ECS::Cluster"
TARGET_GROUP = "AWS::ElasticLoadBalancingV2::TargetGroup"
#: The Quick Start's logical ids (templates/service.template.yaml, ecs-cluster.template.yaml).
PREFERRED_IDS = {ECS_SERVICE: "Service", ECS_CLUSTER: "ECSCluster", TARGET_GROUP: "TargetGroup"}
UNUSED_TARGET_GROUP_ID = "DefaultTargetGroup"
#: The root and clara-cluster templates both take the number of GPU hosts as this parameter.
CLUSTER_SIZE_PARAMETER = "ClusterSize"
INSTANCE_TYPE_PARAMETER = "ECSHostInstanceType"
#: The Quick Start nests two levels deep; a deeper tree is not a Quick Start deployment.
MAX_DEPTH = 4

_LIST_RESOURCES = "cloudformation:ListStackResources"
_DESCRIBE_STACKS = "cloudformation:DescribeStacks"


@dataclass(frozen=True)
class Found:
    logical_id: str
    physical_id: str
    stack_name: str


@dataclass(frozen=True)
class ServiceResources:
    """Where the Clara service lives; ``cluster`` is a name or ARN, ``target_group_arn`` may be unknown."""

    stack_name: str
    service: str
    cluster: str
    target_group_arn: Optional[str]
    #: The stack whose ``ClusterSize`` parameter sets the number of GPU hosts, and its value.
    cluster_size_stack: Optional[str]
    cluster_size: Optional[int]


def _pick(found: List[Found], resource_type: str, stack_name: str) -> Optional[Found]:
    candidates = [item for item in found if item.logical_id != UNUSED_TARGET_GROUP_ID]
    preferred = [item for item in candidates if item.logical_id == PREFERRED_IDS[resource_type]]
    choices = preferred or candidates
    if len(choices) > 1:
        names = ", ".join(f"{item.logical_id} in {item.stack_name}" for item in choices[:6])
        raise AmbiguousStackError(
            f"Stack {stack_name} holds {len(choices)} resources of type {resource_type} ({names}): "
            "give the name of the nested stack that holds the Clara service."
        )
    return choices[0] if choices else None


def _parameters(stack: Dict[str, Any]) -> Dict[str, str]:
    return {p.get("ParameterKey"): p.get("ParameterValue") for p in stack.get("Parameters") or ()}


def _stack(cloudformation, context: ErrorContext, name: str) -> Dict[str, Any]:
    stacks = call_aws(context, "CloudFormation", _DESCRIBE_STACKS, cloudformation.describe_stacks,
                      StackName=name).get("Stacks") or ()
    if not stacks:
        raise NoMatchingStackError(
            f"No CloudFormation stack named '{name}' exists in {context.region}: check the name and the region."
        )
    return stacks[0]


def find_service_resources(cloudformation, context: ErrorContext, stack_name: str) -> ServiceResources:
    """The Clara ECS service of ``stack_name`` and its nested stacks; NoMatchingStackError when it has none."""
    context = replace(context, stack_name=stack_name)
    found: Dict[str, List[Found]] = {ECS_SERVICE: [], ECS_CLUSTER: [], TARGET_GROUP: []}
    cluster_size: Optional[tuple] = None
    service_stack_parameters: Dict[str, Dict[str, str]] = {}
    queue = [(stack_name, 0)]
    seen = set()
    while queue:  # breadth first, so the stack nearest the root gives ClusterSize (its update reaches the rest)
        name, depth = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        stack = _stack(cloudformation, context, name)
        parameters = _parameters(stack)
        shown_name = stack.get("StackName") or name
        if cluster_size is None and CLUSTER_SIZE_PARAMETER in parameters:
            cluster_size = (shown_name, parameters[CLUSTER_SIZE_PARAMETER])
        for resource in paginate_aws(context, "CloudFormation", _LIST_RESOURCES, cloudformation,
                                     "list_stack_resources", "StackResourceSummaries", StackName=name):
            kind, physical = resource.get("ResourceType"), resource.get("PhysicalResourceId")
            if not physical or str(resource.get("ResourceStatus", "")).startswith("DELETE"):
                continue
            if kind == NESTED_STACK and depth < MAX_DEPTH:
                queue.append((physical, depth + 1))
            elif kind in found:
                found[kind].append(Found(resource.get("LogicalResourceId", ""), physical, shown_name))
                if kind == ECS_SERVICE:
                    service_stack_parameters[physical] = parameters

    service = _pick(found[ECS_SERVICE], ECS_SERVICE, stack_name)
    if service is None:
        raise NoMatchingStackError(
            f"Stack {stack_name} in {context.region} holds no ECS service ({ECS_SERVICE}), nor do its nested "
            "stacks: give the name of the Clara Quick Start's root stack."
        )
    cluster = _pick(found[ECS_CLUSTER], ECS_CLUSTER, stack_name)
    # Named alone, the service stack knows its cluster only as its 'Cluster' parameter.
    cluster_name = cluster.physical_id if cluster else service_stack_parameters[service.physical_id].get("Cluster")
    if not cluster_name:
        cluster_name = _cluster_from_service_arn(service.physical_id)
    target_group = _pick(found[TARGET_GROUP], TARGET_GROUP, stack_name)
    size = None
    if cluster_size is not None and str(cluster_size[1]).strip().isdigit():
        size = int(cluster_size[1])
    return ServiceResources(
        stack_name=stack_name,
        service=service.physical_id,
        cluster=cluster_name or "default",
        target_group_arn=target_group.physical_id if target_group else None,
        cluster_size_stack=cluster_size[0] if cluster_size else None,
        cluster_size=size,
    )


def _cluster_from_service_arn(arn: str) -> Optional[str]:
    """``arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/NAME`` (the long ARN format) names its cluster."""
    parts = arn.split(":", 5)[-1].split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "service" else None
