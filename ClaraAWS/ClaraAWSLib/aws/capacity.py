"""How many GPU tasks of the Clara task definition the ECS cluster's container instances can hold.

Pure arithmetic on the shapes ECS returns (``DescribeContainerInstances``, ``DescribeTaskDefinition``),
so it is tested on hand-written descriptions as well as through the service code.

How ECS describes GPUs: the ECS agent registers a container instance's GPUs as the resource ``GPU``.
Current agents send it as a STRINGSET of GPU ids (aws/amazon-ecs-agent pull request 3852, 2023:
"Account GPUs as list of GPU IDs"), and ``remainingResources`` lists the ids not yet given to a task;
older agents sent an INTEGER count. Both forms are read. ECS never gives one GPU to two tasks, so a
task needing g GPUs fits floor(gpus / g) times on an instance (and as often as its memory allows).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Optional

GPU = "GPU"
MEMORY = "MEMORY"


@dataclass(frozen=True)
class TaskNeeds:
    """What one task of the service reserves on a container instance."""

    family: str
    gpus: int
    memory_mib: int


@dataclass(frozen=True)
class GpuCapacity:
    """The cluster's ACTIVE container instances measured in tasks of one task definition."""

    instances: int
    gpus: int
    free_gpus: int
    gpus_per_task: int
    memory_per_task_mib: int
    #: Tasks the instances could hold if they ran nothing else.
    task_slots: int
    #: Tasks that still fit next to what runs now.
    free_slots: int

    def as_dict(self) -> dict:
        return asdict(self)


def _amount(resource: Mapping[str, Any]) -> int:
    if resource.get("type") == "STRINGSET" or resource.get("stringSetValue"):
        return len(resource.get("stringSetValue") or ())
    for key in ("integerValue", "longValue", "doubleValue"):
        if resource.get(key):
            return int(resource[key])
    return 0


def resource_amount(resources: Iterable[Mapping[str, Any]], name: str) -> int:
    """The amount of resource ``name`` (GPU, MEMORY, CPU) in a registeredResources/remainingResources list."""
    return sum(_amount(resource) for resource in resources or () if resource.get("name") == name)


def task_needs(task_definition: Mapping[str, Any]) -> TaskNeeds:
    """GPUs and memory (MiB) one task of ``task_definition`` (a DescribeTaskDefinition ``taskDefinition``) reserves."""
    containers = task_definition.get("containerDefinitions") or ()
    gpus = sum(
        int(requirement.get("value") or 0)
        for container in containers
        for requirement in container.get("resourceRequirements") or ()
        if requirement.get("type") == GPU
    )
    # The task-level memory wins when set; otherwise ECS reserves each container's hard or soft limit.
    task_memory = str(task_definition.get("memory") or "").strip()
    if task_memory.isdigit():
        memory = int(task_memory)
    else:
        memory = sum(int(c.get("memory") or c.get("memoryReservation") or 0) for c in containers)
    return TaskNeeds(family=str(task_definition.get("family") or "the task"), gpus=gpus, memory_mib=memory)


def _fits(gpus: int, memory: int, needs: TaskNeeds) -> int:
    counts = []
    if needs.gpus > 0:
        counts.append(gpus // needs.gpus)
    if needs.memory_mib > 0:
        counts.append(memory // needs.memory_mib)
    if not counts:
        # ECS refuses EC2 task definitions without memory, so only a misread definition gets here:
        # promise no room rather than unlimited room.
        return 0
    return max(0, min(counts))


def gpu_capacity(container_instances: Iterable[Mapping[str, Any]], needs: TaskNeeds) -> GpuCapacity:
    """Capacity of the ACTIVE, agent-connected instances (DescribeContainerInstances ``containerInstances``)."""
    active = [
        instance for instance in container_instances
        if instance.get("status", "ACTIVE") == "ACTIVE" and instance.get("agentConnected", True)
    ]
    gpus = free_gpus = slots = free_slots = 0
    for instance in active:
        registered = instance.get("registeredResources") or ()
        remaining = instance.get("remainingResources") or ()
        instance_gpus, instance_free = resource_amount(registered, GPU), resource_amount(remaining, GPU)
        gpus += instance_gpus
        free_gpus += instance_free
        slots += _fits(instance_gpus, resource_amount(registered, MEMORY), needs)
        free_slots += _fits(instance_free, resource_amount(remaining, MEMORY), needs)
    return GpuCapacity(
        instances=len(active),
        gpus=gpus,
        free_gpus=free_gpus,
        gpus_per_task=needs.gpus,
        memory_per_task_mib=needs.memory_mib,
        task_slots=slots,
        free_slots=free_slots,
    )


def max_tasks(capacity: GpuCapacity, placed: int) -> int:
    """How many tasks the service can have: those already placed (running or pending) plus what still fits."""
    return max(placed, min(capacity.task_slots, placed + capacity.free_slots))


def capacity_refusal(
    *, stack_name: str, family: str, tasks: int, limit: int, capacity: GpuCapacity,
    cluster_size_parameter: str, cluster_size: Optional[int], instance_type_parameter: str,
) -> str:
    """The one sentence that refuses ``tasks`` and names the stack parameter to raise."""
    per_task = f"{capacity.gpus_per_task} GPU" + ("s" if capacity.gpus_per_task != 1 else "")
    hosts = f"{capacity.instances} container instance" + ("s" if capacity.instances != 1 else "")
    now = f" (now {cluster_size})" if cluster_size is not None else ""
    return (
        f"The cluster of stack {stack_name} can place at most {limit} task{'s' if limit != 1 else ''} of {family}, "
        f"not {tasks} ({per_task} each; {hosts} with {capacity.gpus} GPU{'s' if capacity.gpus != 1 else ''}, "
        f"{capacity.free_gpus} free): "
        f"raise the stack parameter {cluster_size_parameter}{now} to add GPU hosts, or choose an "
        f"{instance_type_parameter} with more GPUs, then ask again."
    )
