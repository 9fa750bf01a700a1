"""``clara-aws service --stack NAME [--tasks N] [--wait] [--json]``: the Quick Start's ECS service as the
engine that scales (tasks, healthy targets, GPU capacity; set the desired count; wait until healthy).

``add_commands`` puts it into ``clara-aws``. ``run``
raises the project's typed errors (a capacity refusal is an InputError, exit 2; AWS failures are
DiscoveryErrors, exit 3), which ``clara-aws``'s main turns into one line and an exit code.
"""

from __future__ import annotations

import argparse
import json
import sys

from .argtypes import seconds, whole_number

HELP = "show or scale the Clara ECS service of a stack (tasks, healthy targets, GPU capacity)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..aws.service import POLL_INTERVAL_S, WAIT_TIMEOUT_S

    parser.add_argument("--stack", required=True, metavar="NAME", help="the Clara Quick Start's root stack (or its cluster stack)")
    parser.add_argument("--tasks", type=whole_number(0), metavar="N",
                        help="set the service's desired count (refused when the cluster's GPU hosts cannot place N; "
                             "above 1 turns on load-balancer cookie stickiness)")
    parser.add_argument("--wait", action="store_true", help="wait until every desired task runs behind a healthy target")
    parser.add_argument("--timeout", type=seconds, default=WAIT_TIMEOUT_S, metavar="S",
                        help=f"give up waiting after S seconds (default {WAIT_TIMEOUT_S:.0f})")
    parser.add_argument("--interval", type=seconds, default=POLL_INTERVAL_S, metavar="S", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON object: the status and what changed")
    aws = parser.add_argument_group("AWS")
    aws.add_argument("--profile", help="AWS profile (default: the environment's)")
    aws.add_argument("--region", help="AWS region (default: the profile's or the environment's)")
    aws.add_argument("--aws-endpoint-url", metavar="URL", help="endpoint for every AWS service (local test servers)")


def add_commands(commands, options) -> None:
    parser = commands.add_parser("service", parents=[options.common], help=HELP)
    add_arguments(parser)
    parser.set_defaults(run=run)


def _progress(status) -> None:
    print(f"clara-aws: {status.running}/{status.desired} tasks running, {status.healthy} healthy targets",
          file=sys.stderr)


def _text(status) -> str:
    capacity = status.capacity
    scaling = f"{status.scaling_range[0]}-{status.scaling_range[1]} tasks" if status.scaling_range else "none"
    size = status.cluster_size if status.cluster_size is not None else "unknown"
    others = ", ".join(f"{count} {state}" for state, count in sorted(status.target_states.items())
                       if state not in ("healthy", "unhealthy"))
    return "\n".join([
        f"Stack {status.stack_name} ({status.region}): service {status.service} on cluster {status.cluster}",
        f"  tasks:         {status.desired} desired, {status.running} running, {status.pending} pending",
        f"  targets:       {status.healthy} healthy, {status.unhealthy} unhealthy" + (f", {others}" if others else ""),
        f"  GPU capacity:  {capacity.instances} container instances, {capacity.gpus} GPUs ({capacity.free_gpus} free); "
        f"{status.task_family} needs {capacity.gpus_per_task} GPU and {capacity.memory_per_task_mib} MiB per task",
        f"  at most:       {status.max_tasks} tasks ({status.cluster_size_parameter} = {size})",
        f"  stickiness:    {'on' if status.sticky else 'off'}",
        f"  auto scaling:  {scaling}",
    ])


def run(args: argparse.Namespace, out=None) -> int:
    from ..aws.errors import ServiceWaitTimeoutError
    from ..aws.service import ClaraService

    out = out or sys.stdout
    service = ClaraService.open(args.stack, profile=args.profile, region=args.region,
                                endpoint_url=args.aws_endpoint_url)
    change = service.set_tasks(args.tasks) if args.tasks is not None else None

    def as_json(status, wait) -> str:
        return json.dumps({"status": status.as_dict(), "change": change.as_dict() if change else None, "wait": wait},
                          indent=2)

    if args.wait:
        try:
            status = service.wait_healthy(args.timeout, args.interval, progress=None if args.json else _progress)
        except ServiceWaitTimeoutError as timeout:
            if args.json:  # a script reading the output still gets the service as last seen, then the sentence
                print(as_json(timeout.status, "timed out"), file=out)
            raise
    else:
        status = service.status()
    if args.json:
        print(as_json(status, "healthy" if args.wait else None), file=out)
        return 0
    for note in change.notes if change else ():
        print(note, file=out)
    print(_text(status), file=out)
    return 0
