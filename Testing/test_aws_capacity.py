"""GPU capacity arithmetic on DescribeContainerInstances / DescribeTaskDefinition shapes written by hand."""

from __future__ import annotations

from ClaraAWSLib.aws.capacity import TaskNeeds, capacity_refusal, gpu_capacity, max_tasks, task_needs

QUICKSTART_TASK = {  # service.template.yaml's TaskDefinition as DescribeTaskDefinition returns it
    "family": "website-service",
    "containerDefinitions": [{"name": "website-service", "memory": 24576,
                              "resourceRequirements": [{"type": "GPU", "value": "1"}]}],
}


def host(gpus, free, memory=62464, free_memory=None, *, integer=False, status="ACTIVE", connected=True):
    def gpu(count):
        if integer:  # older ECS agents counted GPUs instead of listing their ids
            return {"name": "GPU", "type": "INTEGER", "integerValue": count}
        return {"name": "GPU", "type": "STRINGSET", "stringSetValue": [f"GPU-{n}" for n in range(count)]}

    return {
        "status": status, "agentConnected": connected,
        "registeredResources": [{"name": "MEMORY", "type": "INTEGER", "integerValue": memory}, gpu(gpus),
                                {"name": "CPU", "type": "INTEGER", "integerValue": 8192}],
        "remainingResources": [{"name": "MEMORY", "type": "INTEGER",
                                "integerValue": memory if free_memory is None else free_memory}, gpu(free)],
    }


def test_the_quickstart_task_needs_one_gpu_and_24_gib():
    assert task_needs(QUICKSTART_TASK) == TaskNeeds("website-service", 1, 24576)
    # A task-level memory wins over the containers' limits; soft limits count when no hard one is set.
    assert task_needs({**QUICKSTART_TASK, "memory": "30000"}).memory_mib == 30000
    soft = {"family": "f", "containerDefinitions": [{"memoryReservation": 100}, {"memory": 50, "memoryReservation": 10}]}
    assert task_needs(soft) == TaskNeeds("f", 0, 150)


def test_capacity_counts_gpu_ids_and_gpu_counts_alike():
    needs = task_needs(QUICKSTART_TASK)
    for integer in (False, True):
        capacity = gpu_capacity([host(1, 0, integer=integer), host(4, 3, integer=integer)], needs)
        # p3.2xlarge (1 GPU, 61 GiB) holds 1 task; 4 GPUs with 61 GiB hold only 2 of 24 GiB each.
        assert (capacity.instances, capacity.gpus, capacity.free_gpus) == (2, 5, 3)
        assert (capacity.task_slots, capacity.free_slots) == (1 + 2, 0 + 2)


def test_draining_and_disconnected_hosts_place_nothing():
    needs = task_needs(QUICKSTART_TASK)
    capacity = gpu_capacity([host(1, 1, status="DRAINING"), host(1, 1, connected=False), host(1, 1)], needs)
    assert (capacity.instances, capacity.task_slots, capacity.free_slots) == (1, 1, 1)


def test_max_tasks_is_what_is_placed_plus_what_still_fits():
    needs = task_needs(QUICKSTART_TASK)
    capacity = gpu_capacity([host(1, 0), host(1, 1), host(1, 1, free_memory=1000)], needs)
    assert (capacity.task_slots, capacity.free_slots) == (3, 1)  # the third host's memory is taken
    assert max_tasks(capacity, placed=1) == 2
    assert max_tasks(capacity, placed=3) == 3  # never fewer than already run
    assert max_tasks(gpu_capacity([], needs), placed=0) == 0


def test_refusal_is_one_sentence_naming_the_parameter():
    capacity = gpu_capacity([host(1, 0)], task_needs(QUICKSTART_TASK))
    text = capacity_refusal(stack_name="clara", family="website-service", tasks=4, limit=1, capacity=capacity,
                            cluster_size_parameter="ClusterSize", cluster_size=1,
                            instance_type_parameter="ECSHostInstanceType")
    assert text.endswith(".") and ". " not in text
    assert "at most 1 task of website-service, not 4" in text and "ClusterSize (now 1)" in text
    assert "1 container instance with 1 GPU, 0 free" in text
