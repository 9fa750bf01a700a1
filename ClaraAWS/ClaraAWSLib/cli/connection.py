"""The server a command talks to, from its options: a URL, an environment variable or a CloudFormation stack."""

from __future__ import annotations

import os
import sys
from typing import Dict

from ..core.errors import InputError

SERVER_ENVIRONMENT_VARIABLE = "CLARA_AIAA_URL"
PASSWORD_ENVIRONMENT_VARIABLE = "CLARA_PASSWORD"


def stack_aliases(args) -> Dict[str, str]:
    aliases = {}
    for item in args.alias:
        stack, _, host = item.partition("=")
        if not stack or not host:
            raise InputError(f"--alias '{item}' is not STACK=HOST; give e.g. --alias clara-prod=clara.example.org.")
        aliases[stack] = host
    return aliases


def server_url(args) -> str:
    if args.server and args.stack:
        raise InputError("Give either --server or --stack, not both.")
    if args.stack:
        from ..aws import discovery as aws

        return aws.resolve_stack_url(
            args.stack, profile=args.profile, region=args.region, endpoint_url=args.aws_endpoint_url, aliases=stack_aliases(args),
            output_keys=args.output_key or None,
        )
    url = args.server or os.environ.get(SERVER_ENVIRONMENT_VARIABLE)
    if not url:
        raise InputError(f"No server given; pass --server URL or --stack NAME, or set {SERVER_ENVIRONMENT_VARIABLE}.")
    return url


def open_client(args):
    from ..backends import connect

    headers = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise InputError(f"--header '{item}' is not 'Name: value'.")
        headers[name.strip()] = value.strip()
    if args.insecure and args.ca_bundle:
        raise InputError("Give either --ca-bundle or --insecure, not both.")
    verify = False if args.insecure else (args.ca_bundle or True)
    options = dict(verify=verify, headers=headers, connect_timeout=args.connect_timeout, read_timeout=args.read_timeout,
                   deadline=args.deadline)
    if args.username:
        # Never a command-line argument: it would show in the process list and the shell history.
        options.update(username=args.username, password=os.environ.get(PASSWORD_ENVIRONMENT_VARIABLE, ""))
    if args.insecure:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        print("clara-aws: warning: TLS certificate verification is OFF.", file=sys.stderr)
    return connect(server_url(args), backend=args.backend, **options)


def open_monailabel_client(args, what: str):
    from ..backends import supports_active_learning

    client = open_client(args)
    if not supports_active_learning(client):
        shown = client.base_url  # --server as typed may carry user:password@; the wire keeps them apart
        client.close()
        raise InputError(f"{what} needs a MONAI Label server; {shown} is an AIAA server.")
    return client
