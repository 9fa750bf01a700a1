"""Options shared by the commands: --debug, the server connection (URL or stack, TLS, timeouts), AWS, voxel indices."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Callable, List, Optional

from .connection import SERVER_ENVIRONMENT_VARIABLE


@dataclass(frozen=True)
class SharedOptions:
    """Parent parsers: ``common`` for every command, ``connection`` for the commands that talk to a server."""

    common: argparse.ArgumentParser
    connection: argparse.ArgumentParser


def shared_options() -> SharedOptions:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="print a traceback on failure")

    connection = argparse.ArgumentParser(add_help=False, parents=[common])
    where = connection.add_argument_group("server")
    where.add_argument("--server", metavar="URL", help=f"AIAA server URL, scheme://host[:port][/prefix] (default: ${SERVER_ENVIRONMENT_VARIABLE})")
    where.add_argument("--stack", metavar="NAME", help="find the server URL in this CloudFormation stack's ClaraServiceUrl output")
    where.add_argument("--backend", choices=("aiaa", "monailabel", "auto"), default="auto",
                       help="the server's protocol (default: detected; AIAA answers /v1/models, MONAI Label /info/)")
    where.add_argument("--username", help="MONAI Label with auth on: log in as this user (password from $CLARA_PASSWORD)")
    add_aws_arguments(where)
    tls = connection.add_argument_group("TLS and HTTP")
    tls.add_argument("--ca-bundle", metavar="PEM", help="verify the server's certificate against this CA bundle")
    tls.add_argument("--insecure", action="store_true", help="do NOT verify the server's TLS certificate (trusted test servers only)")
    tls.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help="extra request header, e.g. for a proxy's auth (repeatable)")
    tls.add_argument("--connect-timeout", type=float, default=10.0, metavar="S", help="seconds to wait for a connection (default 10)")
    tls.add_argument("--read-timeout", type=float, default=900.0, metavar="S", help="seconds to wait for an answer (default 900)")
    tls.add_argument("--deadline", type=float, default=3600.0, metavar="S",
                     help="seconds a whole request may take, however slowly the bytes arrive (default 3600)")
    return SharedOptions(common, connection)


def add_aws_arguments(group) -> None:
    group.add_argument("--profile", help="AWS profile (default: the environment's)")
    group.add_argument("--region", help="AWS region (default: the profile's or the environment's)")
    group.add_argument("--aws-endpoint-url", metavar="URL", help="CloudFormation endpoint (VPC endpoints, local test servers)")
    group.add_argument("--alias", action="append", default=[], metavar="STACK=HOST", help="DNS alias whose certificate the stack's HTTPS load balancer presents (repeatable)")
    group.add_argument("--output-key", action="append", default=[], metavar="KEY",
                       help="stack output holding the server address (repeatable; default ClaraServiceUrl)")


def add_io_arguments(parser: argparse.ArgumentParser) -> None:
    """INPUT, --output and --model; also lets the command's I,J,K options take negative indices (see below)."""
    accept_negative_voxel_indices(parser)
    parser.add_argument("input", metavar="INPUT", help="input volume (any format SimpleITK reads) or a folder of one DICOM series")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="label image to write, on INPUT's grid")
    parser.add_argument("--model", required=True, help="model name (see 'clara-aws models')")


def voxel_index(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not I,J,K with three whole numbers") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"'{text}' is not I,J,K with three whole numbers")
    return values


def labelled_voxel_index(text: str):
    label, sep, point = text.rpartition("=")
    if not sep or not label.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not LABEL=I,J,K")
    return label.strip(), voxel_index(point)


#: An I,J,K voxel index whose first coordinate is negative, such as -1,2,3: a value, not an option flag.
NEGATIVE_VOXEL_INDEX = r"^-\d+,-?\d+,-?\d+$"


def accept_negative_voxel_indices(parser: argparse.ArgumentParser) -> None:
    """Let ``--point -1,2,3`` pass -1,2,3 to the option, as ``--point=-1,2,3`` does.

    argparse takes an argument starting with '-' for an option flag unless it matches the parser's
    negative-number pattern (-1 or -2.5 on Python 3.11), so a separate -1,2,3 failed with "expected one
    argument" instead of reaching the check that names the point outside the volume. argparse has no
    public switch for this, so the pattern is widened; where it already takes -1,2,3 (newer Pythons)
    nothing changes. The parser has no option flags that look like numbers, so none is shadowed.
    """
    default_pattern = getattr(parser, "_negative_number_matcher", None)
    if default_pattern is None:  # an argparse without the pattern: leave its parsing as it is
        return
    parser._negative_number_matcher = re.compile(f"(?:{default_pattern.pattern})|(?:{NEGATIVE_VOXEL_INDEX})")


def voxel_size(min_edge: int, max_edge: int, max_voxels: int) -> Callable[[str], List[int]]:
    """An argparse type for an image size I,J,K in voxels: each edge from ``min_edge`` to ``max_edge``,
    and at most ``max_voxels`` voxels in all."""

    def parse(text: str) -> List[int]:
        size = voxel_index(text)
        problem = voxel_size_problem(size, min_edge, max_edge, max_voxels)
        if problem:
            raise argparse.ArgumentTypeError(f"'{text}' {problem}")
        return size

    return parse


def voxel_size_problem(size: List[int], min_edge: int, max_edge: int, max_voxels: int) -> Optional[str]:
    """Why ``size`` is out of bounds (to follow the size in a sentence), or None when it is within them."""
    if min(size) < min_edge:
        return f"has fewer than {min_edge} voxels along an axis; give at least {min_edge} along each of I, J and K"
    if max(size) > max_edge:
        return f"has more than {max_edge} voxels along an axis; give at most {max_edge} along each of I, J and K"
    voxels = size[0] * size[1] * size[2]
    if voxels > max_voxels:
        return f"is {voxels:,} voxels in all, more than {max_voxels:,}; give a smaller size"
    return None
