"""Finding Clara deployments in the AWS account: discover."""

from __future__ import annotations

import json

from .connection import stack_aliases
from .options import SharedOptions, add_aws_arguments


def add_commands(commands, options: SharedOptions) -> None:
    discover = commands.add_parser("discover", parents=[options.common], help="find Clara deployments (ClaraServiceUrl) in CloudFormation")
    discover.set_defaults(run=cmd_discover)
    discover.add_argument("--stack", metavar="NAME", help="only stacks whose name contains NAME")
    add_aws_arguments(discover)
    discover.add_argument("--json", action="store_true", help="print a JSON array, one object per deployment")


def cmd_discover(args) -> int:
    from ..aws import discovery as aws

    deployments = aws.discover(
        profile=args.profile, region=args.region, stack_filter=args.stack, endpoint_url=args.aws_endpoint_url, aliases=stack_aliases(args),
        output_keys=args.output_key or None,
    )
    if args.json:
        print(json.dumps([d.as_dict() for d in deployments], indent=2))
        return 0
    for deployment in deployments:
        print(f"{deployment.stack_name} ({deployment.region}): {deployment.url}")
        if deployment.note:
            print(f"  note: {deployment.note}")
    return 0
