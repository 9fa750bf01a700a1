"""The Quick Start's ECS service as the engine that scales a dataset run.

A dataset goes faster with more GPU tasks behind the load balancer. This module shows the service's
tasks (desired, running, pending), its target group's healthy targets and how many GPU tasks the
cluster's instances can place; sets the desired count, refusing what the cluster cannot place; keeps
interactive sessions on one task when there are several (the Quick Start's target group has no
stickiness, and an AIAA session lives in one task's memory); and waits, within a bounded time, until
the targets are healthy.

Usage::

    service = ClaraService.open("clara-prod", profile=None, region="us-east-1")
    print(service.status().as_dict())
    change = service.set_tasks(2)          # ServiceCapacityError when the cluster is too small
    service.wait_healthy(timeout=900)     # ServiceWaitTimeoutError after the timeout

IAM permissions used: cloudformation:DescribeStacks and ListStackResources; ecs:DescribeServices,
DescribeTaskDefinition, ListContainerInstances, DescribeContainerInstances and UpdateService;
elasticloadbalancing:DescribeTargetHealth, DescribeTargetGroupAttributes and ModifyTargetGroupAttributes;
application-autoscaling:DescribeScalableTargets and RegisterScalableTarget.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..core.errors import InputError
from .capacity import GpuCapacity, capacity_refusal, gpu_capacity, max_tasks, task_needs
from .errors import ErrorContext, NoMatchingStackError, ServiceCapacityError, ServiceWaitTimeoutError, call_aws, paginate_aws
from .service_stack import CLUSTER_SIZE_PARAMETER, INSTANCE_TYPE_PARAMETER, ServiceResources, find_service_resources

SERVICES = ("cloudformation", "ecs", "elbv2", "application-autoscaling")
WAIT_TIMEOUT_S = 900.0
POLL_INTERVAL_S = 15.0
#: DescribeContainerInstances takes at most 100 instances per call.
_DESCRIBE_BATCH = 100
_STICKY = [{"Key": "stickiness.enabled", "Value": "true"}, {"Key": "stickiness.type", "Value": "lb_cookie"}]
_SCALABLE_DIMENSION = "ecs:service:DesiredCount"


@dataclass(frozen=True)
class ServiceStatus:
    stack_name: str
    region: str
    cluster: str
    service: str
    task_family: str
    desired: int
    running: int
    pending: int
    target_group: Optional[str]
    healthy: int
    unhealthy: int
    #: Every target state and how many targets are in it (healthy, initial, draining, unused, ...).
    target_states: Dict[str, int]
    capacity: GpuCapacity
    #: The most tasks the service can have now: those placed plus what still fits.
    max_tasks: int
    sticky: bool
    cluster_size_parameter: str
    cluster_size: Optional[int]
    #: Application Auto Scaling's (min, max) for the desired count, when the service has a scalable target.
    scaling_range: Optional[Tuple[int, int]]

    def as_dict(self) -> dict:
        data = asdict(self)
        data["scaling_range"] = list(self.scaling_range) if self.scaling_range else None
        return data


@dataclass(frozen=True)
class TaskChange:
    """What :meth:`ClaraService.set_tasks` changed; ``notes`` are sentences to show the user."""

    previous: int
    desired: int
    stickiness_turned_on: bool = False
    scaling_range: Optional[Tuple[int, int]] = None
    notes: List[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["scaling_range"] = list(self.scaling_range) if self.scaling_range else None
        return data


class ClaraService:
    """The ECS service of one Clara Quick Start stack, through boto3 clients named as in :data:`SERVICES`."""

    def __init__(self, clients: Mapping[str, Any], stack_name: str, context: ErrorContext) -> None:
        if not (stack_name or "").strip() or any(char in stack_name for char in "*?["):
            raise InputError("Give the exact name of the Clara stack (--stack NAME); patterns are not accepted here.")
        self._clients = clients
        self._context = replace(context, stack_name=stack_name)
        self.stack_name = stack_name.strip()
        self._resources: Optional[ServiceResources] = None

    @classmethod
    def open(cls, stack_name: str, profile: Optional[str] = None, region: Optional[str] = None,
             endpoint_url: Optional[str] = None) -> "ClaraService":
        from .discovery import open_aws_clients

        clients, context = open_aws_clients(SERVICES, profile, region, endpoint_url)
        return cls(clients, stack_name, context)

    # --- AWS calls ----------------------------------------------------------------------------
    def _call(self, client: str, action: str, operation: str, **parameters: Any) -> Dict[str, Any]:
        service = {"ecs": "ECS", "elbv2": "Elastic Load Balancing",
                   "application-autoscaling": "Application Auto Scaling"}.get(client, client)
        return call_aws(self._context, service, action, getattr(self._clients[client], operation), **parameters)

    @property
    def resources(self) -> ServiceResources:
        if self._resources is None:
            self._resources = find_service_resources(self._clients["cloudformation"], self._context, self.stack_name)
        return self._resources

    def _describe_service(self) -> Dict[str, Any]:
        resources = self.resources
        answer = self._call("ecs", "ecs:DescribeServices", "describe_services",
                            cluster=resources.cluster, services=[resources.service])
        services = [s for s in answer.get("services") or () if s.get("status") != "INACTIVE"]
        if not services:
            raise NoMatchingStackError(
                f"The ECS service of stack {self.stack_name} ({resources.service}) is not in cluster "
                f"{resources.cluster} or was deleted: check the stack's status in the CloudFormation console."
            )
        return services[0]

    def _container_instances(self, cluster: str) -> List[Dict[str, Any]]:
        arns = list(paginate_aws(self._context, "ECS", "ecs:ListContainerInstances", self._clients["ecs"],
                                 "list_container_instances", "containerInstanceArns", cluster=cluster))
        instances: List[Dict[str, Any]] = []
        for start in range(0, len(arns), _DESCRIBE_BATCH):
            answer = self._call("ecs", "ecs:DescribeContainerInstances", "describe_container_instances",
                                cluster=cluster, containerInstances=arns[start:start + _DESCRIBE_BATCH])
            instances.extend(answer.get("containerInstances") or ())
        return instances

    def _target_group_arn(self, service: Mapping[str, Any]) -> Optional[str]:
        # ECS itself names the target group it registers tasks in; the stack's resource is the fallback.
        for balancer in service.get("loadBalancers") or ():
            if balancer.get("targetGroupArn"):
                return balancer["targetGroupArn"]
        return self.resources.target_group_arn

    def _targets(self, arn: Optional[str]) -> Dict[str, int]:
        if not arn:
            return {}
        answer = self._call("elbv2", "elasticloadbalancing:DescribeTargetHealth", "describe_target_health",
                            TargetGroupArn=arn)
        states: Dict[str, int] = {}
        for description in answer.get("TargetHealthDescriptions") or ():
            state = (description.get("TargetHealth") or {}).get("State", "unknown")
            states[state] = states.get(state, 0) + 1
        return states

    def _is_sticky(self, arn: Optional[str]) -> bool:
        if not arn:
            return False
        answer = self._call("elbv2", "elasticloadbalancing:DescribeTargetGroupAttributes",
                            "describe_target_group_attributes", TargetGroupArn=arn)
        attributes = {a.get("Key"): a.get("Value") for a in answer.get("Attributes") or ()}
        return str(attributes.get("stickiness.enabled", "false")).lower() == "true"

    def _scalable_target(self, cluster_arn: str, service_name: str) -> Optional[Dict[str, Any]]:
        answer = self._call("application-autoscaling", "application-autoscaling:DescribeScalableTargets",
                            "describe_scalable_targets", ServiceNamespace="ecs",
                            ResourceIds=[_scaling_resource_id(cluster_arn, service_name)],
                            ScalableDimension=_SCALABLE_DIMENSION)
        targets = answer.get("ScalableTargets") or ()
        return targets[0] if targets else None

    # --- what the user sees -------------------------------------------------------------------
    def status(self) -> ServiceStatus:
        resources = self.resources
        service = self._describe_service()
        definition = self._call("ecs", "ecs:DescribeTaskDefinition", "describe_task_definition",
                                taskDefinition=service.get("taskDefinition", "")).get("taskDefinition") or {}
        needs = task_needs(definition)
        cluster_arn = service.get("clusterArn") or resources.cluster
        capacity = gpu_capacity(self._container_instances(cluster_arn), needs)
        running, pending = int(service.get("runningCount") or 0), int(service.get("pendingCount") or 0)
        target_group = self._target_group_arn(service)
        states = self._targets(target_group)
        scalable = self._scalable_target(cluster_arn, service.get("serviceName", ""))
        return ServiceStatus(
            stack_name=self.stack_name,
            region=self._context.region or "",
            cluster=cluster_arn.rsplit("/", 1)[-1],
            service=service.get("serviceName", ""),
            task_family=needs.family,
            desired=int(service.get("desiredCount") or 0),
            running=running,
            pending=pending,
            target_group=target_group,
            healthy=states.get("healthy", 0),
            unhealthy=states.get("unhealthy", 0),
            target_states=states,
            capacity=capacity,
            max_tasks=max_tasks(capacity, running + pending),
            sticky=self._is_sticky(target_group),
            cluster_size_parameter=CLUSTER_SIZE_PARAMETER,
            cluster_size=resources.cluster_size,
            scaling_range=(int(scalable["MinCapacity"]), int(scalable["MaxCapacity"])) if scalable else None,
        )

    def running_tasks(self) -> int:
        """The service's running tasks, from ecs:DescribeServices alone: what a batch keeps busy."""
        return int(self._describe_service().get("runningCount") or 0)

    def set_tasks(self, tasks: int) -> TaskChange:
        """Set the desired count to ``tasks``; ServiceCapacityError (nothing changed) when the cluster cannot place them."""
        if not isinstance(tasks, int) or isinstance(tasks, bool) or tasks < 0:
            raise InputError(f"The number of tasks must be a whole number of 0 or more, not {tasks!r}.")
        status = self.status()
        if tasks > status.desired and tasks > status.max_tasks:
            raise ServiceCapacityError(capacity_refusal(
                stack_name=self.stack_name, family=status.task_family, tasks=tasks, limit=status.max_tasks,
                capacity=status.capacity, cluster_size_parameter=CLUSTER_SIZE_PARAMETER,
                cluster_size=status.cluster_size, instance_type_parameter=INSTANCE_TYPE_PARAMETER,
            ))
        notes: List[str] = []
        # Stickiness first: once a second task takes requests, a session made on the first must stay there.
        turned_on = False
        if tasks > 1 and not status.sticky and status.target_group:
            self._call("elbv2", "elasticloadbalancing:ModifyTargetGroupAttributes", "modify_target_group_attributes",
                       TargetGroupArn=status.target_group, Attributes=_STICKY)
            turned_on = True
            notes.append(
                "Turned on load-balancer cookie stickiness for the service's target group, so that an interactive "
                "session (extreme points, deepgrow clicks) stays on the task that created it."
            )
        scaling_range = self._widen_scaling_range(status, tasks, notes)
        self._call("ecs", "ecs:UpdateService", "update_service",
                   cluster=status.cluster, service=status.service, desiredCount=tasks)
        if tasks != status.desired:
            notes.append(
                f"Desired tasks of {status.service} set from {status.desired} to {tasks}; a later update of stack "
                f"{self.stack_name} puts the template's value back."
            )
        return TaskChange(previous=status.desired, desired=tasks, stickiness_turned_on=turned_on,
                          scaling_range=scaling_range, notes=notes)

    def _widen_scaling_range(self, status: ServiceStatus, tasks: int, notes: List[str]) -> Optional[Tuple[int, int]]:
        """Make Application Auto Scaling keep ``tasks``: the Quick Start's CPU alarms scale a GPU service whose
        CPU idles back to its minimum, and its maximum (MaxCount, default 1) would cap any scale-up."""
        if status.scaling_range is None:
            return None
        low, high = status.scaling_range
        wanted = (tasks, max(high, tasks))
        if wanted == (low, high):
            return status.scaling_range
        self._call("application-autoscaling", "application-autoscaling:RegisterScalableTarget",
                   "register_scalable_target", ServiceNamespace="ecs",
                   ResourceId=_scaling_resource_id(status.cluster, status.service),
                   ScalableDimension=_SCALABLE_DIMENSION, MinCapacity=wanted[0], MaxCapacity=wanted[1])
        notes.append(
            f"Set the service's auto-scaling range from {low}-{high} to {wanted[0]}-{wanted[1]} tasks, so that "
            "its CPU alarms do not scale the GPU tasks back."
        )
        return wanted

    def wait_healthy(self, timeout: float = WAIT_TIMEOUT_S, interval: float = POLL_INTERVAL_S, *,
                     progress: Optional[Callable[[ServiceStatus], None]] = None,
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> ServiceStatus:
        """Poll until every desired task runs and has a healthy target; ServiceWaitTimeoutError after ``timeout`` s."""
        if timeout <= 0 or interval <= 0:
            raise InputError("The wait timeout and the polling interval must be positive numbers of seconds.")
        started = clock()
        while True:
            status = self.status()
            if progress is not None:
                progress(status)
            if status.running == status.desired and status.pending == 0 and status.healthy >= status.desired:
                return status
            waited = clock() - started
            if waited >= timeout:
                raise ServiceWaitTimeoutError(status,
                    f"After {waited:.0f} s the service {status.service} of stack {self.stack_name} has "
                    f"{status.healthy} healthy load-balancer targets for {status.desired} desired tasks "
                    f"({status.running} running, {status.pending} pending): a GPU host may still be starting or "
                    "pulling the Clara image, so check the service's events in the ECS console or wait longer."
                )
            sleep(min(interval, timeout - waited))


def _scaling_resource_id(cluster_arn: str, service_name: str) -> str:
    """Application Auto Scaling names an ECS service ``service/CLUSTER/SERVICE``."""
    return f"service/{cluster_arn.rsplit('/', 1)[-1]}/{service_name}"
