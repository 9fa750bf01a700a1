"""A Quick Start-shaped Clara deployment in moto (on 127.0.0.1), for the `service` tests.

`deploy_quickstart` uploads the nested test templates (Testing/data/cfn/qs-*.yaml) to moto's S3 and
creates the root stack, so the code under test walks nested stacks as it does in a real account. What
moto cannot do is done here the way AWS would and said so: ECS container instances (the Auto Scaling
group's hosts would register themselves), the service's scalable target (moto's CloudFormation has no
AWS::ApplicationAutoScaling::ScalableTarget) and the ECS agent's GPU resources (`GpuReportingEcs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List

from aws_fixtures import FAKE_KEY_ID, FAKE_SECRET, TEMPLATE_DIR

REGION = "us-east-1"
BUCKET = "quickstart-templates"
NESTED = ("qs-load-balancer.yaml", "qs-ecs-cluster.yaml", "qs-service.yaml")


def client(service: str, endpoint: str):
    import boto3

    return boto3.client(service, region_name=REGION, endpoint_url=endpoint,
                        aws_access_key_id=FAKE_KEY_ID, aws_secret_access_key=FAKE_SECRET)


@dataclass
class Deployment:
    endpoint: str
    stack: str
    vpc: str
    cluster: str

    def client(self, service: str):
        return client(service, self.endpoint)

    def nested(self, logical_id: str) -> str:
        """The physical id (stack name) of the root's nested stack ``logical_id``."""
        cfn = self.client("cloudformation")
        return cfn.describe_stack_resource(StackName=self.stack, LogicalResourceId=logical_id)[
            "StackResourceDetail"]["PhysicalResourceId"]

    def resource(self, nested_logical_id: str, logical_id: str) -> str:
        cfn = self.client("cloudformation")
        return cfn.describe_stack_resource(StackName=self.nested(nested_logical_id), LogicalResourceId=logical_id)[
            "StackResourceDetail"]["PhysicalResourceId"]

    @property
    def service_arn(self) -> str:
        return self.resource("ClaraService", "Service")

    @property
    def target_group_arn(self) -> str:
        return self.resource("ClaraService", "TargetGroup")

    def desired_count(self) -> int:
        answer = self.client("ecs").describe_services(cluster=self.cluster, services=[self.service_arn])
        return answer["services"][0]["desiredCount"]

    def stickiness(self) -> Dict[str, str]:
        answer = self.client("elbv2").describe_target_group_attributes(TargetGroupArn=self.target_group_arn)
        return {a["Key"]: a["Value"] for a in answer["Attributes"] if a["Key"].startswith("stickiness.")}

    def run_instances(self, count: int) -> List[str]:
        ec2 = self.client("ec2")
        subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [self.vpc]}])["Subnets"][0]["SubnetId"]
        answer = ec2.run_instances(ImageId="ami-12c6146b", MinCount=count, MaxCount=count,
                                   InstanceType="p3.2xlarge", SubnetId=subnet)
        return [instance["InstanceId"] for instance in answer["Instances"]]

    def register_container_instances(self, count: int) -> List[str]:
        """What each GPU host's ECS agent does at boot: register with the cluster."""
        ecs = self.client("ecs")
        arns = []
        for instance_id in self.run_instances(count):
            document = json.dumps({"instanceId": instance_id, "region": REGION, "instanceType": "p3.2xlarge"})
            answer = ecs.register_container_instance(cluster=self.cluster, instanceIdentityDocument=document)
            arns.append(answer["containerInstance"]["containerInstanceArn"])
        return arns

    def register_targets(self, instance_ids: List[str], first_port: int = 32768) -> None:
        """What ECS does for each task: register its host and dynamic port in the target group."""
        targets = [{"Id": instance_id, "Port": first_port + n} for n, instance_id in enumerate(instance_ids)]
        self.client("elbv2").register_targets(TargetGroupArn=self.target_group_arn, Targets=targets)

    def register_scalable_target(self, low: int, high: int) -> None:
        """The template's ServiceScalableTarget (MinCapacity: DesiredCount, MaxCapacity: MaxCount)."""
        service_name = self.service_arn.rsplit("/", 1)[-1]
        self.client("application-autoscaling").register_scalable_target(
            ServiceNamespace="ecs", ResourceId=f"service/{self.cluster}/{service_name}",
            ScalableDimension="ecs:service:DesiredCount", MinCapacity=low, MaxCapacity=high)

    def scaling_range(self):
        service_name = self.service_arn.rsplit("/", 1)[-1]
        targets = self.client("application-autoscaling").describe_scalable_targets(
            ServiceNamespace="ecs", ResourceIds=[f"service/{self.cluster}/{service_name}"])["ScalableTargets"]
        return (targets[0]["MinCapacity"], targets[0]["MaxCapacity"]) if targets else None


def deploy_quickstart(endpoint: str, stack: str = "clara", **parameters: str) -> Deployment:
    s3 = client("s3", endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for name in NESTED:
        s3.put_object(Bucket=BUCKET, Key=name, Body=(TEMPLATE_DIR / name).read_bytes())
    ec2 = client("ec2", endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.40.{128 + 16 * n}.0/20", AvailabilityZone=f"{REGION}{zone}")[
            "Subnet"]["SubnetId"]
        for n, zone in enumerate("ab")
    ]
    values = {"TemplateBase": f"https://{BUCKET}.s3.amazonaws.com", "VPC": vpc, "PublicSubnets": ",".join(subnets),
              **parameters}
    cfn = client("cloudformation", endpoint)
    cfn.create_stack(StackName=stack, TemplateBody=(TEMPLATE_DIR / "qs-service-root.yaml").read_text(),
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()])
    status = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    assert status["StackStatus"] == "CREATE_COMPLETE", status.get("StackStatusReason")
    return Deployment(endpoint=endpoint, stack=stack, vpc=vpc, cluster=f"{stack}-gpu")


def gpu_instance(arn: str, gpus: int, free_gpus: int, memory: int = 61 * 1024, free_memory: int = 0) -> Dict[str, Any]:
    """A DescribeContainerInstances entry as the ECS agent reports a GPU host (GPU ids as a STRINGSET)."""
    ids = [f"GPU-{n:08x}-0000-0000-0000-{arn[-12:]}" for n in range(gpus)]
    return {
        "containerInstanceArn": arn,
        "status": "ACTIVE",
        "agentConnected": True,
        "registeredResources": [
            {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
            {"name": "GPU", "type": "STRINGSET", "stringSetValue": ids},
        ],
        "remainingResources": [
            {"name": "MEMORY", "type": "INTEGER", "integerValue": free_memory or memory},
            {"name": "GPU", "type": "STRINGSET", "stringSetValue": ids[gpus - free_gpus:]},
        ],
    }


class GpuReportingEcs:
    """moto's ECS client, except that DescribeContainerInstances answers as real ECS does for GPU hosts.

    moto 5.2's container instances register CPU, MEMORY (7482 MiB) and ports only, never GPUs, and ignore
    the agent's totalResources. Only that one call goes to botocore's Stubber, which checks each answer
    against ECS's service model; everything else reaches moto.
    """

    def __init__(self, moto_ecs, instances: List[Dict[str, Any]]) -> None:
        from botocore.stub import Stubber

        self._moto = moto_ecs
        self.instances = instances
        self._stubbed = client("ecs", "http://127.0.0.1:9")  # never contacted: the Stubber answers
        self._stubber = Stubber(self._stubbed)
        self._stubber.activate()
        self.calls = 0

    def describe_container_instances(self, **parameters):
        self.calls += 1
        wanted = set(parameters["containerInstances"])
        answer = {"containerInstances": [i for i in self.instances if i["containerInstanceArn"] in wanted],
                  "failures": []}
        self._stubber.add_response("describe_container_instances", answer, parameters)
        return self._stubbed.describe_container_instances(**parameters)

    def __getattr__(self, name: str):
        return getattr(self._moto, name)
